//! The kinds of failure a caller branches on (main maps them to exit codes). Producers attach
//! one as context at the point of failure: `.context(Failure::ValidationFailed)`.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No Marathon source answered usefully (down, slow, 5xx, auth refused, bad JSON).
    MarathonUnavailable,
    /// A template could not be loaded or rendered.
    Template,
    /// Another run held the lock past `--lock-timeout`, or the lock file was refused (a
    /// symbolic link, not a regular file, or someone else's).
    LockTimeout,
    /// `haproxy -c` rejected the candidate; the live config is untouched.
    ValidationFailed,
    /// Writing or renaming a file failed; the live config is untouched.
    WriteFailed,
    /// HAProxy could not be reloaded: the reload failed (the previous config was put back), or
    /// the master socket did not answer before anything was written.
    ReloadFailed,
    /// The blast-radius guard refused the candidate (too many servers lost, a backend emptied,
    /// or no backends at all); nothing changed. `--force` applies it anyway.
    TooMuchRemoved,
    /// Some apps could not be applied as Marathon defines them (HAProxy rejected their sections,
    /// the host refused their new listener, or a live app's new definition does not render):
    /// they were held at their last good definition or left out, and the rest was applied.
    AppliedWithExclusions,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Failure::MarathonUnavailable => "could not read Marathon's state",
            Failure::Template => "could not render the configuration",
            Failure::LockTimeout => "could not take the lock",
            // Also when `haproxy -c` could not run at all: the message says which.
            Failure::ValidationFailed => "the candidate configuration did not pass haproxy -c",
            Failure::WriteFailed => "could not write the configuration",
            // What became of the previous configuration is the message's to say: a master
            // socket that does not answer stops a run before anything is written.
            Failure::ReloadFailed => "reloading haproxy failed",
            Failure::TooMuchRemoved => "refused by the blast-radius guard (--max-server-loss)",
            // A dry run ends with it too: said so that it is true of both.
            Failure::AppliedWithExclusions => {
                "some apps' current definitions cannot be used (each held at its last good one, \
                 or left out)"
            }
        })
    }
}

impl std::error::Error for Failure {}

/// The first [`Failure`] attached anywhere in the error's chain.
pub fn classify(error: &anyhow::Error) -> Option<Failure> {
    // A `Failure` attached with `.context(..)` shows up in `chain()` only as an opaque context
    // wrapper; `anyhow::Error::downcast_ref` is what sees contexts at any depth.
    error.downcast_ref::<Failure>().copied().or_else(|| {
        error
            .chain()
            .find_map(|cause| cause.downcast_ref::<Failure>().copied())
    })
}
#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn classify_sees_a_failure_under_further_context() {
        let error = Err::<(), _>(std::io::Error::other("disk full"))
            .context("writing /etc/haproxy/haproxy.cfg")
            .context(Failure::WriteFailed)
            .context("applying")
            .unwrap_err();
        assert_eq!(classify(&error), Some(Failure::WriteFailed));
        assert_eq!(classify(&anyhow::anyhow!("plain")), None);
        assert_eq!(
            classify(&anyhow::Error::new(Failure::LockTimeout)),
            Some(Failure::LockTimeout)
        );
    }
}
