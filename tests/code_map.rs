//! ARCHITECTURE.md's code map stays true: every file under `src/` and `tests/` is in it.
//!
//! A file is covered by a row for its own path, or by the row of a directory above it that
//! names it by its path below that directory (`src/model/` naming `labels.rs`), or names the
//! subdirectory it is in (`tests/` naming `support/` covers the helpers there: a directory of
//! helpers or data is described as one thing).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

/// `(path, whole row)` for each row of the code map table.
fn code_map_rows() -> Vec<(String, String)> {
    let text = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/ARCHITECTURE.md"))
        .expect("reading ARCHITECTURE.md");
    let section = text
        .split("\n## ")
        .find(|section| section.starts_with("Code map"))
        .expect("ARCHITECTURE.md has a Code map section");
    section
        .lines()
        .filter_map(|line| {
            let path = line.strip_prefix("| `")?.split('`').next()?;
            Some((path.to_string(), line.to_string()))
        })
        .collect()
}

/// Every file under `dir`, relative to the crate root, `/`-separated.
fn files_under(root: &Path, dir: &str, found: &mut BTreeSet<String>) {
    for entry in fs::read_dir(root.join(dir)).unwrap().flatten() {
        let relative = format!("{dir}/{}", entry.file_name().to_string_lossy());
        if entry.file_type().unwrap().is_dir() {
            files_under(root, &relative, found);
        } else {
            found.insert(relative);
        }
    }
}

/// Whether the row names `name` as a code span of its own (`` `labels.rs` ``).
fn mentions(row: &str, name: &str) -> bool {
    row.contains(&format!("`{name}`"))
}

fn covered(file: &str, rows: &[(String, String)]) -> bool {
    rows.iter().any(|(path, row)| {
        if path == file {
            return true;
        }
        let Some(below) = path
            .ends_with('/')
            .then(|| file.strip_prefix(path.as_str()))
            .flatten()
        else {
            return false;
        };
        let first_directory = below
            .split_once('/')
            .map(|(directory, _)| format!("{directory}/"));
        mentions(row, below) || first_directory.is_some_and(|directory| mentions(row, &directory))
    })
}

#[test]
fn every_file_under_src_and_tests_is_in_the_code_map() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rows = code_map_rows();
    let mut files = BTreeSet::new();
    files_under(root, "src", &mut files);
    files_under(root, "tests", &mut files);
    let missing: Vec<&String> = files.iter().filter(|file| !covered(file, &rows)).collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map does not name: {missing:?}"
    );
}

#[test]
fn every_path_in_the_code_map_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (path, _) in code_map_rows() {
        assert!(
            root.join(&path).exists(),
            "the code map names {path}, which does not exist"
        );
    }
}
