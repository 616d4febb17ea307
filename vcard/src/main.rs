//! `remsim-vcard`: serves soft SIM cards to pcscd through vsmartcard-vpcd,
//! one card per vpcd slot (card n on port + n), so that they appear as
//! cards in real PC/SC readers ("Virtual PCD 00 0n").

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use remsim_daemon::LogFormat;
use remsim_vcard::vpcd::{self, Retry};
use simcard::{CardProfile, SimCard, profile};
use tracing::info;

#[derive(Parser)]
#[command(
    name = "remsim-vcard",
    version,
    about = "Serve soft SIM cards to pcscd through vsmartcard-vpcd"
)]
struct Args {
    /// Host where vpcd (inside pcscd) listens.
    #[arg(long, default_value = "127.0.0.1", env = "REMSIM_VCARD_HOST")]
    host: String,
    /// vpcd port of the first slot; card n is served on port + n.
    #[arg(long, default_value_t = vpcd::DEFAULT_PORT, env = "REMSIM_VCARD_PORT")]
    port: u16,
    /// Card profile file (TOML, or JSON when named *.json); may be repeated.
    #[arg(
        short = 'f',
        long = "profiles",
        env = "REMSIM_VCARD_PROFILES",
        value_delimiter = ','
    )]
    profiles: Vec<PathBuf>,
    /// Serve this many generated cards (the default is one when no file is given).
    #[arg(short = 'n', long, env = "REMSIM_VCARD_GENERATE")]
    generate: Option<u32>,
    /// Index of the first generated card.
    #[arg(long, env = "REMSIM_VCARD_FIRST", default_value_t = 0)]
    first: u32,
    /// Print the cards' profiles as TOML and exit.
    #[arg(long)]
    print_profiles: bool,
    /// Log filter (error, warn, info, debug, trace, or tracing directives).
    #[arg(long, env = "REMSIM_LOG", default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long, value_enum, env = "REMSIM_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

fn cards(args: &Args) -> anyhow::Result<Vec<CardProfile>> {
    let mut cards = Vec::new();
    for path in &args.profiles {
        cards.extend(profile::load(path)?);
    }
    let generate = args
        .generate
        .unwrap_or(if cards.is_empty() { 1 } else { 0 });
    cards.extend(CardProfile::generate(args.first, generate));
    if cards.is_empty() {
        bail!("no cards: give --profiles FILE or --generate N");
    }
    if cards.len() + usize::from(args.port) > usize::from(u16::MAX) + 1 {
        bail!("{} cards do not fit above port {}", cards.len(), args.port);
    }
    Ok(cards)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    remsim_daemon::init_logging(&args.log_level, args.log_format)?;
    let cards = cards(&args)?;
    if args.print_profiles {
        print!("{}", profile::to_toml(&cards));
        return Ok(());
    }
    for (slot, profile) in cards.into_iter().enumerate() {
        let addr = format!("{}:{}", args.host, usize::from(args.port) + slot);
        info!(%addr, iccid = %profile.iccid, imsi = %profile.imsi, "serving card");
        let mut card = SimCard::new(profile).context("card profile")?;
        tokio::spawn(async move { vpcd::run(&addr, &mut card, Retry::default()).await });
    }
    remsim_daemon::shutdown_signal().await?;
    info!("shutting down");
    Ok(())
}
