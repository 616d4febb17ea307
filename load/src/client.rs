//! One simulated remsim-client: the C client's main states (INIT,
//! UNCONFIGURED, WAIT_BANKD, OPERATIONAL; spec §6.3) cut to what a load
//! run measures. It connects to the server with its client slot, follows
//! ConfigClientBankReq to its bankd, answers SetAtrReq, and in the APDU
//! phase sends SELECT MF back to back, timing each round trip. Milestones
//! go to the scenario as they happen; the outcome is returned on release.
//!
//! [`run_at_bankd`] is the same client without a server (bankd scenario):
//! sent straight to a bankd with its map already there, it starts in
//! WAIT_BANKD and shares the bankd link's code with the full client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use rspro::link::{Connection, ConnectionConfig, LinkError};
use rspro::pdu::TPDU_LEN;
use rspro::{
    BankSlot, ClientSlot, ComponentType, Decoded, Msg, ResultCode, RsproPdu, TpduCardToModem,
};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout_at};
use tracing::debug;

use crate::progress::Milestone;
use crate::{identity, known};

/// SELECT MF in the GSM class: every card answers it (9Fxx), no PIN needed.
pub const SELECT_MF: [u8; 7] = [0xa0, 0xa4, 0x00, 0x00, 0x02, 0x3f, 0x00];
/// Pause before connecting to a bankd again after it refused or dropped us.
const BANKD_RETRY: Duration = Duration::from_millis(200);

/// How far a client goes on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// ConnectClientRes from the server; ConfigClientBankReq is answered
    /// but not followed.
    Connect,
    /// On to the bankd and the card's ATR.
    Atr,
}

/// What the scenario tells every client, through a watch channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Keep every link up (PINGs answered), send nothing.
    Hold,
    /// Clients with an index below `senders` send APDUs back to back
    /// until `until`.
    Apdu { until: Instant, senders: usize },
    /// Close everything and return the outcome.
    Release,
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server's RSPRO port.
    pub server: SocketAddr,
    pub goal: Goal,
    /// Bound of each step: a TCP connect, ConnectClientRes.
    pub timeout: Duration,
}

#[derive(Debug, Default)]
pub struct ClientOutcome {
    pub index: usize,
    pub slot: ClientSlot,
    /// The ATR of the first SetAtrReq.
    pub atr: Option<Vec<u8>>,
    /// Every APDU round trip, in order.
    pub apdu_rtts: Vec<Duration>,
    /// Answers without a success status word.
    pub bad_answers: u64,
    /// Why the client ended early.
    pub error: Option<String>,
    /// Why the last bankd link failed, if one did.
    pub last_bankd_error: Option<String>,
}

impl ClientOutcome {
    /// Keeps the ATR of the first SetAtrReq; true if this was the first.
    fn first_atr(&mut self, atr: &[u8]) -> bool {
        if self.atr.is_some() {
            return false;
        }
        self.atr = Some(atr.to_vec());
        true
    }

    /// Counts the card's answer to the APDU sent at `sent`.
    fn answered(&mut self, sent: Instant, rapdu: &[u8]) {
        self.apdu_rtts.push(sent.elapsed());
        if !answered_ok(rapdu) {
            self.bad_answers += 1;
        }
    }
}

/// Whether a card's answer ends in a success status word: 9000, 61xx or
/// (GSM class) 9Fxx, "response ready".
pub fn answered_ok(rapdu: &[u8]) -> bool {
    matches!(rapdu, [.., 0x90, 0x00] | [.., 0x61 | 0x9f, _])
}

/// A command APDU from hex (`a0a40000023f00`; spaces and colons
/// allowed), of a length a bankd accepts in a TPDU.
pub fn parse_apdu(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b':')
        .collect();
    let nibble = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = digits
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Some((nibble(*hi)? << 4) | nibble(*lo)?),
            _ => None,
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| format!("{text:?} is not hex: pairs of the digits 0-9 and a-f"))?;
    check_apdu(&bytes)?;
    Ok(bytes)
}

/// Refuses an APDU of a length a bankd would close the link for.
pub fn check_apdu(apdu: &[u8]) -> Result<(), String> {
    if TPDU_LEN.contains(&apdu.len()) {
        return Ok(());
    }
    Err(format!(
        "an APDU of {} bytes: a bankd takes {} to {}",
        apdu.len(),
        TPDU_LEN.start(),
        TPDU_LEN.end()
    ))
}

struct SimClient {
    index: usize,
    slot: ClientSlot,
    config: Arc<ClientConfig>,
    milestones: mpsc::Sender<Milestone>,
    phase: watch::Receiver<Phase>,
    /// The bankd and bank slot of the last ConfigClientBankReq (WAIT_BANKD).
    target: Option<(SocketAddr, BankSlot)>,
    bankd: Option<Connection>,
    /// SetAtrReq came on the current bankd link (OPERATIONAL).
    operational: bool,
    /// When to connect to the target bankd (again).
    retry_at: Option<Instant>,
    /// When the APDU on its way was sent.
    in_flight: Option<Instant>,
    outcome: ClientOutcome,
}

/// Client `index` with `slot`, from `start_at` until the phase is Release
/// (or the scenario drops its side).
pub async fn run(
    index: usize,
    slot: ClientSlot,
    start_at: Instant,
    config: Arc<ClientConfig>,
    milestones: mpsc::Sender<Milestone>,
    phase: watch::Receiver<Phase>,
) -> ClientOutcome {
    let mut client = SimClient {
        index,
        slot,
        config,
        milestones,
        phase,
        target: None,
        bankd: None,
        operational: false,
        retry_at: None,
        in_flight: None,
        outcome: ClientOutcome {
            index,
            slot,
            ..ClientOutcome::default()
        },
    };
    sleep_until(start_at).await;
    if let Err(e) = client.session().await {
        let reason = format!("{e:#}");
        debug!(client = %slot, %reason, "client ended");
        let failed = Milestone::Failed {
            index,
            reason: reason.clone(),
        };
        let _ = client.milestones.try_send(failed);
        client.outcome.error = Some(reason);
    }
    client.outcome
}

impl SimClient {
    /// INIT: the server link and ConnectClientRes, then the rest.
    async fn session(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let deadline = started + self.config.timeout;
        let stream = timeout_at(deadline, TcpStream::connect(self.config.server))
            .await
            .map_err(|_| anyhow!("no TCP connection to the server in time"))?
            .context("connect to the server")?;
        let mut server = Connection::new(stream, ConnectionConfig::client())
            .await
            .context("server link")?;
        let hello =
            RsproPdu::connect_client_req(identity(ComponentType::RemsimClient), Some(self.slot));
        server.send(&hello).await.context("server link")?;
        loop {
            let received = timeout_at(deadline, server.recv())
                .await
                .map_err(|_| anyhow!("no connectClientRes in time"))?
                .context("server link")?;
            if let Some(Msg::ConnectClientRes(res)) = known(received) {
                if !res.result.is_ok() {
                    bail!("the server answered connectClientRes({})", res.result);
                }
                break;
            }
        }
        let at = Instant::now();
        let connected = Milestone::Connected {
            index: self.index,
            at,
            latency: at - started,
        };
        let _ = self.milestones.try_send(connected);
        self.operate(server).await
    }

    /// UNCONFIGURED onwards: both links served until Release.
    async fn operate(&mut self, mut server: Connection) -> anyhow::Result<()> {
        loop {
            // Copied out: the watch's lock must not be held across an await.
            let phase = *self.phase.borrow_and_update();
            match phase {
                Phase::Release => return Ok(()),
                Phase::Apdu { until, senders } if self.index < senders => {
                    self.next_apdu(until).await
                }
                _ => {}
            }
            let retry_at = self.retry_at;
            tokio::select! {
                received = server.recv() => {
                    let received = received.context("server link")?;
                    if let Some(reply) = self.on_server(received) {
                        server.send(&reply).await.context("server link")?;
                    }
                }
                received = recv_on(&mut self.bankd) => self.on_bankd(received).await,
                changed = self.phase.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                () = sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                    self.connect_bankd().await
                }
            }
        }
    }

    fn on_server(&mut self, received: Decoded) -> Option<RsproPdu> {
        match known(received)? {
            Msg::ConfigClientBankReq(req) => {
                if self.config.goal == Goal::Atr {
                    // As the C client: a new configuration restarts the bankd link.
                    self.bankd = None;
                    self.operational = false;
                    self.in_flight = None;
                    self.target = req
                        .bankd
                        .socket_addr()
                        .filter(|addr| addr.port() != 0 && !addr.ip().is_unspecified())
                        .map(|addr| (addr, req.bank_slot));
                    self.retry_at = self.target.map(|_| Instant::now());
                    if self.target.is_some() {
                        let configured = Milestone::Configured {
                            index: self.index,
                            at: Instant::now(),
                        };
                        let _ = self.milestones.try_send(configured);
                    }
                }
                Some(RsproPdu::config_client_bank_res(ResultCode::Ok))
            }
            Msg::ConfigClientIdReq(_) => Some(RsproPdu::config_client_id_res(ResultCode::Ok)),
            _ => None,
        }
    }

    async fn on_bankd(&mut self, received: Result<Decoded, LinkError>) {
        let msg = match received {
            Ok(decoded) => known(decoded),
            Err(e) => return self.bankd_lost(format!("bankd link: {e}")),
        };
        match msg {
            Some(Msg::ConnectClientRes(res)) if !res.result.is_ok() => self.bankd_lost(format!(
                "the bankd answered connectClientRes({})",
                res.result
            )),
            Some(Msg::SetAtrReq(req)) => {
                self.operational = true;
                if self.outcome.first_atr(&req.atr) {
                    let atr = Milestone::Atr {
                        index: self.index,
                        at: Instant::now(),
                    };
                    let _ = self.milestones.try_send(atr);
                }
                let answer = RsproPdu::set_atr_res(ResultCode::Ok);
                let sent = match self.bankd.as_mut() {
                    Some(link) => link.send(&answer).await,
                    None => Ok(()),
                };
                if let Err(e) = sent {
                    self.bankd_lost(format!("bankd link: {e}"));
                }
            }
            Some(Msg::TpduCardToModem(tpdu)) => {
                if let Some(sent) = self.in_flight.take() {
                    self.outcome.answered(sent, &tpdu.data);
                }
            }
            _ => {}
        }
    }

    /// WAIT_BANKD again: the link is dropped and tried again shortly, as
    /// the C client's bankd link reconnects by itself.
    fn bankd_lost(&mut self, reason: String) {
        debug!(client = %self.slot, %reason, "bankd link lost");
        self.outcome.last_bankd_error = Some(reason);
        self.bankd = None;
        self.operational = false;
        self.in_flight = None;
        if self.target.is_some() {
            self.retry_at = Some(Instant::now() + BANKD_RETRY);
        }
    }

    async fn connect_bankd(&mut self) {
        self.retry_at = None;
        let Some((addr, _)) = self.target else { return };
        match open_bankd(addr, self.slot, self.config.timeout).await {
            Ok(link) => self.bankd = Some(link),
            Err(e) => self.bankd_lost(format!("{e:#}")),
        }
    }

    /// Sends the next APDU when none is on its way and the card is there.
    async fn next_apdu(&mut self, until: Instant) {
        let Some((_, bank_slot)) = self.target else {
            return;
        };
        if !self.operational || self.in_flight.is_some() || Instant::now() >= until {
            return;
        }
        let tpdu = RsproPdu::tpdu_modem_to_card(self.slot, bank_slot, &SELECT_MF[..]);
        let Some(link) = self.bankd.as_mut() else {
            return;
        };
        let sent = Instant::now();
        match link.send(&tpdu).await {
            Ok(()) => self.in_flight = Some(sent),
            Err(e) => self.bankd_lost(format!("bankd link: {e}")),
        }
    }
}

/// Where a client without a server goes, and what it sends.
#[derive(Debug, Clone)]
pub struct DirectConfig {
    /// The bankd's client port.
    pub bankd: SocketAddr,
    /// The command APDU sent back to back.
    pub apdu: Vec<u8>,
    /// Bound of each step: the TCP connect, ConnectClientRes and SetAtrReq,
    /// each APDU's answer.
    pub timeout: Duration,
}

/// Client `index` with `slot`, mapped to `bank_slot`, straight at the
/// bankd of `config` until the phase is Release: milestones Connected
/// (the bankd's ConnectClientRes), Atr and Failed as the full client's.
pub async fn run_at_bankd(
    index: usize,
    slot: ClientSlot,
    bank_slot: BankSlot,
    config: Arc<DirectConfig>,
    milestones: mpsc::Sender<Milestone>,
    mut phase: watch::Receiver<Phase>,
) -> ClientOutcome {
    let mut outcome = ClientOutcome {
        index,
        slot,
        ..ClientOutcome::default()
    };
    let session = direct_session(&mut outcome, bank_slot, &config, &milestones, &mut phase);
    if let Err(e) = session.await {
        let reason = format!("{e:#}");
        debug!(client = %slot, %reason, "client ended");
        let _ = milestones.try_send(Milestone::Failed {
            index,
            reason: reason.clone(),
        });
        outcome.error = Some(reason);
    }
    outcome
}

/// WAIT_BANKD until the ATR, then OPERATIONAL: APDUs while the phase
/// says so, PINGs and SetAtrReq answered throughout.
async fn direct_session(
    outcome: &mut ClientOutcome,
    bank_slot: BankSlot,
    config: &DirectConfig,
    milestones: &mpsc::Sender<Milestone>,
    phase: &mut watch::Receiver<Phase>,
) -> anyhow::Result<()> {
    let (index, slot) = (outcome.index, outcome.slot);
    let started = Instant::now();
    let deadline = started + config.timeout;
    let mut link = open_bankd(config.bankd, slot, config.timeout).await?;
    let mut welcomed = false;
    loop {
        let received = timeout_at(deadline, link.recv())
            .await
            .map_err(|_| {
                let missing = if welcomed {
                    "setAtrReq"
                } else {
                    "connectClientRes"
                };
                anyhow!("no {missing} from the bankd in time")
            })?
            .context("bankd link")?;
        match known(received) {
            Some(Msg::ConnectClientRes(res)) => {
                if !res.result.is_ok() {
                    bail!("the bankd answered connectClientRes({})", res.result);
                }
                welcomed = true;
                let at = Instant::now();
                let connected = Milestone::Connected {
                    index,
                    at,
                    latency: at - started,
                };
                let _ = milestones.try_send(connected);
            }
            Some(Msg::SetAtrReq(req)) => {
                outcome.first_atr(&req.atr);
                let _ = milestones.try_send(Milestone::Atr {
                    index,
                    at: Instant::now(),
                });
                let answer = RsproPdu::set_atr_res(ResultCode::Ok);
                link.send(&answer).await.context("bankd link")?;
                break;
            }
            _ => {}
        }
    }
    // Built once: every APDU of a run is the same.
    let tpdu = RsproPdu::tpdu_modem_to_card(slot, bank_slot, &config.apdu[..]);
    loop {
        // Copied out: the watch's lock must not be held across an await.
        let current = *phase.borrow_and_update();
        match current {
            Phase::Release => return Ok(()),
            Phase::Apdu { until, senders } if index < senders && Instant::now() < until => {
                if !exchange(&mut link, outcome, &tpdu, config.timeout, phase).await? {
                    return Ok(());
                }
                continue;
            }
            _ => {}
        }
        tokio::select! {
            received = link.recv() => {
                let received = received.context("bankd link")?;
                answer_bankd(&mut link, outcome, received).await?;
            }
            changed = phase.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// One APDU and its answer, within `timeout`; false if the phase turned
/// to Release meanwhile.
async fn exchange(
    link: &mut Connection,
    outcome: &mut ClientOutcome,
    tpdu: &RsproPdu,
    timeout: Duration,
    phase: &mut watch::Receiver<Phase>,
) -> anyhow::Result<bool> {
    let sent = Instant::now();
    link.send(tpdu).await.context("bankd link")?;
    let deadline = sent + timeout;
    loop {
        tokio::select! {
            received = timeout_at(deadline, link.recv()) => {
                let received = received
                    .map_err(|_| anyhow!("no tpduCardToModem from the bankd in time"))?
                    .context("bankd link")?;
                if let Some(answer) = answer_bankd(link, outcome, received).await? {
                    outcome.answered(sent, &answer.data);
                    return Ok(true);
                }
            }
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow_and_update() == Phase::Release {
                    return Ok(false);
                }
            }
        }
    }
}

/// Handles a PDU from the bankd in OPERATIONAL: a card's answer is
/// returned, a new SetAtrReq answered (as the C client does), the
/// rest ignored.
async fn answer_bankd(
    link: &mut Connection,
    outcome: &mut ClientOutcome,
    received: Decoded,
) -> anyhow::Result<Option<TpduCardToModem>> {
    match known(received) {
        Some(Msg::TpduCardToModem(tpdu)) => Ok(Some(tpdu)),
        Some(Msg::SetAtrReq(req)) => {
            outcome.first_atr(&req.atr);
            let answer = RsproPdu::set_atr_res(ResultCode::Ok);
            link.send(&answer).await.context("bankd link")?;
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// A bankd link with ConnectClientReq sent (WAIT_BANKD).
async fn open_bankd(
    addr: SocketAddr,
    slot: ClientSlot,
    timeout: Duration,
) -> anyhow::Result<Connection> {
    let deadline = Instant::now() + timeout;
    let stream = timeout_at(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("no TCP connection to the bankd in time"))?
        .context("connect to the bankd")?;
    let mut link = Connection::new(stream, ConnectionConfig::client())
        .await
        .context("bankd link")?;
    let hello = RsproPdu::connect_client_req(identity(ComponentType::RemsimClient), Some(slot));
    link.send(&hello).await.context("bankd link")?;
    Ok(link)
}

/// The next PDU of a link that may not be there (then never).
async fn recv_on(link: &mut Option<Connection>) -> Result<Decoded, LinkError> {
    match link {
        Some(link) => link.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_status_words() {
        assert!(answered_ok(&[0x9f, 0x22]));
        assert!(answered_ok(&[0x01, 0x90, 0x00]));
        assert!(answered_ok(&[0x61, 0x10]));
        assert!(!answered_ok(&[0x6a, 0x82]));
        assert!(!answered_ok(&[0x90]));
        assert!(!answered_ok(&[]));
    }

    #[test]
    fn apdus_parse_from_hex() {
        assert_eq!(parse_apdu("a0a40000023f00").ok(), Some(SELECT_MF.to_vec()));
        assert_eq!(
            parse_apdu("A0 A4 00 00 02 3F 00").ok(),
            Some(SELECT_MF.to_vec())
        );
        assert!(parse_apdu("a0a400000").is_err(), "odd digits");
        assert!(parse_apdu("a0a4000g023f00").is_err(), "not hex");
        assert!(parse_apdu("a0a400").is_err(), "shorter than a header");
    }
}
