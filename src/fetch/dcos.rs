//! DC/OS service-account login (`--dcos-auth-credentials`), as marathon-lb does it: sign a
//! short-lived RS256 JWT `{"uid", "exp"}` with the account's private key, POST
//! `{"uid", "token"}` to the account's `login_endpoint`, and send Marathon the token it answers
//! with as `Authorization: token=<token>`. One login per run (one [`Login`] per fetch), and one
//! more when Marathon answers 401 to the token. The RSA signature is ring's (already in the
//! tree under rustls); nothing here is hand-written cryptography.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use ureq::tls::PemItem;
use ureq::Agent;

use super::http::{self, RequestBudget};
use crate::config::DcosServiceAccount;

/// How long the signed login request is valid: marathon-lb's minute.
const LOGIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// The cookie DC/OS sets on login; marathon-lb reads the token from it, newer IAMs also send
/// it as `{"token": ...}`.
const AUTH_COOKIE: &str = "dcos-acs-auth-cookie";

/// Largest login answer read.
const LOGIN_BODY_LIMIT: u64 = 64 * 1024;

/// One run's login: the token once obtained, and whether the one re-login is spent.
pub(super) struct Login {
    account: DcosServiceAccount,
    request_timeout: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    token: Option<String>,
    logged_in_again: bool,
}

impl Login {
    pub(super) fn new(account: &DcosServiceAccount, request_timeout: Duration) -> Login {
        Login {
            account: account.clone(),
            request_timeout,
            state: Mutex::new(State::default()),
        }
    }

    /// `token=<token>` for Marathon's `Authorization` header, logging in first if this run
    /// has no token yet.
    pub(super) fn authorization(&self, agent: &Agent, deadline: Instant) -> Result<String> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(token) = &state.token {
            return Ok(format!("token={token}"));
        }
        let budget = RequestBudget::new(self.request_timeout, deadline)?;
        let limit = self
            .request_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let token = log_in(&self.account, agent, limit, &budget).with_context(|| {
            format!(
                "logging in to DC/OS at {} as service account {}",
                self.account.login_endpoint, self.account.uid
            )
        })?;
        state.token = Some(token.clone());
        Ok(format!("token={token}"))
    }

    /// Marathon answered 401 to the token: forget it. True, once per run, when logging in
    /// again is worth a try (the token may have expired or been revoked).
    pub(super) fn unauthorized(&self) -> bool {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.token = None;
        !std::mem::replace(&mut state.logged_in_again, true)
    }

    /// Marathon's refusal, said in terms of the service account rather than basic auth.
    pub(super) fn explain(&self, status_text: &str) -> String {
        let code = status_text.split(':').next().unwrap_or(status_text);
        let said = status_text
            .find(" (Marathon says:")
            .map_or("", |at| &status_text[at..]);
        format!(
            "{code}: Marathon refused the token of DC/OS service account {} \
             (--dcos-auth-credentials), also after logging in again{said}",
            self.account.uid
        )
    }
}

/// POSTs the signed login request; the token from the answer's JSON or its cookie.
fn log_in(
    account: &DcosServiceAccount,
    agent: &Agent,
    limit: Duration,
    budget: &RequestBudget,
) -> Result<String> {
    let jwt = signed_login_token(account, SystemTime::now())?;
    let body = serde_json::json!({ "uid": account.uid, "token": jwt }).to_string();
    let response = agent
        .post(&account.login_endpoint)
        .header("Content-Type", "application/json")
        .config()
        .timeout_global(Some(limit))
        .build()
        .send(body)
        .map_err(|error| anyhow!(http::describe_transport_error(&error, budget)))?;
    let status = response.status();
    let cookie = auth_cookie(&response);
    let answer = response
        .into_body()
        .with_config()
        .limit(LOGIN_BODY_LIMIT)
        .read_to_vec()
        .unwrap_or_default();
    if !status.is_success() {
        let mut text = format!("HTTP {}", status.as_u16());
        if let Some(reason) = status.canonical_reason() {
            text = format!("{text} {reason}");
        }
        if let Some(said) = iam_message(&answer) {
            text = format!("{text} (DC/OS says: {said})");
        }
        bail!(
            "{text}: the login was refused; check the uid, the key and the account's permissions"
        );
    }
    let from_body = serde_json::from_slice::<serde_json::Value>(&answer)
        .ok()
        .and_then(|value| value.get("token")?.as_str().map(str::to_string));
    match from_body.or(cookie) {
        Some(token) if !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(token)
        }
        _ => bail!("the login answer holds no token (neither {{\"token\": ...}} nor the {AUTH_COOKIE} cookie)"),
    }
}

/// The `dcos-acs-auth-cookie` value of a `Set-Cookie` header, if any.
fn auth_cookie(response: &ureq::http::Response<ureq::Body>) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|cookie| {
            let first = cookie.split(';').next()?.trim();
            let (name, value) = first.split_once('=')?;
            (name == AUTH_COOKIE).then(|| value.to_string())
        })
}

/// DC/OS IAM errors read `{"title": ..., "description": ..., "code": ...}`: one bounded line.
fn iam_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let said = value
        .get("description")
        .or_else(|| value.get("title"))?
        .as_str()?;
    Some(super::http::one_bounded_line(said))
}

/// The RS256 JWT marathon-lb signs: `{"uid": uid, "exp": now + 60 s}`.
pub(super) fn signed_login_token(account: &DcosServiceAccount, now: SystemTime) -> Result<String> {
    let key = private_key(account)?;
    let exp = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_add(LOGIN_TOKEN_LIFETIME)
        .as_secs();
    let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = encode(
        serde_json::json!({ "uid": account.uid, "exp": exp })
            .to_string()
            .as_bytes(),
    );
    let signing_input = format!("{header}.{claims}");
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| anyhow!("signing the DC/OS login token failed"))?;
    Ok(format!("{signing_input}.{}", encode(&signature)))
}

/// The account's RSA key from its PEM (`BEGIN PRIVATE KEY` or `BEGIN RSA PRIVATE KEY`).
fn private_key(account: &DcosServiceAccount) -> Result<RsaKeyPair> {
    let not_usable = |why: String| {
        anyhow!(
            "the private_key of DC/OS service account {} is not usable: {why}",
            account.uid
        )
    };
    let key = ureq::tls::parse_pem(account.private_key.as_bytes())
        .find_map(|item| match item {
            Ok(PemItem::PrivateKey(key)) => Some(key),
            _ => None,
        })
        .ok_or_else(|| not_usable("no PEM private key (-----BEGIN PRIVATE KEY-----)".into()))?;
    // PKCS#8 (`BEGIN PRIVATE KEY`, what DC/OS makes) or PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    RsaKeyPair::from_pkcs8(key.der())
        .or_else(|_| RsaKeyPair::from_der(key.der()))
        .map_err(|rejected| not_usable(format!("not an RSA key of 2048 bits or more ({rejected})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(private_key: &str) -> DcosServiceAccount {
        DcosServiceAccount {
            uid: "lb".to_string(),
            private_key: private_key.to_string(),
            login_endpoint: "https://leader.mesos/acs/api/v1/auth/login".to_string(),
        }
    }

    #[test]
    fn a_key_that_is_not_pem_is_named_with_the_account() {
        let error = signed_login_token(&account("nonsense"), SystemTime::now()).unwrap_err();
        let text = format!("{error:#}");
        assert!(text.contains("service account lb"), "{text}");
        assert!(
            !text.contains("nonsense"),
            "the key's text stays out: {text}"
        );
    }

    #[test]
    fn one_relogin_per_run() {
        let login = Login::new(&account(""), Duration::from_secs(1));
        assert!(login.unauthorized(), "the first 401 earns a second login");
        assert!(!login.unauthorized(), "the second does not");
    }
}
