//! `remsim-bankd`: the SIM bank daemon. Serves the cards of its PC/SC
//! readers (or soft SIMs) to remote modems: one RSPRO link to the server for
//! slot maps, and a data port (TCP 9999) for clients, one task each.
//! Flags are osmo-remsim-bankd's, so existing units keep working.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use remsim_bankd::{card, gsmtap, maps, metrics, server_link, slots, worker};
use remsim_daemon::listen::{self, Allow, Policy, Shutdown};
use remsim_daemon::parse_duration;
use remsim_daemon::tls::{Reloading, ServerFiles};
use remsim_daemon::{LogFormat, Reload};
use rspro::client_link::ClientLinkConfig;
use rspro::reconnect::ReconnectConfig;
use rspro::{BankSlot, ComponentType, Identity, RsproPdu};
use simcard::CardProfile;
use tokio::sync::watch;
use tracing::{info, warn};

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum BackendKind {
    /// Cards in PC/SC readers, per the slot file.
    Pcsc,
    /// One soft SIM per slot (demos and tests).
    Soft,
}

/// What `-G` selects for GSMTAP tracing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GsmtapSlot {
    /// `-1`, the C default.
    All,
    /// SLOT of this bank, or BANK:SLOT.
    Slot(Option<u32>, u32),
}

/// `-G`: -1 (all), a slot number of this bank, or BANK:SLOT.
fn gsmtap_slot(text: &str) -> Result<GsmtapSlot, String> {
    let parse = |s: &str| {
        s.trim()
            .parse::<u32>()
            .map_err(|_| format!("{text:?} is not -1, SLOT or BANK:SLOT"))
    };
    if text.trim() == "-1" {
        return Ok(GsmtapSlot::All);
    }
    match text.split_once(':') {
        Some((b, s)) => Ok(GsmtapSlot::Slot(Some(parse(b)?), parse(s)?)),
        None => Ok(GsmtapSlot::Slot(None, parse(text)?)),
    }
}

/// libosmocore log levels (`-e`) as tracing filters.
fn log_filter(level: &str) -> String {
    match level.trim() {
        "1" | "debug" => "debug",
        "3" | "info" => "info",
        "5" | "notice" => "info",
        "7" | "error" => "error",
        "8" | "fatal" => "error",
        other => other,
    }
    .to_string()
}

#[derive(Parser)]
#[command(
    name = "remsim-bankd",
    version,
    about = "remsim SIM bank daemon (osmo-remsim-bankd compatible flags)"
)]
struct Args {
    /// remsim-server host.
    #[arg(short = 'i', long = "server-host", env = "REMSIM_SERVER_HOST")]
    server_host: String,
    /// remsim-server RSPRO port.
    #[arg(
        short = 'p',
        long = "server-port",
        env = "REMSIM_SERVER_PORT",
        default_value_t = 9998
    )]
    server_port: u16,
    /// Bank id announced to the server.
    #[arg(short = 'b', long = "bank-id", env = "REMSIM_BANK_ID", default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=rspro::validate::MAX_ID as i64))]
    bank_id: u32,
    /// Number of slots (1..1024).
    #[arg(short = 'n', long = "num-slots", env = "REMSIM_NUM_SLOTS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    num_slots: u32,
    /// Component name in our identity (default: the host name).
    #[arg(short = 'N', long = "component-name", env = "REMSIM_COMPONENT_NAME")]
    component_name: Option<String>,
    /// Address for client connections.
    #[arg(
        short = 'I',
        long = "bind-ip",
        env = "REMSIM_BIND_IP",
        default_value = "0.0.0.0"
    )]
    bind_ip: IpAddr,
    /// Port for client connections.
    #[arg(
        short = 'P',
        long = "bind-port",
        env = "REMSIM_BIND_PORT",
        default_value_t = 9999
    )]
    bind_port: u16,
    /// Open readers shared instead of exclusive.
    #[arg(
        short = 's',
        long = "permit-shared-pcsc",
        env = "REMSIM_PERMIT_SHARED_PCSC"
    )]
    shared: bool,
    /// Send GSMTAP traces of APDUs and ATRs to this host (port 4729).
    #[arg(short = 'g', long = "gsmtap-ip", env = "REMSIM_GSMTAP_IP")]
    gsmtap_ip: Option<String>,
    /// Trace only this slot (SLOT of this bank, or BANK:SLOT; -1: all).
    #[arg(short = 'G', long = "gsmtap-slot", env = "REMSIM_GSMTAP_SLOT", value_parser = gsmtap_slot, allow_hyphen_values = true)]
    gsmtap_slot: Option<GsmtapSlot>,
    /// libosmocore debug mask (accepted for compatibility; use -e).
    #[arg(short = 'd', long = "debug")]
    debug_mask: Option<String>,
    /// Log level: 1 debug, 3 info, 5 notice, 7 error, or a tracing filter.
    #[arg(
        short = 'e',
        long = "log-level",
        env = "REMSIM_LOG",
        default_value = "info"
    )]
    log_level: String,
    /// Accepted for compatibility (no colours are used).
    #[arg(short = 'L', long = "disable-color")]
    _disable_color: bool,
    /// Accepted for compatibility (timestamps are always printed).
    #[arg(short = 'T', long = "timestamp")]
    _timestamp: bool,
    #[arg(long, value_enum, env = "REMSIM_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// The PC/SC slot file.
    #[arg(
        long = "slot-file",
        env = "REMSIM_SLOT_FILE",
        default_value = "bankd_pcsc_slots.csv"
    )]
    slot_file: PathBuf,
    /// Where the cards are.
    #[arg(long, value_enum, env = "REMSIM_BACKEND", default_value = "pcsc")]
    backend: BackendKind,
    /// Soft SIM profiles (TOML/JSON), slot i gets card i; generated ones fill the rest.
    #[arg(long = "soft-profiles", env = "REMSIM_SOFT_PROFILES")]
    soft_profiles: Option<PathBuf>,
    /// How long a client may take to send ConnectClientReq.
    #[arg(long, env = "REMSIM_IDENTIFY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    identify_timeout: Duration,
    /// Client connections held at once; more are closed as they come (logged).
    #[arg(long, env = "REMSIM_MAX_CONNECTIONS", default_value_t = 2048)]
    max_connections: usize,
    /// How often a mapped card that could not be opened is tried again.
    #[arg(long, env = "REMSIM_CARD_RETRY", default_value = "10s", value_parser = parse_duration)]
    card_retry: Duration,
    /// Keep-alive towards clients and the server.
    #[command(flatten)]
    keepalive: remsim_daemon::KeepaliveArgs,
    /// Serve clients only from these networks and addresses
    /// (comma-separated CIDRs); others are closed at accept.
    #[arg(long, env = "REMSIM_RSPRO_ALLOW", value_parser = Allow::parse)]
    rspro_allow: Option<Allow>,
    /// TLS towards the server's TLS port and, on the client port, mutual
    /// TLS with our clients (--tls-cert/--tls-key as our certificate,
    /// client certificates checked against --tls-ca).
    #[command(flatten)]
    tls: remsim_daemon::TlsArgs,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default).
    #[arg(long, env = "REMSIM_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
}

fn backend(args: &Args) -> anyhow::Result<card::Backend> {
    Ok(match args.backend {
        BackendKind::Pcsc => {
            // Read here, parsed in slots (which the fuzz target builds alone).
            let path = &args.slot_file;
            let text = remsim_daemon::files::read_text(path, remsim_daemon::files::FILE_LIMIT)
                .with_context(|| path.display().to_string())?;
            let file = slots::SlotFile::parse(&path.display().to_string(), &text)?;
            for e in file.foreign(args.bank_id) {
                warn!(line = e.line, slot = %e.slot, "slot file entry for another bank; ignored");
            }
            card::Backend::Pcsc(card::PcscBackend::new(file, args.shared))
        }
        BackendKind::Soft => {
            let mut profiles = match &args.soft_profiles {
                Some(path) => simcard::profile::load(path)?,
                None => Vec::new(),
            };
            let have = profiles.len() as u32;
            if have < args.num_slots {
                // Distinct cards per bank: bank b, slot s is card b * 1024 + s.
                profiles.extend(CardProfile::generate(
                    args.bank_id * 1024 + have,
                    args.num_slots - have,
                ));
            }
            card::Backend::Soft(card::SoftBackend::new(profiles, args.shared)?)
        }
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    remsim_daemon::init_logging(&log_filter(&args.log_level), args.log_format)?;
    listen::raise_open_files_limit();
    if args.debug_mask.is_some() {
        info!("-d is accepted for compatibility; use -e to set the log level");
    }
    let backend = backend(&args)?;

    let name = args
        .component_name
        .clone()
        .unwrap_or_else(rspro::pdu::host_name);
    if name.is_empty() || name.len() > rspro::validate::MAX_NAME_LEN {
        bail!(
            "component name {name:?} must be 1 to {} characters",
            rspro::validate::MAX_NAME_LEN
        );
    }
    // -N names us towards clients too (the C bankd uses the host name there).
    let identity = Identity::new(
        ComponentType::RemsimBankd,
        name,
        "remsim-bankd",
        env!("CARGO_PKG_VERSION"),
    );
    let keepalive = args.keepalive.config();

    let gsmtap = match &args.gsmtap_ip {
        Some(host) => {
            let filter = match args.gsmtap_slot {
                None | Some(GsmtapSlot::All) => gsmtap::Filter::All,
                Some(GsmtapSlot::Slot(bank, slot)) => {
                    gsmtap::Filter::Slot(BankSlot::new(bank.unwrap_or(args.bank_id), slot))
                }
            };
            Some(
                gsmtap::Gsmtap::new(host, filter)
                    .with_context(|| format!("GSMTAP target {host}"))?,
            )
        }
        None => None,
    };

    let (to_server_tls, clients_tls) = args.tls.on();
    let clients_tls = if clients_tls {
        let files = ServerFiles::from_options(
            "client port",
            args.tls.tls_cert.as_deref(),
            args.tls.tls_key.as_deref(),
            args.tls.tls_ca.as_deref(),
        )?
        .context("TLS on the client port needs --tls-cert and --tls-key (or --tls-links server)")?;
        Some(Reloading::load("clients", files, &[])?)
    } else {
        None
    };
    // Installed in any case, before listening: SIGHUP must not end a bankd
    // (its default action).
    let reloadable = clients_tls.iter().map(|t| t.clone() as Arc<dyn Reload>);
    remsim_daemon::reload_on_hangup(reloadable.collect())?;
    let addr = SocketAddr::new(args.bind_ip, args.bind_port);
    let listener = listen::bind(addr).with_context(|| format!("binding the client port {addr}"))?;
    info!(listen = %addr, bank = args.bank_id, slots = args.num_slots, "serving clients");

    let (maps_tx, maps_rx) = watch::channel(Arc::new(maps::MapTable::default()));
    let link = ClientLinkConfig {
        peer: format!("{}:{}", args.server_host, args.server_port),
        connect_req: RsproPdu::connect_bank_req(identity.clone(), args.bank_id, args.num_slots),
        expect_peer: ComponentType::RemsimServer,
        keepalive,
        reconnect: ReconnectConfig::default(),
        tolerate: Vec::new(),
        upgrade: args.tls.upgrade()?.filter(|_| to_server_tls),
    };
    tokio::spawn(server_link::run(
        link,
        args.bank_id,
        args.num_slots,
        maps_tx,
    ));

    let metrics = metrics::Metrics::new();
    let shared = Arc::new(worker::Shared {
        backend,
        maps: maps_rx,
        identity,
        gsmtap,
        keepalive: Some(keepalive),
        identify_timeout: args.identify_timeout,
        retry: args.card_retry,
        tls: clients_tls.clone(),
        metrics: metrics.clone(),
    });
    let (trigger, shutdown) = Shutdown::channel();
    if let Some(addr) = args.metrics_listen {
        metrics::serve(addr, metrics, shutdown.clone()).await?;
    }
    let policy = Policy::new("clients", args.max_connections)
        .with_allow(args.rspro_allow.clone().unwrap_or_default());
    let clients = tokio::spawn(listen::serve(listener, policy, shutdown, move |accepted| {
        worker::serve(accepted, shared.clone())
    }));
    remsim_daemon::shutdown_signal().await?;
    // Stop accepting, end every client session and release its card; the
    // listener waits for that within its drain bound.
    info!("shutting down");
    let _ = trigger.send(true);
    let _ = clients.await;
    info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsmtap_slot_takes_the_c_default_and_bank_slots() {
        let g = |args: &[&str]| {
            Args::try_parse_from([&["remsim-bankd", "-i", "127.0.0.1"], args].concat())
                .map(|a| a.gsmtap_slot)
        };
        assert_eq!(g(&["-G", "-1"]).expect("parses"), Some(GsmtapSlot::All));
        assert_eq!(
            g(&["-G", "3"]).expect("parses"),
            Some(GsmtapSlot::Slot(None, 3))
        );
        assert_eq!(
            g(&["--gsmtap-slot", "2:5"]).expect("parses"),
            Some(GsmtapSlot::Slot(Some(2), 5))
        );
        assert!(g(&["-G", "-2"]).is_err());
    }
}
