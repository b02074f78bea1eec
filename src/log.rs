//! Operator log lines: one line per event on stderr, filtered by `--log-level` and written as
//! plain text or as one JSON object per line (`--log-format`). Knows nothing of runs or configs;
//! callers say what happened.
//!
//! Text lines carry no timestamp because cron mail and journald stamp lines themselves; JSON
//! lines carry `time` for log shippers that do not. When stderr is connected to journald
//! (`JOURNAL_STREAM`), every line starts with its syslog priority (`<4>`), which journald takes
//! off and records, so `journalctl -p warning` works.
//!
//! Levels, and what each adds to the one below it:
//! - `error`: a run failed (the live config is untouched or was restored).
//! - `warn`: a problem that did not stop the run: an app left out, a Marathon source skipped, a
//!   marathon-lb flag that has no effect. Warnings about the candidate are printed with a change,
//!   not on every unchanged run, so an unchanged cron run stays silent.
//! - `info` (the default): what changed (the one summary line per apply), and the `--interval`
//!   loop stopping.
//! - `debug`: every run, including unchanged ones and their warnings.

use std::fmt;
use std::io::{self, Write};
use std::sync::OnceLock;
use std::time::SystemTime;

use anyhow::{bail, Result};
use serde_json::Value;

/// How much is logged. Ordered: a line is written when its level is at or below the setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    /// Our names, plus marathon-lb's Python ones in any case (`WARNING`, `CRITICAL`, `NOTSET`),
    /// so a marathon-lb command line keeps working.
    pub fn parse(text: &str) -> Result<Level> {
        Ok(match text.trim().to_ascii_lowercase().as_str() {
            "error" | "critical" => Level::Error,
            "warn" | "warning" => Level::Warn,
            "info" => Level::Info,
            "debug" | "notset" => Level::Debug,
            _ => bail!("'{text}' is not a log level (error, warn, info or debug)"),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }

    /// sd-daemon(3) priority prefix: LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG.
    fn journald_prefix(self) -> &'static str {
        match self {
            Level::Error => "<3>",
            Level::Warn => "<4>",
            Level::Info => "<6>",
            Level::Debug => "<7>",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `haproxy-marathon-sync: warning: MESSAGE`; fields are for JSON only (the message already
    /// says what they say).
    Text,
    /// `{"time":"2026-11-25T10:16:12.123Z","level":"warn","msg":"MESSAGE",FIELDS...}`.
    Json,
}

/// The logging settings of one process. Default: `info`, text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub level: Level,
    pub format: Format,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            level: Level::Info,
            format: Format::Text,
        }
    }
}

/// One structured field of a line: a name and a JSON value.
pub type Field<'a> = (&'a str, Value);

static SETTINGS: OnceLock<Settings> = OnceLock::new();
static UNDER_JOURNALD: OnceLock<bool> = OnceLock::new();

/// Sets the process's settings; the first call wins. Without it, [`Settings::default`] holds.
pub fn init(settings: Settings) {
    SETTINGS.set(settings).ok();
}

fn settings() -> Settings {
    SETTINGS.get().copied().unwrap_or_default()
}

/// Whether a line at `level` would be written.
pub fn enabled(level: Level) -> bool {
    level <= settings().level
}

/// Writes one line at `level` to `out`, when the settings let it through.
pub fn write(out: &mut dyn Write, level: Level, msg: &str, fields: &[Field]) {
    let settings = settings();
    if level > settings.level {
        return;
    }
    let line = format_line(
        settings.format,
        under_journald(),
        SystemTime::now(),
        level,
        msg,
        fields,
    );
    // A log line that cannot be written has nowhere better to go.
    out.write_all(line.as_bytes()).ok();
}

/// Writes one line at `level` to stderr.
pub fn emit(level: Level, msg: &str, fields: &[Field]) {
    write(&mut io::stderr().lock(), level, msg, fields);
}

/// The complete line, newline included.
fn format_line(
    format: Format,
    journald: bool,
    now: SystemTime,
    level: Level,
    msg: &str,
    fields: &[Field],
) -> String {
    let prefix = if journald {
        level.journald_prefix()
    } else {
        ""
    };
    // A message is one line; a multi-line child stderr stays readable and one event long.
    let msg = msg.trim_end().replace('\n', " | ");
    match format {
        Format::Text => {
            let label = match level {
                Level::Error => "error: ",
                Level::Warn => "warning: ",
                Level::Info => "",
                Level::Debug => "debug: ",
            };
            format!("{prefix}haproxy-marathon-sync: {label}{msg}\n")
        }
        Format::Json => {
            // Written by hand so time, level and msg come first whatever serde_json's map order.
            let mut line = format!(
                "{prefix}{{\"time\":\"{}\",\"level\":\"{}\",\"msg\":{}",
                crate::clock::utc_millis(now),
                level.name(),
                Value::String(msg)
            );
            let mut seen = vec!["time", "level", "msg"];
            for (name, value) in fields {
                if !seen.contains(name) {
                    seen.push(name);
                    line.push_str(&format!(",{}:{value}", Value::String(name.to_string())));
                }
            }
            line.push_str("}\n");
            line
        }
    }
}

/// True when stderr is the journald stream systemd set up (`JOURNAL_STREAM=DEV:INODE` names
/// it); a child process that inherited the variable but writes elsewhere must not get prefixes.
fn under_journald() -> bool {
    *UNDER_JOURNALD.get_or_init(|| {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
            return false;
        };
        let Some((dev, ino)) = stream.split_once(':') else {
            return false;
        };
        let stderr = io::stderr();
        let Ok(fd) = stderr.as_fd().try_clone_to_owned() else {
            return false;
        };
        match std::fs::File::from(fd).metadata() {
            Ok(meta) => dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino()),
            Err(_) => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn levels_accept_marathon_lb_names_in_any_case() {
        let cases = [
            ("error", Level::Error),
            ("CRITICAL", Level::Error),
            ("WARNING", Level::Warn),
            ("warn", Level::Warn),
            ("Info", Level::Info),
            ("DEBUG", Level::Debug),
            ("NOTSET", Level::Debug),
        ];
        for (text, level) in cases {
            assert_eq!(Level::parse(text).unwrap(), level, "{text}");
        }
        assert!(Level::parse("BANANA").is_err());
        assert!(Level::Error < Level::Warn && Level::Info < Level::Debug);
    }

    #[test]
    fn text_lines_name_the_tool_and_level_without_a_timestamp() {
        let now = UNIX_EPOCH;
        let line = format_line(
            Format::Text,
            false,
            now,
            Level::Warn,
            "app /a left out",
            &[],
        );
        assert_eq!(line, "haproxy-marathon-sync: warning: app /a left out\n");
        let line = format_line(Format::Text, false, now, Level::Info, "applied x", &[]);
        assert_eq!(line, "haproxy-marathon-sync: applied x\n");
        let line = format_line(Format::Text, true, now, Level::Error, "a\nb\n", &[]);
        assert_eq!(line, "<3>haproxy-marathon-sync: error: a | b\n");
    }

    #[test]
    fn json_lines_are_one_object_with_time_level_msg_and_fields() {
        let now = UNIX_EPOCH + Duration::from_millis(1_764_065_772_123);
        let fields = [
            ("config", Value::from("/etc/haproxy/haproxy.cfg")),
            ("servers", Value::from(3)),
            ("msg", Value::from("a field cannot replace the message")),
        ];
        let line = format_line(Format::Json, false, now, Level::Info, "applied", &fields);
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        assert!(line.starts_with("{\"time\":"), "{line}");
        let object: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(object["time"], "2025-11-25T10:16:12.123Z");
        assert_eq!(object["level"], "info");
        assert_eq!(object["msg"], "applied");
        assert_eq!(object["servers"], 3);
        assert_eq!(object["config"], "/etc/haproxy/haproxy.cfg");
    }
}
