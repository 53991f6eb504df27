//! Structured logging setup.

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber (logs go to stderr, around any progress bar). Errors only
/// on a bad filter.
pub fn init(log: &LogConfig) -> Result<(), String> {
    let filter = EnvFilter::try_new(&log.filter)
        .map_err(|e| format!("invalid log filter {:?} (ORRERY_LOG): {e}", log.filter))?;
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(crate::progress::LogWriter);
    let result = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // A second init (tests) is harmless.
    let _ = result;
    Ok(())
}
