//! One reader's logic, sans I/O: what pcscd's calls see of the client's
//! main state machine. It is fed the main state machine's frontend
//! commands and pcscd's requests, each with the time, and answers from
//! what it holds, so that no call waits for the network except an APDU,
//! and that one within a bound.
//!
//! * Presence: the card is in the reader while the main state machine has
//!   it inserted (bankd connected, OPERATIONAL) **and** the bank sent its
//!   ATR since; not the C handler's `3B 00` placeholder (spec
//!   ifd-handler.md §4.4).
//! * An APDU the bank leaves unanswered: the card is powered off at the
//!   bank (a cold reset there) and reported gone, so that pcscd and the
//!   application start again from a reset. It stays gone until the late
//!   answer has come and been dropped, the bankd link changed, or
//!   [`STALE_WAIT`] passed; at least [`GONE_AFTER_TIMEOUT`]. RSPRO TPDUs
//!   carry no number: an answer that came late while a new APDU was out
//!   would be taken for that APDU's.
//! * Card events: pcscd's event thread waits in the driver (its polling
//!   function) until presence differs from what pcscd was last told, so a
//!   card shows the moment it is there, not at pcscd's next 400 ms poll.
//! * Power: up, down and reset become ClientSlotStatusInd through the main
//!   state machine, as the other frontends' power changes do.
//! * APDUs: one at a time, T=0 short: a 4-byte case-1 command gets its
//!   P3 = 00; 5..260 bytes go to the bank unchanged; other lengths are
//!   refused here (the bankd would drop the link, and the C handler hang).

use std::time::{Duration, Instant};

use remsim_client::frontend::{ModemEvent, power_off, power_on, reset_asserted};
use remsim_client::main_fsm::FrontendCmd;
use rspro::pdu::TPDU_LEN;

use crate::abi::MAX_ATR_SIZE;

/// How long the card stays away at least after an APDU that was not
/// answered: long enough for pcscd and the application to see it gone.
pub const GONE_AFTER_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the card stays away at most while the late answer is awaited.
pub const STALE_WAIT: Duration = Duration::from_secs(10);

/// Why a call could not do what pcscd asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApduError {
    #[error("no card (no slot map, or its bankd not connected)")]
    NotPresent,
    #[error("an APDU of {0} bytes: T=0 short APDUs have 4 to 260")]
    Length(usize),
    #[error("the client did not forward the APDU (not operational)")]
    Refused,
    #[error("the card went away while the APDU was out")]
    CardGone,
    #[error("the bank did not answer in time")]
    Timeout,
    #[error("the client's queue is full or gone")]
    Queue,
    #[error("the reader is closed")]
    Closed,
}

/// A power action of IFDHPowerICC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    Up,
    Down,
    Reset,
}

#[derive(Debug, Default)]
pub struct IfdCore {
    /// The main state machine has the card inserted.
    inserted: bool,
    /// The bank's ATR, since the card was inserted.
    atr: Option<Vec<u8>>,
    /// The card is reported gone until then (after an unanswered APDU).
    gone_until: Option<Instant>,
    /// The answer to an APDU given up on may still come; the card stays
    /// gone until it has, or until then.
    stale_until: Option<Instant>,
    /// The APDU out, by its number, and its answer once it came.
    pending: Option<u64>,
    answer: Option<(u64, Result<Vec<u8>, ApduError>)>,
    next_apdu: u64,
    closed: bool,
    /// The presence pcscd was last told.
    reported: Option<bool>,
    /// pcscd asked its event thread to stop waiting in the driver, once
    /// (to wait again with another timeout, or to end the thread).
    wait_interrupted: bool,
}

impl IfdCore {
    pub fn new() -> IfdCore {
        IfdCore::default()
    }

    /// A command of the main state machine.
    pub fn on_command(&mut self, cmd: FrontendCmd) {
        match cmd {
            FrontendCmd::CardInsert(true) => {
                self.inserted = true;
                // The placeholder came before the insert; the bank's ATR follows.
                self.atr = None;
                // A new bankd link: no late answer can come on it.
                self.stale_until = None;
            }
            FrontendCmd::CardInsert(false) => {
                self.inserted = false;
                self.atr = None;
                self.stale_until = None;
                self.settle(Err(ApduError::CardGone))
            }
            FrontendCmd::SetAtr(atr) if self.inserted && !atr.is_empty() => {
                let mut atr = atr;
                atr.truncate(MAX_ATR_SIZE);
                self.atr = Some(atr);
            }
            FrontendCmd::Tpdu(response) => self.settle(Ok(response)),
            FrontendCmd::TpduRefused(_) => self.settle(Err(ApduError::Refused)),
            FrontendCmd::SetAtr(_) | FrontendCmd::SimRemote(_) | FrontendCmd::ModemReset => {}
        }
    }

    /// The answer for the APDU out, if one is.
    fn settle(&mut self, result: Result<Vec<u8>, ApduError>) {
        match self.pending.take() {
            Some(n) => self.answer = Some((n, result)),
            // The late answer to an APDU given up on: dropped, and the
            // card may come back.
            None => self.stale_until = None,
        }
    }

    /// IFDHICCPresence: whether pcscd sees a card at `now`, remembered as
    /// what pcscd was last told.
    pub fn report(&mut self, now: Instant) -> bool {
        let present = self.present(now);
        self.reported = Some(present);
        present
    }

    /// Whether pcscd's event thread is to return from the driver at `now`:
    /// presence changed since the last report, or waiting is over.
    pub fn poll_over(&self, now: Instant) -> bool {
        self.closed
            || self.wait_interrupted
            || self.reported.is_none_or(|told| told != self.present(now))
    }

    /// When presence changes by itself next (an absence after a timeout
    /// running out), if it will after `now`.
    pub fn next_change(&self, now: Instant) -> Option<Instant> {
        [self.gone_until, self.stale_until]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .min()
    }

    /// pcscd interrupts the wait of the reader's event thread: the wait
    /// in progress ends, or else the next one, at once. pcscd does this on
    /// every SCardDisconnect (to wait again with another timeout) and
    /// before the reader goes; a stop that lasted would spin the thread.
    pub fn interrupt_wait(&mut self) {
        self.wait_interrupted = true;
    }

    /// The wait of pcscd's event thread ended: an interruption is used up.
    pub fn end_wait(&mut self) {
        self.wait_interrupted = false;
    }

    /// Whether pcscd sees a card at `now`.
    pub fn present(&self, now: Instant) -> bool {
        !self.closed
            && self.inserted
            && self.atr.is_some()
            && self.gone_until.is_none_or(|until| now >= until)
            && self.stale_until.is_none_or(|until| now >= until)
    }

    /// The card's ATR, while it is present.
    pub fn atr(&self, now: Instant) -> Option<&[u8]> {
        self.atr.as_deref().filter(|_| self.present(now))
    }

    /// IFDHPowerICC: the modem events to send and the ATR to return
    /// (none after power down); `Err` when there is no card to power.
    pub fn power(
        &self,
        action: Power,
        now: Instant,
    ) -> Result<(Vec<ModemEvent>, Option<Vec<u8>>), ApduError> {
        let status = |s| ModemEvent::Status(s);
        match action {
            Power::Down => Ok((
                if self.inserted {
                    vec![status(power_off())]
                } else {
                    Vec::new()
                },
                None,
            )),
            Power::Up | Power::Reset => {
                let atr = self.atr(now).ok_or(ApduError::NotPresent)?.to_vec();
                let events = if action == Power::Up {
                    vec![status(power_on())]
                } else {
                    vec![status(reset_asserted()), status(power_on())]
                };
                Ok((events, Some(atr)))
            }
        }
    }

    /// Starts an APDU at `now`: its number and the TPDU for the bank.
    pub fn begin_apdu(&mut self, apdu: &[u8], now: Instant) -> Result<(u64, Vec<u8>), ApduError> {
        if self.closed {
            return Err(ApduError::Closed);
        }
        if !self.present(now) {
            return Err(ApduError::NotPresent);
        }
        let tpdu = match apdu.len() {
            // Case 1 in T=0: P3 = 00.
            4 => [apdu, &[0]].concat(),
            n if TPDU_LEN.contains(&n) => apdu.to_vec(),
            n => return Err(ApduError::Length(n)),
        };
        self.next_apdu += 1;
        self.pending = Some(self.next_apdu);
        self.answer = None;
        Ok((self.next_apdu, tpdu))
    }

    /// The answer to APDU `n`, once it is there.
    pub fn take_answer(&mut self, n: u64) -> Option<Result<Vec<u8>, ApduError>> {
        if self.closed && self.pending == Some(n) {
            self.pending = None;
            return Some(Err(ApduError::Closed));
        }
        match self.answer.take() {
            Some((m, result)) if m == n => Some(result),
            other => {
                self.answer = other;
                None
            }
        }
    }

    /// APDU `n` could not be sent: it is given up.
    pub fn not_sent(&mut self, n: u64) {
        if self.pending == Some(n) {
            self.pending = None;
        }
    }

    /// APDU `n` got no answer by its deadline, `now`: it is given up, the
    /// card goes away until its answer is no longer awaited, and the bank
    /// is told to power it off (the modem events to send).
    pub fn timed_out(&mut self, n: u64, now: Instant) -> Vec<ModemEvent> {
        if self.pending != Some(n) {
            return Vec::new();
        }
        self.pending = None;
        self.gone_until = Some(now + GONE_AFTER_TIMEOUT);
        self.stale_until = Some(now + STALE_WAIT);
        vec![ModemEvent::Status(power_off())]
    }

    /// The reader is being closed: no card, and a waiting APDU ends.
    pub fn close(&mut self) {
        self.closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATR: [u8; 4] = [0x3B, 0x9F, 0x96, 0x80];

    fn operational(core: &mut IfdCore) {
        // The main state machine's order on entering OPERATIONAL, then the
        // bank's SetAtrReq.
        core.on_command(FrontendCmd::SimRemote(true));
        core.on_command(FrontendCmd::SetAtr(vec![0x3B, 0x00]));
        core.on_command(FrontendCmd::CardInsert(true));
        core.on_command(FrontendCmd::ModemReset);
    }

    #[test]
    fn the_card_appears_with_the_banks_atr_not_the_placeholder() {
        let now = Instant::now();
        let mut core = IfdCore::new();
        assert!(!core.present(now));
        operational(&mut core);
        assert!(!core.present(now), "3B 00 is not the card's");
        core.on_command(FrontendCmd::SetAtr(ATR.to_vec()));
        assert!(core.present(now));
        assert_eq!(core.atr(now), Some(&ATR[..]));
        core.on_command(FrontendCmd::CardInsert(false));
        assert!(!core.present(now));
        assert_eq!(core.atr(now), None);
        // Inserted again: absent until the bank's ATR.
        operational(&mut core);
        assert!(!core.present(now));
        core.on_command(FrontendCmd::SetAtr(vec![0x3B; 40]));
        assert_eq!(core.atr(now).map(<[u8]>::len), Some(MAX_ATR_SIZE));
    }

    #[test]
    fn power_actions_become_status_indications() {
        let now = Instant::now();
        let mut core = IfdCore::new();
        assert_eq!(core.power(Power::Up, now), Err(ApduError::NotPresent));
        assert_eq!(core.power(Power::Down, now), Ok((Vec::new(), None)));
        operational(&mut core);
        core.on_command(FrontendCmd::SetAtr(ATR.to_vec()));
        let (events, atr) = core.power(Power::Up, now).expect("up");
        assert_eq!(events, vec![ModemEvent::Status(power_on())]);
        assert_eq!(atr.as_deref(), Some(&ATR[..]));
        let (events, atr) = core.power(Power::Down, now).expect("down");
        assert_eq!(events, vec![ModemEvent::Status(power_off())]);
        assert_eq!(atr, None);
        let (events, _) = core.power(Power::Reset, now).expect("reset");
        assert_eq!(
            events,
            vec![
                ModemEvent::Status(reset_asserted()),
                ModemEvent::Status(power_on())
            ]
        );
    }

    #[test]
    fn an_apdu_gets_its_own_answer() {
        let now = Instant::now();
        let mut core = IfdCore::new();
        assert_eq!(
            core.begin_apdu(&[0xA0, 0xA4, 0, 0, 2, 0x3F, 0], now),
            Err(ApduError::NotPresent)
        );
        operational(&mut core);
        core.on_command(FrontendCmd::SetAtr(ATR.to_vec()));
        let (n, tpdu) = core
            .begin_apdu(&[0xA0, 0xA4, 0, 0, 2, 0x3F, 0], now)
            .expect("sent");
        assert_eq!(tpdu, vec![0xA0, 0xA4, 0, 0, 2, 0x3F, 0]);
        assert_eq!(core.take_answer(n), None);
        core.on_command(FrontendCmd::Tpdu(vec![0x9F, 0x16]));
        assert_eq!(core.take_answer(n), Some(Ok(vec![0x9F, 0x16])));
        // Case 1: P3 added; lengths T=0 cannot carry: refused here.
        let (_, tpdu) = core.begin_apdu(&[0, 0x70, 0, 0], now).expect("case 1");
        assert_eq!(tpdu, vec![0, 0x70, 0, 0, 0]);
        assert_eq!(core.begin_apdu(&[0; 3], now), Err(ApduError::Length(3)));
        assert_eq!(core.begin_apdu(&[0; 261], now), Err(ApduError::Length(261)));
        // Refused by the main state machine.
        let (n, _) = core.begin_apdu(&[0; 5], now).expect("sent");
        core.on_command(FrontendCmd::TpduRefused(vec![0; 5]));
        assert_eq!(core.take_answer(n), Some(Err(ApduError::Refused)));
    }

    fn present_with_atr() -> IfdCore {
        let mut core = IfdCore::new();
        operational(&mut core);
        core.on_command(FrontendCmd::SetAtr(ATR.to_vec()));
        core
    }

    #[test]
    fn after_a_timeout_the_card_is_reset_and_away_until_the_late_answer() {
        let t0 = Instant::now();
        let mut core = present_with_atr();
        let (n, _) = core.begin_apdu(&[0; 5], t0).expect("sent");
        assert_eq!(
            core.timed_out(n, t0),
            vec![ModemEvent::Status(power_off())],
            "a cold reset at the bank"
        );
        let after_poll = t0 + GONE_AFTER_TIMEOUT;
        assert!(!core.present(after_poll), "the late answer may still come");
        assert_eq!(
            core.begin_apdu(&[0; 5], after_poll),
            Err(ApduError::NotPresent),
            "no APDU could take it for its own"
        );
        // Late: dropped (the next APDU below does not get it).
        core.on_command(FrontendCmd::Tpdu(vec![0x90, 0]));
        assert!(core.present(after_poll));
        let (m, _) = core.begin_apdu(&[0; 5], after_poll).expect("sent");
        assert_eq!(core.take_answer(m), None);
        core.on_command(FrontendCmd::Tpdu(vec![0x6A, 0x82]));
        assert_eq!(core.take_answer(m), Some(Ok(vec![0x6A, 0x82])));
    }

    #[test]
    fn a_late_answer_that_never_comes_is_awaited_within_a_bound() {
        let t0 = Instant::now();
        let mut core = present_with_atr();
        let (n, _) = core.begin_apdu(&[0; 5], t0).expect("sent");
        core.timed_out(n, t0);
        assert!(!core.present(t0 + STALE_WAIT - GONE_AFTER_TIMEOUT));
        assert!(core.present(t0 + STALE_WAIT));
        // Or a new bankd link: nothing late can come on it.
        let mut core = present_with_atr();
        let (n, _) = core.begin_apdu(&[0; 5], t0).expect("sent");
        core.timed_out(n, t0);
        core.on_command(FrontendCmd::CardInsert(false));
        operational(&mut core);
        core.on_command(FrontendCmd::SetAtr(ATR.to_vec()));
        assert!(core.present(t0 + GONE_AFTER_TIMEOUT));
    }

    #[test]
    fn pcscds_event_thread_waits_for_a_change_of_what_it_was_told() {
        let t0 = Instant::now();
        let mut core = IfdCore::new();
        assert!(core.poll_over(t0), "nothing told yet: pcscd asks first");
        assert!(!core.report(t0));
        assert!(!core.poll_over(t0));
        operational(&mut core);
        assert!(!core.poll_over(t0), "no card before the bank's ATR");
        core.on_command(FrontendCmd::SetAtr(ATR.to_vec()));
        assert!(core.poll_over(t0), "the card is there");
        assert!(core.report(t0));
        assert!(!core.poll_over(t0));
        // A timeout takes the card away, then time brings it back.
        let (n, _) = core.begin_apdu(&[0; 5], t0).expect("sent");
        core.timed_out(n, t0);
        assert!(core.poll_over(t0));
        assert!(!core.report(t0));
        assert_eq!(core.next_change(t0), Some(t0 + GONE_AFTER_TIMEOUT));
        assert_eq!(
            core.next_change(t0 + GONE_AFTER_TIMEOUT),
            Some(t0 + STALE_WAIT)
        );
        assert!(!core.poll_over(t0 + GONE_AFTER_TIMEOUT));
        assert!(core.poll_over(t0 + STALE_WAIT));
        assert_eq!(core.next_change(t0 + STALE_WAIT), None);
        // pcscd interrupts a wait: that one ends, the next waits again.
        let later = t0 + STALE_WAIT;
        core.report(later);
        core.interrupt_wait();
        assert!(core.poll_over(later));
        core.end_wait();
        assert!(!core.poll_over(later));
    }

    #[test]
    fn removal_or_close_ends_a_waiting_apdu() {
        let now = Instant::now();
        let mut core = IfdCore::new();
        operational(&mut core);
        core.on_command(FrontendCmd::SetAtr(ATR.to_vec()));
        let (n, _) = core.begin_apdu(&[0; 5], now).expect("sent");
        core.on_command(FrontendCmd::CardInsert(false));
        assert_eq!(core.take_answer(n), Some(Err(ApduError::CardGone)));

        operational(&mut core);
        core.on_command(FrontendCmd::SetAtr(ATR.to_vec()));
        let (n, _) = core.begin_apdu(&[0; 5], now).expect("sent");
        core.close();
        assert_eq!(core.take_answer(n), Some(Err(ApduError::Closed)));
        assert!(!core.present(now));
        assert_eq!(core.begin_apdu(&[0; 5], now), Err(ApduError::Closed));
    }
}
