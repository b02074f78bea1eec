//! The Marathon client: the only code that speaks HTTP. Fetches `/v2/apps` and `/v2/tasks` from
//! the first source that answers (or reads a saved snapshot directory) and parses them: the apps
//! read whole, the tasks as they are read (never held whole), on a second thread while a large
//! apps answer is parsed. It knows nothing of labels or templates, and never prints: what
//! happened is in the result.

mod dcos;
pub mod events;
mod http;
pub mod resolve;
mod snapshot;
mod tls;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::{anyhow, Result};

use crate::config::{FetchConfig, MarathonSource};
use crate::error::Failure;
use crate::marathon;

/// Marathon's state as fetched, apps and tasks in the order Marathon listed them.
#[derive(Debug, Clone, Default)]
pub struct MarathonState {
    pub apps: Vec<marathon::App>,
    pub tasks: Vec<marathon::Task>,
    /// Which source answered (URL, userinfo redacted, or snapshot directory), for log lines.
    pub source: String,
    /// Sources tried before `source` that failed, each as `"<source>: <what it did>"`, so the
    /// caller can log that a Marathon is down even when the run succeeds.
    pub failed_sources: Vec<String>,
    /// The `<source>` part of each of `failed_sources`, in the same order: the URL that failed,
    /// for the `source` field of the failover warning.
    pub failed_source_names: Vec<String>,
    /// Things the operator should know that did not stop the fetch (credentials over plain
    /// http, credentials held back from a redirect to another origin), each one line, for
    /// the caller to log as warnings.
    pub notes: Vec<String>,
}

/// Fetches apps and tasks, failing over between `config.sources` in order.
///
/// Both documents come from the same source. Any failure of a source (refused, timed out, any
/// non-2xx status, truncated, oversized or unparsable body, an answer without its `apps` or
/// `tasks` list, more apps or tasks than `config.max_apps` / `config.max_tasks`) passes the turn
/// to the next; the run fails only when every source failed, with one error naming each source
/// and what it did, carrying [`Failure::MarathonUnavailable`]. Each HTTP request is bounded by
/// `min(config.request_timeout, time left until deadline)`; once the deadline has passed, the
/// remaining sources are not tried. No URL is ever shown with its password.
///
/// An unreadable `config.ca_cert` is a configuration error and fails at once, naming the file.
pub fn fetch_state(config: &FetchConfig, deadline: Instant) -> Result<MarathonState> {
    let has_url_source = config
        .sources
        .iter()
        .any(|source| matches!(source, MarathonSource::Url(_)));
    // Built once for all URL sources; a snapshot-only run never reads the CA file.
    let client = if has_url_source {
        Some(Arc::new(http::Client::new(config)?))
    } else {
        None
    };

    let mut state = MarathonState::default();
    for source in &config.sources {
        let name = source.redacted();
        if Instant::now() >= deadline {
            state
                .failed_sources
                .push(format!("{name}: not tried, the run's deadline had passed"));
            state.failed_source_names.push(name);
            continue;
        }
        let attempt = match (source, &client) {
            (MarathonSource::Url(base), Some(client)) => {
                client.fetch(base, deadline, &mut state.notes)
            }
            (MarathonSource::Snapshot(dir), _) => snapshot::read(dir, config),
            (MarathonSource::Url(_), None) => unreachable!("a client is built for URL sources"),
        };
        match attempt {
            Ok((apps, tasks)) => {
                state.apps = apps.apps;
                state.tasks = tasks.tasks;
                state.source = name;
                return Ok(state);
            }
            Err(error) => {
                state.failed_sources.push(format!("{name}: {error:#}"));
                state.failed_source_names.push(name);
            }
        }
    }
    let summary = if state.failed_sources.is_empty() {
        "no Marathon source was given".to_string()
    } else {
        state.failed_sources.join("; ")
    };
    Err(anyhow!(summary).context(Failure::MarathonUnavailable))
}

impl MarathonSource {
    /// How the source is named in every message, record and metric: the URL without its
    /// trailing `/` and with any password replaced by `***` (`http://admin:***@host`), or the
    /// directory.
    pub fn redacted(&self) -> String {
        match self {
            MarathonSource::Url(base) => redact_url(base.trim_end_matches('/')),
            MarathonSource::Snapshot(dir) => dir.display().to_string(),
        }
    }
}

impl std::fmt::Debug for MarathonSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never let a password in a URL reach a log line through `{:?}`.
        match self {
            MarathonSource::Url(_) => write!(f, "Url({:?})", self.redacted()),
            MarathonSource::Snapshot(dir) => write!(f, "Snapshot({dir:?})"),
        }
    }
}

/// A URL with a userinfo, cut around it: `scheme://userinfo@host/path?query`. The authority
/// ends at the first `/`, `?` or `#`, and the userinfo at its last `@` (a password may hold
/// one). The one reading of a URL's userinfo, for redaction and for the request alike.
pub(crate) struct WithUserinfo<'a> {
    pub scheme: &'a str,
    pub userinfo: &'a str,
    /// The host (and port) with the path, query and fragment after it.
    pub host_and_path: &'a str,
}

/// `url` cut around its userinfo; `None` when it has no authority or no userinfo.
pub(crate) fn with_userinfo(url: &str) -> Option<WithUserinfo<'_>> {
    let (scheme, rest) = url.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let userinfo_end = rest[..authority_end].rfind('@')?;
    Some(WithUserinfo {
        scheme,
        userinfo: &rest[..userinfo_end],
        host_and_path: &rest[userinfo_end + 1..],
    })
}

/// `url` with the password of its userinfo replaced by `***` (`http://admin:***@host:8080/x`);
/// a user without a password is kept, as it is no secret. Anything that is not a URL with an
/// authority is returned as it was.
pub fn redact_url(url: &str) -> String {
    let Some(parts) = with_userinfo(url) else {
        return url.to_string();
    };
    match parts.userinfo.split_once(':') {
        Some((user, _password)) => {
            format!("{}://{user}:***@{}", parts.scheme, parts.host_and_path)
        }
        None => url.to_string(),
    }
}

/// A warning when the credentials file can be read by group or others, naming its mode, as
/// ssh does for private keys. `None` when it is private (or its mode cannot be read).
pub fn credentials_file_mode_warning(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "the Marathon credentials file {} has mode {mode:04o}: group or others can read \
             the password; make it private with chmod 600",
            path.display()
        )
    })
}

/// Parses one fetched Marathon document with `parse`. What does not parse is described by what
/// it was: an HTML login page or a proxy's error is named by its content type and first bytes
/// (escaped, capped), not only by serde's line and column.
fn parse_document<T>(
    bytes: &[u8],
    content_type: Option<&str>,
    parse: impl FnOnce(&[u8]) -> serde_json::Result<T>,
) -> Result<T> {
    parse(bytes).map_err(|error| anyhow!(describe_bad_document(bytes, content_type, &error)))
}

/// How many bytes of a non-JSON answer are quoted.
const QUOTED_BYTES: usize = 64;

/// From how large an apps answer the tasks are read on a second thread while the apps are
/// parsed: below it the thread costs more than it saves, and a small answer that fails stops the
/// fetch before the tasks are asked for.
const OVERLAP_FROM_BYTES: u64 = 1 << 20;

/// Both documents of one source: `apps` on this thread while `tasks` runs on a thread of its
/// own when `overlap` (the tasks are then asked for even when the apps fail); else, or when no
/// thread can be started, one after the other, the tasks only once the apps succeeded. Either
/// way the apps' failure is the one returned, at once: a thread still reading the tasks (a slow
/// `/v2/tasks` of the same Marathon) is left to end on its own, bounded by its request's
/// timeout, and what it read is dropped, so the next source is asked without waiting for it.
/// What `tasks` returned is the caller's to look at.
fn apps_and_tasks<A, T: Send + 'static>(
    overlap: bool,
    apps: impl FnOnce() -> Result<A>,
    tasks: impl FnOnce() -> T + Send + 'static,
) -> Result<(A, T)> {
    if !overlap {
        let apps = apps()?;
        return Ok((apps, tasks()));
    }
    // Shared, so that a thread that cannot be started leaves the work here.
    let work = Arc::new(Mutex::new(Some(tasks)));
    let on_thread = Arc::clone(&work);
    let thread = std::thread::Builder::new()
        .name("fetch-tasks".into())
        .spawn(move || {
            let tasks = on_thread
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            tasks.map(|tasks| tasks())
        });
    let apps = apps()?;
    let done = match thread {
        Ok(thread) => thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        Err(_) => None,
    };
    let tasks = match done {
        Some(tasks) => tasks,
        None => {
            let tasks = work.lock().unwrap_or_else(PoisonError::into_inner).take();
            tasks.expect("the tasks were read on no thread, so they are still here")()
        }
    };
    Ok((apps, tasks))
}

/// An answer as it is read by a parse that never holds it whole: never read past `limit`
/// bytes, and its first bytes kept, to quote when it is not JSON.
pub(super) struct Answer<R> {
    reader: R,
    read: u64,
    limit: u64,
    /// From the first byte that is not whitespace, one more than is quoted: whether the quote
    /// was cut shows.
    prefix: Vec<u8>,
}

/// The error an [`Answer`] fails with past its limit.
#[derive(Debug)]
pub(super) struct OverLimit;

impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("larger than the limit")
    }
}

impl std::error::Error for OverLimit {}

impl<R: std::io::Read> Answer<R> {
    pub(super) fn new(reader: R, limit: u64) -> Answer<R> {
        Answer {
            reader,
            read: 0,
            limit,
            prefix: Vec::new(),
        }
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = QUOTED_BYTES + 1 - self.prefix.len();
        let bytes = match self.prefix.is_empty() {
            true => match bytes.iter().position(|b| !b.is_ascii_whitespace()) {
                Some(start) => &bytes[start..],
                None => return,
            },
            false => bytes,
        };
        self.prefix
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

impl<R: std::io::Read> std::io::Read for Answer<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.reader.read(buffer)?;
        self.read += read as u64;
        if self.read > self.limit {
            return Err(std::io::Error::other(OverLimit));
        }
        if self.prefix.len() <= QUOTED_BYTES {
            self.keep(&buffer[..read]);
        }
        Ok(read)
    }
}

/// Why a document parsed as it was read failed.
pub(super) enum StreamFailure {
    /// Reading it failed (the transport, the file, the limit): for the caller to describe.
    Read(std::io::Error),
    /// It was read but is not the document, in words, as [`parse_document`] says it.
    Document(String),
}

/// Parses one document with `parse` as it is read through `answer`; what does not parse is
/// described as [`parse_document`] describes it, from the first bytes the answer kept (a
/// document that fails is read to its end first, so they are all there).
fn parse_streamed<R: std::io::Read, T>(
    answer: &mut Answer<R>,
    content_type: Option<&str>,
    parse: impl FnOnce(&mut Answer<R>) -> serde_json::Result<T>,
) -> Result<T, StreamFailure> {
    parse(answer).map_err(|error| {
        if error.is_io() {
            return StreamFailure::Read(error.into());
        }
        StreamFailure::Document(describe_bad_document(&answer.prefix, content_type, &error))
    })
}

fn describe_bad_document(
    bytes: &[u8],
    content_type: Option<&str>,
    error: &serde_json::Error,
) -> String {
    // The content type is news only when it is not JSON's.
    let kind = match content_type {
        Some(kind) if !kind.to_ascii_lowercase().contains("json") => {
            format!(" (Content-Type: {})", quote(kind.as_bytes(), QUOTED_BYTES))
        }
        _ => String::new(),
    };
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace());
    match start {
        None => format!("an empty answer{kind}, not JSON"),
        Some(start) if !matches!(bytes[start], b'{' | b'[') => format!(
            "not JSON{kind}: it begins \"{}\"",
            quote(&bytes[start..], QUOTED_BYTES)
        ),
        Some(_) if error.is_data() => format!("{error}"),
        Some(_) => format!("invalid JSON{kind}: {error}"),
    }
}

/// At most `limit` bytes of `bytes` as printable text: control characters, quotes and
/// non-UTF-8 bytes escaped, `…` when cut.
fn quote(bytes: &[u8], limit: usize) -> String {
    let shown = &bytes[..bytes.len().min(limit)];
    let mut text: String = String::from_utf8_lossy(shown).escape_debug().collect();
    if bytes.len() > limit {
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_and_the_rest_kept() {
        assert_eq!(
            redact_url("http://admin:s3cret@host:8080/v2"),
            "http://admin:***@host:8080/v2"
        );
        assert_eq!(redact_url("https://a:b:c@h"), "https://a:***@h");
        assert_eq!(redact_url("http://user@h/x@y"), "http://user@h/x@y");
        assert_eq!(
            redact_url("http://h:8080/p?u=a:b@c"),
            "http://h:8080/p?u=a:b@c"
        );
        assert_eq!(redact_url("/srv/snapshot"), "/srv/snapshot");
        let source = MarathonSource::Url("http://a:pw@m:8080/".to_string());
        assert_eq!(source.redacted(), "http://a:***@m:8080");
        assert_eq!(format!("{source:?}"), r#"Url("http://a:***@m:8080")"#);
    }

    #[test]
    fn non_json_answers_say_what_they_were() {
        let html = b"\n<!DOCTYPE html>\n<html><title>Log in</title></html>";
        let error = serde_json::from_slice::<serde_json::Value>(html).unwrap_err();
        assert_eq!(
            describe_bad_document(html, Some("text/html; charset=utf-8"), &error),
            "not JSON (Content-Type: text/html; charset=utf-8): it begins \
             \"<!DOCTYPE html>\\n<html><title>Log in</title></html>\""
        );
        let long = [b'x'; 100];
        let error = serde_json::from_slice::<serde_json::Value>(&long).unwrap_err();
        let text = describe_bad_document(&long, None, &error);
        assert!(text.ends_with(&format!("{}…\"", "x".repeat(64))), "{text}");
        let error = serde_json::from_slice::<serde_json::Value>(b"").unwrap_err();
        assert_eq!(
            describe_bad_document(b"", Some("text/plain"), &error),
            "an empty answer (Content-Type: text/plain), not JSON"
        );
    }
}
