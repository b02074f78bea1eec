//! The command line: clap definitions (their doc comments are `--help`) and their conversion
//! into a plain [`Config`]. The only file that knows clap.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser, Subcommand};

use crate::config::{self, Config, Credentials, EventsConfig, MarathonSource};
use crate::log;

/// Keeps HAProxy's configuration in step with the apps Marathon runs.
///
/// Each run fetches /v2/apps and /v2/tasks from Marathon, renders haproxy.cfg with marathon-lb's
/// label and template semantics and, only when it changed, validates it with `haproxy -c`,
/// renames it into place atomically and reloads HAProxy, putting the previous configuration back
/// when anything fails. Flags shared with marathon-lb keep marathon-lb's names and meaning.
/// Every flag can also be set through the environment variable shown, so a systemd
/// EnvironmentFile= or /etc/default/haproxy-marathon-sync can carry them.
#[derive(Debug, Parser)]
#[command(
    name = "haproxy-marathon-sync",
    version,
    max_term_width = 100,
    args_override_self = true,
    // `completions` needs no --group; a run without a subcommand still does.
    subcommand_negates_reqs = true,
    disable_help_subcommand = true,
    infer_long_args = true
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Marathon base URL, or a directory holding a saved snapshot (apps.json + tasks.json).
    /// Repeat the flag, separate with commas, or list several after one flag (as marathon-lb
    /// takes them); tried in order, the next one is used when one refuses, times out or
    /// answers 5xx.
    #[arg(
        short = 'm',
        long = "marathon",
        value_name = "URL|DIR",
        env = "HAPROXY_MARATHON_SYNC_MARATHON",
        num_args = 1..,
        value_delimiter = ',',
        default_value = "http://master.mesos:8080"
    )]
    pub marathon: Vec<String>,

    /// Render only services in this HAProxy group (HAPROXY_GROUP / HAPROXY_<n>_GROUP label).
    /// Repeatable or comma-separated; '*' renders every service, grouped or not.
    #[arg(
        long = "group",
        value_name = "NAME",
        env = "HAPROXY_MARATHON_SYNC_GROUP",
        value_delimiter = ',',
        required_unless_present = "longhelp"
    )]
    pub group: Vec<String>,

    /// The live HAProxy configuration file this tool owns. Map files (--haproxy-map), the lock,
    /// the archive of previous versions and the run record live beside it. A symbolic link is
    /// followed: the new file goes where it points and the link stays. A relative path is made
    /// absolute at start, so the map paths in the config are absolute.
    #[arg(
        long = "haproxy-config",
        value_name = "PATH",
        env = "HAPROXY_MARATHON_SYNC_HAPROXY_CONFIG",
        default_value = config::DEFAULT_HAPROXY_CONFIG,
        global = true
    )]
    pub haproxy_config: PathBuf,

    /// Directory of template overrides: a file named like a section (HAPROXY_BACKEND_HEAD) in
    /// marathon-lb's {placeholder} format, or NAME.j2 in Jinja, replaces that section. It must
    /// exist; a file named like no section gets a warning with the closest name. A section
    /// HAProxy rejects fails the run (exit 6) naming the file; no app is left out for it.
    #[arg(
        long = "templates",
        value_name = "DIR",
        env = "HAPROXY_MARATHON_SYNC_TEMPLATES"
    )]
    pub templates: Option<PathBuf>,

    /// Render only services whose HAPROXY_<n>_ENABLED label is true.
    #[arg(long = "strict-mode", env = "HAPROXY_MARATHON_SYNC_STRICT_MODE")]
    pub strict_mode: bool,

    /// Route only to tasks that pass their Marathon health checks (apps with health checks).
    #[arg(
        short = 'H',
        long = "health-check",
        env = "HAPROXY_MARATHON_SYNC_HEALTH_CHECK"
    )]
    pub health_check: bool,

    /// Leave out an app whose listener takes the port of a shared listener (the :80, :443 and
    /// :9091 frontends, the head's binds), which would hand it a share of every other app's new
    /// connections there. Without it such an app is rendered as marathon-lb renders it, and
    /// named in a warning.
    #[arg(
        long = "protect-shared-listeners",
        env = "HAPROXY_MARATHON_SYNC_PROTECT_SHARED_LISTENERS"
    )]
    pub protect_shared_listeners: bool,

    /// Certificates for the :443 frontend, comma-separated, in order.
    #[arg(
        long = "ssl-certs",
        value_name = "LIST",
        env = "HAPROXY_MARATHON_SYNC_SSL_CERTS",
        default_value = config::DEFAULT_SSL_CERT
    )]
    pub ssl_certs: String,

    /// Do not generate the :80 and :443 frontends.
    #[arg(
        long = "dont-bind-http-https",
        env = "HAPROXY_MARATHON_SYNC_DONT_BIND_HTTP_HTTPS"
    )]
    pub dont_bind_http_https: bool,

    /// Serve :443 in tcp mode with one SNI-routed frontend per vhost.
    #[arg(
        long = "group-https-by-vhost",
        env = "HAPROXY_MARATHON_SYNC_GROUP_HTTPS_BY_VHOST"
    )]
    pub group_https_by_vhost: bool,

    /// Route vhosts and app ids through domain2backend.map and app2backend.map (beside the
    /// config) instead of one ACL per app, where possible.
    #[arg(long = "haproxy-map", env = "HAPROXY_MARATHON_SYNC_HAPROXY_MAP")]
    pub haproxy_map: bool,

    /// Lowest service port auto-assigned to IP-per-task apps that declare none.
    #[arg(
        long = "min-serv-port-ip-per-task",
        value_name = "PORT",
        env = "HAPROXY_MARATHON_SYNC_MIN_SERV_PORT_IP_PER_TASK",
        default_value_t = config::DEFAULT_MIN_SERV_PORT_IP_PER_TASK
    )]
    pub min_serv_port_ip_per_task: u32,

    /// Highest auto-assigned service port; with the minimum also 0, auto-assignment is off.
    #[arg(
        long = "max-serv-port-ip-per-task",
        value_name = "PORT",
        env = "HAPROXY_MARATHON_SYNC_MAX_SERV_PORT_IP_PER_TASK",
        default_value_t = config::DEFAULT_MAX_SERV_PORT_IP_PER_TASK
    )]
    pub max_serv_port_ip_per_task: u32,

    /// Ignore raw template labels (HAPROXY_<n>_BACKEND_HEAD, ...); semantic labels (VHOST,
    /// PATH, ...) still apply. A template label lets whoever deploys the app write any
    /// directive of its own sections (http-request rules, ACLs, server options, timeouts);
    /// one that opens another section, changes the HAProxy process, runs code, reads files or
    /// HAProxy's environment leaves its app out. Turn them off when app owners should not
    /// shape HAProxy's traffic rules, or when no app uses them.
    #[arg(
        long = "no-label-templates",
        env = "HAPROXY_MARATHON_SYNC_NO_LABEL_TEMPLATES"
    )]
    pub no_label_templates: bool,

    /// Change nothing: print the rendered configuration to stdout (with --diff, the diff), say
    /// on stderr what the real run would decide (guard, haproxy -c, runtime update or reload
    /// and why), and exit with its status.
    #[arg(
        short = 'd',
        long = "dry-run",
        visible_alias = "dry",
        env = "HAPROXY_MARATHON_SYNC_DRY_RUN"
    )]
    pub dry_run: bool,

    /// Print a unified diff live → candidate: instead of the config with --dry-run, or of what
    /// was applied on a real run. Prints nothing when they are equal.
    #[arg(long = "diff", env = "HAPROXY_MARATHON_SYNC_DIFF")]
    pub diff: bool,

    /// Command that reloads HAProxy, run with `sh -c` after the new config is in place.
    #[arg(
        short = 'c',
        long = "reload-command",
        visible_alias = "command",
        value_name = "CMD",
        env = "HAPROXY_MARATHON_SYNC_RELOAD_COMMAND",
        default_value = config::DEFAULT_RELOAD_COMMAND
    )]
    pub reload_command: String,

    /// HAProxy binary used to validate a candidate with `-c`.
    #[arg(
        long = "haproxy-bin",
        value_name = "PATH",
        env = "HAPROXY_MARATHON_SYNC_HAPROXY_BIN",
        default_value = "haproxy"
    )]
    pub haproxy_bin: PathBuf,

    /// Do not validate the candidate with `haproxy -c` before putting it in place.
    #[arg(
        long = "skip-validation",
        env = "HAPROXY_MARATHON_SYNC_SKIP_VALIDATION"
    )]
    pub skip_validation: bool,

    /// Lock file serialising runs. Default: the config path with `.lock` appended.
    #[arg(
        long = "lock-file",
        value_name = "PATH",
        env = "HAPROXY_MARATHON_SYNC_LOCK_FILE"
    )]
    pub lock_file: Option<PathBuf>,

    /// Seconds to wait for another run's lock before giving up (0: give up at once).
    #[arg(
        long = "lock-timeout",
        value_name = "SECS",
        env = "HAPROXY_MARATHON_SYNC_LOCK_TIMEOUT",
        default_value = "30"
    )]
    pub lock_timeout: String,

    /// Seconds one HTTP request to Marathon may take (connect and read).
    #[arg(
        long = "timeout",
        value_name = "SECS",
        env = "HAPROXY_MARATHON_SYNC_TIMEOUT",
        default_value = "10"
    )]
    pub timeout: String,

    /// Seconds one whole run may take to fetch from Marathon (failover included) and get the
    /// lock, so a cron run never overlaps the next. Validation and reload have their own
    /// --command-timeout.
    #[arg(
        long = "run-timeout",
        value_name = "SECS",
        env = "HAPROXY_MARATHON_SYNC_RUN_TIMEOUT",
        default_value = "50"
    )]
    pub run_timeout: String,

    /// Seconds `haproxy -c` or the reload command may run before it is killed (and that a
    /// --haproxy-master-socket reload may take to be confirmed).
    #[arg(
        long = "command-timeout",
        value_name = "SECS",
        env = "HAPROXY_MARATHON_SYNC_COMMAND_TIMEOUT",
        default_value = "30"
    )]
    pub command_timeout: String,

    /// Marathon basic-auth credentials as user:password. Prefer the file or the environment
    /// variable: a flag shows in `ps`. Without them, user:password@ in a --marathon URL is
    /// used. Credentials go only to the --marathon URLs' origins and are never printed.
    #[arg(
        long = "auth-credentials",
        value_name = "USER:PASS",
        env = "HAPROXY_MARATHON_SYNC_AUTH_CREDENTIALS",
        hide_env_values = true
    )]
    pub auth_credentials: Option<String>,

    /// File whose first line is user:password for Marathon basic auth.
    #[arg(
        long = "marathon-auth-credential-file",
        value_name = "FILE",
        env = "HAPROXY_MARATHON_SYNC_MARATHON_AUTH_CREDENTIAL_FILE"
    )]
    pub marathon_auth_credential_file: Option<PathBuf>,

    /// PEM CA bundle to trust for https:// Marathon URLs instead of the built-in Mozilla roots,
    /// as curl --cacert trusts it: a self-signed server certificate given here is accepted (its
    /// host name and dates still checked). TLS is always verified.
    #[arg(
        long = "marathon-ca-cert",
        value_name = "FILE",
        env = "HAPROXY_MARATHON_SYNC_MARATHON_CA_CERT"
    )]
    pub marathon_ca_cert: Option<PathBuf>,

    /// DC/OS service account to log in with instead of basic auth: its JSON (uid, private_key,
    /// login_endpoint), or a file holding it. Each run signs an RS256 token with the key, logs
    /// in once, sends `Authorization: token=...`, and logs in again once on a 401. marathon-lb's
    /// DCOS_SERVICE_ACCOUNT_CREDENTIAL is read too.
    #[arg(
        long = "dcos-auth-credentials",
        value_name = "JSON|FILE",
        env = "HAPROXY_MARATHON_SYNC_DCOS_AUTH_CREDENTIALS",
        hide_env_values = true
    )]
    pub dcos_auth_credentials: Option<String>,

    /// Largest answer accepted from Marathon (each of /v2/apps and /v2/tasks, or a snapshot
    /// file): bytes, or with a K, M or G suffix (binary: 64M is 64 MiB). A larger answer is a
    /// bad answer: the next --marathon URL is asked. With --max-apps and --max-tasks it bounds
    /// the run's memory (see the README's "Limits").
    #[arg(
        long = "max-response-size",
        value_name = "SIZE",
        env = "HAPROXY_MARATHON_SYNC_MAX_RESPONSE_SIZE",
        default_value = "64M"
    )]
    pub max_response_size: String,

    /// Most apps accepted in one answer of Marathon's; more is a bad answer (the next --marathon
    /// URL is asked). Reading stops at the first app over the limit.
    #[arg(
        long = "max-apps",
        value_name = "N",
        env = "HAPROXY_MARATHON_SYNC_MAX_APPS",
        default_value_t = config::DEFAULT_MAX_APPS
    )]
    pub max_apps: usize,

    /// Most tasks accepted in one answer of Marathon's; more is a bad answer (the next
    /// --marathon URL is asked).
    #[arg(
        long = "max-tasks",
        value_name = "N",
        env = "HAPROXY_MARATHON_SYNC_MAX_TASKS",
        default_value_t = config::DEFAULT_MAX_TASKS
    )]
    pub max_tasks: usize,

    /// Keep running: one run every DURATION (e.g. 5s, 1m). Errors are logged and the loop goes
    /// on; SIGTERM or SIGINT ends it between runs, SIGHUP starts a run now, SIGUSR1 reloads
    /// HAProxy with the live file. With --sse it is the full-resync period (default 5m there).
    #[arg(
        long = "interval",
        value_name = "DURATION",
        env = "HAPROXY_MARATHON_SYNC_INTERVAL"
    )]
    pub interval: Option<String>,

    /// Keep running and react to Marathon's event stream (/v2/events): task, health, app and
    /// deployment events trigger a full run, a burst of them one run. --interval (default 5m
    /// here) becomes the period of a full resync, and of polling while the stream is down.
    /// Signals as with --interval.
    #[arg(short = 's', long = "sse", env = "HAPROXY_MARATHON_SYNC_SSE")]
    pub sse: bool,

    /// With --sse: start a run once no event arrived for this long, so a burst is one run.
    #[arg(
        long = "sse-debounce",
        value_name = "DURATION",
        env = "HAPROXY_MARATHON_SYNC_SSE_DEBOUNCE",
        default_value = "200ms"
    )]
    pub sse_debounce: String,

    /// With --sse: longest a run waits for that quiet after the first event of a burst.
    #[arg(
        long = "sse-debounce-max",
        value_name = "DURATION",
        env = "HAPROXY_MARATHON_SYNC_SSE_DEBOUNCE_MAX",
        default_value = "1s"
    )]
    pub sse_debounce_max: String,

    /// With --sse: reopen the event stream when it sends nothing, not even Marathon's
    /// heartbeat (every 10s), for this long.
    #[arg(
        long = "sse-timeout",
        value_name = "DURATION",
        env = "HAPROXY_MARATHON_SYNC_SSE_TIMEOUT",
        default_value = "30s"
    )]
    pub sse_timeout: String,

    /// HAProxy's master CLI socket (haproxy -W -S PATH; Debian's unit uses
    /// /run/haproxy-master.sock). When set, the reload is `reload` on this socket, confirmed by
    /// `show proc` (a new worker, no failed reload) within --command-timeout, instead of
    /// --reload-command.
    #[arg(
        long = "haproxy-master-socket",
        value_name = "PATH",
        env = "HAPROXY_MARATHON_SYNC_HAPROXY_MASTER_SOCKET"
    )]
    pub haproxy_master_socket: Option<PathBuf>,

    /// Always reload: never apply a server-only change through HAProxy's runtime API (which
    /// --haproxy-master-socket otherwise does, without a reload). Use it when servers are also
    /// edited by hand on a stats socket, or to rule the runtime path out while debugging.
    #[arg(long = "no-runtime-api", env = "HAPROXY_MARATHON_SYNC_NO_RUNTIME_API")]
    pub no_runtime_api: bool,

    /// Reload at most once per DURATION (e.g. 30s, 2m): a change found sooner after the last
    /// reload (recorded in <config>.state) is deferred, with a note, to the first run after
    /// that. 0 turns it off.
    #[arg(
        long = "min-reload-interval",
        value_name = "DURATION",
        env = "HAPROXY_MARATHON_SYNC_MIN_RELOAD_INTERVAL",
        default_value = "0"
    )]
    pub min_reload_interval: String,

    /// Refuse a candidate with more than PERCENT fewer servers than the live config (a backend
    /// left with no servers, or no backends at all, is refused too; a backend gone with its
    /// app's tasks counts towards PERCENT only) unless --force.
    #[arg(
        long = "max-server-loss",
        value_name = "PERCENT",
        env = "HAPROXY_MARATHON_SYNC_MAX_SERVER_LOSS",
        default_value_t = config::DEFAULT_MAX_SERVER_LOSS_PERCENT,
        value_parser = clap::value_parser!(u8).range(0..=100)
    )]
    pub max_server_loss: u8,

    /// Apply a candidate even when the --max-server-loss guard refuses it.
    #[arg(long = "force", env = "HAPROXY_MARATHON_SYNC_FORCE")]
    pub force: bool,

    /// Write a Prometheus textfile here at the end of every run (atomically; point
    /// node_exporter's textfile collector at its directory): last run time and result, phase
    /// durations, apps/backends/servers rendered, apps left out or held at their last good
    /// definition, and counters kept across runs.
    #[arg(
        long = "metrics-file",
        value_name = "PATH",
        env = "HAPROXY_MARATHON_SYNC_METRICS_FILE"
    )]
    pub metrics_file: Option<PathBuf>,

    /// How many previous live configs to keep as <config>.1 (newest) .. <config>.N.
    #[arg(
        long = "archive-versions",
        value_name = "N",
        env = "HAPROXY_MARATHON_SYNC_ARCHIVE_VERSIONS",
        default_value_t = 5
    )]
    pub archive_versions: usize,

    /// marathon-lb flags that do not apply to a cron-style updater. Accepted so existing
    /// command lines keep working; each is reported once and ignored.
    #[arg(long = "skip-config-cleanup", hide = true)]
    pub ignored_skip_config_cleanup: bool,
    #[arg(long = "max-reload-retries", hide = true, value_name = "N")]
    pub ignored_max_reload_retries: Option<String>,
    #[arg(long = "reload-interval", hide = true, value_name = "SECS")]
    pub ignored_reload_interval: Option<String>,
    #[arg(long = "lru-cache-capacity", hide = true, value_name = "N")]
    pub ignored_lru_cache_capacity: Option<String>,
    #[arg(long = "max-backoff", hide = true, value_name = "SECS")]
    pub ignored_max_backoff: Option<String>,
    #[arg(long = "syslog-socket", hide = true, value_name = "PATH")]
    pub ignored_syslog_socket: Option<String>,

    /// Before the first run, wait a random time up to DURATION (e.g. 30s), so a fleet's cron
    /// lines do not all ask Marathon at the same second. The wait counts against
    /// --run-timeout (so must be shorter); a loop waits before its first run only; --dry-run
    /// does not wait. 0 turns it off.
    #[arg(
        long = "splay",
        value_name = "DURATION",
        env = "HAPROXY_MARATHON_SYNC_SPLAY",
        default_value = "0"
    )]
    pub splay: String,

    /// Print where the full reference is (every label and template) and exit.
    #[arg(long = "longhelp")]
    pub longhelp: bool,

    /// Which flags took their value from the environment (flag id → variable), for messages.
    #[arg(skip)]
    pub from_environment: BTreeMap<String, String>,

    /// Least severe lines logged to stderr: error, warn, info (what changed) or debug (every
    /// run). marathon-lb's names (WARNING, CRITICAL, ...) are accepted. An unchanged run logs
    /// nothing at info and above, unless the apps held at their last good definition or left
    /// out (or why) changed since the last run: those are said once, not by every run (which
    /// still exits 10 while an app is held).
    #[arg(
        long = "log-level",
        value_name = "LEVEL",
        env = "HAPROXY_MARATHON_SYNC_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,

    /// How stderr lines look: text (no timestamp; cron and journald add one) or json (one
    /// object per line with time, level, msg and fields). A marathon-lb Python format string is
    /// accepted, noted, and treated as text.
    #[arg(
        long = "log-format",
        value_name = "FORMAT",
        env = "HAPROXY_MARATHON_SYNC_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: String,
}

/// What `--longhelp` prints: marathon-lb printed its whole reference there; ours lives in the
/// man page and in REFERENCE.md, generated from the same tables as the code.
pub const LONGHELP: &str = "\
The full reference of haproxy-marathon-sync:
  man haproxy-marathon-sync               every flag, signal, file and exit status
  /usr/share/doc/haproxy-marathon-sync/REFERENCE.md
                                          every label and template, with its default text
                                          (docs/REFERENCE.md in the source tree)
  haproxy-marathon-sync --help            the flags and their environment variables
";

/// Subcommands; without one, the tool runs (once or on --interval).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what the runs for --haproxy-config left in their record: last run, last success,
    /// last change applied, last error, counters, and the config's age.
    Status {
        /// Print the record as JSON instead.
        #[arg(long = "json")]
        json: bool,
        /// Exit with status 11 when the last successful sync is older than DURATION (or there
        /// was none), saying how old it is: for monitoring checks.
        #[arg(long = "check-age", value_name = "DURATION")]
        check_age: Option<String>,
    },
    /// Print a completion script for SHELL (bash, zsh, fish, elvish or powershell) to stdout.
    Completions {
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
}

/// Writes the completion script for `shell`, generated from these very definitions.
pub fn write_completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    let mut command = Args::command();
    let name = command.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name.clone(), &mut script);
    let mut script = String::from_utf8_lossy(&script).into_owned();
    if shell == clap_complete::Shell::Bash {
        // clap_complete 4.6 escapes a hyphenated program name one way where it finds the
        // subcommand (`haproxy__marathon__sync__subcmd__status`) and another in the case
        // labels of the subcommands' flags (`haproxy__subcmd__marathon__...`), so `status
        // --<TAB>` and `completions <TAB>` offered nothing. The labels are made to match.
        let separator = "__subcmd__";
        let labelled = format!("{}{separator}", name.replace('-', separator));
        let found = format!("{}{separator}", name.replace('-', "__"));
        script = script.replace(&labelled, &found);
    }
    out.write_all(script.as_bytes()).ok();
}

impl Args {
    /// Parses the process's command line and environment; on a usage error it prints it and
    /// exits with 2, naming the environment variable when the bad value came from there.
    pub fn from_command_line() -> Args {
        let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
        match Args::command_with_environment().try_get_matches_from(&argv) {
            Ok(matches) => Args::from_matches(&matches).unwrap_or_else(|error| error.exit()),
            Err(error) => match environment_value_error(&error, &argv) {
                Some(message) => {
                    eprintln!("haproxy-marathon-sync: error: {message}");
                    std::process::exit(2);
                }
                None => error.exit(),
            },
        }
    }

    /// Parses `words` (the program name first) as [`Args::from_command_line`] parses the real
    /// command line, the environment included; a usage error comes back as clap's text.
    pub fn from_words<I, T>(words: I) -> Result<Args, String>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Args::command_with_environment()
            .try_get_matches_from(words)
            .map_err(|error| error.to_string())?;
        Args::from_matches(&matches).map_err(|error| error.to_string())
    }

    /// The clap command as `--help` shows it, with the environment read the way a settings
    /// file is written: an empty variable counts as unset, and booleans take yes/no, on/off,
    /// 1/0 and true/false in any case (clap alone takes only true/false).
    fn command_with_environment() -> clap::Command {
        Args::command().mut_args(|arg| {
            let empty = arg
                .get_env()
                .and_then(std::env::var_os)
                .is_some_and(|value| value.is_empty());
            let arg = if empty { arg.env(None) } else { arg };
            if matches!(arg.get_action(), clap::ArgAction::SetTrue) {
                arg.value_parser(clap::builder::BoolishValueParser::new())
            } else {
                arg
            }
        })
    }

    fn from_matches(matches: &clap::ArgMatches) -> Result<Args, clap::Error> {
        use clap::FromArgMatches;
        let mut args = Args::from_arg_matches(matches)?;
        for arg in Args::command().get_arguments() {
            let id = arg.get_id().as_str();
            let from_env = matches!(
                matches.try_get_raw(id).ok().and(matches.value_source(id)),
                Some(clap::parser::ValueSource::EnvVariable)
            );
            if let (true, Some(name)) = (from_env, arg.get_env()) {
                args.from_environment
                    .insert(id.to_string(), name.to_string_lossy().into_owned());
            }
        }
        Ok(args)
    }

    /// The `--sse-*` tuning flags; the reconnect backoff keeps its documented defaults.
    fn events_config(&self) -> Result<EventsConfig> {
        Ok(EventsConfig {
            debounce: self.duration("sse_debounce", "--sse-debounce", &self.sse_debounce, true)?,
            debounce_max: self.duration(
                "sse_debounce_max",
                "--sse-debounce-max",
                &self.sse_debounce_max,
                true,
            )?,
            stream_timeout: self.duration(
                "sse_timeout",
                "--sse-timeout",
                &self.sse_timeout,
                false,
            )?,
            ..EventsConfig::default()
        })
    }

    /// How a message names the origin of flag `id`'s value: `--timeout`, or
    /// `HAPROXY_MARATHON_SYNC_TIMEOUT (--timeout)` when the environment gave it.
    fn origin(&self, id: &str, flag: &str) -> String {
        match self.from_environment.get(id) {
            Some(variable) => format!("{variable} ({flag})"),
            None => flag.to_string(),
        }
    }

    /// A duration flag's value; zero is refused unless `zero_means` says what it does.
    fn duration(&self, id: &str, flag: &str, value: &str, zero_allowed: bool) -> Result<Duration> {
        let origin = self.origin(id, flag);
        let duration =
            parse_duration(value).map_err(|error| usage(format!("{origin}: {error:#}")))?;
        if duration.is_zero() && !zero_allowed {
            return Err(usage(format!(
                "{origin}: must be longer than zero (got '{value}')"
            )));
        }
        Ok(duration)
    }

    /// marathon-lb flags given on this command line that we accept but ignore.
    pub fn ignored_flags(&self) -> Vec<&'static str> {
        let given = [
            (self.ignored_skip_config_cleanup, "--skip-config-cleanup"),
            (
                self.ignored_max_reload_retries.is_some(),
                "--max-reload-retries",
            ),
            (self.ignored_reload_interval.is_some(), "--reload-interval"),
            (
                self.ignored_lru_cache_capacity.is_some(),
                "--lru-cache-capacity",
            ),
            (self.ignored_max_backoff.is_some(), "--max-backoff"),
            // `/dev/null` is how marathon-lb is told not to use syslog: nothing to report.
            (
                self.ignored_syslog_socket
                    .as_deref()
                    .is_some_and(|path| path != "/dev/null"),
                "--syslog-socket",
            ),
        ];
        given
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, flag)| *flag)
            .collect()
    }

    /// The logging settings, and notes for the operator about values taken leniently.
    pub fn log_settings(&self) -> Result<(log::Settings, Vec<String>)> {
        let level = log::Level::parse(&self.log_level).context("--log-level")?;
        let mut notes = Vec::new();
        let format = match self.log_format.trim().to_ascii_lowercase().as_str() {
            "text" => log::Format::Text,
            "json" => log::Format::Json,
            _ => {
                // marathon-lb takes a Python logging format string here.
                notes.push(format!(
                    "--log-format '{}' is a marathon-lb format string, not text or json; \
                     logging as text",
                    self.log_format
                ));
                log::Format::Text
            }
        };
        Ok((log::Settings { level, format }, notes))
    }

    /// Converts the parsed flags and the process environment into a [`Config`].
    pub fn into_config(self, environment: &BTreeMap<String, String>) -> Result<Config> {
        let request_timeout = self.duration("timeout", "--timeout", &self.timeout, false)?;
        let run_deadline =
            self.duration("run_timeout", "--run-timeout", &self.run_timeout, false)?;
        let lock_timeout =
            self.duration("lock_timeout", "--lock-timeout", &self.lock_timeout, true)?;
        let command_timeout = self.duration(
            "command_timeout",
            "--command-timeout",
            &self.command_timeout,
            false,
        )?;
        let min_reload_interval = self.duration(
            "min_reload_interval",
            "--min-reload-interval",
            &self.min_reload_interval,
            true,
        )?;
        let interval = match &self.interval {
            Some(value) => Some(self.duration("interval", "--interval", value, false)?),
            None => None,
        };
        let events = if self.sse {
            Some(self.events_config()?)
        } else {
            None
        };
        let splay = self.duration("splay", "--splay", &self.splay, true)?;
        if !splay.is_zero() && splay >= run_deadline {
            return Err(usage(format!(
                "{}: must be shorter than --run-timeout ({}), which the wait counts against",
                self.origin("splay", "--splay"),
                self.run_timeout
            )));
        }
        let dcos_service_account = match self.dcos_auth_credentials.as_deref() {
            Some(value) if !value.trim().is_empty() => Some(dcos_service_account(
                value,
                &self.origin("dcos_auth_credentials", "--dcos-auth-credentials"),
            )?),
            // marathon-lb's own variable, as DC/OS injects the account's secret.
            _ => match environment.get("DCOS_SERVICE_ACCOUNT_CREDENTIAL") {
                Some(value) if !value.trim().is_empty() => Some(dcos_service_account(
                    value,
                    "DCOS_SERVICE_ACCOUNT_CREDENTIAL",
                )?),
                _ => None,
            },
        };
        let sources = self
            .marathon
            .iter()
            .map(|value| value.trim())
            .filter(|value| !value.is_empty())
            .map(marathon_source)
            .collect::<Vec<_>>();
        if sources.is_empty() {
            bail!("--marathon: give at least one Marathon URL or snapshot directory");
        }
        // `--group ''` alone is marathon-lb's group of apps whose HAPROXY_GROUP is empty.
        let only_empty = self.group.iter().all(|group| group.is_empty());
        let groups: Vec<String> = self
            .group
            .iter()
            .map(|group| group.to_string())
            .filter(|group| only_empty || !group.is_empty())
            .collect();
        if groups.is_empty() {
            bail!("--group: give at least one group ('*' for every service)");
        }

        // Absolute from the start: the map paths written into the config derive from it, and
        // HAProxy resolves them from its own working directory, not ours.
        let haproxy_config = std::path::absolute(&self.haproxy_config)
            .with_context(|| format!("--haproxy-config {}", self.haproxy_config.display()))?;
        let mut config = Config::new(sources, haproxy_config);
        config.fetch.credentials = credentials(
            self.auth_credentials.as_deref(),
            self.marathon_auth_credential_file.as_deref(),
        )?;
        if dcos_service_account.is_some() && config.fetch.credentials.is_some() {
            bail!(
                "give either basic-auth credentials (--auth-credentials, \
                 --marathon-auth-credential-file) or a DC/OS service account \
                 (--dcos-auth-credentials), not both"
            );
        }
        config.fetch.credentials_from = credentials_from(
            self.auth_credentials.as_deref(),
            self.marathon_auth_credential_file.as_deref(),
            environment,
        );
        config.fetch.max_body_bytes = parse_size(&self.max_response_size).map_err(|error| {
            usage(format!(
                "{}: {error:#}",
                self.origin("max_response_size", "--max-response-size")
            ))
        })?;
        if self.max_apps == 0 || self.max_tasks == 0 {
            return Err(usage(
                "--max-apps and --max-tasks must be at least 1".to_string(),
            ));
        }
        config.fetch.max_apps = self.max_apps;
        config.fetch.max_tasks = self.max_tasks;
        config.fetch.dcos_service_account = dcos_service_account;
        config.splay = splay;
        config.fetch.ca_cert = self.marathon_ca_cert;
        config.fetch.request_timeout = request_timeout;
        config.run_deadline = run_deadline;
        config.interval = interval;
        if self.sse {
            config.events = events;
            config.interval = config
                .interval
                .or(Some(config::DEFAULT_SSE_RESYNC_INTERVAL));
            let has_url = config
                .fetch
                .sources
                .iter()
                .any(|source| matches!(source, MarathonSource::Url(_)));
            if !has_url {
                bail!(
                    "--sse needs a Marathon URL in --marathon: a snapshot directory has no \
                     event stream"
                );
            }
        }

        config.model.strict_mode = self.strict_mode;
        config.model.health_check = self.health_check;
        config.model.protect_shared_listeners = self.protect_shared_listeners;
        config.model.min_serv_port_ip_per_task = self.min_serv_port_ip_per_task;
        config.model.max_serv_port_ip_per_task = self.max_serv_port_ip_per_task;
        config.model.framework_name = environment.get("FRAMEWORK_NAME").cloned();

        config.render.groups = groups;
        config.render.templates_dir = self.templates;
        config.render.template_env = environment
            .iter()
            .filter(|(name, _)| name.starts_with("HAPROXY_"))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        config.render.global_default_options =
            environment.get("HAPROXY_GLOBAL_DEFAULT_OPTIONS").cloned();
        config.render.ssl_certs = ssl_cert_list(&self.ssl_certs);
        config.render.bind_http_https = !self.dont_bind_http_https;
        config.render.group_https_by_vhost = self.group_https_by_vhost;
        config.render.haproxy_map = self.haproxy_map;
        config.render.label_templates = !self.no_label_templates;

        if let Some(lock_file) = self.lock_file {
            config.apply.lock_file = lock_file;
        }
        config.apply.lock_timeout = lock_timeout;
        config.apply.haproxy_bin = self.haproxy_bin;
        config.apply.skip_validation = self.skip_validation;
        config.apply.reload_command = self.reload_command;
        config.apply.command_timeout = command_timeout;
        config.apply.archive_versions = self.archive_versions;
        config.metrics_file = self.metrics_file;
        config.apply.haproxy_master_socket = self.haproxy_master_socket;
        config.apply.runtime_api = !self.no_runtime_api;
        config.apply.min_reload_interval = min_reload_interval;
        config.apply.max_server_loss_percent = self.max_server_loss;
        config.apply.force = self.force;
        config.apply.dry_run = self.dry_run;
        config.apply.diff = self.diff;
        config.missing_ssl_certs = missing_ssl_certs(&config.render);
        Ok(config)
    }
}

/// A flag value that cannot work (zero, negative or unparsable): a usage error, exit 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage(message: String) -> anyhow::Error {
    anyhow::Error::new(UsageError(message))
}

/// clap names the flag of a value it refuses; when the value came from the environment (the
/// flag is not on the command line), the operator needs the variable's name instead.
fn environment_value_error(error: &clap::Error, argv: &[std::ffi::OsString]) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let Some(ContextValue::String(shown)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = shown.split_whitespace().next()?.strip_prefix("--")?;
    let on_command_line = argv.iter().skip(1).any(|word| {
        let word = word.to_string_lossy();
        let name = word.strip_prefix("--").unwrap_or("");
        let name = name.split('=').next().unwrap_or("");
        !name.is_empty() && long.starts_with(name)
    });
    if on_command_line {
        return None;
    }
    let command = Args::command();
    let arg = command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long))?;
    let variable = arg.get_env()?.to_string_lossy().into_owned();
    let value = std::env::var(&variable).unwrap_or_default();
    let why = if matches!(arg.get_action(), clap::ArgAction::SetTrue) {
        "expected yes/no, on/off, 1/0 or true/false (empty means unset)".to_string()
    } else if let Some(ContextValue::Strings(values)) = error.get(ContextKind::ValidValue) {
        format!("expected one of {}", values.join(", "))
    } else if let Some(source) = std::error::Error::source(error) {
        source.to_string()
    } else {
        "see --help".to_string()
    };
    Some(format!(
        "invalid value '{value}' in the environment variable {variable} (for --{long}): {why}"
    ))
}

/// `--dcos-auth-credentials`: the service account's JSON, or a file holding it.
fn dcos_service_account(value: &str, origin: &str) -> Result<config::DcosServiceAccount> {
    #[derive(serde::Deserialize)]
    struct Account {
        uid: String,
        private_key: String,
        login_endpoint: String,
    }
    let text = if value.trim_start().starts_with('{') {
        value.to_string()
    } else {
        std::fs::read_to_string(value)
            .with_context(|| format!("{origin}: reading the DC/OS service account {value}"))?
    };
    let account: Account = serde_json::from_str(&text).map_err(|error| {
        // serde's words name the missing field; the JSON itself holds the key and stays out.
        anyhow::anyhow!(
            "{origin}: not a DC/OS service account (JSON with uid, private_key and \
             login_endpoint): {error}"
        )
    })?;
    if account.uid.is_empty() || !account.login_endpoint.contains("://") {
        bail!("{origin}: the DC/OS service account needs a uid and a login_endpoint URL");
    }
    Ok(config::DcosServiceAccount {
        uid: account.uid,
        private_key: account.private_key,
        login_endpoint: account.login_endpoint,
    })
}

/// The `--ssl-certs` files HAProxy will be asked to open that are not there (empty entries are
/// HAProxy's to refuse). A replaced HTTPS frontend head may not use them: then none is checked.
fn missing_ssl_certs(render: &config::RenderConfig) -> Vec<String> {
    let https_head = "HAPROXY_HTTPS_FRONTEND_HEAD";
    let head_replaced = render.template_env.contains_key(https_head)
        || render.templates_dir.as_ref().is_some_and(|dir| {
            dir.join(https_head).exists() || dir.join(format!("{https_head}.j2")).exists()
        });
    if !render.bind_http_https || (head_replaced && !render.group_https_by_vhost) {
        return Vec::new();
    }
    let certs: Vec<String> = if render.ssl_certs.is_empty() {
        vec![config::DEFAULT_SSL_CERT.to_string()]
    } else {
        render.ssl_certs.clone()
    };
    let mut missing: Vec<String> = Vec::new();
    for cert in certs {
        if !cert.is_empty() && !Path::new(&cert).exists() && !missing.contains(&cert) {
            missing.push(cert);
        }
    }
    missing
}

/// `--ssl-certs` as marathon-lb splits it: an empty value means the default (an empty list
/// here), otherwise every comma-separated entry counts, empty ones included (`a.pem,` renders
/// `crt a.pem crt `, which HAProxy then refuses, as it refused marathon-lb's).
fn ssl_cert_list(value: &str) -> Vec<String> {
    if value.is_empty() {
        return Vec::new();
    }
    value.split(',').map(str::to_string).collect()
}

/// A URL has a scheme; anything else is a snapshot directory.
fn marathon_source(value: &str) -> MarathonSource {
    if value.contains("://") {
        MarathonSource::Url(value.trim_end_matches('/').to_string())
    } else {
        MarathonSource::Snapshot(PathBuf::from(value))
    }
}

fn credentials(flag: Option<&str>, file: Option<&Path>) -> Result<Option<Credentials>> {
    let text = match (flag, file) {
        (Some(_), Some(_)) => {
            bail!("give either --auth-credentials or --marathon-auth-credential-file, not both")
        }
        (Some(value), None) => value.to_string(),
        (None, Some(path)) => {
            let content = std::fs::read_to_string(path)
                .with_context(|| format!("reading Marathon credentials from {}", path.display()))?;
            if let Some(warning) = crate::fetch::credentials_file_mode_warning(path) {
                log::emit(log::Level::Warn, &warning, &[]);
            }
            let line = content.lines().next().unwrap_or_default().trim();
            return parse_credentials(line).map(Some).with_context(|| {
                format!(
                    "the Marathon credentials file {} (first line)",
                    path.display()
                )
            });
        }
        (None, None) => return Ok(None),
    };
    parse_credentials(&text).map(Some)
}

fn parse_credentials(text: &str) -> Result<Credentials> {
    match text.split_once(':') {
        Some((user, password)) if !user.is_empty() => Ok(Credentials {
            user: user.to_string(),
            password: password.to_string(),
        }),
        _ => bail!("Marathon credentials must look like user:password"),
    }
}

/// Where the credentials came from, as the 401 message names it (never the value).
fn credentials_from(
    flag: Option<&str>,
    file: Option<&Path>,
    environment: &BTreeMap<String, String>,
) -> Option<String> {
    const VARIABLE: &str = "HAPROXY_MARATHON_SYNC_AUTH_CREDENTIALS";
    match (flag, file) {
        (Some(value), _) if environment.get(VARIABLE).map(String::as_str) == Some(value) => {
            Some(format!("the environment ({VARIABLE})"))
        }
        (Some(_), _) => Some("--auth-credentials".to_string()),
        (None, Some(path)) => Some(format!(
            "the credentials file {} (--marathon-auth-credential-file)",
            path.display()
        )),
        (None, None) => None,
    }
}

/// `1048576`, `512K`, `64M`, `1G` (binary multiples; a trailing `B`/`iB` is allowed).
pub fn parse_size(text: &str) -> Result<u64> {
    let text = text.trim();
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let number: u64 = digits
        .trim()
        .parse()
        .with_context(|| format!("{text:?} is not a size such as 64M or 1048576"))?;
    let multiple: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => bail!("{text:?}: the unit must be K, M or G"),
    };
    match number.checked_mul(multiple) {
        Some(0) => bail!("{text:?}: must be larger than zero"),
        Some(bytes) => Ok(bytes),
        None => bail!("{text:?} is too large"),
    }
}

/// `90`, `90s`, `500ms`, `5m`, `1h`: a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().with_context(|| {
        format!("'{text}' is not a duration (examples: 30, 30s, 500ms, 5m, 1h)")
    })?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => bail!("'{text}': unknown unit '{other}' (use ms, s, m or h)"),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        bail!("'{text}' is not a duration");
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config> {
        let mut argv = vec!["haproxy-marathon-sync"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv)?.into_config(&BTreeMap::new())
    }

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        let cases = [
            ("30", Duration::from_secs(30)),
            ("5s", Duration::from_secs(5)),
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("1.5", Duration::from_millis(1500)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text).unwrap(), expected, "{text}");
        }
        for bad in ["", "s", "5 minutes", "-1", "1d"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn unambiguous_prefixes_of_long_flags_work_as_in_marathon_lb() {
        let config = parse(&[
            "--group",
            "external",
            "--group-https",
            "--dont-bind",
            // `--haproxy-m` would be ambiguous here: --haproxy-master-socket is ours.
            "--haproxy-map",
            "--strict",
            "--marathon",
            "http://a:8080",
        ])
        .unwrap();
        assert_eq!(config.render.groups, vec!["external"]);
        assert!(config.render.group_https_by_vhost && config.render.haproxy_map);
        assert!(!config.render.bind_http_https && config.model.strict_mode);
        assert_eq!(
            config.fetch.sources,
            vec![MarathonSource::Url("http://a:8080".into())]
        );
        assert!(parse(&["--group", "x", "--haproxy"]).is_err(), "ambiguous");
    }

    #[test]
    fn marathon_flag_takes_several_urls_like_marathon_lb() {
        let config = parse(&[
            "--marathon",
            "http://a:8080",
            "http://b:8080",
            "--group",
            "external",
        ])
        .unwrap();
        assert_eq!(
            config.fetch.sources,
            vec![
                MarathonSource::Url("http://a:8080".into()),
                MarathonSource::Url("http://b:8080".into()),
            ]
        );
        assert_eq!(config.render.groups, vec!["external"]);
    }

    #[test]
    fn marathon_flag_is_repeatable_and_comma_separated() {
        let config = parse(&[
            "--group",
            "external",
            "-m",
            "http://a:8080/,http://b:8080",
            "--marathon",
            "/srv/snap",
        ])
        .unwrap();
        assert_eq!(
            config.fetch.sources,
            vec![
                MarathonSource::Url("http://a:8080".into()),
                MarathonSource::Url("http://b:8080".into()),
                MarathonSource::Snapshot("/srv/snap".into()),
            ]
        );
    }

    #[test]
    fn ssl_certs_split_like_marathon_lb_keeping_empty_entries() {
        let certs = |value: &str| parse(&["--group", "x", "--ssl-certs", value]).unwrap();
        assert_eq!(certs("/a.pem,").render.ssl_certs, vec!["/a.pem", ""]);
        assert_eq!(certs(",/a.pem").render.ssl_certs, vec!["", "/a.pem"]);
        assert!(
            certs("").render.ssl_certs.is_empty(),
            "empty means the default"
        );
    }

    #[test]
    fn marathon_lb_flag_names_map_onto_the_config() {
        let config = parse(&[
            "--group",
            "external",
            "--group",
            "internal",
            "--strict-mode",
            "-H",
            "--ssl-certs",
            "/a.pem,/b.pem",
            "--dont-bind-http-https",
            "--group-https-by-vhost",
            "--haproxy-map",
            "--min-serv-port-ip-per-task",
            "0",
            "--max-serv-port-ip-per-task",
            "0",
            "--haproxy-config",
            "/tmp/x/haproxy.cfg",
            "--command",
            "true",
            "--dry",
            "--archive-versions",
            "2",
            "--protect-shared-listeners",
        ])
        .unwrap();
        assert_eq!(config.render.groups, vec!["external", "internal"]);
        assert!(config.model.strict_mode && config.model.health_check);
        assert!(config.model.protect_shared_listeners);
        assert_eq!(config.render.ssl_certs, vec!["/a.pem", "/b.pem"]);
        assert!(!config.render.bind_http_https);
        assert!(config.render.group_https_by_vhost && config.render.haproxy_map);
        assert_eq!(config.model.min_serv_port_ip_per_task, 0);
        assert_eq!(
            config.apply.haproxy_config,
            PathBuf::from("/tmp/x/haproxy.cfg")
        );
        assert_eq!(
            config.render.haproxy_config,
            PathBuf::from("/tmp/x/haproxy.cfg")
        );
        assert_eq!(
            config.apply.lock_file,
            PathBuf::from("/tmp/x/haproxy.cfg.lock")
        );
        assert_eq!(config.apply.reload_command, "true");
        assert!(config.apply.dry_run);
        assert_eq!(config.apply.archive_versions, 2);
    }

    #[test]
    fn a_later_single_valued_flag_overrides_an_earlier_one() {
        // A wrapper script's defaults stay overridable from its command line.
        let config = parse(&[
            "--group",
            "g",
            "--haproxy-config",
            "/a/haproxy.cfg",
            "--haproxy-config",
            "/b/haproxy.cfg",
            "--lock-timeout",
            "2",
            "--lock-timeout",
            "0.5",
        ])
        .unwrap();
        assert_eq!(config.apply.haproxy_config, PathBuf::from("/b/haproxy.cfg"));
        assert_eq!(config.apply.lock_timeout, Duration::from_millis(500));
    }

    #[test]
    fn reliability_flags_map_onto_the_apply_config() {
        let defaults = parse(&["--group", "g"]).unwrap().apply;
        assert_eq!(defaults.haproxy_master_socket, None);
        assert_eq!(defaults.min_reload_interval, Duration::ZERO);
        assert_eq!(defaults.max_server_loss_percent, 50);
        assert!(!defaults.force);
        let config = parse(&[
            "--group",
            "g",
            "--haproxy-master-socket",
            "/run/haproxy-master.sock",
            "--min-reload-interval",
            "2m",
            "--max-server-loss",
            "20",
            "--force",
        ])
        .unwrap()
        .apply;
        assert_eq!(
            config.haproxy_master_socket,
            Some(PathBuf::from("/run/haproxy-master.sock"))
        );
        assert_eq!(config.min_reload_interval, Duration::from_secs(120));
        assert_eq!(config.max_server_loss_percent, 20);
        assert!(config.force);
        assert!(parse(&["--group", "g", "--max-server-loss", "101"]).is_err());
    }

    #[test]
    fn group_is_required() {
        assert!(parse(&["--marathon", "http://a:8080"]).is_err());
    }

    #[test]
    fn credentials_need_a_user_and_one_source() {
        let ok = parse(&["--group", "g", "--auth-credentials", "ops:s3:cret"]).unwrap();
        let creds = ok.fetch.credentials.unwrap();
        assert_eq!(
            (creds.user.as_str(), creds.password.as_str()),
            ("ops", "s3:cret")
        );
        assert!(
            !format!("{creds:?}").contains("s3"),
            "Debug must hide the password"
        );
        assert!(parse(&["--group", "g", "--auth-credentials", "nocolon"]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("creds");
        std::fs::write(&file, "svc:pw\n").unwrap();
        let from_file = parse(&[
            "--group",
            "g",
            "--marathon-auth-credential-file",
            file.to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!(from_file.fetch.credentials.unwrap().password, "pw");
        let both = parse(&[
            "--group",
            "g",
            "--auth-credentials",
            "a:b",
            "--marathon-auth-credential-file",
            file.to_str().unwrap(),
        ]);
        assert!(both.is_err());
    }

    #[test]
    fn ignored_marathon_lb_flags_are_accepted_and_listed() {
        let argv = ["x", "--group", "g", "--sse", "--max-reload-retries", "3"];
        let args = Args::try_parse_from(argv).unwrap();
        assert_eq!(args.ignored_flags(), vec!["--max-reload-retries"]);
    }

    #[test]
    fn sse_turns_on_events_with_a_five_minute_resync_by_default() {
        let plain = parse(&["--group", "g"]).unwrap();
        assert_eq!((plain.events, plain.interval), (None, None));

        let sse = parse(&["--group", "g", "-s"]).unwrap();
        assert_eq!(sse.events, Some(EventsConfig::default()));
        assert_eq!(sse.interval, Some(Duration::from_secs(300)));

        let tuned = parse(&[
            "--group",
            "g",
            "--sse",
            "--interval",
            "1m",
            "--sse-debounce",
            "50ms",
            "--sse-debounce-max",
            "2s",
            "--sse-timeout",
            "45",
        ])
        .unwrap();
        let events = tuned.events.unwrap();
        assert_eq!(tuned.interval, Some(Duration::from_secs(60)));
        assert_eq!(events.debounce, Duration::from_millis(50));
        assert_eq!(events.debounce_max, Duration::from_secs(2));
        assert_eq!(events.stream_timeout, Duration::from_secs(45));

        // The tuning flags alone change nothing (an EnvironmentFile may carry them).
        let untouched = parse(&["--group", "g", "--sse-debounce", "1s"]).unwrap();
        assert_eq!(untouched.events, None);
    }

    #[test]
    fn sse_refuses_what_cannot_work() {
        assert!(parse(&["--group", "g", "--sse", "--marathon", "/srv/snapshot"]).is_err());
        assert!(parse(&["--group", "g", "--sse", "--sse-timeout", "0"]).is_err());
        assert!(parse(&["--group", "g", "--sse", "--sse-debounce", "soon"]).is_err());
        let mixed = ["--group", "g", "--sse", "-m", "/srv/snap,http://m:8080"];
        assert!(parse(&mixed).is_ok());
    }

    #[test]
    fn log_flags_take_our_names_marathon_lb_names_and_format_strings() {
        let settings = |argv: &[&str]| {
            let mut full = vec!["x", "--group", "g"];
            full.extend_from_slice(argv);
            Args::try_parse_from(full).unwrap().log_settings()
        };
        let (default, notes) = settings(&[]).unwrap();
        assert_eq!(default, log::Settings::default());
        assert!(notes.is_empty());
        let (json, _) = settings(&["--log-level", "WARNING", "--log-format", "JSON"]).unwrap();
        assert_eq!(json.level, log::Level::Warn);
        assert_eq!(json.format, log::Format::Json);
        let python = "%(asctime)-15s %(name)s: %(message)s";
        let (text, notes) = settings(&["--log-format", python]).unwrap();
        assert_eq!(text.format, log::Format::Text);
        assert!(notes[0].contains(python), "{notes:?}");
        assert!(settings(&["--log-level", "loud"]).is_err());
    }

    #[test]
    fn completions_need_no_group_but_a_run_does() {
        let args = Args::try_parse_from(["x", "completions", "bash"]).unwrap();
        assert!(matches!(
            args.command,
            Some(Command::Completions {
                shell: clap_complete::Shell::Bash
            })
        ));
        assert!(Args::try_parse_from(["x", "completions", "tcsh"]).is_err());
        assert!(Args::try_parse_from(["x"]).is_err());
        let mut script = Vec::new();
        write_completions(clap_complete::Shell::Fish, &mut script);
        assert!(String::from_utf8(script)
            .unwrap()
            .contains("haproxy-config"));
    }

    #[test]
    fn syslog_socket_dev_null_is_what_we_do_anyway() {
        let quiet = ["x", "--group", "g", "--syslog-socket", "/dev/null"];
        assert!(Args::try_parse_from(quiet)
            .unwrap()
            .ignored_flags()
            .is_empty());
        let noted = ["x", "--group", "g", "--syslog-socket", "/dev/log"];
        assert_eq!(
            Args::try_parse_from(noted).unwrap().ignored_flags(),
            vec!["--syslog-socket"]
        );
    }

    #[test]
    fn environment_feeds_templates_and_framework_name() {
        let env: BTreeMap<String, String> = [
            ("HAPROXY_BACKEND_HEAD", "x"),
            ("FRAMEWORK_NAME", "marathon-lb"),
            ("HAPROXY_GLOBAL_DEFAULT_OPTIONS", "httplog"),
            ("PATH", "/bin"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let args = Args::try_parse_from(["x", "--group", "g"]).unwrap();
        let config = args.into_config(&env).unwrap();
        assert_eq!(config.model.framework_name.as_deref(), Some("marathon-lb"));
        assert_eq!(
            config.render.global_default_options.as_deref(),
            Some("httplog")
        );
        assert!(config
            .render
            .template_env
            .contains_key("HAPROXY_BACKEND_HEAD"));
        assert!(!config.render.template_env.contains_key("PATH"));
    }
}
