//! The milestones simulated clients report while a scenario waits, and the
//! tally the scenario keeps of them: who holds ConnectClientRes, who holds
//! its card's ATR, who gave up and why. Counters only, so that settling
//! is O(1) per milestone however many clients run.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

/// What a client reports, once each at most (so a channel of three per
/// client never fills).
#[derive(Debug)]
pub enum Milestone {
    /// ConnectClientRes(ok) from the server, `latency` after the connect began.
    Connected {
        index: usize,
        at: Instant,
        latency: Duration,
    },
    /// The first ConfigClientBankReq naming a bankd, from the server.
    Configured { index: usize, at: Instant },
    /// The first SetAtrReq from its bankd.
    Atr { index: usize, at: Instant },
    /// The client ended early; the reason names the cause, not the client,
    /// so that equal causes count together.
    Failed { index: usize, reason: String },
}

/// Channel capacity for `clients` clients.
pub fn capacity(clients: usize) -> usize {
    clients.saturating_mul(4).saturating_add(1)
}

#[derive(Debug, Clone, Copy, Default)]
struct State {
    connected: bool,
    configured: bool,
    atr: bool,
    failed: bool,
}

pub struct Tracker {
    milestones: mpsc::Receiver<Milestone>,
    clients: Vec<State>,
    /// Clients 0..maps have a map, so an ATR to wait for.
    maps: usize,
    pub connected: usize,
    /// Connected, or failed before.
    connect_settled: usize,
    pub latencies: Vec<Duration>,
    pub last_connected: Option<Instant>,
    /// Clients with a map that got their ConfigClientBankReq.
    pub configured: usize,
    pub last_configured: Option<Instant>,
    pub atrs: usize,
    /// Holding the ATR, or failed before (clients with a map only).
    atr_settled: usize,
    pub last_atr: Option<Instant>,
    /// Clients that failed after they had connected.
    pub lost: usize,
    pub failures: BTreeMap<String, usize>,
}

impl Tracker {
    pub fn new(clients: usize, maps: usize, milestones: mpsc::Receiver<Milestone>) -> Self {
        Tracker {
            milestones,
            clients: vec![State::default(); clients],
            maps,
            connected: 0,
            connect_settled: 0,
            latencies: Vec::with_capacity(clients),
            last_connected: None,
            configured: 0,
            last_configured: None,
            atrs: 0,
            atr_settled: 0,
            last_atr: None,
            lost: 0,
            failures: BTreeMap::new(),
        }
    }

    fn apply(&mut self, milestone: Milestone) {
        let maps = self.maps;
        match milestone {
            Milestone::Connected { index, at, latency } => {
                let Some(c) = self.clients.get_mut(index) else {
                    return;
                };
                if c.connected || c.failed {
                    return;
                }
                c.connected = true;
                self.connected += 1;
                self.connect_settled += 1;
                self.latencies.push(latency);
                self.last_connected = self.last_connected.max(Some(at));
            }
            Milestone::Configured { index, at } => {
                let Some(c) = self.clients.get_mut(index) else {
                    return;
                };
                if index >= maps || c.configured || c.failed {
                    return;
                }
                c.configured = true;
                self.configured += 1;
                self.last_configured = self.last_configured.max(Some(at));
            }
            Milestone::Atr { index, at } => {
                let Some(c) = self.clients.get_mut(index) else {
                    return;
                };
                if index >= maps || c.atr || c.failed {
                    return;
                }
                c.atr = true;
                self.atrs += 1;
                self.atr_settled += 1;
                self.last_atr = self.last_atr.max(Some(at));
            }
            Milestone::Failed { index, reason } => {
                let Some(c) = self.clients.get_mut(index) else {
                    return;
                };
                if c.failed {
                    return;
                }
                c.failed = true;
                if c.connected {
                    self.lost += 1;
                } else {
                    self.connect_settled += 1;
                }
                if index < maps && !c.atr {
                    self.atr_settled += 1;
                }
                *self.failures.entry(reason).or_default() += 1;
            }
        }
    }

    /// Takes milestones until `settled` holds or `deadline` passes; true
    /// if it holds.
    pub async fn wait(&mut self, deadline: Instant, settled: fn(&Tracker) -> bool) -> bool {
        while !settled(self) {
            match timeout_at(deadline, self.milestones.recv()).await {
                Ok(Some(milestone)) => self.apply(milestone),
                // Every client has ended, or time is up.
                Ok(None) | Err(_) => return settled(self),
            }
        }
        true
    }

    /// Takes the milestones already reported, without waiting.
    pub fn drain(&mut self) {
        while let Ok(milestone) = self.milestones.try_recv() {
            self.apply(milestone);
        }
    }

    /// Every client holds ConnectClientRes or has given up.
    pub fn connect_settled(&self) -> bool {
        self.connect_settled >= self.clients.len()
    }

    /// Every client with a map holds its ATR or has given up.
    pub fn atr_settled(&self) -> bool {
        self.atr_settled >= self.maps
    }

    /// Clients with a map that neither got their ATR nor failed.
    pub fn atr_missing(&self) -> usize {
        self.maps.saturating_sub(self.atr_settled)
    }
}
