//! Throwaway TLS material for tests: a self-signed certificate and its key in one PEM file, as
//! HAProxy's `crt` wants it, so a `:443` frontend passes `haproxy -c` on a host without
//! `/etc/ssl/cert.pem`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Writes `dir/cert.pem` (certificate followed by key) and returns its path.
pub fn self_signed_pem(dir: &Path) -> PathBuf {
    let (key, cert) = (dir.join("key.only.pem"), dir.join("cert.only.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs (scripts/test installs it)");
    assert!(
        made.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let pem = std::fs::read_to_string(&cert).unwrap() + &std::fs::read_to_string(&key).unwrap();
    let both = dir.join("cert.pem");
    std::fs::write(&both, pem).unwrap();
    both
}
