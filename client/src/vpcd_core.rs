//! The vpcd frontend's logic, sans I/O (spec vpcd.md §7): a pure state
//! machine with no sockets and no clock of its own. The driver in `vpcd`
//! feeds it commands from the main state machine, whole vpcd messages and
//! the outcome of connection attempts, each with the time it happened, and
//! carries out the [`Action`]s it returns; [`VpcdCore::deadline`] says when
//! the driver must call [`VpcdCore::on_timeout`].
//!
//! The card is in vpcd exactly while a connection is up: the core asks for
//! one while the main state machine has the card inserted, and drops it to
//! report the card gone (removal, an APDU the bank never answered, a
//! malformed message).

use std::time::Duration;

use remsim_vcard::vpcd::{Request, parse_request};
use rspro::pdu::TPDU_LEN;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::frontend::{FrontendCmd, ModemEvent, power_off, power_on, reset_asserted};

/// Presented until the main state machine sets one (the C clients' default).
const DEFAULT_ATR: [u8; 2] = [0x3B, 0x00];
/// Wrong length: for APDUs the bank does not take (5..260 bytes).
const SW_WRONG_LENGTH: [u8; 2] = [0x67, 0x00];
/// No precise diagnosis: the bank refused the APDU or never answered.
const SW_NO_DIAGNOSIS: [u8; 2] = [0x6F, 0x00];

#[derive(Debug, Clone, Copy)]
pub struct CoreConfig {
    /// How long an APDU may wait for the bank before vpcd gets 6F00.
    pub apdu_timeout: Duration,
    /// Wait between attempts to reach vpcd.
    pub retry: Duration,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write this payload to vpcd (the driver frames it).
    Answer(Vec<u8>),
    /// Hand this to the client's core.
    Event(ModemEvent),
    /// Open a connection to vpcd, then report `on_connected` or
    /// `on_connect_failed`.
    Connect,
    /// Drop the connection: that is how vpcd learns the card is gone.
    Disconnect,
}

/// The connection to vpcd, as far as the core knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Down,
    /// `Connect` was asked for; its outcome is not known yet.
    Connecting,
    Up,
}

#[derive(Debug)]
pub struct VpcdCore {
    config: CoreConfig,
    /// The answer to GET ATR.
    atr: Vec<u8>,
    /// The main state machine has the card inserted.
    inserted: bool,
    link: Link,
    /// An APDU went to the bank; its answer is due by then.
    pending: Option<Instant>,
    /// When to try vpcd again while the card is inserted and the link down.
    next_attempt: Option<Instant>,
}

impl VpcdCore {
    pub fn new(config: CoreConfig) -> VpcdCore {
        VpcdCore {
            config,
            atr: DEFAULT_ATR.to_vec(),
            inserted: false,
            link: Link::Down,
            pending: None,
            next_attempt: None,
        }
    }

    /// When `on_timeout` is due: the pending APDU's deadline, or the next
    /// connection attempt while the card should be in vpcd but is not.
    pub fn deadline(&self) -> Option<Instant> {
        let attempt = self
            .next_attempt
            .filter(|_| self.inserted && self.link == Link::Down);
        [self.pending, attempt].into_iter().flatten().min()
    }

    /// A command from the client's main state machine.
    pub fn on_command(&mut self, cmd: FrontendCmd) -> Vec<Action> {
        match cmd {
            FrontendCmd::SetAtr(atr) if !atr.is_empty() => {
                // Only later GET ATRs see it; vpcd is not told otherwise.
                self.atr = atr;
                Vec::new()
            }
            FrontendCmd::CardInsert(true) => {
                self.inserted = true;
                if self.link == Link::Down {
                    self.link = Link::Connecting;
                    vec![Action::Connect]
                } else {
                    Vec::new()
                }
            }
            FrontendCmd::CardInsert(false) => {
                self.inserted = false;
                // Whatever the bank answers now is for a card that is gone.
                self.pending = None;
                self.next_attempt = None;
                if self.link == Link::Down {
                    return Vec::new();
                }
                self.link = Link::Down;
                vec![Action::Disconnect]
            }
            FrontendCmd::Tpdu(response) if self.pending.is_some() => {
                self.pending = None;
                self.answer(response)
            }
            FrontendCmd::TpduRefused(_) if self.pending.is_some() => {
                self.pending = None;
                self.answer(SW_NO_DIAGNOSIS.to_vec())
            }
            other => {
                debug!(?other, "not for vpcd");
                Vec::new()
            }
        }
    }

    /// One whole message from vpcd, received at `now`.
    pub fn on_request(&mut self, payload: &[u8], now: Instant) -> Vec<Action> {
        if self.link != Link::Up {
            debug!("vpcd message without a connection; ignored");
            return Vec::new();
        }
        let status = |s| Action::Event(ModemEvent::Status(s));
        match parse_request(payload) {
            Ok(Request::GetAtr) => vec![Action::Answer(self.atr.clone())],
            Ok(Request::PowerOn) => vec![status(power_on())],
            Ok(Request::PowerOff) => vec![status(power_off())],
            // A warm reset: RST rises, then falls with the card powered.
            Ok(Request::Reset) => vec![status(reset_asserted()), status(power_on())],
            Ok(Request::Unknown(code)) => {
                debug!(code, "unknown vpcd control code; ignored");
                Vec::new()
            }
            Ok(Request::Apdu(apdu)) if !TPDU_LEN.contains(&apdu.len()) => {
                debug!(len = apdu.len(), "APDU the bank does not take; 67 00");
                vec![Action::Answer(SW_WRONG_LENGTH.to_vec())]
            }
            Ok(Request::Apdu(apdu)) => {
                self.pending = Some(now + self.config.apdu_timeout);
                vec![Action::Event(ModemEvent::Tpdu(apdu.to_vec()))]
            }
            Err(e) => {
                warn!(error = %e, "malformed vpcd message; the card is removed");
                self.lost(now)
            }
        }
    }

    /// vpcd closed the connection, or writing to it failed, at `now`.
    pub fn on_closed(&mut self, now: Instant) -> Vec<Action> {
        if self.link == Link::Down {
            return Vec::new();
        }
        self.lost(now)
    }

    /// The connection asked for with `Connect` is up.
    pub fn on_connected(&mut self) -> Vec<Action> {
        if !self.inserted {
            // The card went out while connecting.
            self.link = Link::Down;
            return vec![Action::Disconnect];
        }
        self.link = Link::Up;
        Vec::new()
    }

    /// vpcd could not be reached at `now`.
    pub fn on_connect_failed(&mut self, now: Instant) {
        self.link = Link::Down;
        self.next_attempt = Some(now + self.config.retry);
    }

    /// The [`deadline`](Self::deadline) passed; `now` is the time.
    pub fn on_timeout(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.pending.is_some_and(|due| due <= now) {
            warn!("no answer from the bank in time; the card is removed");
            // vpcd waits for an answer without a timeout: give it one first.
            out.extend(self.answer(SW_NO_DIAGNOSIS.to_vec()));
            out.extend(self.lost(now));
        }
        let attempt_due = self.next_attempt.is_some_and(|due| due <= now);
        if self.inserted && self.link == Link::Down && attempt_due {
            self.link = Link::Connecting;
            out.push(Action::Connect);
        }
        out
    }

    /// An answer for vpcd, if there is a connection to carry it.
    fn answer(&self, payload: Vec<u8>) -> Vec<Action> {
        if self.link == Link::Up {
            vec![Action::Answer(payload)]
        } else {
            Vec::new()
        }
    }

    /// The connection is given up at `now`: drop it, try again later.
    fn lost(&mut self, now: Instant) -> Vec<Action> {
        self.pending = None;
        self.link = Link::Down;
        self.next_attempt = Some(now + self.config.retry);
        vec![Action::Disconnect]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APDU_TIMEOUT: Duration = Duration::from_secs(10);
    const RETRY: Duration = Duration::from_millis(500);
    const MS: Duration = Duration::from_millis(1);
    /// No action at all.
    const NONE: Vec<Action> = Vec::new();

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).expect("hex")
    }

    fn new_core() -> VpcdCore {
        VpcdCore::new(CoreConfig {
            apdu_timeout: APDU_TIMEOUT,
            retry: RETRY,
        })
    }

    /// A core whose card is inserted into vpcd.
    fn connected() -> VpcdCore {
        let mut core = new_core();
        assert_eq!(core.deadline(), None, "nothing to do before insertion");
        assert_eq!(
            core.on_command(FrontendCmd::CardInsert(true)),
            vec![Action::Connect]
        );
        assert_eq!(core.deadline(), None, "waiting for the connect");
        assert_eq!(core.on_connected(), NONE);
        core
    }

    fn status(s: rspro::SlotPhysStatus) -> Action {
        Action::Event(ModemEvent::Status(s))
    }

    #[test]
    fn get_atr_is_answered_with_the_current_atr() {
        let now = Instant::now();
        let mut core = connected();
        assert_eq!(
            core.on_request(&[0x04], now),
            vec![Action::Answer(h("3b00"))]
        );
        assert_eq!(
            core.on_command(FrontendCmd::SetAtr(h("3b9f96801fc78031a073be21"))),
            NONE
        );
        assert_eq!(
            core.on_request(&[0x04], now),
            vec![Action::Answer(h("3b9f96801fc78031a073be21"))]
        );
        // An empty ATR would make vpcd stop polling: ignored.
        assert_eq!(core.on_command(FrontendCmd::SetAtr(Vec::new())), NONE);
        assert_eq!(
            core.on_request(&[0x04], now),
            vec![Action::Answer(h("3b9f96801fc78031a073be21"))]
        );
    }

    #[test]
    fn power_and_reset_become_status_events_without_an_answer() {
        let now = Instant::now();
        let mut core = connected();
        assert_eq!(core.on_request(&[0x01], now), vec![status(power_on())]);
        assert_eq!(core.on_request(&[0x00], now), vec![status(power_off())]);
        assert_eq!(
            core.on_request(&[0x02], now),
            vec![status(reset_asserted()), status(power_on())]
        );
        assert_eq!(core.on_request(&[0x07], now), NONE, "unknown code");
        assert_eq!(core.deadline(), None);
    }

    #[test]
    fn an_apdu_goes_to_the_bank_and_its_answer_to_vpcd() {
        let t0 = Instant::now();
        let mut core = connected();
        assert_eq!(
            core.on_request(&h("00a4000c023f00"), t0),
            vec![Action::Event(ModemEvent::Tpdu(h("00a4000c023f00")))]
        );
        assert_eq!(core.deadline(), Some(t0 + APDU_TIMEOUT));
        assert_eq!(
            core.on_command(FrontendCmd::Tpdu(h("9000"))),
            vec![Action::Answer(h("9000"))]
        );
        assert_eq!(core.deadline(), None, "nothing pending any more");
        // A second answer for the same APDU is not written.
        assert_eq!(core.on_command(FrontendCmd::Tpdu(h("9000"))), NONE);

        // A refused APDU: vpcd still gets an answer.
        core.on_request(&h("00b0000002"), t0);
        assert_eq!(
            core.on_command(FrontendCmd::TpduRefused(h("00b0000002"))),
            vec![Action::Answer(h("6f00"))]
        );
        assert_eq!(
            core.on_command(FrontendCmd::TpduRefused(h("00b0000002"))),
            NONE
        );
        assert_eq!(
            core.on_timeout(t0 + APDU_TIMEOUT),
            NONE,
            "no timeout for an answered APDU"
        );
    }

    #[test]
    fn an_answer_with_nothing_pending_is_not_written() {
        let mut core = connected();
        assert_eq!(core.on_command(FrontendCmd::Tpdu(h("9000"))), NONE);
        assert_eq!(core.on_command(FrontendCmd::TpduRefused(h("00"))), NONE);
        // Nor without a connection.
        let mut core = new_core();
        assert_eq!(core.on_command(FrontendCmd::Tpdu(h("9000"))), NONE);
    }

    #[test]
    fn an_apdu_of_a_length_the_bank_refuses_is_answered_67_00_locally() {
        let now = Instant::now();
        let mut core = connected();
        for apdu in [h("00a40000"), vec![0; 261]] {
            assert_eq!(
                core.on_request(&apdu, now),
                vec![Action::Answer(h("6700"))],
                "{} bytes",
                apdu.len()
            );
            assert_eq!(core.deadline(), None, "nothing went to the bank");
        }
        // The bounds themselves go to the bank.
        for apdu in [vec![0; 5], vec![0; 260]] {
            let actions = core.on_request(&apdu, now);
            assert_eq!(actions, vec![Action::Event(ModemEvent::Tpdu(apdu))]);
        }
    }

    #[test]
    fn an_apdu_without_answer_in_time_removes_the_card_and_it_comes_back() {
        let t0 = Instant::now();
        let mut core = connected();
        core.on_request(&h("00b0000002"), t0);
        let due = t0 + APDU_TIMEOUT;
        assert_eq!(core.on_timeout(due - MS), NONE, "not yet");
        assert_eq!(
            core.on_timeout(due),
            vec![Action::Answer(h("6f00")), Action::Disconnect]
        );
        assert_eq!(core.deadline(), Some(due + RETRY));
        // The bank's late answer has nowhere to go.
        assert_eq!(core.on_command(FrontendCmd::Tpdu(h("11229000"))), NONE);
        assert_eq!(core.on_timeout(due + RETRY - MS), NONE);
        assert_eq!(core.on_timeout(due + RETRY), vec![Action::Connect]);
        assert_eq!(core.deadline(), None, "waiting for the connect");
        assert_eq!(core.on_connected(), NONE);
        assert_eq!(
            core.on_request(&[0x04], due + RETRY),
            vec![Action::Answer(h("3b00"))]
        );
    }

    #[test]
    fn removal_while_an_apdu_is_pending_leaves_nothing_to_answer() {
        let t0 = Instant::now();
        let mut core = connected();
        core.on_request(&h("00b0000002"), t0);
        assert_eq!(
            core.on_command(FrontendCmd::CardInsert(false)),
            vec![Action::Disconnect]
        );
        assert_eq!(core.deadline(), None, "no APDU, no reconnect");
        assert_eq!(core.on_timeout(t0 + APDU_TIMEOUT + RETRY), NONE);
        assert_eq!(core.on_command(FrontendCmd::Tpdu(h("9000"))), NONE);
        // Removed twice: nothing left to drop.
        assert_eq!(core.on_command(FrontendCmd::CardInsert(false)), NONE);
        // Inserted again: at once.
        assert_eq!(
            core.on_command(FrontendCmd::CardInsert(true)),
            vec![Action::Connect]
        );
    }

    #[test]
    fn an_unreachable_vpcd_is_tried_again_after_retry() {
        let t0 = Instant::now();
        let mut core = new_core();
        assert_eq!(
            core.on_command(FrontendCmd::CardInsert(true)),
            vec![Action::Connect]
        );
        core.on_connect_failed(t0);
        assert_eq!(core.deadline(), Some(t0 + RETRY));
        assert_eq!(core.on_timeout(t0 + RETRY - MS), NONE);
        assert_eq!(core.on_timeout(t0 + RETRY), vec![Action::Connect]);
        // Inserting again while connecting asks for nothing more.
        assert_eq!(core.on_command(FrontendCmd::CardInsert(true)), NONE);
        assert_eq!(core.on_connected(), NONE);
        assert_eq!(core.on_command(FrontendCmd::CardInsert(true)), NONE);
        assert_eq!(core.deadline(), None);
    }

    #[test]
    fn vpcd_closing_or_a_malformed_message_means_reconnecting_later() {
        let t0 = Instant::now();
        let mut core = connected();
        core.on_request(&h("00b0000002"), t0);
        assert_eq!(core.on_closed(t0 + MS), vec![Action::Disconnect]);
        assert_eq!(core.deadline(), Some(t0 + MS + RETRY), "no APDU pending");
        assert_eq!(core.on_closed(t0 + RETRY), NONE, "already closed");
        assert_eq!(core.deadline(), Some(t0 + MS + RETRY));
        assert_eq!(core.on_request(&[0x04], t0), NONE, "no connection");
        assert_eq!(core.on_timeout(t0 + MS + RETRY), vec![Action::Connect]);
        assert_eq!(core.on_connected(), NONE);

        // An empty message is not vpcd's protocol.
        let t1 = t0 + RETRY * 4;
        assert_eq!(core.on_request(&[], t1), vec![Action::Disconnect]);
        assert_eq!(core.deadline(), Some(t1 + RETRY));
    }

    #[test]
    fn a_card_removed_while_connecting_is_not_left_in_vpcd() {
        let mut core = new_core();
        core.on_command(FrontendCmd::CardInsert(true));
        assert_eq!(
            core.on_command(FrontendCmd::CardInsert(false)),
            vec![Action::Disconnect]
        );
        assert_eq!(core.on_connected(), vec![Action::Disconnect]);
        assert_eq!(core.deadline(), None);
    }
}
