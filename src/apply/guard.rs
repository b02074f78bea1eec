//! The blast-radius guard: refuses a candidate that would take away too much of what HAProxy
//! serves now — more than `--max-server-loss` percent of the live servers, a backend emptied of
//! all its servers, or every backend at once — unless `--force`. Reads config text only.
//!
//! Servers are counted, not matched by name: a rolling deploy replaces every task (and so every
//! server name) of an app while keeping the count, and must pass. A backend that disappears
//! with its app counts towards the percentage only — deleted, scaled to 0, or still in Marathon
//! with no task that can be served (restarting, none healthy): refusing the whole candidate for
//! one app's tasks would hold back every other team's change on every agent, while the
//! percentage still catches a short `/v2/tasks` answer; the summary names such a backend with
//! its app. One that stays but loses all its servers is refused on its own.

use std::fmt::Write;

use super::summary::Inventory;

/// Most backend names a refusal lists per kind; the rest are counted.
const LISTED_NAMES: usize = 8;

/// Why a candidate is refused: the one paragraph for the operator, or `None` when it passes.
#[cfg(test)]
pub fn refusal(live: &str, candidate: &str, max_loss_percent: u8) -> Option<String> {
    refusal_of(
        &Inventory::of(live),
        &Inventory::of(candidate),
        max_loss_percent,
    )
}

/// [`refusal`] from the inventories of the live config and the candidate.
pub fn refusal_of(before: &Inventory, after: &Inventory, max_loss_percent: u8) -> Option<String> {
    let live_servers = before.servers.len();
    if live_servers == 0 {
        return None; // nothing to lose
    }
    if after.backends.is_empty() {
        return Some(format!(
            "the candidate has no backends at all, while the live configuration has {} in {}: \
             an empty answer from Marathon never wipes a live configuration",
            counted(live_servers, "server"),
            counted(
                before.servers_per_backend().filter(|(_, n)| *n > 0).count(),
                "backend"
            )
        ));
    }

    let lost = live_servers.saturating_sub(after.servers.len());
    let too_many = lost * 100 > usize::from(max_loss_percent) * live_servers;
    // Both walks go along both sorted backend lists at once: no map of either side is built,
    // and no name looked up (issue 14).
    let emptied: Vec<String> = before
        .server_counts_against(after)
        .filter(|(_, count, candidate)| *count > 0 && *candidate == Some(0))
        .map(|(name, _, _)| name.to_string())
        .collect();
    if !too_many && emptied.is_empty() {
        return None;
    }

    let mut reason = format!(
        "it would remove {lost} of the {} ({}%",
        counted(live_servers, "live server"),
        lost * 100 / live_servers
    );
    if too_many {
        let _ = write!(reason, ", more than --max-server-loss {max_loss_percent}%");
    }
    reason.push(')');
    if !emptied.is_empty() {
        let _ = write!(
            reason,
            "; backends left without servers: {}",
            listed(&emptied)
        );
    }
    let removed: Vec<String> = before
        .server_counts_against(after)
        .filter(|(_, count, candidate)| *count > 0 && candidate.is_none())
        .map(|(name, _, _)| name.to_string())
        .collect();
    if !removed.is_empty() {
        let _ = write!(reason, "; backends removed: {}", listed(&removed));
    }
    Some(reason)
}

/// What the operator can do about a refusal. The guard sees only config text: it cannot tell
/// apps that really went away from a Marathon answer that is short, apps this run left out, or
/// a change of `--group`/`--strict-mode`, so it says what to check before `--force`.
pub fn what_to_do_of(before: &Inventory, after: &Inventory) -> String {
    let (kept, live_servers) = (after.servers.len(), before.servers.len());
    format!(
        "The candidate keeps {kept} of {}. If that is what Marathon runs now (apps removed or \
         scaled down on purpose), run once with --force; if not, the loss comes from upstream: \
         check Marathon's tasks for the backends named, the warnings about apps left out, and \
         --group/--strict-mode",
        counted(live_servers, "server")
    )
}

/// `1 server`, `2 servers`.
fn counted(count: usize, noun: &str) -> String {
    match count {
        1 => format!("1 {noun}"),
        _ => format!("{count} {noun}s"),
    }
}

/// `a, b, c and 4 more`.
fn listed(names: &[String]) -> String {
    let mut text = names[..names.len().min(LISTED_NAMES)].join(", ");
    if names.len() > LISTED_NAMES {
        let _ = write!(text, " and {} more", names.len() - LISTED_NAMES);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config with the given backends, each with `n` servers named `<prefix><i>`.
    fn config(backends: &[(&str, usize)], prefix: &str) -> String {
        let mut text = String::from("global\n  daemon\n\nfrontend f\n  bind :80\n");
        for (name, servers) in backends {
            text.push_str(&format!("\nbackend {name}\n  balance roundrobin\n"));
            for i in 0..*servers {
                text.push_str(&format!("  server {prefix}{i} 10.0.0.1:{}\n", 31000 + i));
            }
        }
        text
    }

    #[test]
    fn small_changes_and_rolling_deploys_pass() {
        let live = config(&[("a", 4), ("b", 4)], "s");
        assert_eq!(
            refusal(&live, &config(&[("a", 3), ("b", 3)], "s"), 50),
            None
        );
        // Every server renamed (new tasks), same count: not a loss.
        assert_eq!(
            refusal(&live, &config(&[("a", 4), ("b", 4)], "t"), 50),
            None
        );
        // Exactly the limit passes; growth always passes.
        assert_eq!(refusal(&live, &config(&[("a", 4)], "s"), 50), None);
        assert_eq!(refusal(&live, &config(&[("a", 9), ("b", 9)], "s"), 0), None);
    }

    #[test]
    fn losing_more_than_the_limit_is_refused_and_listed() {
        let live = config(&[("a", 4), ("b", 4), ("c", 2)], "s");
        let reason = refusal(&live, &config(&[("a", 4)], "s"), 50).unwrap();
        assert_eq!(
            reason,
            "it would remove 6 of the 10 live servers (60%, more than --max-server-loss 50%); \
             backends removed: b, c"
        );
        assert_eq!(refusal(&live, &config(&[("a", 4)], "s"), 60), None);
    }

    #[test]
    fn emptying_a_backend_is_refused_even_under_the_limit() {
        let live = config(&[("a", 9), ("b", 1)], "s");
        let reason = refusal(&live, &config(&[("a", 9), ("b", 0)], "s"), 50).unwrap();
        assert_eq!(
            reason,
            "it would remove 1 of the 10 live servers (10%); backends left without servers: b"
        );
        // A backend that was already empty may stay empty.
        let live = config(&[("a", 9), ("b", 0)], "s");
        assert_eq!(refusal(&live, &live.replace("s8 ", "t8 "), 50), None);
    }

    #[test]
    fn an_empty_candidate_never_replaces_a_live_config_with_servers() {
        let live = config(&[("a", 1), ("b", 2)], "s");
        let reason = refusal(&live, "global\n  daemon\n", 100).unwrap();
        assert!(reason.contains("no backends at all"), "{reason}");
        assert!(reason.contains("3 servers in 2 backends"), "{reason}");
        // Nothing live (first run, or only empty backends): nothing to protect.
        assert_eq!(refusal("", "global\n", 50), None);
        assert_eq!(refusal(&config(&[("a", 0)], "s"), "global\n", 50), None);
    }

    #[test]
    fn long_lists_are_cut() {
        let many: Vec<(String, usize)> = (0..20).map(|i| (format!("b{i:02}"), 1)).collect();
        let many: Vec<(&str, usize)> = many.iter().map(|(n, c)| (n.as_str(), *c)).collect();
        let live = config(&many, "s");
        let reason = refusal(&live, &config(&[("b00", 1)], "s"), 50).unwrap();
        assert!(
            reason
                .ends_with("backends removed: b01, b02, b03, b04, b05, b06, b07, b08 and 11 more"),
            "{reason}"
        );
    }

    #[test]
    fn a_backend_gone_with_its_tasks_counts_towards_the_percentage_only() {
        let live = config(&[("a", 9), ("web_10000", 1)], "s");
        let candidate = config(&[("a", 9)], "s");
        assert_eq!(refusal(&live, &candidate, 50), None);
        let reason = refusal(&live, &candidate, 5).unwrap();
        assert!(reason.ends_with("backends removed: web_10000"), "{reason}");
    }

    #[test]
    fn counts_of_one_are_singular() {
        let live = config(&[("a", 1)], "s");
        let reason = refusal(&live, "global\n  daemon\n", 100).unwrap();
        assert!(reason.contains("has 1 server in 1 backend:"), "{reason}");
        let reason = refusal(&live, &config(&[("a", 0)], "s"), 50).unwrap();
        assert!(
            reason.starts_with("it would remove 1 of the 1 live server (100%"),
            "{reason}"
        );
        let inventory = Inventory::of(&live);
        assert!(
            what_to_do_of(&inventory, &inventory).starts_with("The candidate keeps 1 of 1 server.")
        );
    }
}
