//! UTC timestamps in RFC 3339 form for log lines, deferral notes and the run record, without a
//! date crate: all we need is the calendar date of a Unix time.

use std::time::{SystemTime, UNIX_EPOCH};

/// `2026-11-25T10:31:07Z`: UTC, to the second.
pub fn utc_seconds(at: SystemTime) -> String {
    let (date, seconds) = date_and_second_of_day(at);
    format!("{date}T{}Z", clock_time(seconds))
}

/// `2026-11-25T10:16:12.123Z`: UTC, to the millisecond.
pub fn utc_millis(at: SystemTime) -> String {
    let (date, seconds) = date_and_second_of_day(at);
    let millis = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_millis();
    format!("{date}T{}.{millis:03}Z", clock_time(seconds))
}

fn date_and_second_of_day(at: SystemTime) -> (String, u64) {
    let seconds = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    (format!("{year:04}-{month:02}-{day:02}"), seconds % 86_400)
}

fn clock_time(second_of_day: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        let at = |secs: u64, millis: u64| {
            UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
        };
        assert_eq!(utc_seconds(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            utc_seconds(at(951_782_400 + 3661, 0)),
            "2000-02-29T01:01:01Z"
        );
        assert_eq!(utc_seconds(at(1_764_067_200, 0)), "2025-11-25T10:40:00Z");
        assert_eq!(utc_millis(at(1_764_067_200, 7)), "2025-11-25T10:40:00.007Z");
        let dates = [
            (0, (1970, 1, 1)),
            (11_016, (2000, 2, 29)),
            (11_017, (2000, 3, 1)),
            (-1, (1969, 12, 31)),
            (19_782, (2024, 2, 29)),
            (20_517, (2026, 3, 5)),
        ];
        for (days, expected) in dates {
            assert_eq!(civil_from_days(days), expected, "{days}");
        }
    }
}
