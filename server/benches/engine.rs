//! Engine throughput: `cargo bench -p remsim-server --bench engine`. The
//! sans-I/O engine (`src/engine/`) with bankds and clients connected
//! through its own inputs (`on_accept`, `on_pdu`), as its test harness
//! connects them: no socket, no store. Measures a burst of CreateSlotmap
//! as the service runs it (`plan`, then `apply`; the SQLite commit between
//! the two is left out) and the CreateMappingRes that make each map ACTIVE
//! and configure its client; ListClients as the service builds it
//! (`views::client` per connected client); and ConnectClientReq from a
//! client whose map is ACTIVE. No log subscriber is installed, so the
//! engine's `info!` lines cost next to nothing here. Prints microseconds
//! per operation, the median of 7 runs, each on an engine set up afresh
//! outside the timing.

use std::collections::VecDeque;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use remsim_server::engine::{Action, ApiCommand, ConnId, Engine};
use remsim_server::views;
use rspro::{BankSlot, ClientSlot, ComponentType, Identity, Msg, ResultCode, RsproPdu};

/// Bankds connected, each with `SLOTS` slots.
const BANKS: u32 = 4;
/// Slot maps created in one burst: one per bank slot.
const MAPS: u32 = 1_000;
const SLOTS: u32 = MAPS / BANKS;
/// Clients connected; client `i < MAPS` is mapped to bank slot `i`.
const CLIENTS: u32 = 10_000;
/// ListClients calls per run.
const LISTS: u32 = 20;
const RUNS: usize = 7;

fn bank_slot(i: u32) -> BankSlot {
    BankSlot::new(1 + i / SLOTS, i % SLOTS)
}

/// Ten slots per client id keeps 10,000 clients within RSPRO's ids (0..1023).
fn client_slot(i: u32) -> ClientSlot {
    ClientSlot::new(i / 10, i % 10)
}

fn peer(conn: ConnId) -> SocketAddr {
    let [.., a, b, c] = conn.to_be_bytes();
    SocketAddr::from(([10, a, b, c], 40000))
}

fn identity(kind: ComponentType, software: &str) -> Identity {
    Identity::new(kind, "bench", software, "bench")
}

fn connect_client_req(slot: ClientSlot) -> RsproPdu {
    RsproPdu::connect_client_req(
        identity(ComponentType::RemsimClient, "remsim-client"),
        Some(slot),
    )
}

/// What the engine sent bankds and clients.
#[derive(Default)]
struct Sent {
    creates: u32,
    configs: u32,
}

/// The engine and the driver's side of it.
struct World {
    engine: Engine,
    next_conn: ConnId,
}

impl World {
    /// `BANKS` bankds and the clients `clients` connected, no map yet.
    fn new(clients: impl Iterator<Item = u32>) -> Self {
        let engine = Engine::new(
            identity(ComponentType::RemsimServer, "remsim-server"),
            Duration::from_secs(9),
            false,
        );
        let mut world = World {
            engine,
            next_conn: 1,
        };
        for bank_id in 1..=BANKS {
            let conn = world.accept();
            let req = RsproPdu::connect_bank_req(
                identity(ComponentType::RemsimBankd, "remsim-bankd"),
                bank_id,
                SLOTS,
            );
            let actions = world.engine.on_pdu(conn, req);
            world.answer(actions);
        }
        for i in clients {
            let conn = world.accept();
            let actions = world
                .engine
                .on_pdu(conn, connect_client_req(client_slot(i)));
            world.answer(actions);
        }
        world
    }

    /// A new connection. Its identify timer is never run: every peer here
    /// identifies at once.
    fn accept(&mut self) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        black_box(self.engine.on_accept(conn, peer(conn)));
        conn
    }

    /// Carries out actions as the peers would: bankds answer every
    /// CreateMappingReq ok at once, until nothing more is sent.
    fn answer(&mut self, actions: Vec<Action>) -> Sent {
        let mut sent = Sent::default();
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            let Action::Send(conn, pdu) = action else {
                continue;
            };
            match &pdu.msg {
                Msg::CreateMappingReq(_) => {
                    sent.creates += 1;
                    let res = RsproPdu::create_mapping_res(ResultCode::Ok);
                    queue.extend(self.engine.on_pdu(conn, res));
                }
                Msg::ConfigClientBankReq(_) => sent.configs += 1,
                _ => {}
            }
        }
        sent
    }

    /// Creates `MAPS` maps as the service does (plan, commit, apply), with
    /// nothing to commit to; returns what the engine asked for.
    fn create_maps(&mut self) -> Vec<Action> {
        let mut out = Vec::with_capacity(4 * MAPS as usize);
        for i in 0..MAPS {
            let command = ApiCommand::CreateSlotmap(bank_slot(i), client_slot(i));
            let plan = self.engine.plan(command).expect("a free, valid pair");
            let (outcome, actions) = self.engine.apply(plan);
            black_box(outcome);
            out.extend(actions);
        }
        out
    }

    /// Every client connected, the first `MAPS` of them on ACTIVE maps.
    fn mapped() -> Self {
        let mut world = World::new(0..CLIENTS);
        let actions = world.create_maps();
        let sent = world.answer(actions);
        assert_eq!((sent.creates, sent.configs), (MAPS, MAPS));
        world
    }
}

/// The burst of creates, then the bankds' answers: (creates, answers).
fn create_run() -> (Duration, Duration) {
    let mut world = World::new(0..CLIENTS);
    let started = Instant::now();
    let actions = world.create_maps();
    let planned = started.elapsed();
    let started = Instant::now();
    let sent = world.answer(actions);
    let answered = started.elapsed();
    assert_eq!(
        (sent.creates, sent.configs),
        (MAPS, MAPS),
        "every map sent to its bankd and its client configured"
    );
    (planned, answered)
}

/// `LISTS` ListClients answers, built as the service builds them.
fn list_run(world: &World) -> Duration {
    let engine = &world.engine;
    let started = Instant::now();
    for _ in 0..LISTS {
        let clients: Vec<_> = engine
            .clients()
            .map(|(slot, _)| views::client(engine, *slot))
            .collect();
        black_box(clients);
    }
    started.elapsed()
}

/// `MAPS` clients whose maps are ACTIVE send ConnectClientReq on accepted
/// connections, with the other clients connected already.
fn connect_run() -> Duration {
    let mut world = World::new(MAPS..CLIENTS);
    let actions = world.create_maps();
    world.answer(actions);
    let conns: Vec<ConnId> = (0..MAPS).map(|_| world.accept()).collect();
    let reqs: Vec<RsproPdu> = (0..MAPS)
        .map(|i| connect_client_req(client_slot(i)))
        .collect();
    let mut outputs = Vec::with_capacity(conns.len());
    let started = Instant::now();
    for (conn, req) in conns.into_iter().zip(reqs) {
        outputs.push(world.engine.on_pdu(conn, req));
    }
    let took = started.elapsed();
    let sent = world.answer(outputs.into_iter().flatten().collect());
    assert_eq!(sent.configs, MAPS, "each client configured for its map");
    took
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn micros_per(total: Duration, n: u32) -> f64 {
    total.as_nanos() as f64 / 1e3 / f64::from(n)
}

fn main() {
    let (planned, answered): (Vec<_>, Vec<_>) = (0..RUNS).map(|_| create_run()).unzip();
    let mapped = World::mapped();
    let lists = median((0..RUNS).map(|_| list_run(&mapped)).collect());
    drop(mapped);
    let connects = median((0..RUNS).map(|_| connect_run()).collect());
    println!("{BANKS} bankds, {CLIENTS} clients, {MAPS} maps; median of {RUNS} runs");
    println!(
        "CreateSlotmap (plan + apply)          {:8.2} µs/map",
        micros_per(median(planned), MAPS)
    );
    println!(
        "CreateMappingRes → ACTIVE + config    {:8.2} µs/map",
        micros_per(median(answered), MAPS)
    );
    println!(
        "ListClients of {CLIENTS} clients          {:8.0} µs/list ({:.3} µs/client)",
        micros_per(lists, LISTS),
        micros_per(lists, LISTS * CLIENTS)
    );
    println!(
        "ConnectClientReq, map ACTIVE          {:8.2} µs/op",
        micros_per(connects, MAPS)
    );
}
