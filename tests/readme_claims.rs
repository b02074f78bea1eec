//! The README's claims point at tests that exist: every test the Faults table and the "Reloads
//! without failed requests" section name is a `fn` in the file they name, every `src/` path they
//! cite holds unit tests, and every row of the exit-status table has its own `exit_N_...` test
//! in tests/exit_codes.rs. A renamed or deleted test cannot leave a claim unproven silently.

use std::collections::BTreeSet;
use std::path::Path;

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

/// The text of the README section under `## title`, up to the next `## `.
fn section<'a>(readme: &'a str, title: &str) -> &'a str {
    let start = readme
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("README has no section {title:?}"));
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |n| n + 3);
    &rest[..end]
}

/// The backquoted spans of `text`, in order.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

fn is_test_name(span: &str) -> bool {
    span.len() > 3
        && span.contains('_')
        && span
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// (file, test name) for every test name cited after a `tests/x.rs` span in `text`, and the
/// `src/` paths cited.
fn citations(text: &str) -> (Vec<(String, String)>, BTreeSet<String>) {
    let mut tests = Vec::new();
    let mut sources = BTreeSet::new();
    let mut file: Option<&str> = None;
    for span in code_spans(text) {
        if span.starts_with("tests/") && span.ends_with(".rs") {
            file = Some(span);
        } else if span.starts_with("src/") {
            sources.insert(span.to_string());
            file = None;
        } else if is_test_name(span) {
            if let Some(file) = file {
                tests.push((file.to_string(), span.to_string()));
            }
        }
    }
    (tests, sources)
}

fn defines_test(source: &str, name: &str) -> bool {
    source.contains(&format!("fn {name}()"))
}

fn check_cited_tests(title: &str, text: &str, minimum: usize) {
    let (tests, sources) = citations(text);
    assert!(
        tests.len() >= minimum,
        "found only {} cited tests in {title:?}: the parser or the section changed",
        tests.len()
    );
    let missing: Vec<String> = tests
        .iter()
        .filter(|(file, name)| !defines_test(&repo_file(file), name))
        .map(|(file, name)| format!("{file} {name}"))
        .collect();
    assert!(
        missing.is_empty(),
        "the README's {title:?} cites tests that do not exist:\n{}",
        missing.join("\n")
    );
    for source in sources {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(&source);
        let text = if path.is_dir() {
            std::fs::read_dir(&path)
                .unwrap()
                .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default())
                .collect::<String>()
        } else {
            repo_file(&source)
        };
        assert!(
            text.contains("#[test]"),
            "the README's {title:?} cites unit tests in {source}, which has none"
        );
    }
}

#[test]
fn every_test_the_faults_table_cites_exists() {
    let readme = repo_file("README.md");
    let faults = section(&readme, "Faults");
    let rows = faults.lines().filter(|line| line.starts_with("| ")).count();
    assert!(rows > 20, "the Faults table has only {rows} lines");
    check_cited_tests("Faults", faults, 40);
}

#[test]
fn every_test_the_reload_section_cites_exists() {
    let readme = repo_file("README.md");
    check_cited_tests(
        "Reloads without failed requests",
        section(&readme, "Reloads without failed requests"),
        4,
    );
}

#[test]
fn every_row_of_the_exit_status_table_has_its_test() {
    let readme = repo_file("README.md");
    let table = section(&readme, "Exit status");
    let codes: Vec<u8> = table
        .lines()
        .filter_map(|line| line.strip_prefix("| ")?.split(' ').next()?.parse().ok())
        .collect();
    // The codes main.rs's `enum Exit` defines, so a new exit status needs its row and its test.
    let main = repo_file("src/main.rs");
    let enum_body = main
        .split_once("enum Exit {")
        .and_then(|(_, rest)| rest.split_once("\n}"))
        .expect("src/main.rs defines enum Exit")
        .0;
    let defined: Vec<u8> = enum_body
        .lines()
        .filter_map(|line| line.trim().strip_suffix(',')?.split_once(" = "))
        .filter_map(|(_, code)| code.parse().ok())
        .collect();
    assert!(defined.len() >= 12, "enum Exit parsed as {defined:?}");
    assert_eq!(
        codes, defined,
        "the exit-status table's rows against enum Exit"
    );
    let tests = repo_file("tests/exit_codes.rs");
    let missing: Vec<u8> = codes
        .into_iter()
        .filter(|code| !tests.contains(&format!("fn exit_{code}_")))
        .collect();
    assert!(
        missing.is_empty(),
        "tests/exit_codes.rs has no exit_N_ test for {missing:?}"
    );
}

#[test]
fn the_citation_parser_reads_file_then_names() {
    let (tests, sources) = citations(
        "| x | y | `tests/a.rs` `one_test`, `two_test`, `tests/b.rs` `three_test` (`--force`), \
         `src/model/` unit tests |",
    );
    assert_eq!(
        tests,
        [
            ("tests/a.rs".to_string(), "one_test".to_string()),
            ("tests/a.rs".to_string(), "two_test".to_string()),
            ("tests/b.rs".to_string(), "three_test".to_string()),
        ]
    );
    assert_eq!(sources.into_iter().collect::<Vec<_>>(), ["src/model/"]);
    assert!(defines_test("fn one_test() {", "one_test"));
    assert!(!defines_test("fn one_test_more() {", "one_test"));
}
