//! Blue/green deployments (`HAPROXY_DEPLOYMENT_*`, as written by marathon-lb's zdd.py): apps
//! sharing a deployment group merge into one app named after the group, and as many old tasks as
//! the new app's healthy instances allow are marked draining. Follows marathon-lb's `get_apps`
//! to the letter, including its quirks (see the comments). Pure.

use std::borrow::Cow;
use std::cmp::Ordering;

use crate::marathon::{App, Task};

use super::fields::shown;
use super::health;
use super::labels::python_integer;

pub const GROUP_LABEL: &str = "HAPROXY_DEPLOYMENT_GROUP";
pub const STARTED_AT_LABEL: &str = "HAPROXY_DEPLOYMENT_STARTED_AT";
pub const NEW_INSTANCES_LABEL: &str = "HAPROXY_DEPLOYMENT_NEW_INSTANCES";
pub const TARGET_INSTANCES_LABEL: &str = "HAPROXY_DEPLOYMENT_TARGET_INSTANCES";

/// An app as the service pass sees it: possibly renamed to its deployment group, with its tasks
/// (for a merged group: the old app's tasks, sorted by id, then the new app's).
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// Index of the app in `/v2/apps` whose labels and settings this candidate carries.
    pub source: usize,
    pub app: &'a App,
    /// The app id, or the deployment group with a leading `/`.
    pub id: Cow<'a, str>,
    /// An app's own tasks are borrowed from the pass's list of them; a merged group's are its
    /// own.
    pub tasks: Cow<'a, [CandidateTask<'a>]>,
}

#[derive(Debug, Clone, Copy)]
pub struct CandidateTask<'a> {
    pub task: &'a Task,
    pub draining: bool,
}

/// A merge marathon-lb would have died on, blamed on one app (by its `source` index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeFault {
    pub source: usize,
    pub label: Option<String>,
    pub message: String,
}

/// The deployment group of an app, with a leading `/`. `Err` for an empty label (marathon-lb
/// indexes its first character and dies), and for one that is not a Marathon app id once
/// prefixed: it becomes the app id, so the backend and frontend names.
pub fn group_of(app: &App) -> Option<Result<String, String>> {
    let group = app.labels.get(GROUP_LABEL)?;
    let id = match group.chars().next() {
        None => return Some(Err("empty deployment group".to_string())),
        Some('/') => group.to_string(),
        Some(_) => format!("/{group}"),
    };
    Some(match super::fields::check_app_id(&id) {
        Ok(()) => Ok(id),
        Err(why) => Err(format!("the deployment group becomes the app id: {why}")),
    })
}

/// Merges `cur` (later in `/v2/apps`) into the group so far, `prev`.
pub fn merge<'a>(
    prev: Candidate<'a>,
    cur: Candidate<'a>,
    cur_has_health_checks: bool,
) -> Result<Candidate<'a>, MergeFault> {
    let prev_date = started_at(&prev)?;
    let cur_date = started_at(&cur)?;
    let cur_is_newer = compare(&prev_date, &cur_date, &cur, STARTED_AT_LABEL)? == Ordering::Less;
    let (mut old, mut new) = if cur_is_newer {
        (prev, cur)
    } else {
        (cur, prev)
    };

    let target_instances = if new.app.labels.contains_key(NEW_INSTANCES_LABEL) {
        // marathon-lb tests `int(label != 0)`, which is 1 for any value: only presence counts.
        let new_scaled = last_scaling_at(&new)?;
        let old_scaled = last_scaling_at(&old)?;
        if compare(&old_scaled, &new_scaled, &new, "versionInfo.lastScalingAt")?
            == Ordering::Greater
        {
            std::mem::swap(&mut old, &mut new);
        }
        let label = new.app.labels.get(TARGET_INSTANCES_LABEL);
        // Saturating keeps the result exact for any instance count a cluster runs.
        match label.and_then(python_integer) {
            Some(target) => target.saturating_i64(),
            None => {
                return Err(MergeFault {
                    source: new.source,
                    label: Some(TARGET_INSTANCES_LABEL.to_string()),
                    message: match label {
                        Some(value) => format!("{} is not an integer", shown(value)),
                        None => format!("missing, but {NEW_INSTANCES_LABEL} is set"),
                    },
                })
            }
        }
    } else {
        1
    };

    // marathon-lb looks at the health checks of the app it is merging in (`cur`), whichever of
    // the two turned out newer.
    let healthy_new_instances = if cur_has_health_checks {
        new.tasks
            .iter()
            .filter(|t| health::alive(t.task) == Some(true))
            .count() as i64
    } else {
        instances(&new)?
    };
    // Saturating: absurd instance counts must not overflow (Python's integers do not).
    let maximum_drainable = healthy_new_instances
        .saturating_add(instances(&old)?)
        .saturating_sub(target_instances)
        .max(0);
    // Sorted so that the same old tasks are drained run after run.
    let mut old_tasks = std::mem::take(&mut old.tasks).into_owned();
    old_tasks.sort_by(|a, b| a.task.id.cmp(&b.task.id));
    let drain = (old_tasks.len() as i64)
        .min(healthy_new_instances)
        .min(maximum_drainable)
        .max(0);
    for task in old_tasks.iter_mut().take(drain as usize) {
        task.draining = true;
    }
    old_tasks.extend_from_slice(&new.tasks);
    Ok(Candidate {
        tasks: Cow::Owned(old_tasks),
        ..old
    })
}

fn instances(candidate: &Candidate<'_>) -> Result<i64, MergeFault> {
    candidate.app.instances.ok_or_else(|| MergeFault {
        source: candidate.source,
        label: None,
        message: "no \"instances\" to merge its deployment group with".to_string(),
    })
}

fn started_at(candidate: &Candidate<'_>) -> Result<Stamp, MergeFault> {
    match candidate.app.labels.get(STARTED_AT_LABEL) {
        // An app deployed without zdd has no date; marathon-lb takes `datetime.min`.
        None => Ok(Stamp::Naive(DATETIME_MIN)),
        Some(text) => parse_timestamp(text).ok_or_else(|| MergeFault {
            source: candidate.source,
            label: Some(STARTED_AT_LABEL.to_string()),
            message: format!("{} is not an ISO-8601 timestamp", shown(text)),
        }),
    }
}

fn last_scaling_at(candidate: &Candidate<'_>) -> Result<Stamp, MergeFault> {
    let text = candidate
        .app
        .version_info
        .as_ref()
        .and_then(|v| v.last_scaling_at.as_deref());
    text.and_then(parse_timestamp).ok_or_else(|| MergeFault {
        source: candidate.source,
        label: None,
        message: match text {
            Some(text) => {
                format!(
                    "versionInfo.lastScalingAt {} is not an ISO-8601 timestamp",
                    shown(text)
                )
            }
            None => "no versionInfo.lastScalingAt to merge its deployment group with".to_string(),
        },
    })
}

/// Python refuses to order a date with a zone against one without; marathon-lb then dies.
fn compare(
    left: &Stamp,
    right: &Stamp,
    blamed: &Candidate<'_>,
    what: &str,
) -> Result<Ordering, MergeFault> {
    left.partial_cmp(right).ok_or_else(|| MergeFault {
        source: blamed.source,
        label: (what == STARTED_AT_LABEL).then(|| what.to_string()),
        message: format!(
            "{what}: cannot compare a timestamp with a time zone to one without \
             (or to a missing one) within deployment group {}",
            blamed.id
        ),
    })
}

/// Python's `datetime.min` (0001-01-01T00:00), in [`Stamp::Naive`] microseconds.
const DATETIME_MIN: i64 = -719_162 * 86_400_000_000;

/// A parsed timestamp as Python's `datetime` orders it: naive ones compare among themselves,
/// zoned ones by instant, and the two kinds not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// Microseconds since 1970-01-01T00:00, wall clock.
    Naive(i64),
    /// Microseconds since the epoch, UTC.
    Zoned(i64),
}

impl PartialOrd for Stamp {
    fn partial_cmp(&self, other: &Stamp) -> Option<Ordering> {
        match (self, other) {
            (Stamp::Naive(a), Stamp::Naive(b)) | (Stamp::Zoned(a), Stamp::Zoned(b)) => {
                Some(a.cmp(b))
            }
            _ => None,
        }
    }
}

/// ISO-8601 as zdd.py and Marathon write it: `YYYY-MM-DD`, optionally `T` (or a space) and
/// `HH:MM[:SS[.ffffff]]`, optionally `Z`, `±HH:MM`, `±HHMM`, `±HH` or ` UTC`. Fractions beyond
/// microseconds are cut, as dateutil does. Other forms dateutil guesses at are refused.
pub fn parse_timestamp(text: &str) -> Option<Stamp> {
    let text = text.trim();
    let date = text.get(..10)?;
    let rest = &text[10..];
    let dashes = date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-';
    if !dashes {
        return None;
    }
    let year: i64 = fixed_digits(date.get(0..4)?)?;
    let month: i64 = fixed_digits(date.get(5..7)?)?;
    let day: i64 = fixed_digits(date.get(8..10)?)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) || year < 1 {
        return None;
    }
    let mut micros = days_from_civil(year, month, day) * 86_400_000_000;
    let mut rest = rest;
    if let Some(time) = rest.strip_prefix(['T', 't', ' ']) {
        let (consumed, time_micros) = parse_time(time)?;
        micros += time_micros;
        rest = &time[consumed..];
    }
    let offset_minutes = match parse_zone(rest)? {
        None => return Some(Stamp::Naive(micros)),
        Some(minutes) => minutes,
    };
    Some(Stamp::Zoned(micros - offset_minutes * 60_000_000))
}

/// `HH:MM[:SS[.f+]]` → (bytes consumed, microseconds).
fn parse_time(time: &str) -> Option<(usize, i64)> {
    let hour: i64 = fixed_digits(time.get(0..2)?)?;
    if time.as_bytes().get(2) != Some(&b':') {
        return None;
    }
    let minute: i64 = fixed_digits(time.get(3..5)?)?;
    let mut consumed = 5;
    let mut second = 0;
    let mut fraction = 0;
    if time.as_bytes().get(5) == Some(&b':') {
        second = fixed_digits(time.get(6..8)?)?;
        consumed = 8;
        if matches!(time.as_bytes().get(8), Some(b'.' | b',')) {
            let digits: String = time[9..].chars().take_while(char::is_ascii_digit).collect();
            if digits.is_empty() {
                return None;
            }
            consumed = 9 + digits.len();
            let padded = format!("{:0<6}", &digits[..digits.len().min(6)]);
            fraction = padded.parse().ok()?;
        }
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some((
        consumed,
        ((hour * 60 + minute) * 60 + second) * 1_000_000 + fraction,
    ))
}

/// Zone suffix → `Some(None)` for none, `Some(Some(minutes east of UTC))`, `None` if malformed.
fn parse_zone(zone: &str) -> Option<Option<i64>> {
    let zone = zone.trim_start();
    if zone.is_empty() {
        return Some(None);
    }
    if matches!(zone, "Z" | "z" | "UTC" | "GMT") {
        return Some(Some(0));
    }
    let sign = match zone.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits = zone[1..].replace(':', "");
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (hours, minutes) = match digits.len() {
        2 => (fixed_digits::<i64>(&digits)?, 0),
        4 => (
            fixed_digits::<i64>(&digits[..2])?,
            fixed_digits::<i64>(&digits[2..])?,
        ),
        _ => return None,
    };
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some(Some(sign * (hours * 60 + minutes)))
}

fn fixed_digits<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_zdd_and_marathon_write() {
        let naive = |text| match parse_timestamp(text) {
            Some(Stamp::Naive(micros)) => micros,
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(naive("1970-01-01T00:00:00"), 0);
        assert_eq!(naive("1970-01-02"), 86_400_000_000);
        assert_eq!(naive("1970-01-01T00:00:01.5"), 1_500_000);
        assert_eq!(naive("1970-01-01 00:01"), 60_000_000);
        assert_eq!(naive("1970-01-01T00:00:00.1234567"), 123_456);
        assert!(naive("2019-06-03T10:15:00.123456") > naive("2019-06-03T09:30:00.000000"));
        assert_eq!(
            parse_timestamp("2019-06-03T10:00:00.000Z"),
            Some(Stamp::Zoned(1_559_556_000_000_000))
        );
        assert_eq!(
            parse_timestamp("2019-06-03T12:00:00+02:00"),
            parse_timestamp("2019-06-03T10:00:00Z")
        );
        assert_eq!(
            parse_timestamp("2019-06-03T07:00:00-0300"),
            parse_timestamp("2019-06-03T10:00Z")
        );
        assert_eq!(
            parse_timestamp("2000-02-29T00:00:00"),
            Some(Stamp::Naive(951_782_400_000_000))
        );
    }

    #[test]
    fn timestamps_refused() {
        for text in [
            "",
            "yesterday",
            "2019-13-01",
            "2019-02-29",
            "2019-06-03T25:00",
            "2019-06-03T10:00:00+5",
            "2019/06/03",
        ] {
            assert_eq!(parse_timestamp(text), None, "{text}");
        }
    }

    #[test]
    fn naive_and_zoned_do_not_compare() {
        assert_eq!(
            Stamp::Naive(DATETIME_MIN).partial_cmp(&Stamp::Zoned(0)),
            None
        );
        assert_eq!(Stamp::Naive(0).partial_cmp(&Stamp::Zoned(0)), None);
        assert_eq!(
            parse_timestamp("0001-01-01T00:00:00"),
            Some(Stamp::Naive(DATETIME_MIN))
        );
    }
}
