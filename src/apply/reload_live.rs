//! SIGUSR1 in the long-running modes: reload HAProxy with the configuration already live, as
//! marathon-lb does, without rendering anything. Under the lock, so it never reloads a file a
//! run is about to replace; the live file is checked with `haproxy -c` first (unless
//! `--skip-validation`), so a hand-edited file that HAProxy would refuse is named, not loaded.

use anyhow::{Context, Result};

use crate::config::ApplyConfig;
use crate::error::Failure;

/// Reloads HAProxy with the live file: through the master CLI when `--haproxy-master-socket`
/// is given (confirmed by `show proc`), else the reload command.
pub fn reload_live(config: &ApplyConfig) -> Result<()> {
    let live = &config.haproxy_config;
    let _lock = super::lock::acquire(&config.lock_file, config.lock_timeout)?;
    if !live.is_file() {
        anyhow::bail!("no live configuration at {} to reload", live.display());
    }
    if !config.skip_validation {
        super::validate(config, live)
            .with_context(|| format!("the live {} does not validate", live.display()))
            .context(Failure::ValidationFailed)?;
    }
    super::reload(config, "reload")
        .with_context(|| format!("reloading HAProxy with the live {}", live.display()))
        .context(Failure::ReloadFailed)?;
    // HAProxy now runs the file on disk: a run killed before its reload or during a runtime
    // update needs no further reload, and the next change's `--min-reload-interval` counts
    // from this one.
    let _ = super::record_reload(config);
    super::state::settled_after_reload(live);
    Ok(())
}
