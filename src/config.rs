//! The plain, documented settings of one run (or of an `--interval` loop): no clap, no HTTP types.
//!
//! `cli.rs` builds a [`Config`] from flags and environment; every other module reads the part of
//! it that concerns it. Defaults live here, next to the field they belong to.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Where Marathon's state comes from. `Debug` (in `fetch`) redacts a URL's password.
#[derive(Clone, PartialEq, Eq)]
pub enum MarathonSource {
    /// A Marathon base URL such as `http://marathon.mesos:8080` (no trailing `/v2`).
    Url(String),
    /// A directory holding a saved snapshot: `apps.json` (`GET /v2/apps`) and `tasks.json`
    /// (`GET /v2/tasks`), the layout of the compatibility corpus.
    Snapshot(PathBuf),
}

/// HTTP basic-auth credentials for Marathon.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

/// A DC/OS service account (`--dcos-auth-credentials`, marathon-lb's
/// `DCOS_SERVICE_ACCOUNT_CREDENTIAL`): the run signs an RS256 JWT with `private_key`, logs in at
/// `login_endpoint` and sends Marathon `Authorization: token=<token>`.
#[derive(Clone, PartialEq, Eq)]
pub struct DcosServiceAccount {
    pub uid: String,
    /// The account's RSA private key, PEM (PKCS#8 or PKCS#1).
    pub private_key: String,
    /// e.g. `https://leader.mesos/acs/api/v1/auth/login`.
    pub login_endpoint: String,
}

impl std::fmt::Debug for DcosServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key never reaches a log line through `{:?}`.
        write!(
            f,
            "DcosServiceAccount({} at {}, key ***)",
            self.uid, self.login_endpoint
        )
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never let a password reach a log line through `{:?}`.
        write!(f, "Credentials({}:***)", self.user)
    }
}

/// How to reach Marathon.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Tried in order; a source that refuses, times out, answers anything but 2xx or sends a
    /// truncated, oversized or unparsable body passes the turn to the next. At least one.
    pub sources: Vec<MarathonSource>,
    /// Basic-auth credentials sent to every URL source. Default: none.
    pub credentials: Option<Credentials>,
    /// DC/OS service-account login instead of basic auth (never both). Default: none.
    pub dcos_service_account: Option<DcosServiceAccount>,
    /// PEM CA bundle trusted for `https://` sources instead of the built-in Mozilla roots (as
    /// `curl --cacert` and marathon-lb's `--marathon-ca-cert` do). TLS is always verified.
    /// Default: none (the Mozilla roots compiled into the binary).
    pub ca_cert: Option<PathBuf>,
    /// Longest one HTTP request may take, connect and whole body included (a stalled body
    /// cannot hold a run); cut shorter when the run's deadline is nearer. Default: 10 s.
    pub request_timeout: Duration,
    /// `--max-response-size`: largest response body (or snapshot file) accepted, in bytes.
    /// With the two limits below it bounds the run's peak memory (README, "Limits").
    /// Default: [`DEFAULT_MAX_RESPONSE_BYTES`] (64 MiB).
    pub max_body_bytes: u64,
    /// `--max-apps`: an answer listing more apps is a bad answer (the next source is tried).
    /// Default: [`DEFAULT_MAX_APPS`] (20,000).
    pub max_apps: usize,
    /// `--max-tasks`: likewise for tasks. Default: [`DEFAULT_MAX_TASKS`] (200,000).
    pub max_tasks: usize,
    /// Where `credentials` came from, named (never shown) when Marathon refuses them, e.g.
    /// `--auth-credentials`. Default: none.
    pub credentials_from: Option<String>,
}

pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;
pub const DEFAULT_MAX_APPS: usize = 20_000;
pub const DEFAULT_MAX_TASKS: usize = 200_000;

/// What marathon-lb calls its generation flags: which services are rendered and how.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// `--strict-mode`: only services with `HAPROXY_{n}_ENABLED=true` are rendered.
    pub strict_mode: bool,
    /// `--health-check`: drop tasks of health-checked apps unless a check result is alive.
    pub health_check: bool,
    /// Range for service ports auto-assigned to IP-per-task apps that declare none.
    /// Default 10050..=10100; `0, 0` disables auto-assignment.
    pub min_serv_port_ip_per_task: u32,
    pub max_serv_port_ip_per_task: u32,
    /// `FRAMEWORK_NAME` from the environment: the app `/<name>` (the load balancer itself) is
    /// skipped. Default: none.
    pub framework_name: Option<String>,
    /// `--protect-shared-listeners`: an app whose listener takes the port of a shared listener
    /// (the :80/:443/:9091 frontends, the head's binds) is left out. Default off: it is rendered
    /// as marathon-lb renders it (HAProxy then splits that port's new connections between the
    /// two) and named in a warning.
    pub protect_shared_listeners: bool,
}

/// How the configuration text is produced.
#[derive(Debug, Clone)]
pub struct RenderConfig {
    /// `--group`: only services in one of these groups are rendered; `*` takes every service.
    pub groups: Vec<String>,
    /// `--templates DIR`: per-section overrides, looked up before the embedded defaults.
    pub templates_dir: Option<PathBuf>,
    /// `HAPROXY_<TEMPLATE>` variables from the environment (the value's two characters `\n`
    /// stand for a newline); they win over files in `templates_dir`.
    pub template_env: BTreeMap<String, String>,
    /// `HAPROXY_GLOBAL_DEFAULT_OPTIONS` (comma-separated `option` names for the default head).
    /// Default: `redispatch,http-server-close,dontlognull`.
    pub global_default_options: Option<String>,
    /// `--ssl-certs`: certificates for the :443 frontend, in order. Default `/etc/ssl/cert.pem`.
    pub ssl_certs: Vec<String>,
    /// False with `--dont-bind-http-https`: no :80 / :443 frontends.
    pub bind_http_https: bool,
    /// `--group-https-by-vhost`: :443 in tcp mode with one SNI-routed frontend per vhost.
    pub group_https_by_vhost: bool,
    /// `--haproxy-map`: route vhosts and app ids through map files where possible.
    pub haproxy_map: bool,
    /// The live config's path; map files live in its directory and are named from it.
    pub haproxy_config: PathBuf,
    /// `--no-label-templates`: ignore raw template labels (`HAPROXY_{n}_BACKEND_HEAD`, ...).
    pub label_templates: bool,
}

/// How a rendered candidate is put in place.
#[derive(Debug, Clone)]
pub struct ApplyConfig {
    /// The live configuration file. Default `/etc/haproxy/haproxy.cfg`.
    pub haproxy_config: PathBuf,
    /// Exclusive lock held from reading the live file to the end of the reload.
    /// Default `<haproxy_config>.lock`.
    pub lock_file: PathBuf,
    /// How long to wait for the lock before giving up. Default 30 s.
    pub lock_timeout: Duration,
    /// `haproxy` binary used for `-c` validation. Default `haproxy` (from `PATH`).
    pub haproxy_bin: PathBuf,
    /// `--skip-validation`: do not run `haproxy -c` on the candidate.
    pub skip_validation: bool,
    /// Reload command, run with `sh -c`. Default `systemctl reload haproxy`. Not used when
    /// `haproxy_master_socket` is set.
    pub reload_command: String,
    /// `--haproxy-master-socket`: HAProxy's master CLI socket (`haproxy -W -S PATH`). When set,
    /// the reload is `reload` sent there, confirmed by `show proc` (a new worker, no failed
    /// reload) within `command_timeout`. Default: none (run `reload_command`).
    pub haproxy_master_socket: Option<PathBuf>,
    /// With `haproxy_master_socket`: apply a change that only adds, removes or reweights
    /// servers through HAProxy's runtime API, without a reload (docs/RUNTIME.md).
    /// `--no-runtime-api` turns it off. Default true.
    pub runtime_api: bool,
    /// `--min-reload-interval`: a change found sooner than this after the last reload (recorded
    /// in `<config>.state`) is deferred to the first run after it. Default 0: off.
    pub min_reload_interval: Duration,
    /// `--max-server-loss`: refuse a candidate with more than this percentage fewer servers
    /// than the live config. Default 50.
    pub max_server_loss_percent: u8,
    /// `--force`: apply a candidate the blast-radius guard refuses.
    pub force: bool,
    /// Longest a validation or reload command may run before it is killed, and longest a
    /// master-socket reload may take to be confirmed. Default 30 s.
    pub command_timeout: Duration,
    /// Previous live configs kept as `<config>.1` (newest) .. `<config>.N`. Default 5; 0 keeps
    /// none.
    pub archive_versions: usize,
    /// `--dry-run`: change nothing; print the candidate (or, with `diff`, the diff) to stdout.
    pub dry_run: bool,
    /// `--diff`: print a unified diff live → candidate (of what was applied, on a real run).
    pub diff: bool,
}

/// `--sse`: react to Marathon's event stream (`GET /v2/events`) between full resyncs. The stream
/// only says "look now"; every reaction is a full, normal run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// `--sse-debounce`: a run starts once no relevant event arrived for this long, so a burst
    /// becomes one run. Default 200 ms.
    pub debounce: Duration,
    /// `--sse-debounce-max`: longest a run waits for that quiet after the first event of a
    /// burst, so a steady flood still gets a run this often. Default 1 s.
    pub debounce_max: Duration,
    /// `--sse-timeout`: the stream is taken for dead, and reopened, when it sends nothing (not
    /// even Marathon's heartbeat, a bare line every 10 s) for this long. Default 30 s.
    pub stream_timeout: Duration,
    /// First wait before reopening a stream that failed or ended early; doubled on each
    /// failure in a row. Default 500 ms.
    pub reconnect_min: Duration,
    /// Cap of that wait. A stream that stayed open at least this long is reopened at once when
    /// it ends (a leader change, say). Default 30 s.
    pub reconnect_max: Duration,
}

impl Default for EventsConfig {
    fn default() -> EventsConfig {
        EventsConfig {
            debounce: Duration::from_millis(200),
            debounce_max: Duration::from_secs(1),
            stream_timeout: Duration::from_secs(30),
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
        }
    }
}

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub fetch: FetchConfig,
    pub model: ModelConfig,
    pub render: RenderConfig,
    pub apply: ApplyConfig,
    /// Deadline for fetching and taking the lock in one run, so a cron run never overlaps the
    /// next (validation and reload are bounded by `ApplyConfig::command_timeout`). Default 50 s.
    pub run_deadline: Duration,
    /// `--interval`: run again every period until SIGTERM/SIGINT. Default: run once; with
    /// `events`, [`DEFAULT_SSE_RESYNC_INTERVAL`].
    pub interval: Option<Duration>,
    /// `--sse`: also run on Marathon's events; `interval` is then the period of the safety-net
    /// resync and of polling while the stream is down. Default: none (no event stream).
    pub events: Option<EventsConfig>,
    /// `--metrics-file`: a Prometheus textfile rewritten atomically at the end of every run
    /// (for node_exporter's textfile collector). Default: none.
    pub metrics_file: Option<PathBuf>,
    /// `--splay`: before the first run, wait a random time up to this long, so a fleet's cron
    /// runs do not all ask Marathon at the same second. A one-shot run counts the wait against
    /// `run_deadline`. Default 0: no wait.
    pub splay: Duration,
    /// The `--ssl-certs` files that did not exist when the flags were read (checked then, since
    /// `render` does no I/O): HAProxy refuses a `crt` it cannot open, so a run warns about them
    /// and a rejected candidate is blamed on them. Default: none.
    pub missing_ssl_certs: Vec<String>,
}

pub const DEFAULT_HAPROXY_CONFIG: &str = "/etc/haproxy/haproxy.cfg";
pub const DEFAULT_RELOAD_COMMAND: &str = "systemctl reload haproxy";
pub const DEFAULT_SSL_CERT: &str = "/etc/ssl/cert.pem";
pub const DEFAULT_MAX_SERVER_LOSS_PERCENT: u8 = 50;
pub const DEFAULT_MIN_SERV_PORT_IP_PER_TASK: u32 = 10050;
pub const DEFAULT_MAX_SERV_PORT_IP_PER_TASK: u32 = 10100;
/// The full-resync period of `--sse` when `--interval` is not given.
pub const DEFAULT_SSE_RESYNC_INTERVAL: Duration = Duration::from_secs(5 * 60);

impl Config {
    /// A config with every default, reading Marathon from `sources` and writing `haproxy_config`.
    /// Tests and the CLI start from here.
    pub fn new(sources: Vec<MarathonSource>, haproxy_config: PathBuf) -> Config {
        let lock_file = default_lock_file(&haproxy_config);
        Config {
            fetch: FetchConfig {
                sources,
                credentials: None,
                dcos_service_account: None,
                ca_cert: None,
                request_timeout: Duration::from_secs(10),
                max_body_bytes: DEFAULT_MAX_RESPONSE_BYTES,
                max_apps: DEFAULT_MAX_APPS,
                max_tasks: DEFAULT_MAX_TASKS,
                credentials_from: None,
            },
            model: ModelConfig {
                strict_mode: false,
                health_check: false,
                min_serv_port_ip_per_task: DEFAULT_MIN_SERV_PORT_IP_PER_TASK,
                max_serv_port_ip_per_task: DEFAULT_MAX_SERV_PORT_IP_PER_TASK,
                framework_name: None,
                protect_shared_listeners: false,
            },
            render: RenderConfig {
                groups: vec!["external".to_string()],
                templates_dir: None,
                template_env: BTreeMap::new(),
                global_default_options: None,
                ssl_certs: vec![DEFAULT_SSL_CERT.to_string()],
                bind_http_https: true,
                group_https_by_vhost: false,
                haproxy_map: false,
                haproxy_config: haproxy_config.clone(),
                label_templates: true,
            },
            apply: ApplyConfig {
                haproxy_config,
                lock_file,
                lock_timeout: Duration::from_secs(30),
                haproxy_bin: PathBuf::from("haproxy"),
                skip_validation: false,
                reload_command: DEFAULT_RELOAD_COMMAND.to_string(),
                haproxy_master_socket: None,
                runtime_api: true,
                min_reload_interval: Duration::ZERO,
                max_server_loss_percent: DEFAULT_MAX_SERVER_LOSS_PERCENT,
                force: false,
                command_timeout: Duration::from_secs(30),
                archive_versions: 5,
                dry_run: false,
                diff: false,
            },
            run_deadline: Duration::from_secs(50),
            interval: None,
            metrics_file: None,
            events: None,
            splay: Duration::ZERO,
            missing_ssl_certs: Vec::new(),
        }
    }

    /// The warning a dry run gives while an `--ssl-certs` file is missing, so it says what the
    /// real run would meet in `haproxy -c`.
    pub fn missing_ssl_certs_warning(&self) -> Option<String> {
        if self.missing_ssl_certs.is_empty() {
            return None;
        }
        Some(format!(
            "{}: a real run would fail, since HAProxy refuses the :443 frontend; {}",
            missing_ssl_certs_message(&self.missing_ssl_certs),
            MISSING_SSL_CERT_FIX
        ))
    }

    /// What to say when HAProxy rejects a candidate even without any app: a missing
    /// certificate when there is one, else the head or a template.
    pub fn blame_without_apps(&self) -> String {
        match self.missing_ssl_certs.as_slice() {
            [] => "the fault is in what every configuration shares (the head, a template, or a \
                   file they name such as --ssl-certs), not in an app"
                .to_string(),
            missing => format!(
                "{}; {}",
                missing_ssl_certs_message(missing),
                MISSING_SSL_CERT_FIX
            ),
        }
    }
}

/// How to get a usable `--ssl-certs` file, named wherever a missing one is reported.
pub const MISSING_SSL_CERT_FIX: &str = "create it (the Debian package makes a self-signed \
     one at install; by hand: openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj '/CN=*' \
     -keyout key.pem -out cert.pem && cat cert.pem key.pem > FILE), point --ssl-certs at your \
     own, or give --dont-bind-http-https";

/// `the certificate /etc/ssl/cert.pem (--ssl-certs) does not exist`, for one or more files.
pub fn missing_ssl_certs_message(missing: &[String]) -> String {
    match missing {
        [one] => format!("the certificate {one} (--ssl-certs) does not exist"),
        many => format!(
            "the certificates {} (--ssl-certs) do not exist",
            many.join(", ")
        ),
    }
}

/// `<config>.lock` beside the config: a stable inode, unlike the config that renames replace.
pub fn default_lock_file(haproxy_config: &std::path::Path) -> PathBuf {
    let mut name = haproxy_config.as_os_str().to_os_string();
    name.push(".lock");
    PathBuf::from(name)
}
