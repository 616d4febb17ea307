//! The one task that owns the control plane's state: it feeds the engine
//! with connection events, timers and API requests, commits store writes
//! (API writes before they are acknowledged), and carries out the engine's
//! actions. Connections and the gRPC service talk to it through its inbox.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use remsim_api::v1 as pb;
use rspro::{BankSlot, ClientSlot, RsproPdu};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::time::DelayQueue;
use tracing::{error, warn};

use crate::engine::{
    Action, ApiCommand, ApiError, ApiOutcome, Change, ConnId, Engine, MapKey, MapState, Plan,
    StoreOp, Timer,
};
use crate::metrics::{Metrics, Snapshot};
use crate::store::Store;
use crate::views;

/// What a connection task is told to do.
#[derive(Debug)]
pub enum ConnCommand {
    Send(Box<RsproPdu>),
    Close,
    /// Check the peer is alive with a PING due within this time.
    Probe(Duration),
}

/// The queue towards one connection task. futures' channel, not tokio's:
/// tokio's allocates a block of 32 slots per channel up front, half a
/// kilobyte for every idle connection.
pub type ConnSender = futures::channel::mpsc::Sender<ConnCommand>;
pub type ConnReceiver = futures::channel::mpsc::Receiver<ConnCommand>;

/// A connection's queue: `CONN_QUEUE` commands (one more for its sender).
pub fn conn_queue() -> (ConnSender, ConnReceiver) {
    futures::channel::mpsc::channel(CONN_QUEUE)
}

/// Why an API request failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("store: {0}")]
    Store(String),
    /// A command answered with another kind of outcome: a bug, not input.
    #[error("internal: {0}")]
    Internal(String),
}

type Reply<T> = oneshot::Sender<Result<T, ServiceError>>;

pub enum Request {
    Accepted {
        conn: ConnId,
        peer: SocketAddr,
        commands: ConnSender,
    },
    Pdu {
        conn: ConnId,
        pdu: RsproPdu,
    },
    Closed {
        conn: ConnId,
    },
    /// The server is about to close every connection: from now on a
    /// closing connection changes nothing for the others. Otherwise a
    /// bankd's connection closing first would send every client of its
    /// cards a ConfigClientBankReq without a bankd, and a server restart
    /// would take the cards from their modems.
    Stopping,
    Timer {
        conn: ConnId,
        timer: Timer,
    },
    /// The peer answered a probe in time.
    ProbeAlive {
        conn: ConnId,
    },
    ListBanks(Reply<Vec<pb::Bank>>),
    GetBank(u32, Reply<pb::Bank>),
    ListClients(Reply<Vec<pb::Client>>),
    GetClient(ClientSlot, Reply<pb::Client>),
    ListSlotmaps(Reply<Vec<pb::Slotmap>>),
    GetSlotmap(MapKey, Reply<pb::Slotmap>),
    CreateSlotmap(BankSlot, ClientSlot, Reply<pb::Slotmap>),
    /// All of them in one transaction, or none.
    CreateSlotmaps(Vec<(BankSlot, ClientSlot)>, Reply<Vec<pb::Slotmap>>),
    DeleteSlotmap(MapKey, Reply<pb::Slotmap>),
    ResetAll(Reply<u32>),
    SetBankEndpoint(u32, Option<SocketAddr>, Reply<pb::Bank>),
    /// The figures of a metrics scrape.
    Snapshot(oneshot::Sender<crate::metrics::Snapshot>),
    /// A snapshot (when asked for) and the live events after it.
    Watch(
        bool,
        Reply<(Vec<pb::Event>, broadcast::Receiver<pb::Event>)>,
    ),
}

/// The most creates one store transaction carries.
const MAX_BATCH: usize = 256;
/// How many events a slow watcher may fall behind before it loses some.
const WATCH_BUFFER: usize = 4096;
/// Requests queued for the service. Full means the connections and API
/// callers wait (back-pressure) instead of the queue growing without bound.
/// The service itself never waits on a connection, so this cannot deadlock.
pub const INBOX_CAPACITY: usize = 1024;
/// Messages queued towards one connection (see `Service::tell`): a bankd's
/// window of requests (`engine::MAX_OWED`) with room to spare.
pub const CONN_QUEUE: usize = 2 * crate::engine::MAX_OWED;

pub struct Service {
    engine: Engine,
    store: Store,
    conns: HashMap<ConnId, ConnSender>,
    /// The engine's timers, in one queue: a task and a sleep for each
    /// would cost every newly connected peer most of a kilobyte.
    timers: DelayQueue<(ConnId, Timer)>,
    events: broadcast::Sender<pb::Event>,
    probe_timeout: Duration,
    metrics: Arc<Metrics>,
    /// The server is stopping: connections closing now are its own doing,
    /// not peers going away.
    stopping: bool,
}

fn slotmap_view(outcome: ApiOutcome) -> Result<pb::Slotmap, ServiceError> {
    match outcome {
        ApiOutcome::Slotmap(m) => Ok(views::slotmap(&m)),
        other => Err(unexpected(other)),
    }
}

fn unexpected(outcome: ApiOutcome) -> ServiceError {
    ServiceError::Internal(format!("unexpected outcome {outcome:?}"))
}

fn event(e: pb::event::Event) -> pb::Event {
    pb::Event { event: Some(e) }
}

impl Service {
    pub fn new(
        engine: Engine,
        store: Store,
        probe_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Service {
            engine,
            store,
            conns: HashMap::new(),
            timers: DelayQueue::new(),
            stopping: false,
            events: broadcast::channel(WATCH_BUFFER).0,
            probe_timeout,
            metrics,
        }
    }

    /// Runs until every sender of the inbox is gone.
    pub async fn run(mut self, mut inbox: mpsc::Receiver<Request>) {
        let mut next = None;
        loop {
            let request = match next.take() {
                Some(request) => request,
                None => match self.next_request(&mut inbox).await {
                    Some(request) => request,
                    None => break,
                },
            };
            let Request::CreateSlotmap(bank, client, reply) = request else {
                self.handle(request).await;
                continue;
            };
            // Group commit: creates already queued behind this one share
            // its store transaction (an import, or many API callers at
            // once, pay one commit per batch instead of one per map).
            let mut batch = vec![(bank, client, reply)];
            while batch.len() < MAX_BATCH {
                match inbox.try_recv() {
                    Ok(Request::CreateSlotmap(bank, client, reply)) => {
                        batch.push((bank, client, reply));
                    }
                    Ok(other) => {
                        next = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.create_slotmaps(batch).await;
        }
    }

    /// The next request, or an expired timer as one; None once every
    /// sender of the inbox is gone.
    async fn next_request(&mut self, inbox: &mut mpsc::Receiver<Request>) -> Option<Request> {
        // No timer pending: the queue's stream has ended for now, and
        // only requests are waited for.
        Some(tokio::select! {
            request = inbox.recv() => request?,
            Some(expired) = self.timers.next(), if !self.timers.is_empty() => {
                let (conn, timer) = expired.into_inner();
                Request::Timer { conn, timer }
            }
        })
    }

    /// Creates maps in one store transaction, answered as if made one
    /// after another (see `Engine::plan_creates`). If the transaction
    /// fails, every create it carried fails and nothing changes.
    async fn create_slotmaps(&mut self, batch: Vec<(BankSlot, ClientSlot, Reply<pb::Slotmap>)>) {
        let pairs: Vec<_> = batch
            .iter()
            .map(|(bank, client, _)| (*bank, *client))
            .collect();
        let plans = self.engine.plan_creates(&pairs);
        let mut accepted = Vec::with_capacity(plans.len());
        for (plan, (_, _, reply)) in plans.into_iter().zip(batch) {
            match plan {
                Ok(plan) => accepted.push((plan, reply)),
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            }
        }
        let (plans, replies): (Vec<_>, Vec<_>) = accepted.into_iter().unzip();
        match self.store_and_apply(plans).await {
            Ok(created) => {
                for (map, reply) in created.into_iter().zip(replies) {
                    let _ = reply.send(Ok(map));
                }
            }
            // Every create of the batch shares the one failure.
            Err(e) => {
                for reply in replies {
                    let again = match &e {
                        ServiceError::Store(cause) => ServiceError::Store(cause.clone()),
                        other => ServiceError::Internal(other.to_string()),
                    };
                    let _ = reply.send(Err(again));
                }
            }
        }
    }

    async fn handle(&mut self, request: Request) {
        match request {
            Request::Accepted {
                conn,
                peer,
                commands,
            } => {
                self.conns.insert(conn, commands);
                let actions = self.engine.on_accept(conn, peer);
                self.perform(actions).await;
            }
            Request::Pdu { conn, pdu } => {
                let actions = self.engine.on_pdu(conn, pdu);
                self.perform(actions).await;
            }
            Request::Closed { conn } => {
                self.conns.remove(&conn);
                if !self.stopping {
                    let actions = self.engine.on_close(conn);
                    self.perform(actions).await;
                }
            }
            Request::Stopping => self.stopping = true,
            Request::Timer { conn, timer } => {
                let actions = self.engine.on_timer(conn, timer);
                self.perform(actions).await;
            }
            Request::ProbeAlive { conn } => {
                let actions = self.engine.on_probe_alive(conn);
                self.perform(actions).await;
            }
            Request::ListBanks(reply) => {
                let banks = self
                    .engine
                    .bank_ids()
                    .into_iter()
                    .map(|id| views::bank(&self.engine, id))
                    .collect();
                let _ = reply.send(Ok(banks));
            }
            Request::GetBank(bank_id, reply) => {
                let result = self
                    .engine
                    .find_bank(bank_id)
                    .map(|()| views::bank(&self.engine, bank_id))
                    .map_err(ServiceError::from);
                let _ = reply.send(result);
            }
            Request::ListClients(reply) => {
                let clients = self
                    .engine
                    .clients()
                    .map(|(slot, _)| views::client(&self.engine, *slot))
                    .collect();
                let _ = reply.send(Ok(clients));
            }
            Request::GetClient(slot, reply) => {
                let result = self
                    .engine
                    .find_client(slot)
                    .map(|_| views::client(&self.engine, slot))
                    .map_err(ServiceError::from);
                let _ = reply.send(result);
            }
            Request::ListSlotmaps(reply) => {
                let maps = self.engine.slotmaps().map(views::slotmap).collect();
                let _ = reply.send(Ok(maps));
            }
            Request::GetSlotmap(key, reply) => {
                let result = self
                    .engine
                    .find_slotmap(key)
                    .map(|m| views::slotmap(&m))
                    .map_err(ServiceError::from);
                let _ = reply.send(result);
            }
            Request::CreateSlotmap(bank, client, reply) => {
                self.create_slotmaps(vec![(bank, client, reply)]).await;
            }
            Request::CreateSlotmaps(pairs, reply) => {
                let _ = reply.send(self.create_all(&pairs).await);
            }
            Request::DeleteSlotmap(key, reply) => {
                let command = ApiCommand::DeleteSlotmap(key);
                let result = self.execute(command).await.and_then(slotmap_view);
                let _ = reply.send(result);
            }
            Request::ResetAll(reply) => {
                let result = self
                    .execute(ApiCommand::ResetAll)
                    .await
                    .and_then(|o| match o {
                        ApiOutcome::Deleted(n) => Ok(n),
                        other => Err(unexpected(other)),
                    });
                let _ = reply.send(result);
            }
            Request::SetBankEndpoint(bank_id, endpoint, reply) => {
                let command = ApiCommand::SetBankEndpoint(bank_id, endpoint);
                let result = self.execute(command).await.and_then(|o| match o {
                    ApiOutcome::Bank(id) => Ok(views::bank(&self.engine, id)),
                    other => Err(unexpected(other)),
                });
                let _ = reply.send(result);
            }
            Request::Snapshot(reply) => {
                let _ = reply.send(self.figures());
            }
            Request::Watch(snapshot, reply) => {
                // Subscribed before the snapshot is taken: nothing falls between.
                let receiver = self.events.subscribe();
                let events = if snapshot {
                    self.snapshot()
                } else {
                    Vec::new()
                };
                let _ = reply.send(Ok((events, receiver)));
            }
        }
    }

    fn snapshot(&self) -> Vec<pb::Event> {
        use pb::event::Event as E;
        let mut out: Vec<pb::Event> = self
            .engine
            .bank_ids()
            .into_iter()
            .map(|id| event(E::Bank(views::bank(&self.engine, id))))
            .collect();
        out.extend(
            self.engine
                .clients()
                .map(|(slot, _)| event(E::Client(views::client(&self.engine, *slot)))),
        );
        out.extend(
            self.engine
                .slotmaps()
                .map(|m| event(E::Slotmap(views::slotmap(m)))),
        );
        out.push(event(E::SnapshotEnd(pb::SnapshotEnd {})));
        out
    }

    fn figures(&self) -> Snapshot {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        let bankds = self
            .engine
            .bank_ids()
            .into_iter()
            .filter(|id| self.engine.bank(*id).is_some_and(|b| b.live.is_some()))
            .count();
        // Maps being deleted have left the table (the engine keeps what it
        // owes the bankd as removals): only the table's states are counted.
        let maps = [
            MapState::New,
            MapState::Unacknowledged,
            MapState::Active,
            MapState::Refused,
        ]
        .iter()
        .map(|state| {
            let n = self.engine.slotmaps().filter(|m| m.state == *state).count();
            (state.name(), count(n))
        })
        .collect();
        Snapshot {
            bankds: count(bankds),
            clients: count(self.engine.clients().count()),
            maps,
        }
    }

    async fn commit(&self, ops: &[StoreOp]) -> Result<(), ServiceError> {
        if ops.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let written = self.store.apply(ops).await;
        self.metrics.store_write(started.elapsed());
        written.map_err(|e| {
            let cause = match self.store.unwritable() {
                Some(why) => format!("{e}: {why}"),
                None => e.to_string(),
            };
            error!(error = %cause, "store write failed");
            ServiceError::Store(cause)
        })
    }

    /// Creates every map of `pairs` in one transaction, or none: the first
    /// refusal names its map's index.
    async fn create_all(
        &mut self,
        pairs: &[(BankSlot, ClientSlot)],
    ) -> Result<Vec<pb::Slotmap>, ServiceError> {
        let mut plans = Vec::with_capacity(pairs.len());
        for (i, plan) in self.engine.plan_creates(pairs).into_iter().enumerate() {
            plans.push(plan.map_err(|e| e.within(&format!("map {i}")))?);
        }
        self.store_and_apply(plans).await
    }

    /// Commits the store writes of planned creates in one transaction,
    /// then applies them in order: the maps created.
    async fn store_and_apply(
        &mut self,
        plans: Vec<Plan>,
    ) -> Result<Vec<pb::Slotmap>, ServiceError> {
        let ops: Vec<StoreOp> = plans.iter().flat_map(|p| p.ops.iter().cloned()).collect();
        self.commit(&ops).await?;
        let mut created = Vec::with_capacity(plans.len());
        for plan in plans {
            let (outcome, actions) = self.engine.apply(plan);
            self.perform(actions).await;
            created.push(slotmap_view(outcome)?);
        }
        Ok(created)
    }

    /// Checks a command, commits its store writes, then applies it: what
    /// is acknowledged is stored, and what fails to store changes nothing.
    async fn execute(&mut self, command: ApiCommand) -> Result<ApiOutcome, ServiceError> {
        let plan = self.engine.plan(command)?;
        self.commit(&plan.ops).await?;
        let (outcome, actions) = self.engine.apply(plan);
        self.perform(actions).await;
        Ok(outcome)
    }

    async fn perform(&mut self, actions: Vec<Action>) {
        let mut store_ops = Vec::new();
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            let (conn, command) = match action {
                Action::Send(conn, pdu) => (conn, ConnCommand::Send(Box::new(pdu))),
                Action::Close(conn) => (conn, ConnCommand::Close),
                Action::Probe(conn) => (conn, ConnCommand::Probe(self.probe_timeout)),
                Action::StartTimer(conn, after, timer) => {
                    self.timers.insert((conn, timer), after);
                    continue;
                }
                Action::Store(op) => {
                    store_ops.push(op);
                    continue;
                }
                Action::Notify(change) => {
                    self.notify(change);
                    continue;
                }
            };
            if !self.tell(conn, command) {
                // Cut off: the engine learns at once, not when the connection
                // task gets round to it, so the identity is free again.
                queue.extend(self.engine.on_close(conn));
            }
        }
        if !store_ops.is_empty() {
            // RSPRO-driven bookkeeping: a failure is logged, state goes on.
            let _ = self.commit(&store_ops).await;
        }
    }

    /// Never waits: a peer that stopped reading while its queue filled up
    /// is cut off (dropping the sender ends its connection task) rather than
    /// stalling every other connection. False when it was cut off now.
    fn tell(&mut self, conn: ConnId, command: ConnCommand) -> bool {
        let Some(tx) = self.conns.get_mut(&conn) else {
            return true;
        };
        if tx.try_send(command).is_err_and(|e| e.is_full()) {
            warn!(conn, "peer does not read its messages; disconnecting");
            self.conns.remove(&conn);
            return false;
        }
        true
    }

    fn notify(&self, change: Change) {
        if self.events.receiver_count() == 0 {
            return;
        }
        use pb::event::Event as E;
        let e = match change {
            Change::Bank(id) => E::Bank(views::bank(&self.engine, id)),
            Change::Client(slot) => E::Client(views::client(&self.engine, slot)),
            Change::Slotmap(m) => E::Slotmap(views::slotmap(&m)),
            Change::SlotmapRemoved(m) => E::SlotmapRemoved(views::slotmap(&m)),
        };
        let _ = self.events.send(event(e));
    }
}
