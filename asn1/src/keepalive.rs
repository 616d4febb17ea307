//! The IPA keep-alive of libosmo-netif as a sans-I/O state machine: PING at
//! once, peer dead if no PONG within `timeout`, next PING `interval` after
//! the PONG (so the period is interval + round trip, as in the C suite).
//!
//! The accepting side of a link (the server, a bankd's client port) is
//! [`Keepalive::deferring`]: a frame from the peer proves it alive, so its
//! next PING waits until `interval` + a tenth of it after the peer's last
//! frame. A peer that runs its own keep-alive (every C and remsim client
//! and bankd does; its period is `interval` + its round trip) is then never
//! pinged back, which halves the keep-alive traffic of an idle fleet; a
//! peer that goes silent is pinged and found dead as before, a tenth of
//! the interval later at most.

use std::time::Duration;

use tokio::time::Instant;

/// Keep-alive timers; the defaults are the C suite's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveConfig {
    /// Idle time after a PONG before the next PING (C: 30 s).
    pub interval: Duration,
    /// How long to wait for a PONG (C: 10 s).
    pub timeout: Duration,
}

impl Default for KeepaliveConfig {
    fn default() -> Self {
        KeepaliveConfig {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `owed` PINGs are out (1, or 2 after a probe); the peer is dead if
    /// one is not answered by its deadline: `deadline` is the earliest,
    /// `newest` the last PING's own.
    AwaitingPong {
        deadline: Instant,
        owed: u8,
        newest: Instant,
    },
    /// The last PING was answered; the next one goes out at `next_ping`.
    Idle { next_ping: Instant },
}

impl State {
    /// One PING out, due at `deadline`.
    fn awaiting(deadline: Instant) -> Self {
        State::AwaitingPong {
            deadline,
            owed: 1,
            newest: deadline,
        }
    }
}

/// What the driver must do when the keep-alive deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepaliveAction {
    SendPing,
    PeerDead,
}

#[derive(Debug, Clone)]
pub struct Keepalive {
    config: KeepaliveConfig,
    state: State,
    /// Frames from the peer put our next PING off (the accepting side).
    deferring: bool,
}

impl Keepalive {
    /// Starts the keep-alive at `now`; the caller sends the first PING now.
    pub fn start(config: KeepaliveConfig, now: Instant) -> Self {
        Keepalive {
            config,
            state: State::awaiting(now + config.timeout),
            deferring: false,
        }
    }

    /// From now on frames from the peer put our next PING off (see the
    /// module's comment).
    pub fn deferring(mut self) -> Self {
        self.deferring = true;
        self
    }

    /// A frame from the peer arrived at `now`.
    pub fn on_frame(&mut self, now: Instant) {
        let idle = self.config.interval + self.slack();
        if let State::Idle { next_ping } = &mut self.state
            && self.deferring
        {
            *next_ping = (*next_ping).max(now + idle);
        }
    }

    /// What a deferring side waits beyond the interval: the peer's own
    /// PING, due an interval after its PONG, comes first even when both
    /// sides' PINGs crossed (else the two would stay in step for ever).
    fn slack(&self) -> Duration {
        if self.deferring {
            self.config.interval / 10
        } else {
            Duration::ZERO
        }
    }

    /// A PONG arrived. An unsolicited PONG is harmless.
    pub fn on_pong(&mut self, now: Instant) {
        match self.state {
            // PONGs come in PING order (one TCP stream): this one answers
            // an older PING, and the newer one is still owed.
            State::AwaitingPong { owed, newest, .. } if owed > 1 => {
                self.state = State::AwaitingPong {
                    deadline: newest,
                    owed: owed - 1,
                    newest,
                };
            }
            State::AwaitingPong { .. } => {
                self.state = State::Idle {
                    next_ping: now + self.config.interval + self.slack(),
                };
            }
            State::Idle { .. } => {}
        }
    }

    /// Wants a PONG within `timeout`, sooner than the schedule would (to
    /// find out at once whether the peer is still there). Returns whether a
    /// PING must be sent now. Only the answer to a PING sent for the probe
    /// counts: the PONG to an older PING may have left a peer that has died
    /// since. At most two PINGs are ever out.
    pub fn probe(&mut self, now: Instant, timeout: Duration) -> bool {
        let deadline = now + timeout;
        match self.state {
            State::AwaitingPong {
                deadline: due,
                owed,
                newest,
            } => {
                let send = owed < 2;
                self.state = State::AwaitingPong {
                    deadline: due.min(deadline),
                    owed: if send { owed + 1 } else { owed },
                    newest: if send { deadline } else { newest.min(deadline) },
                };
                send
            }
            State::Idle { .. } => {
                self.state = State::awaiting(deadline);
                true
            }
        }
    }

    /// Whether a PING is out and its PONG has not come yet.
    pub fn awaiting_pong(&self) -> bool {
        matches!(self.state, State::AwaitingPong { .. })
    }

    /// When `on_deadline` must next be called.
    pub fn deadline(&self) -> Instant {
        match self.state {
            State::AwaitingPong { deadline, .. } => deadline,
            State::Idle { next_ping } => next_ping,
        }
    }

    /// Advances the machine; `None` if the deadline has not passed yet.
    pub fn on_deadline(&mut self, now: Instant) -> Option<KeepaliveAction> {
        if now < self.deadline() {
            return None;
        }
        match self.state {
            State::AwaitingPong { .. } => Some(KeepaliveAction::PeerDead),
            State::Idle { .. } => {
                self.state = State::awaiting(now + self.config.timeout);
                Some(KeepaliveAction::SendPing)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> KeepaliveConfig {
        KeepaliveConfig {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn pong_defers_next_ping_by_interval() {
        let t0 = Instant::now();
        let mut ka = Keepalive::start(cfg(), t0);
        assert_eq!(ka.deadline(), t0 + Duration::from_secs(10));
        ka.on_pong(t0 + Duration::from_millis(5));
        assert_eq!(ka.deadline(), t0 + Duration::from_millis(30_005));
        assert_eq!(ka.on_deadline(t0 + Duration::from_secs(29)), None);
        let t1 = t0 + Duration::from_millis(30_005);
        assert_eq!(ka.on_deadline(t1), Some(KeepaliveAction::SendPing));
        assert_eq!(ka.deadline(), t1 + Duration::from_secs(10));
    }

    #[test]
    fn a_peer_that_pings_itself_is_not_pinged_back_when_deferring() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut ka = Keepalive::start(cfg(), t0).deferring();
        // The two first PINGs cross; the PONGs too.
        ka.on_frame(t0);
        ka.on_pong(t0);
        assert_eq!(ka.deadline(), t0 + s(33));
        // The peer pings every 30 s + its round trip: our PING never falls due.
        for k in 1..10u32 {
            let ping = t0 + s(30) * k + Duration::from_millis(5) * k;
            assert_eq!(
                ka.on_deadline(ping - Duration::from_millis(1)),
                None,
                "cycle {k}"
            );
            ka.on_frame(ping);
        }
        // Silent from the last frame on: our PING 33 s later, dead 10 s after it.
        let last = t0 + s(30) * 9 + Duration::from_millis(45);
        assert_eq!(ka.deadline(), last + s(33));
        assert_eq!(
            ka.on_deadline(last + s(33)),
            Some(KeepaliveAction::SendPing)
        );
        assert_eq!(
            ka.on_deadline(last + s(43)),
            Some(KeepaliveAction::PeerDead)
        );
        // Not deferring (the connecting side): frames change nothing.
        let mut ka = Keepalive::start(cfg(), t0);
        ka.on_pong(t0);
        ka.on_frame(t0 + s(29));
        assert_eq!(ka.deadline(), t0 + s(30));
    }

    #[test]
    fn missing_pong_means_peer_dead() {
        let t0 = Instant::now();
        let mut ka = Keepalive::start(cfg(), t0);
        assert_eq!(ka.on_deadline(t0 + Duration::from_millis(9_999)), None);
        assert_eq!(
            ka.on_deadline(t0 + Duration::from_secs(10)),
            Some(KeepaliveAction::PeerDead)
        );
    }

    #[test]
    fn probe_asks_for_a_pong_sooner() {
        let t0 = Instant::now();
        let mut ka = Keepalive::start(cfg(), t0);
        ka.on_pong(t0);
        let t1 = t0 + Duration::from_secs(1);
        assert!(ka.probe(t1, Duration::from_secs(2)), "a PING goes out");
        assert_eq!(ka.deadline(), t1 + Duration::from_secs(2));
        assert!(ka.probe(t1, Duration::from_secs(5)), "one more PING");
        assert!(!ka.probe(t1, Duration::from_secs(5)), "two are enough");
        assert_eq!(ka.deadline(), t1 + Duration::from_secs(2), "never later");
        assert_eq!(
            ka.on_deadline(t1 + Duration::from_secs(2)),
            Some(KeepaliveAction::PeerDead)
        );
    }

    #[test]
    fn only_the_probes_own_pong_answers_it() {
        // The PONG to the PING sent at start arrives after the probe: the
        // peer may have died since it sent that PONG, so it must also answer
        // the probe's PING.
        let t0 = Instant::now();
        let mut ka = Keepalive::start(cfg(), t0);
        let t1 = t0 + Duration::from_millis(1);
        assert!(ka.probe(t1, Duration::from_millis(300)));
        ka.on_pong(t1);
        assert!(ka.awaiting_pong());
        assert_eq!(
            ka.on_deadline(t1 + Duration::from_millis(300)),
            Some(KeepaliveAction::PeerDead)
        );
        // The older PING was nearly due: once it is answered, the probe's
        // own PING gets its whole timeout.
        let mut ka = Keepalive::start(cfg(), t0);
        let t2 = t0 + Duration::from_millis(9_990);
        assert!(ka.probe(t2, Duration::from_millis(300)));
        assert_eq!(ka.deadline(), t0 + Duration::from_secs(10));
        ka.on_pong(t2);
        assert_eq!(ka.deadline(), t2 + Duration::from_millis(300));
        // Both answered: alive, back on the normal schedule.
        let mut ka = Keepalive::start(cfg(), t0);
        assert!(ka.probe(t1, Duration::from_millis(300)));
        ka.on_pong(t1);
        ka.on_pong(t1);
        assert!(!ka.awaiting_pong());
        assert_eq!(ka.deadline(), t1 + Duration::from_secs(30));
    }

    #[test]
    fn unsolicited_pong_does_not_move_the_schedule() {
        let t0 = Instant::now();
        let mut ka = Keepalive::start(cfg(), t0);
        ka.on_pong(t0);
        let due = ka.deadline();
        ka.on_pong(t0 + Duration::from_secs(20));
        assert_eq!(ka.deadline(), due);
    }
}
