//! The vpcd frontend: the remote card appears as a local PC/SC card through
//! vsmartcard-vpcd (spec vpcd.md §7). This is the tokio driver around
//! `vpcd_core`, which holds the logic: the driver owns the socket to vpcd
//! (connecting, reading whole messages with TCP_QUICKACK re-armed, writing
//! framed answers), feeds the core what happens, and carries out what it
//! asks for.

use std::collections::VecDeque;
use std::time::Duration;

use remsim_vcard::vpcd::{frame, quickack, read_message};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, info, warn};

use crate::frontend::{FrontendCmd, ModemEvent};
use crate::vpcd_core::{Action, CoreConfig, VpcdCore};

#[derive(Debug, Clone)]
pub struct VpcdConfig {
    /// Where vpcd listens for its card (slot n: port 35963 + n).
    pub addr: String,
    /// How long an APDU may wait for the bank before vpcd gets 6F00.
    pub apdu_timeout: Duration,
    /// Wait between attempts to reach vpcd.
    pub retry: Duration,
}

/// Reads whole vpcd messages until vpcd or the frontend goes.
async fn reader(mut rd: OwnedReadHalf, tx: mpsc::Sender<Vec<u8>>) {
    while let Ok(payload) = read_message(&mut rd, |rd| quickack(rd.as_ref())).await {
        if tx.send(payload).await.is_err() {
            return;
        }
    }
}

/// A connection to vpcd: while it exists, the card is in vpcd.
struct Card {
    writer: OwnedWriteHalf,
    messages: mpsc::Receiver<Vec<u8>>,
}

/// How long a connect to vpcd or a write to it may take: vpcd is local, so
/// longer means it is stuck, and the card is taken out.
const IO_BOUND: Duration = Duration::from_secs(2);

fn timed_out(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("vpcd {what} took over {IO_BOUND:?}"),
    )
}

impl Card {
    async fn connect(addr: &str) -> std::io::Result<Card> {
        let stream = tokio::time::timeout(IO_BOUND, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out("connect"))??;
        stream.set_nodelay(true)?;
        let (rd, writer) = stream.into_split();
        let (tx, messages) = mpsc::channel(4);
        tokio::spawn(reader(rd, tx));
        Ok(Card { writer, messages })
    }

    async fn answer(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let framed = frame(payload)?;
        tokio::time::timeout(IO_BOUND, self.writer.write_all(&framed))
            .await
            .map_err(|_| timed_out("write"))?
    }
}

async fn next_message(card: &mut Option<Card>) -> Option<Vec<u8>> {
    match card {
        Some(c) => c.messages.recv().await,
        None => std::future::pending().await,
    }
}

pub async fn run(
    config: VpcdConfig,
    mut commands: mpsc::Receiver<FrontendCmd>,
    events: mpsc::Sender<ModemEvent>,
) {
    let mut core = VpcdCore::new(CoreConfig {
        apdu_timeout: config.apdu_timeout,
        retry: config.retry,
    });
    let mut card: Option<Card> = None;
    loop {
        let deadline = core.deadline();
        let actions = tokio::select! {
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return };
                core.on_command(cmd)
            }
            message = next_message(&mut card) => match message {
                Some(payload) => core.on_request(&payload, Instant::now()),
                None => {
                    info!("vpcd closed the connection");
                    core.on_closed(Instant::now())
                }
            },
            () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                core.on_timeout(Instant::now())
            }
        };
        carry_out(&config, &mut core, &mut card, &events, actions).await;
    }
}

/// Does what the core asked for, and whatever that leads to in turn (a
/// failed write or a connection that must not stay).
async fn carry_out(
    config: &VpcdConfig,
    core: &mut VpcdCore,
    card: &mut Option<Card>,
    events: &mpsc::Sender<ModemEvent>,
    actions: Vec<Action>,
) {
    let mut todo = VecDeque::from(actions);
    while let Some(action) = todo.pop_front() {
        match action {
            Action::Answer(payload) => {
                let Some(c) = card.as_mut() else { continue };
                if let Err(e) = c.answer(&payload).await {
                    warn!(error = %e, "vpcd connection failed");
                    todo.extend(core.on_closed(Instant::now()));
                }
            }
            Action::Event(event) => {
                let _ = events.send(event).await;
            }
            // Connecting holds up everything else, as vpcd is normally local.
            Action::Connect => match Card::connect(&config.addr).await {
                Ok(c) => {
                    info!(addr = %config.addr, "card inserted into vpcd");
                    *card = Some(c);
                    todo.extend(core.on_connected());
                }
                Err(e) => {
                    debug!(addr = %config.addr, error = %e, "vpcd not reachable");
                    core.on_connect_failed(Instant::now());
                }
            },
            // Dropping the writer closes our side; vpcd sees the card go.
            Action::Disconnect => {
                if card.take().is_some() {
                    info!(addr = %config.addr, "card removed from vpcd");
                }
            }
        }
    }
}
