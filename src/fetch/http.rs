//! `GET /v2/apps` and `GET /v2/tasks` over HTTP(S) with ureq: hard timeouts, a body size cap,
//! basic auth, verified TLS, a few redirects. The tasks' body is parsed as it arrives, on a
//! second thread while a large apps answer is parsed (so the tasks' transfer and parse overlap
//! it). Turns every failure into one line an operator can act on, keeping HTTP status answers
//! apart from transport failures.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use rustls::pki_types::CertificateDer;
use ureq::http::{StatusCode, Uri};
use ureq::tls::PemItem;
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{Connector as _, TcpConnector};
use ureq::{Agent, ResponseExt};

use super::{
    apps_and_tasks, parse_document, parse_streamed, redact_url, tls, with_userinfo, Answer,
    StreamFailure,
};
use crate::config::{Credentials, FetchConfig, MarathonSource};
use crate::marathon::{self, AppList, TaskList};

/// Redirects followed per request. Marathon non-leaders may redirect to the leader (one hop);
/// a little slack covers a load balancer in front, while a loop still ends quickly.
const MAX_REDIRECTS: u32 = 3;

/// How much of an error answer is read to find Marathon's `{"message": ...}`.
const ERROR_BODY_LIMIT: u64 = 4096;

const USER_AGENT: &str = concat!("haproxy-marathon-sync/", env!("CARGO_PKG_VERSION"));

/// One ureq agent and the per-request settings shared by every URL source of a fetch.
pub(super) struct Client {
    agent: Agent,
    dcos: Option<super::dcos::Login>,
    credentials: Option<Credentials>,
    credentials_from: Option<String>,
    /// The origins of the `--marathon` URLs: the only ones credentials are sent to.
    trusted: Vec<String>,
    request_timeout: Duration,
    max_body_bytes: u64,
    max_apps: usize,
    max_tasks: usize,
    /// Whether this run already warned that credentials travel over plain http.
    warned_plain_http: AtomicBool,
}

impl Client {
    pub(super) fn new(config: &FetchConfig) -> Result<Client> {
        Ok(Client {
            agent: agent(config, "application/json")?,
            dcos: (config.dcos_service_account.as_ref())
                .map(|account| super::dcos::Login::new(account, config.request_timeout)),
            credentials: config.credentials.clone(),
            credentials_from: config.credentials_from.clone(),
            trusted: trusted_origins(config),
            request_timeout: config.request_timeout,
            max_body_bytes: config.max_body_bytes,
            max_apps: config.max_apps,
            max_tasks: config.max_tasks,
            warned_plain_http: AtomicBool::new(false),
        })
    }

    /// Fetches both documents from one Marathon; `base` is e.g. `http://marathon:8080`, maybe
    /// with `user:password@` (used when no other credentials are given, as Python's requests
    /// in marathon-lb does, and never sent or shown as part of the URL).
    pub(super) fn fetch(
        self: &Arc<Self>,
        base: &str,
        deadline: Instant,
        notes: &mut Vec<String>,
    ) -> Result<(AppList, TaskList)> {
        let target = Target::new(
            base,
            self.credentials.as_ref(),
            self.credentials_from.as_deref(),
        );
        if target.authorization.is_some() && target.base.starts_with("http://") {
            self.warn_plain_http_once(&target.base, notes);
        }
        let (body, kind) = self.get(&target, "/v2/apps", deadline, notes)?;
        // A large answer's parse overlaps the tasks' transfer and parse on a second thread.
        let overlap = body.len() as u64 >= super::OVERLAP_FROM_BYTES;
        let max_apps = self.max_apps;
        let apps = move || {
            parse_document(&body, kind.as_deref(), |b| {
                marathon::parse_app_list(b, max_apps)
            })
            .context("GET /v2/apps")
        };
        // Owned: when the apps fail, the tasks' thread is left to end on its own.
        let client = Arc::clone(self);
        let tasks = move || {
            let mut notes = Vec::new();
            let tasks = client.get_tasks(&target, deadline, &mut notes);
            (tasks, notes)
        };
        let (apps, (tasks, task_notes)) = apps_and_tasks(overlap, apps, tasks)?;
        for note in task_notes {
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
        Ok((apps, tasks?))
    }

    /// `GET /v2/tasks`, parsed as its body arrives (see [`marathon::read_task_list`]).
    fn get_tasks(
        &self,
        target: &Target,
        deadline: Instant,
        notes: &mut Vec<String>,
    ) -> Result<TaskList> {
        let path = "/v2/tasks";
        let context = || format!("GET {path}");
        let (response, budget) = self.answer(target, path, deadline, notes)?;
        let kind = content_type(&response);
        let length = response.body().content_length();
        // Refused before a byte is parsed, as when the whole body was read first.
        if length.is_some_and(|length| length > self.max_body_bytes) {
            let error = ureq::Error::BodyExceedsLimit(self.max_body_bytes);
            return Err(anyhow!(describe_transport_error(&error, &budget))).with_context(context);
        }
        let body = (response.into_body().into_with_config())
            .limit(self.max_body_bytes)
            .reader();
        let mut answer = Answer::new(body, u64::MAX);
        let max_tasks = self.max_tasks;
        parse_streamed(&mut answer, kind.as_deref(), |answer| {
            marathon::read_task_list(answer, max_tasks, length.unwrap_or(0))
        })
        .map_err(|failure| match failure {
            StreamFailure::Read(error) => {
                anyhow!(describe_transport_error(&ureq::Error::from(error), &budget))
            }
            StreamFailure::Document(text) => anyhow!(text),
        })
        .with_context(context)
    }

    fn warn_plain_http_once(&self, base: &str, notes: &mut Vec<String>) {
        if !self.warned_plain_http.swap(true, Ordering::Relaxed) {
            notes.push(format!(
                "Marathon credentials are sent to {base} over plain http, readable by anyone on \
                 the path; use an https:// URL"
            ));
        }
    }

    /// One bounded GET of `path` at the target; the successful body, read whole, and its
    /// content type, or an error saying what the server did.
    fn get(
        &self,
        target: &Target,
        path: &str,
        deadline: Instant,
        notes: &mut Vec<String>,
    ) -> Result<(Vec<u8>, Option<String>)> {
        let (response, budget) = self.answer(target, path, deadline, notes)?;
        let kind = content_type(&response);
        let body = response
            .into_body()
            .with_config()
            .limit(self.max_body_bytes)
            .read_to_vec()
            .map_err(|error| anyhow!(describe_transport_error(&error, &budget)))
            .with_context(|| format!("GET {path}"))?;
        Ok((body, kind))
    }

    /// The successful answer to one bounded GET of `path` at the target, its body unread, and
    /// the time it may take; or an error saying what the server did.
    fn answer(
        &self,
        target: &Target,
        path: &str,
        deadline: Instant,
        notes: &mut Vec<String>,
    ) -> Result<(ureq::http::Response<ureq::Body>, RequestBudget)> {
        let url = format!("{}{path}", target.base);
        let context = || format!("GET {path}");
        let budget = RequestBudget::new(self.request_timeout, deadline).with_context(context)?;
        let send = |url: &str, authorization: Option<&str>| {
            let mut request = self.agent.get(url);
            if let Some(authorization) = authorization {
                request = request.header("Authorization", authorization);
            }
            // ureq sets no timeouts by default. The global one bounds the whole exchange, body
            // included, so a server that sends headers and then stalls cannot hold us.
            request
                .config()
                .timeout_global(Some(budget.limit))
                .timeout_connect(Some(budget.limit))
                .timeout_per_read(Some(budget.limit))
                .build()
                .call()
        };
        // A DC/OS service account's token replaces basic auth (the two are never both given).
        let dcos_authorization = match &self.dcos {
            Some(login) => Some(login.authorization(&self.agent, deadline)?),
            None => None,
        };
        let authorization = dcos_authorization
            .as_deref()
            .or(target.authorization.as_deref());
        let mut redirects = Redirects::new(&self.trusted);
        let response = follow_redirects(&url, authorization, MAX_REDIRECTS, &mut redirects, send)
            .map_err(|error| anyhow!(describe_transport_error(&error, &budget)))
            .with_context(context)?;
        for note in &redirects.notes {
            // The same redirect of /v2/apps and /v2/tasks is one thing to say.
            if !notes.contains(note) {
                notes.push(note.clone());
            }
        }

        let status = response.status();
        let final_uri = response.get_uri().clone();
        if !status.is_success() {
            // DC/OS: a refused token is forgotten, and logged in again once per run.
            let dcos_refused = status == StatusCode::UNAUTHORIZED && self.dcos.is_some();
            if dcos_refused && self.dcos.as_ref().is_some_and(|login| login.unauthorized()) {
                return self.answer(target, path, deadline, notes);
            }
            let message = marathon_message(response.into_body());
            let credentials = CredentialsSent {
                from: match &self.dcos {
                    Some(_) => Some("--dcos-auth-credentials"),
                    None => target.from.as_deref(),
                },
                held_back_at: redirects.held_back_at.as_deref(),
            };
            let text = describe_status(status, message, &final_uri, &url, credentials);
            return match (&self.dcos, dcos_refused) {
                (Some(login), true) => Err(anyhow!(login.explain(&text))),
                _ => Err(anyhow!(text)),
            }
            .with_context(context);
        }
        Ok((response, budget))
    }
}

fn content_type(response: &ureq::http::Response<ureq::Body>) -> Option<String> {
    (response.headers().get("content-type"))
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}

/// One `--marathon` URL as asked: without its userinfo, with the `Authorization` to send and
/// where those credentials came from.
pub(super) struct Target {
    pub(super) base: String,
    pub(super) authorization: Option<String>,
    pub(super) from: Option<String>,
}

impl Target {
    pub(super) fn new(
        base: &str,
        configured: Option<&Credentials>,
        configured_from: Option<&str>,
    ) -> Target {
        let (base, from_url) = split_userinfo(base.trim_end_matches('/'));
        let (credentials, from) = match (configured, from_url) {
            (Some(credentials), _) => (
                Some(credentials.clone()),
                Some(
                    configured_from
                        .unwrap_or("--auth-credentials / --marathon-auth-credential-file")
                        .to_string(),
                ),
            ),
            (None, Some(credentials)) => {
                let shown = base_with_user(&base, &credentials);
                (Some(credentials), Some(format!("the URL {shown}")))
            }
            (None, None) => (None, None),
        };
        Target {
            base,
            authorization: credentials.as_ref().map(basic_authorization),
            from,
        }
    }
}

fn base_with_user(base: &str, credentials: &Credentials) -> String {
    match base.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}:***@{rest}", credentials.user),
        None => base.to_string(),
    }
}

/// `http://user:pass@host:8080` → (`http://host:8080`, the credentials, percent-decoded).
pub(super) fn split_userinfo(url: &str) -> (String, Option<Credentials>) {
    let Some(parts) = with_userinfo(url) else {
        return (url.to_string(), None);
    };
    let (user, password) = parts
        .userinfo
        .split_once(':')
        .unwrap_or((parts.userinfo, ""));
    let credentials = Credentials {
        user: percent_decode(user),
        password: percent_decode(password),
    };
    let url = format!("{}://{}", parts.scheme, parts.host_and_path);
    (url, Some(credentials))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `scheme://host:port` of a URL, lower-case, the port made explicit; `None` for what is not an
/// absolute http(s) URL.
pub(super) fn origin(url: &str) -> Option<String> {
    let (url, _) = split_userinfo(url);
    let uri: Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let host = uri.host()?.to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(default_port);
    Some(format!("{scheme}://{host}:{port}"))
}

/// The origins credentials may go to: those of the `--marathon` URLs.
pub(super) fn trusted_origins(config: &FetchConfig) -> Vec<String> {
    config
        .sources
        .iter()
        .filter_map(|source| match source {
            MarathonSource::Url(base) => origin(base),
            MarathonSource::Snapshot(_) => None,
        })
        .collect()
}

/// What a request's redirects did with the credentials.
pub(super) struct Redirects<'a> {
    trusted: &'a [String],
    /// The origin the credentials were held back from, when a redirect left the trusted ones.
    pub(super) held_back_at: Option<String>,
    /// One line per time that happened, for the log.
    pub(super) notes: Vec<String>,
}

impl<'a> Redirects<'a> {
    pub(super) fn new(trusted: &'a [String]) -> Redirects<'a> {
        Redirects {
            trusted,
            held_back_at: None,
            notes: Vec::new(),
        }
    }
}

/// Where credentials stood when an answer came back, for [`describe_status`].
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CredentialsSent<'a> {
    /// Where the credentials came from (`--auth-credentials`, ...); `None` when none were given.
    pub(super) from: Option<&'a str>,
    /// The origin they were held back from after a redirect, if they were.
    pub(super) held_back_at: Option<&'a str>,
}

/// The agent every request to Marathon goes through (the event stream's too): verified TLS
/// with the configured roots (see `tls`), statuses read as answers, redirects left to
/// `follow_redirects`.
pub(super) fn agent(config: &FetchConfig, accept: &str) -> Result<Agent> {
    let pinned = match &config.ca_cert {
        Some(path) => load_ca_bundle(path)?,
        None => Vec::new(),
    };
    let tls = tls::client_config(pinned).map_err(|error| anyhow!(tls::describe(&error)))?;
    let settings = Agent::config_builder()
        // Statuses are answers, not transport errors: we read them ourselves so a 401 can
        // say "authentication" and a 503 can carry Marathon's message.
        .http_status_as_error(false)
        // Redirects are followed by `follow_redirects`, which decides where credentials go.
        .max_redirects(0)
        .user_agent(USER_AGENT)
        .accept(accept)
        .build();
    let connector = ().chain(TcpConnector::default()).chain(tls::TlsConnector { config: tls });
    Ok(Agent::with_parts(
        settings,
        connector,
        DefaultResolver::default(),
    ))
}

/// Sends `GET url` through `send` and follows up to `max_redirects` redirects (a Marathon that
/// is not the leader redirects to the leader). The credentials go along only while the target
/// is one of the `--marathon` origins (scheme, host and port): a redirect elsewhere is still
/// followed (a leader or proxy that needs no credentials keeps working), but without them, and
/// `redirects` says so (issue 9: whoever controls a Marathon answer, or the plain-http path to
/// it, must not be able to send our password to a host of their choosing). List every
/// Marathon in `--marathon` to keep the leader's redirect credentialed. Returns the first answer
/// that is not a redirect (or a redirect without a usable `Location`, for the caller to report).
pub(super) fn follow_redirects(
    url: &str,
    authorization: Option<&str>,
    max_redirects: u32,
    redirects: &mut Redirects<'_>,
    mut send: impl FnMut(&str, Option<&str>) -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    let mut current = url.to_string();
    let mut authorization = authorization;
    for hop in 0.. {
        let response = send(&current, authorization)?;
        let status = response.status();
        if !status.is_redirection() || status == StatusCode::NOT_MODIFIED {
            return Ok(response);
        }
        let Some(next) = response
            .headers()
            .get("location")
            .and_then(|value| value.to_str().ok())
            .and_then(|location| redirect_target(&current, location))
        else {
            return Ok(response);
        };
        if hop >= max_redirects {
            return Err(ureq::Error::TooManyRedirects);
        }
        let next_origin = origin(&next);
        let trusted = next_origin
            .as_ref()
            .is_some_and(|next| redirects.trusted.contains(next));
        let downgrade = current.starts_with("https://") && next.starts_with("http://");
        if authorization.is_some() && (!trusted || downgrade) {
            let shown = next_origin.unwrap_or_else(|| redact_url(&next));
            let why = if downgrade {
                "plain http after https: credentials are never sent down to http"
            } else {
                "not one of the --marathon URLs; add it there to send them"
            };
            redirects.notes.push(format!(
                "{} redirected to {shown}: followed without the Marathon credentials ({why})",
                redact_url(&current)
            ));
            redirects.held_back_at = Some(format!("{shown} ({why})"));
            authorization = None;
        }
        // A Location may carry userinfo of its own; it is never sent, and never shown.
        current = split_userinfo(&next).0;
    }
    unreachable!("the loop returns")
}

/// Where `location` (absolute, or relative to `from`) points.
fn redirect_target(from: &str, location: &str) -> Option<String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Some(location.to_string());
    }
    let uri: Uri = from.parse().ok()?;
    let origin = format!("{}://{}", uri.scheme_str()?, uri.authority()?);
    if location.starts_with('/') {
        return Some(format!("{origin}{location}"));
    }
    let path = uri.path();
    let directory = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    Some(format!("{origin}{directory}{location}"))
}

/// `Basic base64(user:password)`. The value is only ever put in a header, never in a message.
pub(super) fn basic_authorization(credentials: &Credentials) -> String {
    let pair = format!("{}:{}", credentials.user, credentials.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// The PEM CA bundle to trust instead of the built-in roots, as `curl --cacert` does.
fn load_ca_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("reading the Marathon CA bundle {}", path.display()))?;
    let mut certificates = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(certificate)) => {
                certificates.push(CertificateDer::from(certificate.der().to_vec()))
            }
            Ok(_) => {} // Keys and other PEM sections are not roots; skip them.
            Err(error) => bail!(
                "the Marathon CA bundle {} is not valid PEM: {error}",
                path.display()
            ),
        }
    }
    if certificates.is_empty() {
        bail!(
            "the Marathon CA bundle {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(certificates)
}

/// How long one request may take: the per-request timeout, cut short by the run's deadline.
pub(super) struct RequestBudget {
    limit: Duration,
    cut_by_deadline: bool,
}

impl RequestBudget {
    pub(super) fn new(request_timeout: Duration, deadline: Instant) -> Result<RequestBudget> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("not asked, the run's deadline had passed");
        }
        Ok(RequestBudget {
            limit: request_timeout.min(left),
            cut_by_deadline: left < request_timeout,
        })
    }

    fn describe(&self) -> String {
        if self.cut_by_deadline {
            format!("{:?}, the time left before the run's deadline", self.limit)
        } else {
            format!("{:?} (--timeout)", self.limit)
        }
    }
}

/// A transport failure (no usable answer) in words.
pub(super) fn describe_transport_error(error: &ureq::Error, budget: &RequestBudget) -> String {
    match error {
        // The phase ureq names is whichever of our equal limits fired first; it adds nothing.
        ureq::Error::Timeout(_) => format!("timed out after {}", budget.describe()),
        ureq::Error::Io(io) => match tls_failure(io) {
            Some(tls) => describe_tls_failure(tls),
            None => describe_io_error(io, budget),
        },
        ureq::Error::HostNotFound => "host not found (DNS lookup failed)".to_string(),
        ureq::Error::BodyExceedsLimit(limit) => {
            format!("the answer is larger than the limit of {limit} bytes")
        }
        ureq::Error::TooManyRedirects => format!("more than {MAX_REDIRECTS} redirects"),
        ureq::Error::BadUri(uri) => format!("not a usable URL: {uri}"),
        ureq::Error::Protocol(protocol) => format!("not a valid HTTP answer: {protocol}"),
        ureq::Error::Rustls(tls) => describe_tls_failure(tls),
        other => other.to_string(),
    }
}

fn describe_io_error(io: &std::io::Error, budget: &RequestBudget) -> String {
    use std::io::ErrorKind;
    match io.kind() {
        ErrorKind::ConnectionRefused => "connection refused".to_string(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => {
            "connection reset by the server".to_string()
        }
        ErrorKind::UnexpectedEof => "the connection closed before the whole answer arrived".into(),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => {
            format!("timed out after {}", budget.describe())
        }
        _ => format!("network error: {io}"),
    }
}

/// The rustls error ureq may carry inside an I/O error (a failed handshake reads as one).
fn tls_failure(io: &std::io::Error) -> Option<&rustls::Error> {
    io.get_ref()?.downcast_ref::<rustls::Error>()
}

fn describe_tls_failure(error: &rustls::Error) -> String {
    format!("TLS failed: {}", tls::describe(error))
}

/// An HTTP status answer in words, with Marathon's own message when it sent one. A refusal of
/// credentials names where they came from, never what they are.
pub(super) fn describe_status(
    status: StatusCode,
    marathon_message: Option<String>,
    final_uri: &Uri,
    requested: &str,
    credentials: CredentialsSent<'_>,
) -> String {
    let mut text = format!("HTTP {}", status.as_u16());
    if let Some(reason) = status.canonical_reason() {
        text.push(' ');
        text.push_str(reason);
    }
    let final_url = redact_url(&final_uri.to_string());
    let redirected = final_url != redact_url(requested);
    if redirected {
        text.push_str(&format!(" (after a redirect to {final_url})"));
    }
    match (status.as_u16(), credentials.from, credentials.held_back_at) {
        (401, None, _) => text.push_str(
            ": authentication failed: Marathon wants credentials; give them with \
             --auth-credentials, --marathon-auth-credential-file or user:password@ in the URL",
        ),
        (401, Some(from), Some(held_back_at)) => text.push_str(&format!(
            ": authentication failed: the credentials from {from} were not sent to \
             {held_back_at}"
        )),
        (401, Some(from), None) => text.push_str(&format!(
            ": authentication failed: Marathon refused the credentials from {from}"
        )),
        (403, Some(from), _) => text.push_str(&format!(
            ": authorization failed: the credentials from {from} may not read apps and tasks"
        )),
        (403, None, _) => text.push_str(
            ": authorization failed: Marathon refuses to show apps and tasks without credentials",
        ),
        _ => {}
    }
    if let Some(message) = marathon_message {
        text.push_str(&format!(" (Marathon says: {message})"));
    }
    text
}

/// Marathon explains errors as `{"message": "..."}`; read a little of the body to find it.
pub(super) fn marathon_message(body: ureq::Body) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        message: String,
    }
    let mut body = body;
    let bytes = body
        .with_config()
        .limit(ERROR_BODY_LIMIT)
        .read_to_vec()
        .ok()?;
    let message = serde_json::from_slice::<ErrorBody>(&bytes).ok()?.message;
    Some(one_bounded_line(&message))
}

/// A server's own words as one line of at most 200 characters, whatever it sent.
pub(super) fn one_bounded_line(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_authorization_follows_rfc_7617() {
        let credentials = Credentials {
            user: "Aladdin".to_string(),
            password: "open sesame".to_string(),
        };
        assert_eq!(
            basic_authorization(&credentials),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn the_budget_is_the_timeout_unless_the_deadline_is_nearer() {
        let far = Instant::now() + Duration::from_secs(3600);
        let budget = RequestBudget::new(Duration::from_secs(10), far).unwrap();
        assert_eq!(budget.limit, Duration::from_secs(10));
        assert_eq!(budget.describe(), "10s (--timeout)");

        let near = Instant::now() + Duration::from_secs(2);
        let budget = RequestBudget::new(Duration::from_secs(10), near).unwrap();
        assert!(budget.limit <= Duration::from_secs(2));
        assert!(budget.describe().contains("the run's deadline"));

        let passed = Instant::now();
        assert!(RequestBudget::new(Duration::from_secs(10), passed).is_err());
    }

    #[test]
    fn status_messages_name_auth_and_keep_marathons_message() {
        let uri: Uri = "http://m:8080/v2/apps".parse().unwrap();
        let requested = "http://m:8080/v2/apps";
        let none = CredentialsSent::default();
        let text = describe_status(StatusCode::UNAUTHORIZED, None, &uri, requested, none);
        assert!(text.starts_with("HTTP 401 Unauthorized: authentication failed"));
        assert!(text.contains("give them with --auth-credentials"), "{text}");
        let given = CredentialsSent {
            from: Some("the credentials file /etc/m.cred (--marathon-auth-credential-file)"),
            held_back_at: None,
        };
        let text = describe_status(StatusCode::UNAUTHORIZED, None, &uri, requested, given);
        assert_eq!(
            text,
            "HTTP 401 Unauthorized: authentication failed: Marathon refused the credentials \
             from the credentials file /etc/m.cred (--marathon-auth-credential-file)"
        );
        let text = describe_status(StatusCode::FORBIDDEN, None, &uri, requested, given);
        assert!(text.starts_with("HTTP 403 Forbidden: authorization failed"));
        assert!(text.contains("/etc/m.cred"), "{text}");
        let message = Some("leader unknown".to_string());
        let text = describe_status(
            StatusCode::SERVICE_UNAVAILABLE,
            message,
            &uri,
            requested,
            none,
        );
        assert_eq!(
            text,
            "HTTP 503 Service Unavailable (Marathon says: leader unknown)"
        );
    }

    #[test]
    fn userinfo_is_split_off_decoded_and_named_redacted() {
        let (base, credentials) = split_userinfo("http://ad%40min:p%3Ass@m:8080");
        assert_eq!(base, "http://m:8080");
        let credentials = credentials.unwrap();
        assert_eq!(
            (credentials.user.as_str(), credentials.password.as_str()),
            ("ad@min", "p:ss")
        );
        let target = Target::new("http://admin:s3cret@m:8080/", None, None);
        assert_eq!(target.base, "http://m:8080");
        assert_eq!(
            target.from.as_deref(),
            Some("the URL http://admin:***@m:8080")
        );
        assert!(target.authorization.is_some());
        let flag = Credentials {
            user: "lb".into(),
            password: "pw".into(),
        };
        let target = Target::new(
            "http://admin:s3cret@m:8080",
            Some(&flag),
            Some("--auth-credentials"),
        );
        assert_eq!(target.authorization, Some(basic_authorization(&flag)));
        assert_eq!(target.from.as_deref(), Some("--auth-credentials"));
    }

    #[test]
    fn origins_make_the_port_explicit() {
        assert_eq!(
            origin("http://M.example:80/x").as_deref(),
            Some("http://m.example:80")
        );
        assert_eq!(origin("https://m").as_deref(), Some("https://m:443"));
        assert_eq!(
            origin("https://u:p@m:8443/v2").as_deref(),
            Some("https://m:8443")
        );
        assert_eq!(origin("ftp://m"), None);
    }
}

#[cfg(test)]
mod redirect_tests {
    use super::*;

    fn answer(status: u16, location: Option<&str>) -> ureq::http::Response<ureq::Body> {
        let mut response = ureq::http::Response::builder().status(status);
        if let Some(location) = location {
            response = response.header("location", location);
        }
        response.body(ureq::Body::builder().data("")).unwrap()
    }

    /// What a scripted chain did: the final status, each hop's URL and whether it carried the
    /// credentials, and the notes.
    type Followed = (Result<u16, String>, Vec<(String, bool)>, Vec<String>);

    /// Follows a scripted chain of answers, noting each hop's URL and credentials; credentials
    /// may go to the origins in `trusted`.
    fn follow_trusting(
        start: &str,
        script: &[(u16, Option<&str>)],
        max: u32,
        trusted: &[&str],
    ) -> Followed {
        let trusted: Vec<String> = trusted.iter().filter_map(|url| origin(url)).collect();
        let mut redirects = Redirects::new(&trusted);
        let mut hops = Vec::new();
        let mut answers = script.iter();
        let send = |url: &str, authorization: Option<&str>| {
            hops.push((url.to_string(), authorization.is_some()));
            let (status, location) = answers.next().expect("scripted answer");
            Ok(answer(*status, *location))
        };
        let result = follow_redirects(start, Some("Basic x"), max, &mut redirects, send);
        (
            result
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string()),
            hops,
            redirects.notes,
        )
    }

    fn follow(
        start: &str,
        script: &[(u16, Option<&str>)],
        max: u32,
    ) -> (Result<u16, String>, Vec<(String, bool)>) {
        let (result, hops, _) = follow_trusting(start, script, max, &[start]);
        (result, hops)
    }

    #[test]
    fn credentials_go_only_to_the_configured_origins_and_never_down_to_http() {
        let (result, hops, notes) = follow_trusting(
            "https://m1:8443/v2/apps",
            &[
                (307, Some("https://m2:8443/v2/apps")),
                (307, Some("https://evil:8443/v2/apps")),
                (302, Some("http://m2:8443/v2/apps")),
                (200, None),
            ],
            3,
            &["https://m1:8443", "https://m2:8443", "http://m2:8443"],
        );
        assert_eq!(result, Ok(200));
        assert_eq!(
            hops,
            vec![
                ("https://m1:8443/v2/apps".to_string(), true),
                ("https://m2:8443/v2/apps".to_string(), true),
                ("https://evil:8443/v2/apps".to_string(), false),
                ("http://m2:8443/v2/apps".to_string(), false),
            ]
        );
        assert_eq!(
            notes,
            [
                "https://m2:8443/v2/apps redirected to https://evil:8443: followed without the \
              Marathon credentials (not one of the --marathon URLs; add it there to send them)"
            ]
        );

        let (_, hops, notes) = follow_trusting(
            "https://m1:8443/v2/apps",
            &[(302, Some("http://m1:8443/v2/apps")), (200, None)],
            3,
            &["https://m1:8443", "http://m1:8443"],
        );
        assert!(!hops[1].1, "never from https down to http");
        assert!(notes[0].contains("never sent down to http"), "{notes:?}");
    }

    #[test]
    fn relative_locations_and_the_hop_limit() {
        let (result, hops) = follow(
            "http://m1:8080/v2/events?x=1",
            &[(302, Some("/v2/events?y=2")), (200, None)],
            1,
        );
        assert_eq!(result, Ok(200));
        assert_eq!(hops[1].0, "http://m1:8080/v2/events?y=2");
        let (result, _) = follow("http://m1/a", &[(302, Some("b")), (302, Some("c"))], 1);
        assert!(result.is_err(), "{result:?}");
        let (result, _) = follow("http://m1/a", &[(302, None)], 1);
        assert_eq!(
            result,
            Ok(302),
            "a redirect without Location is the caller's to report"
        );
    }
}
