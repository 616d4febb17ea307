//! The RSPRO client-role connection FSM (`RSPRO_CLIENT` of the C suite,
//! spec §1.6) as a sans-I/O state machine: states INIT, REESTABLISH_DELAY,
//! REESTABLISH, ESTABLISHED and CONNECTED, timers T1 (Connect*Res), T2 (TCP
//! connect) and T3 (back-off), and the C suite's back-off schedule.

use std::time::Duration;

use tokio::time::Instant;

use crate::types::{ComponentType, ResultCode};

/// The states, named as in the C suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    Init,
    ReestablishDelay,
    Reestablish,
    /// TCP is up, Connect*Req sent, waiting for Connect*Res.
    Established,
    /// Connect*Res ok: PDUs may flow.
    Connected,
}

impl ClientState {
    /// The C suite's state name, as its event scripts see it.
    pub fn name(self) -> &'static str {
        match self {
            ClientState::Init => "INIT",
            ClientState::ReestablishDelay => "REESTABLISH_DELAY",
            ClientState::Reestablish => "REESTABLISH",
            ClientState::Established => "ESTABLISHED",
            ClientState::Connected => "CONNECTED",
        }
    }
}

impl std::fmt::Display for ClientState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Timers; the defaults are the C suite's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectConfig {
    /// T1: wait for Connect*Res (C: 10 s).
    pub connect_res_timeout: Duration,
    /// T2: wait for the TCP connect (C: 10 s). A refused connect does not
    /// wait for it (the C suite does): it is retried on the back-off table.
    pub tcp_connect_timeout: Duration,
    /// One step of the back-off table (C: 1 s); tests shrink it.
    pub backoff_unit: Duration,
    /// An attempt older than this restarts the fast schedule (C: 32 s).
    pub backoff_reset_after: Duration,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            connect_res_timeout: Duration::from_secs(10),
            tcp_connect_timeout: Duration::from_secs(10),
            backoff_unit: Duration::from_secs(1),
            backoff_reset_after: Duration::from_secs(32),
        }
    }
}

/// Entries of the C back-off table: 3 × 0, 30 × 1, 30 × 2, 30 × 4, 30 × 8, then 16.
pub const BACKOFF_TABLE_LEN: usize = 124;

/// The minimum gap, in units, between attempt `index` and the one before.
pub fn backoff_units(index: usize) -> u32 {
    match index {
        0..=2 => 0,
        3..=32 => 1,
        33..=62 => 2,
        63..=92 => 4,
        93..=122 => 8,
        _ => 16,
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEvent {
    /// The application wants the link (ESTABLISH).
    Establish,
    /// The application gives the link up for good (DISCONNECT).
    Disconnect,
    TcpUp,
    TcpDown,
    KeepaliveTimeout,
    /// Connect*Res arrived from a peer of this type with this result.
    ConnectRes {
        peer: ComponentType,
        result: ResultCode,
    },
    /// The deadline returned by [`ClientFsm::deadline`] passed.
    Timeout,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAction {
    /// Drop the TCP connection (or the connect in progress).
    CloseTcp,
    /// Start a TCP connect.
    Connect,
    /// TCP is up: start the keep-alive and send Connect*Req.
    SendConnectReq,
    /// Tell the application the link is usable.
    NotifyConnected,
    /// Tell the application the link is gone.
    NotifyLost,
    /// Tell the application the peer refused Connect*Req (the link retries).
    NotifyRefused(ResultCode),
    /// The peer is of the wrong type (a wrong port, as the C suite treats
    /// it): tell the application the link gave up for good.
    NotifyWrongPeer(ComponentType),
}

/// Which Connect*Res the link accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acceptance {
    /// The component type the peer must announce.
    pub peer: ComponentType,
    /// Results besides `ok` that still make the link CONNECTED (a client
    /// waits on a bankd that answers `cardNotPresent` while its map is
    /// being installed, instead of reconnecting: spec §7.27).
    pub tolerate: Vec<ResultCode>,
}

#[derive(Debug, Clone)]
pub struct ClientFsm {
    config: ReconnectConfig,
    accept: Acceptance,
    state: ClientState,
    backoff_index: usize,
    last_attempt: Option<Instant>,
    timer: Option<Instant>,
}

impl ClientFsm {
    pub fn new(config: ReconnectConfig, accept: Acceptance) -> Self {
        ClientFsm {
            config,
            accept,
            state: ClientState::Init,
            backoff_index: 0,
            last_attempt: None,
            timer: None,
        }
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    /// When to deliver [`ClientEvent::Timeout`], if a timer runs.
    pub fn deadline(&self) -> Option<Instant> {
        self.timer
    }

    /// Feeds one event; returns the actions to perform in order.
    pub fn handle(&mut self, event: ClientEvent, now: Instant) -> Vec<ClientAction> {
        use ClientEvent as E;
        use ClientState as S;
        let mut actions = Vec::new();
        match (self.state, event) {
            (_, E::Establish) => {
                self.backoff_index = 0;
                self.last_attempt = None;
                self.reestablish(now, &mut actions);
            }
            (_, E::Disconnect) => {
                self.leave(&mut actions);
                actions.push(ClientAction::CloseTcp);
                self.state = S::Init;
                self.timer = None;
            }
            (S::ReestablishDelay, E::Timeout) => {
                self.state = S::Reestablish;
                self.last_attempt = Some(now);
                self.timer = Some(now + self.config.tcp_connect_timeout);
                actions.push(ClientAction::Connect);
            }
            (S::Reestablish, E::TcpUp) => {
                self.state = S::Established;
                self.timer = Some(now + self.config.connect_res_timeout);
                actions.push(ClientAction::SendConnectReq);
            }
            // A refused connect is retried on the back-off table at once. The
            // C suite waits for T2 (10 s) first: a bankd or server back
            // after a restart then cost a modem 10 s of SIM (spec §1.6).
            (S::Reestablish, E::TcpDown | E::Timeout) => self.reestablish(now, &mut actions),
            (S::Established, E::ConnectRes { peer, .. }) if peer != self.accept.peer => {
                actions.push(ClientAction::CloseTcp);
                actions.push(ClientAction::NotifyWrongPeer(peer));
                self.state = S::Init;
                self.timer = None;
            }
            (S::Established, E::ConnectRes { result, .. })
                if result.is_ok() || self.accept.tolerate.contains(&result) =>
            {
                self.state = S::Connected;
                self.timer = None;
                actions.push(ClientAction::NotifyConnected);
            }
            (S::Established, E::ConnectRes { result, .. }) => {
                actions.push(ClientAction::NotifyRefused(result));
                self.reestablish(now, &mut actions);
            }
            (S::Established, E::Timeout)
            | (S::Established | S::Connected, E::TcpDown | E::KeepaliveTimeout) => {
                self.reestablish(now, &mut actions);
            }
            // Anything else is stale (a late TCP event after a close, say).
            _ => {}
        }
        actions
    }

    fn leave(&mut self, actions: &mut Vec<ClientAction>) {
        if self.state == ClientState::Connected {
            actions.push(ClientAction::NotifyLost);
        }
    }

    /// `srvc_do_reestablish`: wait what is left of the table's gap since the
    /// last attempt (at least 1 ms), in REESTABLISH_DELAY.
    fn reestablish(&mut self, now: Instant, actions: &mut Vec<ClientAction>) {
        let since = self
            .last_attempt
            .map(|t| now.saturating_duration_since(t))
            .unwrap_or(Duration::MAX);
        if since > self.config.backoff_reset_after {
            self.backoff_index = 0;
        }
        let gap = self.config.backoff_unit * backoff_units(self.backoff_index);
        let delay = gap.saturating_sub(since).max(Duration::from_millis(1));
        self.leave(actions);
        actions.push(ClientAction::CloseTcp);
        self.state = ClientState::ReestablishDelay;
        self.timer = Some(now + delay);
        self.backoff_index = (self.backoff_index + 1).min(BACKOFF_TABLE_LEN - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ClientAction as A;
    use ClientEvent as E;

    fn fsm() -> ClientFsm {
        ClientFsm::new(
            ReconnectConfig::default(),
            Acceptance {
                peer: ComponentType::RemsimBankd,
                tolerate: vec![ResultCode::CardNotPresent],
            },
        )
    }

    fn res(result: ResultCode) -> ClientEvent {
        E::ConnectRes {
            peer: ComponentType::RemsimBankd,
            result,
        }
    }

    /// A link whose TCP connect succeeded: Connect*Req out, awaiting the
    /// answer; and when that was.
    fn established() -> (ClientFsm, Instant) {
        let mut fsm = fsm();
        fsm.handle(E::Establish, Instant::now());
        let (at, _) = fire(&mut fsm);
        fsm.handle(E::TcpUp, at);
        assert_eq!(fsm.state(), ClientState::Established);
        (fsm, at)
    }

    fn fire(fsm: &mut ClientFsm) -> (Instant, Vec<ClientAction>) {
        let at = fsm.deadline().expect("a timer runs");
        (at, fsm.handle(E::Timeout, at))
    }

    #[test]
    fn state_names_are_the_c_suites() {
        // Scripts compare these strings; Debug would give "REESTABLISHDELAY".
        assert_eq!(
            ClientState::ReestablishDelay.to_string(),
            "REESTABLISH_DELAY"
        );
        assert_eq!(ClientState::Connected.name(), "CONNECTED");
    }

    #[test]
    fn table_matches_the_c_schedule() {
        let units: Vec<u32> = (0..BACKOFF_TABLE_LEN + 5).map(backoff_units).collect();
        assert_eq!(&units[..3], &[0, 0, 0]);
        assert!(units[3..33].iter().all(|u| *u == 1));
        assert!(units[33..63].iter().all(|u| *u == 2));
        assert!(units[63..93].iter().all(|u| *u == 4));
        assert!(units[93..123].iter().all(|u| *u == 8));
        assert!(units[123..].iter().all(|u| *u == 16));
    }

    #[test]
    fn connect_handshake_and_loss() {
        let t0 = Instant::now();
        let mut fsm = fsm();
        assert_eq!(fsm.handle(E::Establish, t0), vec![A::CloseTcp]);
        assert_eq!(fsm.state(), ClientState::ReestablishDelay);
        assert_eq!(fsm.deadline(), Some(t0 + Duration::from_millis(1)));
        let (t1, actions) = fire(&mut fsm);
        assert_eq!(actions, vec![A::Connect]);
        assert_eq!(fsm.deadline(), Some(t1 + Duration::from_secs(10)));
        assert_eq!(fsm.handle(E::TcpUp, t1), vec![A::SendConnectReq]);
        assert_eq!(fsm.state(), ClientState::Established);
        assert_eq!(
            fsm.handle(res(ResultCode::Ok), t1),
            vec![A::NotifyConnected]
        );
        assert_eq!(fsm.state(), ClientState::Connected);
        assert_eq!(fsm.deadline(), None);
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(
            fsm.handle(E::KeepaliveTimeout, t2),
            vec![A::NotifyLost, A::CloseTcp]
        );
        assert_eq!(fsm.state(), ClientState::ReestablishDelay);
    }

    /// Peer accepts TCP then closes at once, every time: the gaps between
    /// attempts follow 0, 0, 0, 1, 1, ... units (the first attempt is at 1 ms).
    #[test]
    fn reconnect_gaps_follow_the_table() {
        let t0 = Instant::now();
        let mut fsm = fsm();
        fsm.handle(E::Establish, t0);
        let mut attempts = Vec::new();
        for _ in 0..40 {
            let (at, actions) = fire(&mut fsm);
            assert_eq!(actions, vec![A::Connect]);
            attempts.push(at);
            fsm.handle(E::TcpUp, at);
            fsm.handle(E::TcpDown, at);
        }
        let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
        let ms = Duration::from_millis(1);
        assert_eq!(&gaps[..2], &[ms, ms]);
        // Index 3 onwards needs 1 s since the previous attempt.
        assert!(gaps[2..32].iter().all(|g| *g == Duration::from_secs(1)));
        assert!(gaps[32..].iter().all(|g| *g == Duration::from_secs(2)));
    }

    #[test]
    fn a_refused_connect_is_retried_on_the_table_not_after_t2() {
        let t0 = Instant::now();
        let mut fsm = fsm();
        fsm.handle(E::Establish, t0);
        let (t1, _) = fire(&mut fsm);
        assert_eq!(fsm.handle(E::TcpDown, t1), vec![A::CloseTcp]);
        assert_eq!(fsm.state(), ClientState::ReestablishDelay);
        assert_eq!(fsm.deadline(), Some(t1 + Duration::from_millis(1)));
        // A connect that hangs (no answer at all) still ends after T2.
        let (t2, actions) = fire(&mut fsm);
        assert_eq!(actions, vec![A::Connect]);
        let (t3, actions) = fire(&mut fsm);
        assert_eq!(t3, t2 + Duration::from_secs(10));
        assert_eq!(actions, vec![A::CloseTcp]);
    }

    /// The peer is down (every connect refused at once) for `outage`, then
    /// listens again: how long until the next connect attempt reaches it.
    fn back_after(outage: Duration) -> Duration {
        let t0 = Instant::now();
        let up_again = t0 + outage;
        let mut fsm = fsm();
        fsm.handle(E::Establish, t0);
        loop {
            let (at, actions) = fire(&mut fsm);
            if actions == vec![A::Connect] {
                if at >= up_again {
                    return at - up_again;
                }
                fsm.handle(E::TcpDown, at);
            }
        }
    }

    #[test]
    fn a_peer_back_after_a_restart_is_reached_within_the_table_gap() {
        let second = Duration::from_secs(1);
        // A restart of a few seconds up to half a minute: within 1 s.
        for outage in [0.5, 2.0, 5.0, 9.7, 29.0] {
            let waited = back_after(Duration::from_secs_f64(outage));
            assert!(waited <= second, "{outage} s down: {waited:?}");
        }
        // The C table still spaces repeated failures out: after a minute
        // down the gap is 2 s, after two minutes 4 s.
        assert!(back_after(Duration::from_secs(60)) <= 2 * second);
        assert!(back_after(Duration::from_secs(120)) <= 4 * second);
    }

    #[test]
    fn long_lived_connection_restarts_fast_schedule() {
        let t0 = Instant::now();
        let mut fsm = fsm();
        fsm.handle(E::Establish, t0);
        for _ in 0..10 {
            let (at, _) = fire(&mut fsm);
            fsm.handle(E::TcpUp, at);
            fsm.handle(E::TcpDown, at);
        }
        let (at, _) = fire(&mut fsm);
        fsm.handle(E::TcpUp, at);
        fsm.handle(res(ResultCode::Ok), at);
        let later = at + Duration::from_secs(33);
        fsm.handle(E::TcpDown, later);
        assert_eq!(fsm.deadline(), Some(later + Duration::from_millis(1)));
    }

    #[test]
    fn refused_connect_res_and_t1_reconnect() {
        let (mut fsm, t1) = established();
        assert_eq!(
            fsm.handle(res(ResultCode::IllegalClientId), t1),
            vec![A::NotifyRefused(ResultCode::IllegalClientId), A::CloseTcp]
        );
        let (t2, _) = fire(&mut fsm);
        fsm.handle(E::TcpUp, t2);
        let (t3, actions) = fire(&mut fsm);
        assert_eq!(t3, t2 + Duration::from_secs(10));
        assert_eq!(actions, vec![A::CloseTcp]);
    }

    #[test]
    fn disconnect_is_final() {
        let (mut fsm, t1) = established();
        fsm.handle(res(ResultCode::Ok), t1);
        assert_eq!(
            fsm.handle(E::Disconnect, t1),
            vec![A::NotifyLost, A::CloseTcp]
        );
        assert_eq!(fsm.state(), ClientState::Init);
        assert_eq!(fsm.deadline(), None);
        assert!(fsm.handle(E::TcpDown, t1).is_empty());
    }

    #[test]
    fn tolerated_results_connect_and_a_wrong_peer_stops_the_link() {
        let (mut fsm, t1) = established();
        assert_eq!(
            fsm.handle(res(ResultCode::CardNotPresent), t1),
            vec![A::NotifyConnected]
        );
        fsm.handle(E::TcpDown, t1);
        let (t2, _) = fire(&mut fsm);
        fsm.handle(E::TcpUp, t2);
        let server = E::ConnectRes {
            peer: ComponentType::RemsimServer,
            result: ResultCode::Ok,
        };
        assert_eq!(
            fsm.handle(server, t2),
            vec![A::CloseTcp, A::NotifyWrongPeer(ComponentType::RemsimServer)]
        );
        assert_eq!(fsm.state(), ClientState::Init);
        assert_eq!(fsm.deadline(), None);
    }
}
