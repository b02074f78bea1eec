//! `GET /v2/apps` and `GET /v2/tasks` over HTTP(S) with ureq: hard timeouts, a body size cap,
//! basic auth, verified TLS, a few redirects. Turns every failure into one line an operator can
//! act on, keeping HTTP status answers apart from transport failures.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use serde::de::DeserializeOwned;
use ureq::http::{StatusCode, Uri};
use ureq::tls::{PemItem, RootCerts, TlsConfig};
use ureq::{Agent, ResponseExt};

use super::api::{AppList, TaskList};
use super::parse_json;
use crate::config::{Credentials, FetchConfig};

/// Redirects followed per request. Marathon non-leaders may redirect to the leader (one hop);
/// a little slack covers a load balancer in front, while a loop still ends quickly.
const MAX_REDIRECTS: u32 = 3;

/// How much of an error answer is read to find Marathon's `{"message": ...}`.
const ERROR_BODY_LIMIT: u64 = 4096;

const USER_AGENT: &str = concat!("haproxy-marathon-sync/", env!("CARGO_PKG_VERSION"));

/// One ureq agent and the per-request settings shared by every URL source of a fetch.
pub(super) struct Client {
    agent: Agent,
    authorization: Option<String>,
    dcos: Option<super::dcos::Login>,
    request_timeout: Duration,
    max_body_bytes: u64,
}

impl Client {
    pub(super) fn new(config: &FetchConfig) -> Result<Client> {
        Ok(Client {
            agent: agent(config, "application/json")?,
            authorization: config.credentials.as_ref().map(basic_authorization),
            dcos: (config.dcos_service_account.as_ref())
                .map(|account| super::dcos::Login::new(account, config.request_timeout)),
            request_timeout: config.request_timeout,
            max_body_bytes: config.max_body_bytes,
        })
    }

    /// Fetches both documents from one Marathon; `base` is e.g. `http://marathon:8080`.
    pub(super) fn fetch(&self, base: &str, deadline: Instant) -> Result<(AppList, TaskList)> {
        let base = base.trim_end_matches('/');
        let apps = self.get_json(base, "/v2/apps", deadline)?;
        let tasks = self.get_json(base, "/v2/tasks", deadline)?;
        Ok((apps, tasks))
    }

    fn get_json<T: DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
        deadline: Instant,
    ) -> Result<T> {
        let body = self
            .get(&format!("{base}{path}"), deadline)
            .with_context(|| format!("GET {path}"))?;
        parse_json(&body).with_context(|| format!("GET {path}"))
    }

    /// One bounded GET; the successful body, or an error saying what the server did.
    fn get(&self, url: &str, deadline: Instant) -> Result<Vec<u8>> {
        let budget = RequestBudget::new(self.request_timeout, deadline)?;
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
        let authorization = match &self.dcos {
            Some(login) => Some(login.authorization(&self.agent, deadline)?),
            None => self.authorization.clone(),
        };
        let response = follow_redirects(url, authorization.as_deref(), MAX_REDIRECTS, send)
            .map_err(|error| anyhow!(describe_transport_error(&error, &budget)))?;

        let status = response.status();
        let final_uri = response.get_uri().clone();
        if !status.is_success() {
            // DC/OS: a refused token is forgotten, and logged in again once per run.
            let dcos_refused = status == StatusCode::UNAUTHORIZED && self.dcos.is_some();
            if dcos_refused && self.dcos.as_ref().is_some_and(|login| login.unauthorized()) {
                return self.get(url, deadline);
            }
            let message = marathon_message(response.into_body());
            let text = describe_status(status, message, &final_uri, url, authorization.is_some());
            match (&self.dcos, dcos_refused) {
                (Some(login), true) => bail!(login.explain(&text)),
                _ => bail!(text),
            }
        }
        response
            .into_body()
            .with_config()
            .limit(self.max_body_bytes)
            .read_to_vec()
            .map_err(|error| anyhow!(describe_transport_error(&error, &budget)))
    }
}

/// The agent every request to Marathon goes through (the event stream's too): verified TLS
/// with the configured roots, statuses read as answers, redirects left to `follow_redirects`.
pub(super) fn agent(config: &FetchConfig, accept: &str) -> Result<Agent> {
    let roots = match &config.ca_cert {
        Some(path) => load_ca_bundle(path)?,
        // Mozilla's roots compiled into the binary: the same trust on every host and in
        // minimal containers without a CA store.
        None => RootCerts::WebPki,
    };
    Ok(Agent::config_builder()
        // Statuses are answers, not transport errors: we read them ourselves so a 401 can
        // say "authentication" and a 503 can carry Marathon's message.
        .http_status_as_error(false)
        // Redirects are followed by `follow_redirects`, which decides where credentials go.
        .max_redirects(0)
        .user_agent(USER_AGENT)
        .accept(accept)
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .build()
        .new_agent())
}

/// Sends `GET url` through `send` and follows up to `max_redirects` redirects (a Marathon that
/// is not the leader redirects to the leader, usually on another host), re-sending the
/// credentials on each hop except from https down to http. Sending them to another host is
/// safe here: over https only the verified Marathon can issue the redirect, and over plain http
/// the credentials are on the wire already. Returns the first answer that is not a redirect
/// (or a redirect without a usable `Location`, for the caller to report).
pub(super) fn follow_redirects(
    url: &str,
    authorization: Option<&str>,
    max_redirects: u32,
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
        if current.starts_with("https://") && next.starts_with("http://") {
            authorization = None;
        }
        current = next;
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
fn load_ca_bundle(path: &Path) -> Result<RootCerts> {
    let pem = std::fs::read(path)
        .with_context(|| format!("reading the Marathon CA bundle {}", path.display()))?;
    let mut certificates = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(certificate)) => certificates.push(certificate),
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
    Ok(RootCerts::new_with_certs(&certificates))
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

fn describe_tls_failure(tls: &rustls::Error) -> String {
    let mut text = format!("TLS failed: {tls}");
    if matches!(tls, rustls::Error::InvalidCertificate(_)) {
        text.push_str(
            "; the server's certificate must chain to a trusted root: the built-in Mozilla \
             roots, or the CA bundle given with --marathon-ca-cert",
        );
    }
    text
}

/// An HTTP status answer in words, with Marathon's own message when it sent one.
pub(super) fn describe_status(
    status: StatusCode,
    marathon_message: Option<String>,
    final_uri: &Uri,
    requested: &str,
    credentials_given: bool,
) -> String {
    let mut text = format!("HTTP {}", status.as_u16());
    if let Some(reason) = status.canonical_reason() {
        text.push(' ');
        text.push_str(reason);
    }
    let redirected = *final_uri != requested;
    if redirected {
        text.push_str(&format!(" (after a redirect to {final_uri})"));
    }
    match status.as_u16() {
        401 if !credentials_given => text.push_str(
            ": authentication failed: Marathon wants credentials; give them with \
             --auth-credentials or --marathon-auth-credential-file",
        ),
        401 => {
            text.push_str(
                ": authentication failed: Marathon refused the credentials from \
                 --auth-credentials / --marathon-auth-credential-file",
            );
            if redirected
                && requested.starts_with("https://")
                && final_uri.scheme_str() == Some("http")
            {
                text.push_str(" (credentials are not re-sent from https down to http)");
            }
        }
        403 => text.push_str(
            ": authorization failed: the credentials from --auth-credentials / \
             --marathon-auth-credential-file may not read apps and tasks",
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
    // One line, bounded, whatever the server sent.
    let message: String = message.split_whitespace().collect::<Vec<_>>().join(" ");
    Some(message.chars().take(200).collect())
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
        let text = describe_status(StatusCode::UNAUTHORIZED, None, &uri, requested, false);
        assert!(text.starts_with("HTTP 401 Unauthorized: authentication failed"));
        let text = describe_status(StatusCode::FORBIDDEN, None, &uri, requested, true);
        assert!(text.starts_with("HTTP 403 Forbidden: authorization failed"));
        let message = Some("leader unknown".to_string());
        let text = describe_status(
            StatusCode::SERVICE_UNAVAILABLE,
            message,
            &uri,
            requested,
            false,
        );
        assert_eq!(
            text,
            "HTTP 503 Service Unavailable (Marathon says: leader unknown)"
        );
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

    /// Follows a scripted chain of answers, noting each hop's URL and credentials.
    fn follow(
        start: &str,
        script: &[(u16, Option<&str>)],
        max: u32,
    ) -> (Result<u16, String>, Vec<(String, bool)>) {
        let mut hops = Vec::new();
        let mut answers = script.iter();
        let result = follow_redirects(start, Some("Basic x"), max, |url, authorization| {
            hops.push((url.to_string(), authorization.is_some()));
            let (status, location) = answers.next().expect("scripted answer");
            Ok(answer(*status, *location))
        });
        (
            result
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string()),
            hops,
        )
    }

    #[test]
    fn credentials_follow_to_another_host_but_never_down_to_http() {
        let (result, hops) = follow(
            "https://m1:8443/v2/apps",
            &[
                (307, Some("https://m2:8443/v2/apps")),
                (302, Some("http://m3:8080/v2/apps")),
                (200, None),
            ],
            3,
        );
        assert_eq!(result, Ok(200));
        assert_eq!(
            hops,
            vec![
                ("https://m1:8443/v2/apps".to_string(), true),
                ("https://m2:8443/v2/apps".to_string(), true),
                ("http://m3:8080/v2/apps".to_string(), false),
            ]
        );
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
