//! The vpcd frontend: the remote card appears as a local PC/SC card through
//! vsmartcard-vpcd. The client connects to vpcd (as a virtual card) only
//! while the main state machine has a card inserted, answers GET ATR with
//! the current ATR, turns power off/on/reset into ClientSlotStatusInd, and
//! forwards APDUs to the bankd (spec vpcd.md §7).

use std::time::Duration;

use rspro::pdu::TPDU_LEN;
use simcard::vpcd::{Request, frame, parse_request, quickack, read_message};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, info, warn};

use crate::frontend::{FrontendCmd, ModemEvent, power_off, power_on, reset_asserted};

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

struct Card {
    writer: OwnedWriteHalf,
    messages: mpsc::Receiver<Vec<u8>>,
}

impl Card {
    async fn connect(addr: &str) -> std::io::Result<Card> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (rd, writer) = stream.into_split();
        let (tx, messages) = mpsc::channel(4);
        tokio::spawn(reader(rd, tx));
        Ok(Card { writer, messages })
    }

    async fn answer(&mut self, payload: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(&frame(payload)?).await
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
    let mut atr: Vec<u8> = vec![0x3B, 0x00];
    let mut inserted = false;
    let mut card: Option<Card> = None;
    // An APDU sent to the bank, and until when its answer may take.
    let mut pending: Option<Instant> = None;
    let mut next_attempt = Instant::now();
    loop {
        let want_card = inserted && card.is_none();
        tokio::select! {
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return };
                match cmd {
                    FrontendCmd::SetAtr(a) if !a.is_empty() => atr = a,
                    FrontendCmd::CardInsert(true) => {
                        inserted = true;
                        next_attempt = Instant::now();
                    }
                    FrontendCmd::CardInsert(false) => {
                        // Closing the socket is how vpcd learns the card is gone.
                        inserted = false;
                        card = None;
                        pending = None;
                    }
                    FrontendCmd::Tpdu(response) if pending.is_some() => {
                        pending = None;
                        if let Some(c) = card.as_mut()
                            && c.answer(&response).await.is_err()
                        {
                            card = None;
                        }
                    }
                    FrontendCmd::TpduRefused(_) if pending.is_some() => {
                        pending = None;
                        if let Some(c) = card.as_mut() {
                            let _ = c.answer(&[0x6F, 0x00]).await;
                        }
                    }
                    other => debug!(?other, "not for vpcd"),
                }
            }
            message = next_message(&mut card) => {
                let Some(payload) = message else {
                    info!("vpcd closed the connection");
                    card = None;
                    pending = None;
                    next_attempt = Instant::now() + config.retry;
                    continue;
                };
                let Some(c) = card.as_mut() else { continue };
                let result = match parse_request(&payload) {
                    Ok(Request::GetAtr) => c.answer(&atr).await,
                    Ok(Request::PowerOn) => {
                        let _ = events.send(ModemEvent::Status(power_on())).await;
                        Ok(())
                    }
                    Ok(Request::PowerOff) => {
                        let _ = events.send(ModemEvent::Status(power_off())).await;
                        Ok(())
                    }
                    Ok(Request::Reset) => {
                        let _ = events.send(ModemEvent::Status(reset_asserted())).await;
                        let _ = events.send(ModemEvent::Status(power_on())).await;
                        Ok(())
                    }
                    Ok(Request::Unknown(code)) => {
                        debug!(code, "unknown vpcd control code");
                        Ok(())
                    }
                    Ok(Request::Apdu(apdu)) if !TPDU_LEN.contains(&apdu.len()) => c.answer(&[0x67, 0x00]).await,
                    Ok(Request::Apdu(apdu)) => {
                        pending = Some(Instant::now() + config.apdu_timeout);
                        let _ = events.send(ModemEvent::Tpdu(apdu.to_vec())).await;
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    warn!(error = %e, "vpcd connection failed");
                    card = None;
                    pending = None;
                }
            }
            _ = sleep_until(pending.unwrap_or_else(Instant::now)), if pending.is_some() => {
                warn!("no answer from the bank in time; the card is removed");
                if let Some(c) = card.as_mut() {
                    let _ = c.answer(&[0x6F, 0x00]).await;
                }
                card = None;
                pending = None;
                next_attempt = Instant::now() + config.retry;
            }
            _ = sleep_until(next_attempt), if want_card => {
                match Card::connect(&config.addr).await {
                    Ok(c) => {
                        info!(addr = %config.addr, "card inserted into vpcd");
                        card = Some(c);
                    }
                    Err(e) => {
                        debug!(addr = %config.addr, error = %e, "vpcd not reachable");
                        next_attempt = Instant::now() + config.retry;
                    }
                }
            }
        }
    }
}
