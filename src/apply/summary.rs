//! What an apply tells people: the one summary line (backends and servers added and removed,
//! read from the config text alone) and unified diffs. Knows HAProxy's section syntax, not the
//! model.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::Path;

use similar::TextDiff;

/// Keywords that open a section in an HAProxy configuration.
const SECTION_KEYWORDS: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "peers",
    "resolvers",
    "userlist",
    "mailers",
    "program",
    "http-errors",
    "ring",
    "cache",
    "fcgi-app",
];

/// Backends (`backend NAME` sections) and their servers (`server NAME ...` lines) of a config.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    pub backends: BTreeSet<String>,
    pub servers: BTreeSet<(String, String)>,
}

impl Inventory {
    pub fn of(config: &str) -> Inventory {
        let mut inventory = Inventory::default();
        let mut backend: Option<String> = None;
        for line in config.lines() {
            let mut words = line.split_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            if SECTION_KEYWORDS.contains(&keyword) {
                backend = match (keyword, words.next()) {
                    ("backend", Some(name)) => Some(name.to_string()),
                    _ => None,
                };
                if let Some(name) = &backend {
                    inventory.backends.insert(name.clone());
                }
            } else if let (Some(backend), "server", Some(name)) = (&backend, keyword, words.next())
            {
                inventory
                    .servers
                    .insert((backend.clone(), name.to_string()));
            }
        }
        inventory
    }
}

/// `applied PATH: backends +1 -0, servers +3 -2 (reloaded)`; `companions` counts the other
/// files (maps) that changed and is mentioned only when non-zero.
pub fn applied_line(path: &Path, old: &str, new: &str, companions: usize) -> String {
    let (before, after) = (Inventory::of(old), Inventory::of(new));
    let mut line = format!(
        "applied {}: backends +{} -{}, servers +{} -{}",
        path.display(),
        only_in(&after.backends, &before.backends),
        only_in(&before.backends, &after.backends),
        only_in(&after.servers, &before.servers),
        only_in(&before.servers, &after.servers),
    );
    if companions > 0 {
        let noun = if companions == 1 { "file" } else { "files" };
        line.push_str(&format!(", {companions} companion {noun} updated"));
    }
    line.push_str(" (reloaded)");
    line
}

/// How many entries of `a` are not in `b`.
fn only_in<T: Ord>(a: &BTreeSet<T>, b: &BTreeSet<T>) -> usize {
    a.difference(b).count()
}

/// Writes a unified diff `old` → `new` with the given header names; nothing when they are equal.
pub fn write_diff(
    out: &mut dyn Write,
    old: &str,
    new: &str,
    old_name: &str,
    new_name: &str,
) -> io::Result<()> {
    if old == new {
        return Ok(());
    }
    let diff = TextDiff::from_lines(old, new);
    write!(
        out,
        "{}",
        diff.unified_diff()
            .context_radius(3)
            .header(old_name, new_name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "\
global
  daemon
frontend marathon_http_in
  bind *:80
  use_backend web_10000 if host_web
backend web_10000
  balance roundrobin
  server 10_0_0_1_31000 10.0.0.1:31000
  server 10_0_0_2_31001 10.0.0.2:31001
backend db_10001
  server 10_0_0_3_31002 10.0.0.3:31002
";

    #[test]
    fn inventory_reads_backends_and_their_servers_only() {
        let inventory = Inventory::of("listen stats\n  server s 1.1.1.1:1\n");
        assert!(inventory.backends.is_empty());
        assert!(inventory.servers.is_empty());
        let inventory = Inventory::of(OLD);
        assert_eq!(inventory.backends.len(), 2);
        assert_eq!(inventory.servers.len(), 3);
        assert!(inventory
            .servers
            .contains(&("db_10001".to_string(), "10_0_0_3_31002".to_string())));
    }

    #[test]
    fn summary_counts_additions_and_removals() {
        let new = OLD
            .replace(
                "backend db_10001\n  server 10_0_0_3_31002 10.0.0.3:31002\n",
                "",
            )
            .replace("  server 10_0_0_2_31001 10.0.0.2:31001\n", "")
            + "backend api_10002\n  server a 10.0.0.4:1\n  server b 10.0.0.5:1\n";
        let line = applied_line(Path::new("/etc/haproxy/haproxy.cfg"), OLD, &new, 0);
        assert_eq!(
            line,
            "applied /etc/haproxy/haproxy.cfg: backends +1 -1, servers +2 -2 (reloaded)"
        );
        let line = applied_line(Path::new("h.cfg"), OLD, OLD, 2);
        assert_eq!(
            line,
            "applied h.cfg: backends +0 -0, servers +0 -0, 2 companion files updated (reloaded)"
        );
    }

    #[test]
    fn a_server_moving_between_backends_counts_both_ways() {
        let new = OLD.replace("backend db_10001", "backend db_10009");
        let line = applied_line(Path::new("c"), OLD, &new, 0);
        assert_eq!(line, "applied c: backends +1 -1, servers +1 -1 (reloaded)");
    }

    #[test]
    fn diff_is_empty_when_equal_and_names_both_sides() {
        let mut out = Vec::new();
        write_diff(&mut out, OLD, OLD, "a", "b").unwrap();
        assert!(out.is_empty());
        write_diff(
            &mut out,
            OLD,
            &OLD.replace("roundrobin", "leastconn"),
            "live",
            "cand",
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("--- live\n+++ cand\n@@"), "{text}");
        assert!(
            text.contains("\n-  balance roundrobin\n+  balance leastconn\n"),
            "{text}"
        );
    }
}
