//! What every remsim program shares at its edges: logs on stderr, for
//! people or (`--log-format json`) for Kubernetes, the keep-alive options,
//! and waiting for SIGTERM or SIGINT.

pub mod listen;
pub mod tls;

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use rspro::keepalive::KeepaliveConfig;
use tracing_subscriber::EnvFilter;

/// Parses a timer as the command lines give it: humantime's forms ("30s",
/// "500ms", "2m", "1h 30m"), or a bare number of seconds as the C
/// programs take them.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if let Ok(seconds) = t.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("{text:?} is not a duration like 30s, 500ms or 1h: {e}"))
}

/// `--keepalive-interval` and `--keepalive-timeout` (the C suite's 30 s and
/// 10 s by default), for every RSPRO link of a program.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct KeepaliveArgs {
    /// Keep-alive: idle time after a PONG before the next PING.
    #[arg(long, env = "REMSIM_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_duration, global = true)]
    keepalive_interval: Duration,
    /// Keep-alive: how long a PING may go unanswered.
    #[arg(long, env = "REMSIM_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = parse_duration, global = true)]
    keepalive_timeout: Duration,
}

impl KeepaliveArgs {
    pub fn config(&self) -> KeepaliveConfig {
        KeepaliveConfig {
            interval: self.keepalive_interval,
            timeout: self.keepalive_timeout,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Sets up logging with a tracing filter (`info`, `debug`, `remsim_server=debug`, ...).
pub fn init_logging(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter).with_context(|| format!("log filter {filter:?}"))?;
    // Colour only on a terminal, and never when NO_COLOR is set (no-color.org).
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_or_bare_seconds() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
    }
}
