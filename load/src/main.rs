//! `remsim-load`: one load scenario against a remsim server, ours or
//! osmo-remsim's, or (bankd) against one bankd alone, or (pcsc) on one
//! reader of the local pcscd (see lib.rs), reported as text or, with
//! --json, as one JSON object on stdout.

use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use remsim_daemon::{LogFormat, parse_duration};
use remsim_load::{BankEndpoints, Scenario, Settings, Sizes, Watched, client, procstat};

#[derive(Parser)]
#[command(
    name = "remsim-load",
    version,
    about = "Load for a remsim server (ours or osmo-remsim's): simulated clients, bankds with soft SIMs, slot maps through the management API; or one bankd measured alone"
)]
struct Cli {
    /// The server's RSPRO port (HOST:PORT).
    #[arg(
        long,
        env = "REMSIM_LOAD_SERVER",
        default_value = "127.0.0.1:9998",
        global = true
    )]
    server: String,
    /// The gRPC management API: slot maps, and bank endpoints with --bank-endpoints api.
    #[arg(
        long,
        env = "REMSIM_LOAD_API",
        default_value = "http://127.0.0.1:9997",
        global = true
    )]
    api: String,
    /// Create slot maps through the C REST API at this base URL (e.g.
    /// http://127.0.0.1:9997) instead of gRPC.
    #[arg(long, env = "REMSIM_LOAD_REST", global = true)]
    rest: Option<String>,
    /// One JSON object on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Bound of every wait: a connect, an answer, the activation after the last create.
    #[arg(long, env = "REMSIM_LOAD_TIMEOUT", default_value = "30s", value_parser = parse_duration, global = true)]
    timeout: Duration,
    /// A process under test, measured over the scenario's window: PID or
    /// LABEL=PID (repeatable).
    #[arg(long = "pid", value_name = "[LABEL=]PID", global = true)]
    pids: Vec<Watched>,
    /// Clock ticks per second of /proc/PID/stat [default: getconf CLK_TCK, else 100].
    #[arg(long, global = true)]
    clk_tck: Option<u64>,
    /// How clients learn where the simulated bankds listen [default: api
    /// with gRPC, source-ip with --rest].
    #[arg(long, value_enum, global = true)]
    bank_endpoints: Option<BankEndpoints>,
    /// Where the simulated bankds listen with --bank-endpoints api.
    #[arg(long, default_value = "127.0.0.1", global = true)]
    bind_ip: IpAddr,
    /// With --bank-endpoints source-ip, bank b connects from and listens on
    /// this address + b, port 9999.
    #[arg(long, default_value = "127.0.0.10", global = true)]
    source_ip_base: Ipv4Addr,
    /// The first simulated bank's id.
    #[arg(long, default_value_t = 1, global = true)]
    bank_id_base: u32,
    /// The first simulated client's id (client i: id base + i / 1000, slot i % 1000).
    #[arg(long, default_value_t = 1, global = true)]
    client_id_base: u32,
    /// Slot map creations (or CreateSlotmaps requests) in flight at once.
    #[arg(long, default_value_t = 16, global = true)]
    concurrency: usize,
    /// Create maps through gRPC one CreateSlotmap at a time, not in
    /// CreateSlotmaps requests of 500.
    #[arg(long, global = true)]
    single_creates: bool,
    /// Delete every slot map (ResetAll, POST /global-reset) before the banks connect.
    #[arg(long, global = true)]
    reset: bool,
    /// Log filter for remsim-load's own messages on stderr.
    #[arg(long, env = "REMSIM_LOAD_LOG", default_value = "warn", global = true)]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N clients connect: time until all hold ConnectClientRes, served
    /// fraction, connect latency.
    Connect(ClientArgs),
    /// B bankds × S slots, N clients, M maps through the API: time from
    /// the first create until every mapped client holds its card's ATR.
    Activate(ActivateArgs),
    /// activate, then clients send APDUs back to back: round trips, APDUs/s,
    /// the slowest client.
    Apdu {
        #[command(flatten)]
        activate: ActivateArgs,
        #[command(flatten)]
        hold: HoldArgs,
        /// How many of the clients send APDUs [default: all].
        #[arg(long)]
        senders: Option<usize>,
    },
    /// N clients connect and stay connected: what holding them costs the
    /// processes under test.
    Idle {
        #[command(flatten)]
        clients: ClientArgs,
        #[command(flatten)]
        hold: HoldArgs,
    },
    /// N clients connect and stay connected while management calls are
    /// timed one after another: list banks (on a kept and on a new
    /// connection), list clients.
    Api {
        #[command(flatten)]
        clients: ClientArgs,
        /// Rounds of calls.
        #[arg(long, default_value_t = 20)]
        calls: usize,
    },
    /// One real bankd alone: remsim-load listens as its server (start the
    /// bankd with -i/-p pointing at --listen), maps its slots and plays its
    /// clients, which send APDUs back to back: round trips, APDUs/s, and
    /// CPU and context switches per APDU of every --pid.
    Bankd(BankdArgs),
    /// A PC/SC application on this machine: APDUs back to back on one
    /// reader of the local pcscd (whatever serves it: a card, remsim-client
    /// vpcd, an ifd handler): round trips, and CPU and context switches
    /// per APDU of every --pid.
    Pcsc(PcscArgs),
}

#[derive(Args)]
struct PcscArgs {
    /// The reader's name, as pcscd lists it.
    #[arg(long, default_value = "Virtual PCD 00 00")]
    reader: String,
    /// The command APDU sent, in hex (SELECT MF by default).
    #[arg(long, default_value = "a0a40000023f00", value_parser = parse_apdu)]
    apdu: Apdu,
    #[command(flatten)]
    hold: HoldArgs,
}

#[derive(Args)]
struct BankdArgs {
    /// Where remsim-load listens as the bankd's server (HOST:PORT).
    #[arg(long, default_value = "127.0.0.1:9998")]
    listen: String,
    /// The bankd's client port (HOST:PORT).
    #[arg(long, default_value = "127.0.0.1:9999")]
    bankd: String,
    /// Simulated clients, at most the bankd's slots from --first-slot.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// The first bank slot mapped: client i gets slot first-slot + i.
    #[arg(long, default_value_t = 0)]
    first_slot: u32,
    /// The command APDU the clients send, in hex (SELECT MF by default).
    #[arg(long, default_value = "a0a40000023f00", value_parser = parse_apdu)]
    apdu: Apdu,
    #[command(flatten)]
    hold: HoldArgs,
}

/// A command APDU from the command line (a newtype: clap would take a
/// bare Vec<u8> for a list of numbers).
#[derive(Clone)]
struct Apdu(Vec<u8>);

fn parse_apdu(text: &str) -> Result<Apdu, String> {
    client::parse_apdu(text).map(Apdu)
}

#[derive(Args)]
struct ClientArgs {
    /// Simulated clients.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Connects per second [default: all at once].
    #[arg(long)]
    rate: Option<f64>,
}

#[derive(Args)]
struct ActivateArgs {
    #[command(flatten)]
    clients: ClientArgs,
    /// Simulated bankds.
    #[arg(long, default_value_t = 1)]
    banks: u32,
    /// Slots (soft SIMs) per bankd.
    #[arg(long, default_value_t = 100)]
    slots: u32,
    /// Slot maps: bank slot k to client k [default: one per client].
    #[arg(long)]
    maps: Option<usize>,
}

#[derive(Args)]
struct HoldArgs {
    /// How long APDUs are sent, or connections held.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    seconds: Duration,
}

impl ActivateArgs {
    fn sizes(&self) -> Sizes {
        Sizes {
            clients: self.clients.clients,
            rate: self.clients.rate,
            banks: self.banks,
            slots: self.slots,
            maps: self.maps,
            ..Sizes::default()
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("remsim-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    remsim_daemon::init_logging(&cli.log, LogFormat::Text)?;
    // Thousands of simulated links need more than the usual 1,024 files.
    remsim_daemon::listen::raise_open_files_limit();
    let (scenario, sizes) = match &cli.command {
        Command::Connect(c) => (
            Scenario::Connect,
            Sizes {
                clients: c.clients,
                rate: c.rate,
                ..Sizes::default()
            },
        ),
        Command::Activate(a) => (Scenario::Activate, a.sizes()),
        Command::Apdu {
            activate,
            hold,
            senders,
        } => (
            Scenario::Apdu,
            Sizes {
                seconds: hold.seconds,
                senders: *senders,
                ..activate.sizes()
            },
        ),
        Command::Idle { clients, hold } => (
            Scenario::Idle,
            Sizes {
                clients: clients.clients,
                rate: clients.rate,
                seconds: hold.seconds,
                ..Sizes::default()
            },
        ),
        Command::Api { clients, calls } => (
            Scenario::Api,
            Sizes {
                clients: clients.clients,
                rate: clients.rate,
                calls: *calls,
                ..Sizes::default()
            },
        ),
        Command::Bankd(b) => (
            Scenario::Bankd,
            Sizes {
                clients: b.clients,
                seconds: b.hold.seconds,
                ..Sizes::default()
            },
        ),
        Command::Pcsc(p) => (
            Scenario::Pcsc,
            Sizes {
                clients: 1,
                seconds: p.hold.seconds,
                ..Sizes::default()
            },
        ),
    };
    let mut settings = Settings {
        server: cli.server,
        api: cli.api,
        rest: cli.rest,
        timeout: cli.timeout,
        bank_endpoints: cli.bank_endpoints,
        bind_ip: cli.bind_ip,
        source_ip_base: cli.source_ip_base,
        bank_id_base: cli.bank_id_base,
        client_id_base: cli.client_id_base,
        concurrency: cli.concurrency,
        bulk: !cli.single_creates,
        reset: cli.reset,
        processes: cli.pids,
        clk_tck: cli.clk_tck.unwrap_or_else(procstat::clock_ticks),
        ..Settings::default()
    };
    match cli.command {
        Command::Bankd(b) => {
            settings.listen = b.listen;
            settings.bankd = b.bankd;
            settings.first_slot = b.first_slot;
            settings.apdu = b.apdu.0;
        }
        Command::Pcsc(p) => {
            settings.reader = p.reader;
            settings.apdu = p.apdu.0;
        }
        _ => {}
    }
    let report = remsim_load::run(&settings, scenario, &sizes).await?;
    if cli.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
