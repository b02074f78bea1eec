//! Health checks as marathon-lb reads them: which of an app's checks a service port uses, and
//! which tasks `--health-check` lets through. Pure.

use std::collections::{HashMap, VecDeque};

use crate::marathon::{App, HealthCheck, Task};

/// The health check a service's servers are checked with, as `render` formats it. Marathon fills
/// in the timings on every app it returns (marathon-lb would crash without them); Marathon's own
/// defaults stand in here for a hand-written snapshot that lacks them (interval 60 s, timeout
/// 20 s, grace period 300 s, 3 failures), so `render` never needs to know Marathon's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCheck {
    /// `HTTP`, `TCP`, `MESOS_HTTP`, ...; never empty (a check without one leaves its app out).
    pub protocol: String,
    pub path: Option<String>,
    pub port_index: Option<i64>,
    pub port: Option<i64>,
    pub timeout_seconds: i64,
    pub interval_seconds: i64,
    pub grace_period_seconds: i64,
    pub max_consecutive_failures: i64,
}

impl ServiceCheck {
    pub fn of(check: &HealthCheck) -> ServiceCheck {
        ServiceCheck {
            protocol: check.protocol.clone(),
            path: check.path.clone(),
            port_index: check.port_index,
            port: check.port,
            timeout_seconds: check.timeout_seconds.unwrap_or(20),
            interval_seconds: check.interval_seconds.unwrap_or(60),
            grace_period_seconds: check.grace_period_seconds.unwrap_or(300),
            max_consecutive_failures: check.max_consecutive_failures.unwrap_or(3),
        }
    }
}

/// marathon-lb's `get_health_check`: the first check with a non-zero `port` (it applies to every
/// port), or with `portIndex` equal to `port_index`.
pub fn check_for_port(app: &App, port_index: i64) -> Option<&HealthCheck> {
    app.health_checks.iter().find(|check| {
        check.port.is_some_and(|port| port != 0) || check.port_index == Some(port_index)
    })
}

/// Whether one of the task's results is alive (`None` when it has no results).
pub fn alive(task: &Task) -> Option<bool> {
    Some(task.health_check_results?.any_alive)
}

/// marathon-lb remembers the last verdict per task id in a 100-entry LRU and uses it for a task
/// that comes without results. Each of our runs starts empty, as a fresh marathon-lb does, so
/// it only matters when one run lists a task id twice; kept so that even then we agree.
///
/// Kept cheap, since `--health-check` asks it about every task of a checked app: ids are
/// borrowed from the tasks, and the age order is a queue in which a refreshed entry leaves its
/// old place behind as a stale one (skipped when it comes up), where a tree of owned ids cost
/// two allocations and a rebalance per task (issue 14).
#[derive(Debug, Default)]
pub struct ResultCache<'t> {
    /// Each remembered id: its verdict and its age (the clock when it was last touched).
    verdicts: HashMap<&'t str, (bool, u64)>,
    /// (age, id), oldest first: every remembered id at its age, and stale entries of ids
    /// touched again since (their age no longer the id's).
    by_age: VecDeque<(u64, &'t str)>,
    clock: u64,
}

const CACHE_CAPACITY: usize = 100;

impl<'t> ResultCache<'t> {
    /// `--health-check`: whether the task may serve, remembering what its results said.
    pub fn admits(&mut self, task: &'t Task) -> bool {
        match alive(task) {
            Some(verdict) => {
                self.remember(&task.id, verdict);
                verdict
            }
            None => self.recall(&task.id),
        }
    }

    fn recall(&mut self, id: &'t str) -> bool {
        let Some(&(verdict, _)) = self.verdicts.get(id) else {
            return false;
        };
        self.touch(id, verdict);
        verdict
    }

    fn remember(&mut self, id: &'t str, verdict: bool) {
        if !self.verdicts.contains_key(id) && self.verdicts.len() >= CACHE_CAPACITY {
            self.forget_oldest();
        }
        self.touch(id, verdict);
    }

    /// Drops the least recently touched id.
    fn forget_oldest(&mut self) {
        while let Some((age, id)) = self.by_age.pop_front() {
            if self
                .verdicts
                .get(id)
                .is_some_and(|&(_, current)| current == age)
            {
                self.verdicts.remove(id);
                return;
            }
        }
    }

    fn touch(&mut self, id: &'t str, verdict: bool) {
        self.clock += 1;
        self.verdicts.insert(id, (verdict, self.clock));
        self.by_age.push_back((self.clock, id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task that lives as long as the test, as Marathon's answer lives as long as a run.
    fn task(json: &str) -> &'static Task {
        Box::leak(Box::new(serde_json::from_str(json).unwrap()))
    }

    #[test]
    fn verdicts_from_results() {
        let mut cache = ResultCache::default();
        assert!(cache.admits(task(
            r#"{"id": "a", "healthCheckResults": [{"alive": false}, {"alive": true}]}"#
        )));
        assert!(!cache.admits(task(
            r#"{"id": "b", "healthCheckResults": [{"alive": false}]}"#
        )));
        assert!(!cache.admits(task(r#"{"id": "c", "healthCheckResults": []}"#)));
        assert!(!cache.admits(task(r#"{"id": "d"}"#)));
    }

    #[test]
    fn a_repeated_task_id_without_results_takes_the_remembered_verdict() {
        let mut cache = ResultCache::default();
        assert!(cache.admits(task(
            r#"{"id": "a", "healthCheckResults": [{"alive": true}]}"#
        )));
        assert!(cache.admits(task(r#"{"id": "a"}"#)));
        // The oldest of more than 100 verdicts is forgotten.
        for n in 0..100 {
            cache.admits(task(&format!(
                r#"{{"id": "t{n}", "healthCheckResults": []}}"#
            )));
        }
        assert!(!cache.admits(task(r#"{"id": "a"}"#)));
    }

    #[test]
    fn recalling_refreshes_an_entry() {
        let mut cache = ResultCache::default();
        cache.admits(task(
            r#"{"id": "a", "healthCheckResults": [{"alive": true}]}"#,
        ));
        for n in 0..99 {
            cache.admits(task(&format!(
                r#"{{"id": "t{n}", "healthCheckResults": []}}"#
            )));
        }
        assert!(cache.admits(task(r#"{"id": "a"}"#)));
        cache.admits(task(r#"{"id": "new", "healthCheckResults": []}"#));
        // "t0" was the oldest after "a" was recalled, so it went instead of "a".
        assert!(cache.admits(task(r#"{"id": "a"}"#)));
    }

    #[test]
    fn the_cache_forgets_the_least_recently_touched_as_a_plain_lru_does() {
        // Ids from a pool larger than the cache, with results, without, alive or not.
        let tasks: Vec<&Task> = (0..3000u64)
            .map(|n| {
                let scrambled = n.wrapping_mul(2_654_435_761) % 1000;
                let id = scrambled % 160;
                match scrambled % 3 {
                    0 => task(&format!(r#"{{"id": "t{id}"}}"#)),
                    1 => task(&format!(
                        r#"{{"id": "t{id}", "healthCheckResults": [{{"alive": true}}]}}"#
                    )),
                    _ => task(&format!(
                        r#"{{"id": "t{id}", "healthCheckResults": [{{"alive": false}}]}}"#
                    )),
                }
            })
            .collect();
        // The reference: most recently touched last.
        let mut lru: Vec<(&str, bool)> = Vec::new();
        let mut cache = ResultCache::default();
        for task in tasks {
            let position = lru.iter().position(|(id, _)| *id == task.id);
            let expected = match (alive(task), position) {
                (Some(verdict), Some(at)) => {
                    lru.remove(at);
                    lru.push((&task.id, verdict));
                    verdict
                }
                (Some(verdict), None) => {
                    if lru.len() == CACHE_CAPACITY {
                        lru.remove(0);
                    }
                    lru.push((&task.id, verdict));
                    verdict
                }
                (None, Some(at)) => {
                    let entry = lru.remove(at);
                    lru.push(entry);
                    entry.1
                }
                (None, None) => false,
            };
            assert_eq!(cache.admits(task), expected, "{}", task.id);
        }
        assert!(cache.verdicts.len() <= CACHE_CAPACITY);
    }
}
