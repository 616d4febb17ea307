//! The scenarios: what runs, what is waited for (always within a
//! bound), which window the processes under test are measured over, and
//! the report.
//! * connect: N clients → ConnectClientRes; window from the first connect;
//! * activate: B bankds × S slots, N clients, M maps through the API →
//!   every mapped client holds its card's ATR; window from the first create;
//! * apdu: activate, then APDUs back to back for T; window = those T;
//! * idle: connect, then hold every connection for T; window = those T;
//! * api: connect, then time management calls one after another while
//!   every connection is held (see [`crate::calls`]); window = the calls;
//! * bankd: one real bankd alone, remsim-load its server and its N
//!   clients, APDUs back to back for T; window = those T (see
//!   [`crate::isolated`]);
//! * pcsc: a PC/SC application's APDUs back to back on one reader of the
//!   local pcscd for T; window = those T (see [`crate::pcsc_app`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::api::{self, MapApi, Rest};
use crate::bank::{BankSpec, SimBank};
use crate::calls;
use crate::client::{self, ClientConfig, ClientOutcome, Goal, Phase, SELECT_MF};
use crate::isolated;
use crate::layout::{self, BANKD_PORT, Layout};
use crate::pcsc_app;
use crate::procstat::{DEFAULT_CLK_TCK, Usage, Watched, Window};
use crate::progress::{self, Tracker};
use crate::report::{Activation, ApduFigures, IdleFigures, Report};
use crate::stats::{fraction, millis, summarize};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Connect,
    Activate,
    Apdu,
    Idle,
    Api,
    Bankd,
    Pcsc,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Connect => "connect",
            Scenario::Activate => "activate",
            Scenario::Apdu => "apdu",
            Scenario::Idle => "idle",
            Scenario::Api => "api",
            Scenario::Bankd => "bankd",
            Scenario::Pcsc => "pcsc",
        }
    }
}

/// How clients learn where a simulated bankd listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BankEndpoints {
    /// SetBankEndpoint through the gRPC API (our server).
    Api,
    /// The bankd's source address and port 9999, as the C server derives
    /// it: bank b connects from and listens on source_ip_base + b.
    SourceIp,
}

/// Where the system under test is and how to reach it.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The server's RSPRO port, HOST:PORT.
    pub server: String,
    /// The gRPC management API.
    pub api: String,
    /// The C REST API's base URL: maps are created there instead.
    pub rest: Option<String>,
    /// Bound of every wait.
    pub timeout: Duration,
    /// `None`: `Api` with gRPC, `SourceIp` with `rest`.
    pub bank_endpoints: Option<BankEndpoints>,
    /// Where banks listen with `Api` endpoints.
    pub bind_ip: IpAddr,
    pub source_ip_base: Ipv4Addr,
    pub bank_id_base: u32,
    pub client_id_base: u32,
    /// Map creations (or bulk requests) in flight at once.
    pub concurrency: usize,
    /// Maps through gRPC in CreateSlotmaps requests, not one by one.
    pub bulk: bool,
    /// Delete every map before the banks connect.
    pub reset: bool,
    pub processes: Vec<Watched>,
    pub clk_tck: u64,
    /// bankd scenario: where remsim-load listens as the bankd's server.
    pub listen: String,
    /// bankd scenario: the bankd's client port.
    pub bankd: String,
    /// bankd scenario: client i gets bank slot first_slot + i.
    pub first_slot: u32,
    /// bankd and pcsc scenarios: the command APDU sent.
    pub apdu: Vec<u8>,
    /// pcsc scenario: the PC/SC reader's name.
    pub reader: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server: "127.0.0.1:9998".into(),
            api: "http://127.0.0.1:9997".into(),
            rest: None,
            timeout: Duration::from_secs(30),
            bank_endpoints: None,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            source_ip_base: Ipv4Addr::new(127, 0, 0, 10),
            bank_id_base: 1,
            client_id_base: 1,
            concurrency: 16,
            bulk: true,
            reset: false,
            processes: Vec::new(),
            clk_tck: DEFAULT_CLK_TCK,
            listen: "127.0.0.1:9998".into(),
            bankd: format!("127.0.0.1:{BANKD_PORT}"),
            first_slot: 0,
            apdu: SELECT_MF.to_vec(),
            reader: "Virtual PCD 00 00".into(),
        }
    }
}

/// How big a run is.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub clients: usize,
    /// Connects per second; `None`: all at once.
    pub rate: Option<f64>,
    pub banks: u32,
    pub slots: u32,
    /// `None`: one per client.
    pub maps: Option<usize>,
    /// Clients sending APDUs; `None`: all.
    pub senders: Option<usize>,
    /// How long apdu and bankd send, and idle holds.
    pub seconds: Duration,
    /// Rounds of management calls (api).
    pub calls: usize,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes {
            clients: 100,
            rate: None,
            banks: 1,
            slots: 100,
            maps: None,
            senders: None,
            seconds: Duration::from_secs(10),
            calls: 20,
        }
    }
}

/// The longest timeout or hold accepted: a week.
const LONGEST: Duration = Duration::from_secs(7 * 24 * 3600);
/// The slowest pace accepted, in connects per second.
const SLOWEST_RATE: f64 = 0.001;

/// When client `i` starts, from the first.
fn pace(i: usize, rate: Option<f64>) -> Duration {
    rate.map_or(Duration::ZERO, |r| Duration::from_secs_f64(i as f64 / r))
}

/// The connect figures of `n` clients started at `t0`, as `tracker` saw them.
pub(crate) fn record_connects(report: &mut Report, tracker: &Tracker, n: usize, t0: Instant) {
    report.served = tracker.connected;
    report.served_fraction = fraction(tracker.connected, n);
    report.all_served_ms = tracker
        .last_connected
        .filter(|_| tracker.connected == n)
        .map(|at| millis(at - t0));
    report.latency_us = summarize(tracker.latencies.clone());
}

/// Refuses sizes and settings no scenario can run with.
pub(crate) fn check(settings: &Settings, sizes: &Sizes) -> anyhow::Result<()> {
    if sizes.clients == 0 {
        bail!("--clients must be at least 1");
    }
    // Bounded so that no deadline computed from them can overflow.
    if settings.timeout.is_zero() || settings.timeout > LONGEST {
        bail!("--timeout must be more than 0 and at most {LONGEST:?}");
    }
    if sizes.seconds > LONGEST {
        bail!("--seconds must be at most {LONGEST:?}");
    }
    if sizes
        .rate
        .is_some_and(|r| !(r.is_finite() && r >= SLOWEST_RATE))
    {
        bail!("--rate must be at least {SLOWEST_RATE} connects per second");
    }
    Ok(())
}

/// Runs `scenario` against the server of `settings` (the bankd scenario:
/// against its bankd); errors are problems of the run itself (a bad size,
/// an API or process that cannot be reached), not clients left unserved,
/// which the report counts.
pub async fn run(settings: &Settings, scenario: Scenario, sizes: &Sizes) -> anyhow::Result<Report> {
    check(settings, sizes)?;
    if scenario == Scenario::Bankd {
        let listener = isolated::listen_for_bankd(settings).await?;
        return isolated::run_bankd(settings, sizes, listener).await;
    }
    if scenario == Scenario::Pcsc {
        return pcsc_app::run_pcsc(settings, sizes).await;
    }
    let n = sizes.clients;
    let with_maps = matches!(scenario, Scenario::Activate | Scenario::Apdu);
    let (banks, maps) = if with_maps {
        (sizes.banks, sizes.maps.unwrap_or(n))
    } else {
        (0, 0)
    };
    let layout = Layout {
        client_id_base: settings.client_id_base,
        bank_id_base: settings.bank_id_base,
        slots: sizes.slots,
    };
    layout.check(n, banks, maps)?;
    let server = tokio::net::lookup_host(settings.server.as_str())
        .await
        .with_context(|| format!("--server {:?} is not HOST:PORT", settings.server))?
        .next()
        .with_context(|| format!("--server {:?} has no address", settings.server))?;

    // Dropping these aborts every simulated bank and client, however the run ends.
    let mut bank_tasks = JoinSet::new();
    let mut clients = JoinSet::new();
    let map_api = if with_maps {
        Some(start_banks(settings, &layout, banks, server, &mut bank_tasks).await?)
    } else {
        None
    };

    let (phase, phase_rx) = watch::channel(Phase::Hold);
    let (milestones, milestones_rx) = mpsc::channel(progress::capacity(n));
    let mut tracker = Tracker::new(n, maps, milestones_rx);
    let config = Arc::new(ClientConfig {
        server,
        goal: if with_maps { Goal::Atr } else { Goal::Connect },
        timeout: settings.timeout,
    });
    let mut report = Report {
        scenario: scenario.name().to_string(),
        clients: n,
        ..Report::default()
    };

    let connect_window = Window::start(&settings.processes)?;
    let t0 = Instant::now();
    for i in 0..n {
        let start_at = t0 + pace(i, sizes.rate);
        let client = client::run(
            i,
            layout.client_slot(i),
            start_at,
            config.clone(),
            milestones.clone(),
            phase_rx.clone(),
        );
        clients.spawn(client);
    }
    drop(milestones);
    let connect_by = t0 + pace(n - 1, sizes.rate) + settings.timeout;
    tracker.wait(connect_by, Tracker::connect_settled).await;
    record_connects(&mut report, &tracker, n, t0);

    let usage = match scenario {
        Scenario::Connect => connect_window.finish(settings.clk_tck)?,
        Scenario::Idle => {
            let window = Window::start(&settings.processes)?;
            tokio::time::sleep(sizes.seconds).await;
            let usage = window.finish(settings.clk_tck)?;
            tracker.drain();
            report.idle = Some(IdleFigures {
                held_s: usage.window.as_secs_f64(),
                lost: tracker.lost,
            });
            usage
        }
        Scenario::Api => {
            let window = Window::start(&settings.processes)?;
            let rest = settings.rest.as_deref();
            let figures =
                calls::time_calls(&settings.api, rest, sizes.calls, settings.timeout).await?;
            report.api = Some(figures);
            window.finish(settings.clk_tck)?
        }
        // Run above: it has no server.
        Scenario::Bankd | Scenario::Pcsc => {
            bail!("the {} scenario runs without a server", scenario.name())
        }
        Scenario::Activate | Scenario::Apdu => {
            let map_api = map_api.context("no management API")?;
            let window = Window::start(&settings.processes)?;
            let activation = activate(settings, &layout, &map_api, &mut tracker, banks, maps).await;
            report.activation = Some(activation);
            if scenario == Scenario::Activate {
                window.finish(settings.clk_tck)?
            } else {
                let senders = sizes.senders.unwrap_or(n).min(n);
                let window = Window::start(&settings.processes)?;
                let until = Instant::now() + sizes.seconds;
                phase.send_replace(Phase::Apdu { until, senders });
                sleep_until(until).await;
                phase.send_replace(Phase::Release);
                let usage = window.finish(settings.clk_tck)?;
                let outcomes = collect(&mut clients, Instant::now() + settings.timeout).await;
                report.apdu = Some(apdu_figures(&outcomes, senders, usage.window));
                usage
            }
        }
    };
    phase.send_replace(Phase::Release);
    tracker.drain();
    report.failures = std::mem::take(&mut tracker.failures);
    if tracker.atr_missing() > 0 {
        let reason = "no setAtrReq from the bankd before the deadline".to_string();
        *report.failures.entry(reason).or_default() += tracker.atr_missing();
    }
    let Usage {
        window,
        processes,
        generator,
    } = usage;
    report.window_ms = millis(window);
    report.processes = processes;
    report.generator = Some(generator);
    Ok(report)
}

/// Binds every bank, tells the server where it listens (with `Api`
/// endpoints), resets the maps if asked, and registers the banks at once.
async fn start_banks(
    settings: &Settings,
    layout: &Layout,
    banks: u32,
    server: SocketAddr,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<MapApi> {
    let endpoints = settings.bank_endpoints.unwrap_or(match settings.rest {
        Some(_) => BankEndpoints::SourceIp,
        None => BankEndpoints::Api,
    });
    let mut grpc = match (&settings.rest, endpoints) {
        (Some(_), BankEndpoints::SourceIp) => None,
        _ => Some(api::connect_grpc(&settings.api, settings.timeout).await?),
    };
    let map_api = match (&settings.rest, &grpc) {
        (Some(url), _) => MapApi::Rest(Rest::new(url, settings.timeout)?),
        (None, Some(grpc)) => MapApi::Grpc(grpc.clone()),
        (None, None) => bail!("no management API to create maps with"),
    };
    if settings.reset {
        map_api.reset().await?;
    }
    let mut bound = Vec::new();
    for b in 0..banks {
        let (listen, source) = match endpoints {
            BankEndpoints::Api => (SocketAddr::new(settings.bind_ip, 0), None),
            BankEndpoints::SourceIp => {
                let ip = IpAddr::V4(layout::source_ip(settings.source_ip_base, b)?);
                (SocketAddr::new(ip, BANKD_PORT), Some(ip))
            }
        };
        let bank = SimBank::bind(BankSpec {
            bank_id: layout.bank_id(b),
            slots: layout.slots,
            listen,
            source,
            first_card: b.saturating_mul(layout.slots),
        })?;
        if let (BankEndpoints::Api, Some(grpc)) = (endpoints, grpc.as_mut()) {
            api::set_bank_endpoint(grpc, bank.bank_id(), bank.endpoint()?).await?;
        }
        bound.push(bank);
    }
    let registering = bound
        .into_iter()
        .map(|bank| bank.register(server, settings.timeout));
    for bank in futures::future::try_join_all(registering).await? {
        tasks.spawn(bank.serve());
    }
    Ok(map_api)
}

/// Creates the maps (map k: bank slot k to client k) and waits until
/// every client with a map holds its ATR, or the timeout after the last
/// create has passed.
async fn activate(
    settings: &Settings,
    layout: &Layout,
    map_api: &MapApi,
    tracker: &mut Tracker,
    banks: u32,
    maps: usize,
) -> Activation {
    let pairs: Vec<_> = (0..maps)
        .map(|k| (layout.bank_slot(k), layout.client_slot(k)))
        .collect();
    let first_create = Instant::now();
    let results = map_api
        .create_all(&pairs, settings.concurrency, settings.bulk)
        .await;
    let create_ms = millis(first_create.elapsed());
    let mut maps_failed = 0;
    for reason in results.into_iter().filter_map(Result::err) {
        maps_failed += 1;
        *tracker.failures.entry(reason).or_default() += 1;
    }
    tracker
        .wait(Instant::now() + settings.timeout, Tracker::atr_settled)
        .await;
    activation(
        tracker,
        banks,
        layout.slots,
        maps,
        maps_failed,
        create_ms,
        first_create,
    )
}

/// The activation figures of `maps` maps whose creation began at
/// `first_create`, as `tracker` saw their ATRs arrive.
pub(crate) fn activation(
    tracker: &Tracker,
    banks: u32,
    slots: u32,
    maps: usize,
    maps_failed: usize,
    create_ms: f64,
    first_create: Instant,
) -> Activation {
    Activation {
        banks,
        slots,
        maps,
        maps_created: maps - maps_failed,
        maps_failed,
        create_ms,
        configured: tracker.configured,
        all_configured_ms: tracker
            .last_configured
            .filter(|_| tracker.configured == maps)
            .map(|at| millis(at.saturating_duration_since(first_create))),
        activated: tracker.atrs,
        activated_fraction: fraction(tracker.atrs, maps),
        all_activated_ms: tracker
            .last_atr
            .filter(|_| tracker.atrs == maps)
            .map(|at| millis(at.saturating_duration_since(first_create))),
    }
}

/// The outcomes of the clients that end by `deadline` (after Release).
pub(crate) async fn collect(
    clients: &mut JoinSet<ClientOutcome>,
    deadline: Instant,
) -> Vec<ClientOutcome> {
    let mut outcomes = Vec::with_capacity(clients.len());
    while let Ok(Some(joined)) = timeout_at(deadline, clients.join_next()).await {
        if let Ok(outcome) = joined {
            outcomes.push(outcome);
        }
    }
    outcomes
}

/// The APDU figures of clients 0..senders over `window`.
pub(crate) fn apdu_figures(
    outcomes: &[ClientOutcome],
    senders: usize,
    window: Duration,
) -> ApduFigures {
    let mut per_client = vec![0u64; senders];
    let mut rtts = Vec::new();
    let mut bad_answers = 0;
    for outcome in outcomes {
        if let Some(count) = per_client.get_mut(outcome.index) {
            *count = outcome.apdu_rtts.len() as u64;
            rtts.extend_from_slice(&outcome.apdu_rtts);
            bad_answers += outcome.bad_answers;
        }
    }
    let seconds = window.as_secs_f64().max(f64::MIN_POSITIVE);
    let apdus = rtts.len() as u64;
    let min_client_apdus = per_client.iter().copied().min().unwrap_or(0);
    ApduFigures {
        senders,
        seconds,
        apdus,
        apdus_per_s: apdus as f64 / seconds,
        apdu_us: summarize(rtts),
        min_client_apdus,
        slowest_client_apdus_per_s: min_client_apdus as f64 / seconds,
        bad_answers,
    }
}
