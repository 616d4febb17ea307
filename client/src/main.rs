//! `remsim-client`: brings a remote SIM to a modem. One client slot, a link
//! to remsim-server for configuration and a link to the bankd that holds the
//! card; the modem side is a frontend chosen by subcommand (`shell`, or
//! `vpcd` to show the card as a local PC/SC card). Flags are the C
//! clients'.

use std::time::Duration;

use anyhow::Context;
use clap::{ArgAction, Parser, Subcommand};
use remsim_client::{driver, frontend, shell, st2, vpcd};
use remsim_daemon::LogFormat;
use remsim_daemon::parse_duration;
use rspro::{ClientSlot, ComponentType, Identity};
use tracing::{info, warn};

#[derive(Subcommand)]
enum Frontend {
    /// C-APDUs as hex lines on stdin, answers on stdout (osmo-remsim-client-shell).
    Shell,
    /// The remote card as a local PC/SC card through vsmartcard-vpcd.
    Vpcd {
        /// Where vpcd listens for its card (slot n: 35963 + n).
        #[arg(long, env = "REMSIM_VPCD", default_value = "127.0.0.1:35963")]
        vpcd: String,
        /// How long an APDU may wait for the bank.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        apdu_timeout: Duration,
    },
    /// A SIMtrace2-family card emulator on USB (osmo-remsim-client-st2).
    Simtrace2 {
        /// USB vendor id (hex).
        #[arg(short = 'V', long = "usb-vendor", value_parser = hex_u16)]
        vendor: Option<u16>,
        /// USB product id (hex).
        #[arg(short = 'P', long = "usb-product", value_parser = hex_u16)]
        product: Option<u16>,
        /// USB configuration (default 1, card emulation).
        #[arg(short = 'C', long = "usb-config")]
        config: Option<u8>,
        /// Interface number (default: the first card-emulation interface).
        #[arg(short = 'I', long = "usb-interface")]
        interface: Option<u8>,
        /// Alternate setting.
        #[arg(short = 'S', long = "usb-altsetting", default_value_t = 0)]
        altsetting: u8,
        /// USB device address.
        #[arg(short = 'A', long = "usb-address")]
        address: Option<u8>,
        /// USB path, e.g. 2-1.1.
        #[arg(short = 'H', long = "usb-path")]
        path: Option<String>,
        /// Card-detect polarity towards the modem: 1 high when present, 0 low.
        #[arg(short = 'Z', long = "set-sim-presence", value_parser = clap::value_parser!(u8).range(0..=1))]
        presence: Option<u8>,
    },
}

fn hex_u16(text: &str) -> Result<u16, String> {
    u16::from_str_radix(text.trim_start_matches("0x"), 16)
        .map_err(|_| format!("{text:?} is not a hex id"))
}

#[derive(Parser)]
#[command(
    name = "remsim-client",
    version,
    disable_version_flag = true,
    about = "remsim client: a remote SIM for a local modem"
)]
struct Args {
    /// Print the version.
    #[arg(short = 'v', long = "version", action = ArgAction::Version)]
    version: Option<bool>,
    /// remsim-server host.
    #[arg(
        short = 'i',
        long = "server-ip",
        env = "REMSIM_SERVER_HOST",
        default_value = "127.0.0.1",
        global = true
    )]
    server_ip: String,
    /// remsim-server port.
    #[arg(
        short = 'p',
        long = "server-port",
        env = "REMSIM_SERVER_PORT",
        default_value_t = 9998,
        global = true
    )]
    server_port: u16,
    /// Client id.
    #[arg(
        short = 'c',
        long = "client-id",
        env = "REMSIM_CLIENT_ID",
        default_value_t = 0,
        global = true
    )]
    client_id: u32,
    /// Client slot number.
    #[arg(
        short = 'n',
        long = "client-slot",
        env = "REMSIM_CLIENT_SLOT_NR",
        default_value_t = 0,
        global = true
    )]
    client_slot: u32,
    /// ATR presented to the modem until the bank card's arrives (hex, 2..55 bytes).
    #[arg(short = 'a', long = "atr", env = "REMSIM_ATR", default_value = "3b00", value_parser = parse_atr, global = true)]
    atr: Atr,
    /// Keep presenting -a even when the bank sends the card's ATR.
    #[arg(
        short = 'r',
        long = "atr-ignore-rspro",
        env = "REMSIM_ATR_IGNORE_RSPRO",
        global = true
    )]
    ignore_bank_atr: bool,
    /// Script run on events (its first argument is the cause).
    #[arg(
        short = 'e',
        long = "event-script",
        env = "REMSIM_EVENT_SCRIPT",
        global = true
    )]
    event_script: Option<String>,
    /// libosmocore debug mask (accepted for compatibility).
    #[arg(short = 'd', long = "debug", global = true)]
    _debug: Option<String>,
    /// Accepted for compatibility.
    #[arg(short = 'L', long = "disable-color", global = true)]
    _disable_color: bool,
    /// Log filter.
    #[arg(long, env = "REMSIM_LOG", default_value = "info", global = true)]
    log_level: String,
    #[arg(
        long,
        value_enum,
        env = "REMSIM_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,
    #[command(flatten)]
    keepalive: remsim_daemon::KeepaliveArgs,
    #[command(flatten)]
    tls: remsim_daemon::TlsArgs,
    #[command(subcommand)]
    frontend: Frontend,
}

/// An ATR given with `-a`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Atr(Vec<u8>);

/// `-a`: hex (blanks and colons allowed), 2..55 bytes; anything else is a
/// usage error (exit 2) before anything starts.
fn parse_atr(text: &str) -> Result<Atr, String> {
    hex::decode(text.replace([' ', ':'], ""))
        .ok()
        .filter(|a| (2..=rspro::validate::MAX_ATR_LEN).contains(&a.len()))
        .map(Atr)
        .ok_or_else(|| {
            format!(
                "ATR malformed: {text:?} (2..{} bytes of hex)",
                rspro::validate::MAX_ATR_LEN
            )
        })
}

/// How long each step of a shutdown may take.
const STOP_BOUND: Duration = Duration::from_secs(2);

// One thread: a client serves one modem, and with worker threads every
// APDU woke a thread per hop between frontend, link and socket (shell
// frontend: 175-212 µs of CPU per APDU, 93-110 µs on one thread).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    remsim_daemon::init_logging(&args.log_level, args.log_format)?;
    let config = driver::Config {
        server: format!("{}:{}", args.server_ip, args.server_port),
        client: ClientSlot::new(args.client_id, args.client_slot),
        identity: Identity::new(
            ComponentType::RemsimClient,
            rspro::pdu::host_name(),
            "remsim-client",
            env!("CARGO_PKG_VERSION"),
        ),
        atr: args.atr.0.clone(),
        ignore_bank_atr: args.ignore_bank_atr,
        event_script: args.event_script.clone(),
        usb: None,
        keepalive: args.keepalive.config(),
        server_tls: None,
        bankd_tls: None,
    };
    let tls = args.tls.upgrade()?;
    let (server_tls, bankd_tls) = args.tls.on();
    let config = driver::Config {
        server_tls: tls.clone().filter(|_| server_tls),
        bankd_tls: tls.filter(|_| bankd_tls),
        ..config
    };
    let mut config = config;
    // Nothing to re-read, but SIGHUP must not end the client (its default action).
    remsim_daemon::reload_on_hangup(Vec::new())?;
    let ((cmd_tx, event_rx), (cmd_rx, event_tx)) = frontend::channels();
    let frontend = match args.frontend {
        Frontend::Shell => tokio::spawn(shell::run(cmd_rx, event_tx)),
        Frontend::Vpcd { vpcd, apdu_timeout } => {
            let config = vpcd::VpcdConfig {
                addr: vpcd,
                apdu_timeout,
                retry: Duration::from_millis(500),
            };
            tokio::spawn(vpcd::run(config, cmd_rx, event_tx))
        }
        Frontend::Simtrace2 {
            vendor,
            product,
            config: usb_config,
            interface,
            altsetting,
            address,
            path,
            presence,
        } => {
            let selector = st2::usb::Selector {
                vendor,
                product,
                config: usb_config,
                interface,
                altsetting,
                address,
                path,
            };
            let transport =
                tokio::task::spawn_blocking(move || st2::usb::UsbTransport::open(&selector))
                    .await
                    .context("USB setup")??;
            config.usb = Some((transport.path.clone(), transport.interface));
            let transport: std::sync::Arc<dyn st2::transport::Transport> =
                std::sync::Arc::new(transport);
            tokio::spawn(st2::run(
                transport,
                presence.map(|p| p == 1),
                cmd_rx,
                event_tx,
            ))
        }
    };
    let core = cmd_tx.clone();
    tokio::select! {
        () = driver::run(config, core, event_rx) => {
            frontend.abort();
            return Ok(());
        }
        signal = remsim_daemon::shutdown_signal() => signal?,
    }
    // The links ended with the driver. The frontend hears that the card is
    // gone (vpcd: its socket closes; SIMtrace2: card removed), then ends
    // as its queue closes.
    info!("shutting down");
    let told = cmd_tx.send_timeout(frontend::FrontendCmd::CardInsert(false), STOP_BOUND);
    if told.await.is_err() {
        warn!("the frontend did not take the card removal");
    }
    drop(cmd_tx);
    if tokio::time::timeout(STOP_BOUND, frontend).await.is_err() {
        warn!(bound = ?STOP_BOUND, "the frontend did not end in time");
    }
    info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_atr_is_a_usage_error() {
        let atr = |a: &str| Args::try_parse_from(["remsim-client", "-a", a, "shell"]);
        let ok = atr("3b:9f 96").expect("parses");
        assert_eq!(ok.atr, Atr(vec![0x3b, 0x9f, 0x96]));
        for bad in ["3b", "zz", "3b0", &"00".repeat(56)] {
            let e = atr(bad).err().expect("refused");
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
    }
}
