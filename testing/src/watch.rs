//! Waiting for the server's state through its Watch stream: a mirror of
//! banks, clients and slot maps fed by the server's events, and a wait
//! until a condition holds on it. The wait ends on the event that makes
//! the condition true, never on a poll of the clock.

use std::collections::BTreeMap;

use remsim_api::v1 as pb;
use remsim_api::v1::remsim_service_client::RemsimServiceClient;
use tonic::transport::Channel;

use crate::GUARD;

/// The server's state as its events tell it.
#[derive(Debug, Default, Clone)]
pub struct Mirror {
    pub banks: BTreeMap<u32, pb::Bank>,
    pub clients: BTreeMap<(u32, u32), pb::Client>,
    /// By map id (bank × 65536 + slot): the order `ListSlotmaps` gives.
    pub maps: BTreeMap<u32, pb::Slotmap>,
}

impl Mirror {
    pub fn bank_connected(&self, bank_id: u32) -> bool {
        self.banks.get(&bank_id).is_some_and(|b| b.connected)
    }

    pub fn client_connected(&self, client_id: u32, slot_nr: u32) -> bool {
        self.clients
            .get(&(client_id, slot_nr))
            .is_some_and(|c| c.connected)
    }

    /// The slot maps as `ListSlotmaps` would list them.
    pub fn slotmaps(&self) -> Vec<pb::Slotmap> {
        self.maps.values().cloned().collect()
    }

    fn apply(&mut self, event: pb::event::Event) {
        use pb::event::Event as E;
        match event {
            E::Bank(b) => {
                self.banks.insert(b.bank_id, b);
            }
            E::Client(c) => {
                let slot = c.slot.unwrap_or_default();
                self.clients.insert((slot.client_id, slot.slot_nr), c);
            }
            E::Slotmap(m) => {
                self.maps.insert(m.id, m);
            }
            E::SlotmapRemoved(m) => {
                self.maps.remove(&m.id);
            }
            E::SnapshotEnd(_) => {}
        }
    }
}

/// Watches the server (snapshot first) until `ok` holds on its state;
/// fails the test after [`GUARD`], showing the state reached.
pub async fn until(api: &mut RemsimServiceClient<Channel>, ok: impl Fn(&Mirror) -> bool) -> Mirror {
    let mut mirror = Mirror::default();
    let wait = async {
        let mut events = api
            .watch(pb::WatchRequest { snapshot: true })
            .await
            .expect("Watch")
            .into_inner();
        let mut live = false;
        loop {
            let event = events
                .message()
                .await
                .expect("the Watch stream")
                .expect("the Watch stream ended");
            match event.event {
                Some(pb::event::Event::SnapshotEnd(_)) => live = true,
                Some(e) => mirror.apply(e),
                None => {}
            }
            if live && ok(&mirror) {
                return;
            }
        }
    };
    if tokio::time::timeout(GUARD, wait).await.is_err() {
        panic!("the server's state never got there: {mirror:#?}");
    }
    mirror
}
