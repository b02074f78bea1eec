//! What an apply tells people: the one summary line (backends and servers added and removed,
//! read from the config text alone), one line per changed backend (named with its app id when
//! the caller hands in which app each backend serves), and unified diffs. Knows HAProxy's
//! section syntax, not the model.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;

use similar::TextDiff;

/// Keywords that open a section in an HAProxy 2.6 configuration: a line whose first word is one
/// of these opens a section (read by the summary and the runtime-update classifier alike).
pub(super) const SECTION_KEYWORDS: &[&str] = &[
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
    "log-forward",
];

/// Backends (`backend NAME` sections) and their servers (`server NAME ...` lines) of a config,
/// borrowed from its text: read once per config and handed to the guard, the summary and the
/// run record, since the candidate of a large cluster is megabytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Inventory<'a> {
    pub backends: BTreeSet<&'a str>,
    pub servers: BTreeSet<(&'a str, &'a str)>,
    /// Each backend's server addresses (`ADDR:PORT`, the word after the server's name).
    pub addresses: BTreeMap<&'a str, BTreeSet<&'a str>>,
}

/// What the caller knows of the apps behind backends. Plain data: `apply` knows no model types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackendApps {
    /// Backend name → Marathon app id: the candidate's backends, and those it lacks whose app
    /// the caller can name (one Marathon still has, or a deleted one's last good definition).
    pub names: BTreeMap<String, String>,
    /// Backends the candidate lacks although their app is still in Marathon, selected, and
    /// meant to run (instances not 0): none of its tasks can be served. The summary says so,
    /// so that an app restarting or failing its health checks is not mistaken for a deletion.
    pub unserved: BTreeSet<String>,
}

/// Most changed backends [`backend_changes`] lists; the rest are counted. They share one log
/// line with the summary, so it stays readable: at most a few hundred characters.
const LISTED_BACKENDS: usize = 5;
/// Most servers listed per sign (`+`/`-`) for one backend; the rest are counted.
const LISTED_SERVERS: usize = 3;

impl<'a> Inventory<'a> {
    pub fn of(config: &'a str) -> Inventory<'a> {
        // Gathered in lists and sorted once: a rendered config lists its backends and servers
        // nearly in order, which a sort takes in one pass where a tree compares at each insert.
        let (mut backends, mut servers, mut addresses) = (Vec::new(), Vec::new(), Vec::new());
        scan(config, &mut backends, &mut servers, Some(&mut addresses));
        addresses.sort_unstable();
        addresses.dedup();
        Inventory {
            backends: backends.into_iter().collect(),
            servers: servers.into_iter().collect(),
            addresses: addresses
                .chunk_by(|a, b| a.0 == b.0)
                .map(|group| {
                    (
                        group[0].0,
                        group.iter().map(|(_, address)| *address).collect(),
                    )
                })
                .collect(),
        }
    }
}

/// The run record's view of a config: its backends and how many servers they have, counted as
/// [`Inventory::of`] does but without the addresses the record never reads.
pub fn backends_and_server_count(config: &str) -> (BTreeSet<&str>, usize) {
    let (mut backends, mut servers) = (Vec::new(), Vec::new());
    scan(config, &mut backends, &mut servers, None);
    servers.sort_unstable();
    servers.dedup();
    (backends.into_iter().collect(), servers.len())
}

/// Each backend's name, each of its servers (backend, name), and, when asked, each server's
/// address (backend, `ADDR:PORT`), in the config's order.
fn scan<'a>(
    config: &'a str,
    backends: &mut Vec<&'a str>,
    servers: &mut Vec<(&'a str, &'a str)>,
    mut addresses: Option<&mut Vec<(&'a str, &'a str)>>,
) {
    let mut backend: Option<&str> = None;
    for line in config.lines() {
        let mut words = line.split_whitespace();
        let Some(keyword) = words.next() else {
            continue;
        };
        if SECTION_KEYWORDS.contains(&keyword) {
            backend = match (keyword, words.next()) {
                ("backend", Some(name)) => Some(name),
                _ => None,
            };
            backends.extend(backend);
        } else if let (Some(backend), "server", Some(name)) = (backend, keyword, words.next()) {
            servers.push((backend, name));
            if let (Some(addresses), Some(address)) = (addresses.as_deref_mut(), words.next()) {
                addresses.push((backend, address));
            }
        }
    }
}

/// `applied PATH: backends +1 -0, servers +3 -2 (reloaded)`; `companions` counts the other
/// files (maps) that changed and is mentioned only when non-zero.
/// `how` (`reloaded`, `reloaded: <why>`, `runtime, no reload`) closes the line in parentheses.
#[cfg(test)]
pub fn applied_line(path: &Path, old: &str, new: &str, companions: usize, how: &str) -> String {
    let (before, after) = (Inventory::of(old), Inventory::of(new));
    applied_line_of(path, &before, &after, companions, how)
}

/// [`applied_line`] from the inventories of the old and new config.
pub fn applied_line_of(
    path: &Path,
    before: &Inventory,
    after: &Inventory,
    companions: usize,
    how: &str,
) -> String {
    let mut line = format!("applied {}: {}", path.display(), counts_of(before, after));
    if companions > 0 {
        let noun = if companions == 1 { "file" } else { "files" };
        line.push_str(&format!(", {companions} companion {noun} updated"));
    }
    line.push_str(&format!(" ({how})"));
    line
}

/// `backends +1 -0, servers +3 -2`.
pub fn counts_of(before: &Inventory, after: &Inventory) -> String {
    format!(
        "backends +{} -{}, servers +{} -{}",
        only_in(&after.backends, &before.backends),
        only_in(&before.backends, &after.backends),
        only_in(&after.servers, &before.servers),
        only_in(&before.servers, &after.servers),
    )
}

/// One entry per backend whose servers changed, `/shop (shop_10001): +10.0.2.5:31005
/// -10.0.1.7:31002`, at most [`LISTED_BACKENDS`] of them and a last one counting the rest. A
/// backend is named by its app id when `apps` knows it; a new or removed backend says so.
#[cfg(test)]
pub fn backend_changes(old: &str, new: &str, apps: &BackendApps) -> Vec<String> {
    backend_changes_of(&Inventory::of(old), &Inventory::of(new), apps)
}

/// [`backend_changes`] from the inventories of the old and new config.
pub fn backend_changes_of(
    before: &Inventory,
    after: &Inventory,
    apps: &BackendApps,
) -> Vec<String> {
    let none = BTreeSet::new();
    let names: BTreeSet<&str> = before
        .backends
        .iter()
        .chain(&after.backends)
        .copied()
        .collect();
    let mut lines = Vec::new();
    let mut unlisted = 0;
    for name in names {
        let old_servers = before.addresses.get(name).unwrap_or(&none);
        let new_servers = after.addresses.get(name).unwrap_or(&none);
        let (is_new, is_gone) = (
            !before.backends.contains(name),
            !after.backends.contains(name),
        );
        if old_servers == new_servers && !is_new && !is_gone {
            continue;
        }
        if lines.len() == LISTED_BACKENDS {
            unlisted += 1;
            continue;
        }
        let mut line = match apps.names.get(name) {
            Some(app) => format!("{app} ({name}):"),
            None => format!("{name}:"),
        };
        if is_new {
            line.push_str(" new backend");
        } else if is_gone && apps.unserved.contains(name) {
            line.push_str(" backend removed (no task of the app can be served)");
        } else if is_gone {
            line.push_str(" backend removed");
        }
        listed_servers(&mut line, '+', new_servers.difference(old_servers));
        listed_servers(&mut line, '-', old_servers.difference(new_servers));
        lines.push(line);
    }
    if unlisted > 0 {
        let noun = if unlisted == 1 { "backend" } else { "backends" };
        lines.push(format!("and {unlisted} more {noun} changed"));
    }
    lines
}

/// ` +a +b +c and 4 more` onto `line`.
fn listed_servers<'a>(line: &mut String, sign: char, servers: impl Iterator<Item = &'a &'a str>) {
    let servers: Vec<&str> = servers.copied().collect();
    for server in servers.iter().take(LISTED_SERVERS) {
        let _ = write!(line, " {sign}{server}");
    }
    if servers.len() > LISTED_SERVERS {
        let _ = write!(line, " {sign}{} more", servers.len() - LISTED_SERVERS);
    }
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

    #[test]
    fn the_run_record_counts_what_the_inventory_holds() {
        let duplicated = format!("{OLD}backend web_10000\n  server web1 9.9.9.9:1\n");
        for config in [
            OLD,
            duplicated.as_str(),
            "",
            "listen stats\n  server s 1.1.1.1:1\n",
        ] {
            let inventory = Inventory::of(config);
            let (backends, servers) = backends_and_server_count(config);
            assert_eq!(backends, inventory.backends, "{config}");
            assert_eq!(servers, inventory.servers.len(), "{config}");
        }
    }

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
        assert!(inventory.servers.contains(&("db_10001", "10_0_0_3_31002")));
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
        let line = applied_line(
            Path::new("/etc/haproxy/haproxy.cfg"),
            OLD,
            &new,
            0,
            "reloaded",
        );
        assert_eq!(
            line,
            "applied /etc/haproxy/haproxy.cfg: backends +1 -1, servers +2 -2 (reloaded)"
        );
        let line = applied_line(Path::new("h.cfg"), OLD, OLD, 2, "reloaded");
        assert_eq!(
            line,
            "applied h.cfg: backends +0 -0, servers +0 -0, 2 companion files updated (reloaded)"
        );
    }

    #[test]
    fn a_server_moving_between_backends_counts_both_ways() {
        let new = OLD.replace("backend db_10001", "backend db_10009");
        let line = applied_line(Path::new("c"), OLD, &new, 0, "reloaded");
        assert_eq!(line, "applied c: backends +1 -1, servers +1 -1 (reloaded)");
    }

    #[test]
    fn each_changed_backend_is_named_with_its_app_and_servers() {
        let new = OLD.replace("10.0.0.2:31001", "10.0.2.5:31005").replace(
            "backend db_10001\n  server 10_0_0_3_31002 10.0.0.3:31002\n",
            "",
        ) + "backend api_10002\n  server a 10.0.0.4:1\n";
        let apps = BackendApps {
            names: BTreeMap::from([
                ("web_10000".to_string(), "/web".to_string()),
                ("api_10002".to_string(), "/api".to_string()),
                ("db_10001".to_string(), "/db".to_string()),
            ]),
            ..BackendApps::default()
        };
        assert_eq!(
            backend_changes(OLD, &new, &apps),
            [
                "/api (api_10002): new backend +10.0.0.4:1",
                "/db (db_10001): backend removed -10.0.0.3:31002",
                "/web (web_10000): +10.0.2.5:31005 -10.0.0.2:31001",
            ]
        );
        assert!(backend_changes(OLD, OLD, &apps).is_empty());
        let restarting = BackendApps {
            unserved: BTreeSet::from(["db_10001".to_string()]),
            ..apps
        };
        assert_eq!(
            backend_changes(OLD, &new, &restarting)[1],
            "/db (db_10001): backend removed (no task of the app can be served) -10.0.0.3:31002"
        );
    }

    #[test]
    fn long_change_lists_are_cut_with_a_count_of_the_rest() {
        let backend = |name: usize, servers: std::ops::Range<usize>| {
            let mut text = format!("backend b{name:02}\n");
            for s in servers {
                text.push_str(&format!("  server s{s} 10.0.0.{s}:80\n"));
            }
            text
        };
        let old: String = (0..12).map(|b| backend(b, 0..1)).collect();
        let new: String = (0..12).map(|b| backend(b, 1..9)).collect();
        let lines = backend_changes(&old, &new, &BackendApps::default());
        assert_eq!(lines.len(), 6);
        assert_eq!(
            lines[0],
            "b00: +10.0.0.1:80 +10.0.0.2:80 +10.0.0.3:80 +5 more -10.0.0.0:80"
        );
        assert_eq!(lines[5], "and 7 more backends changed");
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
