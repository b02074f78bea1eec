//! Throwaway TLS material for tests: a self-signed certificate and its key in one PEM file, as
//! HAProxy's `crt` wants it, so a `:443` frontend passes `haproxy -c` on a host without
//! `/etc/ssl/cert.pem`; and [`openssl`], the `openssl` CLI run to success (no test skips when
//! it is missing: `scripts/test` installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `openssl ARGS` in `dir` and panics, showing its stderr, unless it succeeds.
#[track_caller]
pub fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (scripts/test installs it)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Writes `dir/cert.pem` (certificate followed by key) and returns its path.
pub fn self_signed_pem(dir: &Path) -> PathBuf {
    let (key, cert) = (dir.join("key.only.pem"), dir.join("cert.only.pem"));
    let (key_arg, cert_arg) = (key.to_str().unwrap(), cert.to_str().unwrap());
    let request = [
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
    ];
    let subject = [
        "-subj",
        "/CN=localhost",
        "-keyout",
        key_arg,
        "-out",
        cert_arg,
    ];
    openssl(dir, &[&request[..], &subject].concat());
    let pem = std::fs::read_to_string(&cert).unwrap() + &std::fs::read_to_string(&key).unwrap();
    let both = dir.join("cert.pem");
    std::fs::write(&both, pem).unwrap();
    both
}
