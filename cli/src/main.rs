//! `remsimctl`: the remsim command line. For now the offline RSPRO tools
//! (`decode`, `encode`); management commands arrive with the server.

mod frames;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "remsimctl",
    version,
    about = "Operate and inspect remsim (remote SIM)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode IPA frames (RSPRO and CCM) given as hex, one frame per line.
    Decode(frames::DecodeArgs),
    /// Encode frames given as JSON into IPA frames in hex.
    Encode(frames::EncodeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Decode(args) => frames::decode(args),
        Command::Encode(args) => frames::encode(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("remsimctl: {e:#}");
            ExitCode::from(2)
        }
    }
}
