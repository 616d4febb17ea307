//! What every remsim program shares at its edges: logs on stderr, for
//! people or (`--log-format json`) for Kubernetes, the keep-alive options,
//! and waiting for SIGTERM or SIGINT.

pub mod exposition;
pub mod files;
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

/// `--tls-ca`, `--tls-cert`, `--tls-key`: RSPRO in TLS on every link the
/// program opens, to TLS ports of our own server and bankds (C peers speak
/// plain TCP only).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// CA certificate (PEM) that signed the server's and bankds'
    /// certificates; turns TLS on for the links this program opens.
    #[arg(long, env = "REMSIM_TLS_CA", global = true)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Our certificate chain (PEM), for ports that require client
    /// certificates (mutual TLS).
    #[arg(long, env = "REMSIM_TLS_CERT", requires = "tls_key", global = true)]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "REMSIM_TLS_KEY", requires = "tls_cert", global = true)]
    pub tls_key: Option<std::path::PathBuf>,
    /// The name to check the peers' certificates against, instead of the
    /// host or address connected to.
    #[arg(long, env = "REMSIM_TLS_SERVER_NAME", global = true)]
    pub tls_server_name: Option<String>,
    /// Which links use TLS once --tls-ca is given: the link to the server,
    /// the one between client and bankd, or both.
    #[arg(
        long,
        env = "REMSIM_TLS_LINKS",
        value_enum,
        default_value = "both",
        global = true
    )]
    pub tls_links: TlsLinks,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsLinks {
    /// Only the link to remsim-server.
    Server,
    /// Only the client ↔ bankd link.
    Bankd,
    #[default]
    Both,
}

impl TlsArgs {
    /// Whether TLS is on for the server link and for the client ↔ bankd link.
    pub fn on(&self) -> (bool, bool) {
        let on = self.tls_ca.is_some();
        (
            on && self.tls_links != TlsLinks::Bankd,
            on && self.tls_links != TlsLinks::Server,
        )
    }

    /// The TLS upgrade for client links, or `None` for plain TCP.
    pub fn upgrade(&self) -> anyhow::Result<Option<std::sync::Arc<dyn rspro::link::Upgrade>>> {
        let client = tls::Client::from_options(
            self.tls_ca.as_deref(),
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            self.tls_server_name.as_deref(),
        )?;
        Ok(client.map(|c| std::sync::Arc::new(c) as std::sync::Arc<dyn rspro::link::Upgrade>))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Sets up logging with a tracing filter (`info`, `debug`, `remsim_server=debug`, ...).
/// An error, not a panic, if the process has a subscriber already (the
/// PC/SC driver runs inside pcscd, which may host other Rust code).
pub fn init_logging(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter).with_context(|| format!("log filter {filter:?}"))?;
    // Colour only on a terminal, and never when NO_COLOR is set (no-color.org).
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| anyhow::anyhow!("logging set up twice: {e}"))
}

/// Something SIGHUP re-reads from disk (certificates, tokens).
pub trait Reload: Send + Sync {
    /// Reads the files again now.
    fn reload(&self);
    /// Reads them again if they changed on disk since the last read.
    fn reload_if_changed(&self);
}

/// Re-reads `items` on SIGHUP, and those whose files changed every
/// [`tls::RELOAD_CHECK`] (cert-manager rotates files without a signal).
/// Every daemon calls it, even with nothing to reload, before it listens:
/// SIGHUP's default action would end the program. The handler is in place
/// when this returns; the loop runs in a task of its own.
pub fn reload_on_hangup(items: Vec<std::sync::Arc<dyn Reload>>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let hangups = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    tokio::spawn(reload_loop(hangups, items));
    Ok(())
}

async fn reload_loop(
    mut hangups: tokio::signal::unix::Signal,
    items: Vec<std::sync::Arc<dyn Reload>>,
) {
    let mut check = tokio::time::interval(tls::RELOAD_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = hangups.recv() => {
                if items.is_empty() {
                    tracing::info!("SIGHUP: nothing to reload");
                }
                for item in &items {
                    item.reload();
                }
            }
            _ = check.tick() => {
                for item in &items {
                    item.reload_if_changed();
                }
            }
        }
    }
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
