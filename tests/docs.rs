//! Drift checks: the man page and README keep up with `--help`, and the README's first command
//! really runs on the example cluster shipped in the repo.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use support::sync::{Sync, BIN};

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

fn long_flags(text: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i + 2 < bytes.len() {
        let starts_flag = bytes[i] == b'-'
            && bytes[i + 1] == b'-'
            && bytes[i + 2].is_ascii_lowercase()
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'-'));
        if starts_flag {
            let end = text[i + 2..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
                .map_or(text.len(), |n| i + 2 + n);
            flags.insert(text[i..end].trim_end_matches('-').to_string());
            i = end;
        } else {
            i += 1;
        }
    }
    flags
}

fn help_text() -> String {
    Sync::new()
        .arg("--help")
        .run()
        .assert_success()
        .stdout
        .clone()
}

#[test]
fn every_long_flag_of_help_is_in_the_man_page() {
    let man = repo_file("man/haproxy-marathon-sync.1").replace("\\-", "-");
    let missing: Vec<String> = long_flags(&help_text())
        .into_iter()
        .filter(|flag| !man.contains(flag.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "flags missing from man/haproxy-marathon-sync.1: {missing:?}"
    );
}

#[test]
fn man_page_renders_without_warnings() {
    let output = Command::new("groff")
        .args(["-man", "-ww", "-z", "man/haproxy-marathon-sync.1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("LC_ALL", "C.UTF-8")
        .output()
        .expect("running groff (scripts/test installs groff-base)");
    let warnings = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && warnings.trim().is_empty(),
        "groff: {warnings}"
    );
}

#[test]
fn every_exit_code_is_documented_in_readme_and_man_page() {
    let main = repo_file("src/main.rs");
    let readme = repo_file("README.md");
    let man = repo_file("man/haproxy-marathon-sync.1");
    let codes: Vec<&str> = main
        .lines()
        .filter_map(|line| line.trim().split_once(" = ")?.1.strip_suffix(','))
        .collect();
    assert!(
        codes.len() >= 8,
        "found exit codes {codes:?} in src/main.rs"
    );
    for code in codes {
        assert!(
            readme.contains(&format!("| {code} |")),
            "README lacks exit code {code}"
        );
        assert!(
            man.contains(&format!(".B {code}\n")),
            "man page lacks exit code {code}"
        );
    }
}

/// The README's first shell block is the newcomer's first command; it must work as written.
#[test]
fn readme_quick_start_renders_the_example_cluster() {
    let readme = repo_file("README.md");
    let block = readme
        .split("```sh\n")
        .nth(1)
        .expect("a ```sh block in README.md");
    let command = block.split("```").next().unwrap().trim();
    let args = command
        .strip_prefix("cargo run -- ")
        .expect("first command is `cargo run -- ...`");
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!("\"{BIN}\" {args}"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "README quick start failed: {stderr}"
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains("backend shop_web_10001"),
        "unexpected output:\n{stdout}"
    );
    assert!(
        stdout.contains("server 10_0_1_11_10_0_1_11_31005") || stdout.contains("10_0_1_11_31005")
    );
}
