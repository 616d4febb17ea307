//! `remsimctl`: the remsim command line. Manages a remsim-server over gRPC
//! (banks, clients, slot maps, reset, endpoints, watch, CSV import and
//! export) and works offline on RSPRO frames (`decode`, `encode`, also
//! from pcap captures). Tables for people, `-o json` for scripts.

mod api;
mod csv_io;
mod csv_rows;
mod frames;
mod manage;
mod output;
mod pcap;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;
use remsim_daemon::parse_duration;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

const EXIT_CODES: &str = "Exit codes: 0 ok, 1 failure, 2 invalid input, 3 not found, 4 conflict (already exists, or an import with failures), 5 server unreachable.";

#[derive(Parser)]
#[command(name = "remsimctl", version, about = "Operate and inspect remsim (remote SIM)", after_help = EXIT_CODES)]
struct Cli {
    /// The server's management API (https:// for a TLS port).
    #[arg(
        long,
        global = true,
        env = "REMSIM_SERVER",
        default_value = "http://127.0.0.1:9997"
    )]
    server: String,
    /// A file holding the API token (just the token), sent as
    /// "authorization: Bearer TOKEN".
    #[arg(long, global = true, env = "REMSIM_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The API token itself (prefer --token-file: the environment of a
    /// process can be read by others of the same user).
    #[arg(
        long,
        global = true,
        env = "REMSIM_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// CA certificate (PEM) of the server's TLS certificate (default: the system's CAs).
    #[arg(long, global = true, env = "REMSIM_CA")]
    ca: Option<PathBuf>,
    /// Our client certificate (PEM), for a server that requires one.
    #[arg(long, global = true, env = "REMSIM_CERT", requires = "key")]
    cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, global = true, env = "REMSIM_KEY", requires = "cert")]
    key: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    output: Output,
    /// How long to wait for the connection.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// How long to wait for each answer.
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// SIM banks (bankds).
    #[command(subcommand)]
    Bank(manage::BankCmd),
    /// Clients (modems).
    #[command(subcommand)]
    Client(manage::ClientCmd),
    /// Slot maps: which bank slot serves which client slot.
    #[command(subcommand)]
    Slotmap(manage::SlotmapCmd),
    /// Deletes every slot map (asks first unless --yes).
    Reset {
        #[arg(long)]
        yes: bool,
    },
    /// Prints changes of banks, clients and slot maps until Ctrl-C.
    Watch {
        /// Do not start with the current state.
        #[arg(long)]
        no_snapshot: bool,
    },
    /// Decodes IPA frames (RSPRO and CCM) given as hex, or from a pcap capture.
    Decode(frames::DecodeArgs),
    /// Encodes frames given as JSON into IPA frames in hex.
    Encode(frames::EncodeArgs),
    /// Prints a shell completion script.
    Completions { shell: Shell },
}

async fn manage(cli: Cli) -> Result<(), api::Failure> {
    // Streams (watch) have no per-request deadline.
    let timeout = match cli.command {
        Command::Watch { .. } => None,
        _ => Some(cli.timeout),
    };
    let token = match &cli.token_file {
        Some(path) => Some(api::Credentials::read_token_file(path)?),
        None => cli.token.clone(),
    };
    let credentials = api::Credentials {
        token,
        ca: cli.ca.clone(),
        cert: cli.cert.clone(),
        key: cli.key.clone(),
    };
    let client = api::connect(&cli.server, &credentials, cli.connect_timeout, timeout).await?;
    let mut ctx = manage::Ctx {
        client,
        json: cli.output == Output::Json,
    };
    match cli.command {
        Command::Bank(cmd) => manage::bank_cmd(&mut ctx, cmd).await,
        Command::Client(cmd) => manage::client_cmd(&mut ctx, cmd).await,
        Command::Slotmap(cmd) => manage::slotmap_cmd(&mut ctx, cmd).await,
        Command::Reset { yes } => manage::reset(&mut ctx, yes).await,
        Command::Watch { no_snapshot } => manage::watch(&mut ctx, !no_snapshot).await,
        Command::Decode(_) | Command::Encode(_) | Command::Completions { .. } => Ok(()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let offline = match &cli.command {
        Command::Decode(args) => Some(frames::decode(args.clone(), cli.output == Output::Json)),
        Command::Encode(args) => Some(frames::encode(args.clone())),
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "remsimctl",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
        _ => None,
    };
    if let Some(result) = offline {
        return match result {
            Ok(code) => code,
            Err(e) => {
                eprintln!("remsimctl: {e:#}");
                ExitCode::from(api::EXIT_INVALID)
            }
        };
    }
    match manage(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.exit(),
    }
}
