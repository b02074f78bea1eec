//! The binary: parse the command line, run once or on an interval, and map the outcome to an
//! exit code. The only place that knows exit codes.

use std::collections::BTreeMap;
use std::process::ExitCode;

use haproxy_marathon_sync::cli::{self, Args, Command};
use haproxy_marathon_sync::error::{classify, Failure};
use haproxy_marathon_sync::log::{self, Level};

/// Exit statuses, documented in the README and the man page (EXIT STATUS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Exit {
    /// Applied, unchanged, or dry run done.
    Ok = 0,
    /// Any failure not listed below (bad flag value, unreadable file, ...).
    Error = 1,
    /// Command-line usage error (clap exits with this itself; so does a flag value that
    /// cannot work, such as `--timeout 0`, and `status` for its own values).
    Usage = 2,
    /// No Marathon source answered usefully.
    MarathonUnavailable = 3,
    /// A template failed to load or render.
    Template = 4,
    /// Another run held the lock past --lock-timeout.
    LockTimeout = 5,
    /// `haproxy -c` rejected the candidate; nothing changed.
    ValidationFailed = 6,
    /// Writing the new configuration failed; nothing changed.
    WriteFailed = 7,
    /// The reload failed; the previous configuration was restored and reloaded.
    ReloadFailed = 8,
    /// The blast-radius guard refused the candidate; nothing changed (--force overrides).
    TooMuchRemoved = 9,
    /// Some apps held at their last good definition or left out (each named); the rest applied.
    AppliedWithExclusions = 10,
    /// `status --check-age`: the last successful sync is older than the limit, or there was none.
    Stale = 11,
    /// `status`: neither the config nor its run record exists (a mistyped --haproxy-config?).
    NothingThere = 12,
}

fn exit_for(failure: Option<Failure>) -> Exit {
    match failure {
        None => Exit::Error,
        Some(Failure::MarathonUnavailable) => Exit::MarathonUnavailable,
        Some(Failure::Template) => Exit::Template,
        Some(Failure::LockTimeout) => Exit::LockTimeout,
        Some(Failure::ValidationFailed) => Exit::ValidationFailed,
        Some(Failure::WriteFailed) => Exit::WriteFailed,
        Some(Failure::ReloadFailed) => Exit::ReloadFailed,
        Some(Failure::TooMuchRemoved) => Exit::TooMuchRemoved,
        Some(Failure::AppliedWithExclusions) => Exit::AppliedWithExclusions,
    }
}

/// `status`: prints the run record; exit 11 when `--check-age` finds it stale.
fn status(haproxy_config: &std::path::Path, json: bool, check_age: Option<&str>) -> ExitCode {
    let max_age = match check_age.map(cli::parse_duration).transpose() {
        Ok(max_age) => max_age,
        Err(error) => {
            let message = format!("{:#}", error.context("status --check-age"));
            log::emit(
                Level::Error,
                &message,
                &[("exit_code", (Exit::Usage as u8).into())],
            );
            return ExitCode::from(Exit::Usage as u8);
        }
    };
    let limit = max_age.zip(check_age);
    match haproxy_marathon_sync::status::status(haproxy_config, json, limit) {
        Ok(found) if found.nothing_there => {
            let message = format!(
                "status: neither {} nor its run record exists: no run has used this path (is \
                 --haproxy-config right?)",
                found.config.display()
            );
            let fields = [("exit_code", (Exit::NothingThere as u8).into())];
            log::emit(Level::Error, &message, &fields);
            ExitCode::from(Exit::NothingThere as u8)
        }
        Ok(found) => {
            print!("{}", found.text);
            match found.stale {
                None => ExitCode::from(Exit::Ok as u8),
                Some(message) => {
                    log::emit(
                        Level::Error,
                        &message,
                        &[("exit_code", (Exit::Stale as u8).into())],
                    );
                    ExitCode::from(Exit::Stale as u8)
                }
            }
        }
        Err(error) => fail(error),
    }
}

/// Large buffers (an answer read whole, the rendered config) are mapped and unmapped on their
/// own. glibc's default raises this threshold each time such a buffer is freed, after which the
/// next ones come from the heap and the freed ones stay there as holes: the snapshot reader's
/// exact-size buffer alone made a 10,000-app run peak 7 MB (10%) higher, and an `--interval`
/// loop would keep those holes between runs.
fn keep_large_buffers_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; no allocation is in flight this early.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn main() -> ExitCode {
    keep_large_buffers_mapped();
    let args = Args::from_command_line();
    if args.longhelp {
        print!("{}", cli::LONGHELP);
        return ExitCode::from(Exit::Ok as u8);
    }
    match &args.command {
        Some(Command::Completions { shell }) => {
            cli::write_completions(*shell, &mut std::io::stdout().lock());
            return ExitCode::from(Exit::Ok as u8);
        }
        Some(Command::Status { json, check_age }) => {
            return status(&args.haproxy_config, *json, check_age.as_deref());
        }
        None => {}
    }
    let notes = match args.log_settings() {
        Ok((settings, notes)) => {
            log::init(settings);
            notes
        }
        Err(error) => return fail(error),
    };
    for note in notes {
        log::emit(Level::Warn, &note, &[]);
    }
    for flag in args.ignored_flags() {
        let message = format!("marathon-lb's {flag} has no effect here and is ignored");
        log::emit(Level::Warn, &message, &[("flag", flag.into())]);
    }
    let environment: BTreeMap<String, String> = std::env::vars().collect();
    let result = args.into_config(&environment).and_then(|mut config| {
        // A real run meets the same missing file in `haproxy -c` and names it there.
        if let Some(warning) = config.missing_ssl_certs_warning() {
            if config.apply.dry_run {
                log::emit(Level::Warn, &warning, &[]);
            }
        }
        haproxy_marathon_sync::schedule::splay(&mut config);
        haproxy_marathon_sync::run(&config)
    });
    match result {
        Ok(()) => ExitCode::from(Exit::Ok as u8),
        Err(error) => fail(error),
    }
}

/// Logs the whole error chain and picks the exit code from its [`Failure`] kind.
fn fail(error: anyhow::Error) -> ExitCode {
    let failure = classify(&error);
    let usage = error.chain().any(|cause| cause.is::<cli::UsageError>());
    let exit = if usage {
        Exit::Usage
    } else {
        exit_for(failure)
    };
    let mut fields = vec![("exit_code", (exit as u8).into())];
    if let Some(failure) = failure {
        let reason = haproxy_marathon_sync::report::failure_label(Some(failure));
        fields.push(("failure", reason.into()));
    }
    // Exit 10 for the apps the last run named already: the status tells, the log stays quiet.
    let level = haproxy_marathon_sync::exclusion::error_level(&error);
    log::emit(level, &format!("{error:#}"), &fields);
    ExitCode::from(exit as u8)
}
