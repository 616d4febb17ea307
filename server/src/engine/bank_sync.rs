//! Keeping each bankd in step with the maps: what it is owed (a reset,
//! removals, then creates, in a bounded window), its answers, a bankd going
//! away, and the configuration each client is sent as a result.

use rspro::{BankSlot, ClientSlot, IpPort, ResultCode, RsproPdu};
use tracing::{debug, info, warn};

use super::*;

impl Engine {
    pub(super) fn set_state(
        &mut self,
        bank: BankSlot,
        state: MapState,
        result: Option<ResultCode>,
        out: &mut Vec<Action>,
    ) {
        if let Some(map) = self.maps.get_mut(&bank) {
            map.state = state;
            map.result = result;
            out.push(Action::Notify(Change::Slotmap(map.clone())));
        }
    }

    pub(super) fn bank_gone(&mut self, bank_id: u32, out: &mut Vec<Action>) {
        info!(bank = bank_id, "bankd disconnected");
        if let Some(info) = self.banks.get_mut(&bank_id) {
            info.live = None;
        }
        // Clients of maps deleted but not yet confirmed were still sent to
        // this bankd; with it gone they are told now, not at its return.
        let mut unconfirmed = Vec::new();
        for r in self.removals.entry(bank_id).or_default() {
            r.sent = false;
            unconfirmed.push(r.client);
        }
        for client in unconfirmed {
            self.update_client(client, out);
        }
        let affected: Vec<(BankSlot, ClientSlot, MapState)> = self
            .maps_of(bank_id)
            .map(|m| (m.bank, m.client, m.state))
            .collect();
        for (bank, client, state) in affected {
            if state != MapState::New {
                self.set_state(bank, MapState::New, None, out);
            }
            self.update_client(client, out);
        }
        out.push(Action::Notify(Change::Bank(bank_id)));
    }

    /// Sends a connected bankd what it is owed: a reset if pending, then
    /// removals, then creates (removals first, so that a slot deleted and
    /// re-mapped ends up with its new map).
    pub(super) fn push(&mut self, bank_id: u32, out: &mut Vec<Action>) {
        let Some(info) = self.banks.get_mut(&bank_id) else {
            return;
        };
        let Some(live) = info.live.as_mut() else {
            return;
        };
        let conn = live.conn;
        if info.reset_pending {
            if !live.owed.contains(&Owed::Reset) {
                live.owed.push_back(Owed::Reset);
                out.push(Action::Send(conn, RsproPdu::reset_state_req()));
            }
        } else {
            for r in self.removals.entry(bank_id).or_default() {
                if live.owed.len() >= MAX_OWED {
                    break;
                }
                if !r.sent {
                    r.sent = true;
                    live.owed.push_back(Owed::Remove(r.bank, r.client));
                    // No event: the map already left the list (and Watch)
                    // when it was deleted.
                    out.push(Action::Send(
                        conn,
                        RsproPdu::remove_mapping_req(r.client, r.bank),
                    ));
                }
            }
        }
        // Creates only after every removal is out (or covered by the
        // reset), so none overtakes one.
        let removals_out = info.reset_pending
            || self
                .removals
                .get(&bank_id)
                .is_none_or(|list| list.iter().all(|r| r.sent));
        let room = if removals_out {
            MAX_OWED.saturating_sub(live.owed.len())
        } else {
            0
        };
        let creates: Vec<(BankSlot, ClientSlot)> = Self::maps_in(&self.maps, bank_id)
            .filter(|m| m.state == MapState::New)
            .take(room)
            .map(|m| (m.bank, m.client))
            .collect();
        for (bank, client) in &creates {
            live.owed.push_back(Owed::Create(*bank, *client));
            out.push(Action::Send(
                conn,
                RsproPdu::create_mapping_req(*client, *bank),
            ));
        }
        for (bank, _) in creates {
            self.set_state(bank, MapState::Unacknowledged, None, out);
        }
    }

    /// Pops the oldest owed response if it is of the expected kind.
    pub(super) fn pop_owed(
        &mut self,
        bank_id: u32,
        what: &str,
        matches: impl Fn(&Owed) -> bool,
    ) -> Option<Owed> {
        let live = self.banks.get_mut(&bank_id)?.live.as_mut()?;
        match live.owed.front() {
            Some(front) if matches(front) => live.owed.pop_front(),
            other => {
                warn!(bank = bank_id, expected = ?other, "unsolicited {what}; ignored");
                None
            }
        }
    }

    pub(super) fn on_create_res(
        &mut self,
        bank_id: u32,
        result: ResultCode,
        out: &mut Vec<Action>,
    ) {
        let Some(Owed::Create(bank, client)) = self.pop_owed(bank_id, "CreateMappingRes", |o| {
            matches!(o, Owed::Create(..))
        }) else {
            return;
        };
        // A later request for the same slot still owed (the map was deleted
        // and created again meanwhile) makes this answer stale: the removal
        // that follows undoes it, and only the newest create counts.
        let superseded = self
            .banks
            .get(&bank_id)
            .and_then(|b| b.live.as_ref())
            .is_some_and(|live| {
                live.owed
                    .iter()
                    .any(|o| matches!(o, Owed::Create(b, _) | Owed::Remove(b, _) if *b == bank))
            });
        let current = self
            .maps
            .get(&bank)
            .is_some_and(|m| m.client == client && m.state == MapState::Unacknowledged);
        if superseded || !current {
            // Deleted (or replaced) meanwhile: its removal follows in order.
            debug!(%bank, %client, %result, "CreateMappingRes for a map no longer current");
            return;
        }
        if result.is_ok() {
            self.set_state(bank, MapState::Active, None, out);
            self.update_client(client, out);
        } else {
            warn!(%bank, %client, %result, "bankd refused the map");
            self.set_state(bank, MapState::Refused, Some(result), out);
        }
    }

    pub(super) fn on_remove_res(
        &mut self,
        bank_id: u32,
        result: ResultCode,
        out: &mut Vec<Action>,
    ) {
        let Some(Owed::Remove(bank, client)) = self.pop_owed(bank_id, "RemoveMappingRes", |o| {
            matches!(o, Owed::Remove(..))
        }) else {
            return;
        };
        if !result.is_ok() {
            // unknownSlotmap and the like: the bankd has no such map either way.
            info!(%bank, %client, %result, "RemoveMappingRes not ok; map not installed there");
        }
        self.finish_removal(bank, client, out);
        self.update_client(client, out);
    }

    pub(super) fn finish_removal(
        &mut self,
        bank: BankSlot,
        client: ClientSlot,
        out: &mut Vec<Action>,
    ) {
        let list = self.removals.entry(bank.bank_id).or_default();
        if let Some(i) = list
            .iter()
            .position(|r| r.bank == bank && r.client == client && r.sent)
        {
            list.remove(i);
        }
        // Only forget it in the store if no later deletion of the same pair is owed.
        if !list.iter().any(|r| r.bank == bank && r.client == client) {
            out.push(Action::Store(StoreOp::RemovalDone { bank, client }));
        }
        self.announce_removed(bank, client, MapState::Deleting, out);
    }

    /// Tells watchers a deleted map is gone for good, unless its bank slot
    /// holds a new map by now: watchers key maps by id (the bank slot), and
    /// the removal was announced when the map was deleted.
    pub(super) fn announce_removed(
        &self,
        bank: BankSlot,
        client: ClientSlot,
        state: MapState,
        out: &mut Vec<Action>,
    ) {
        if !self.maps.contains_key(&bank) {
            out.push(Action::Notify(Change::SlotmapRemoved(Slotmap {
                bank,
                client,
                state,
                result: None,
            })));
        }
    }

    pub(super) fn on_reset_res(&mut self, bank_id: u32, result: ResultCode, out: &mut Vec<Action>) {
        if self
            .pop_owed(bank_id, "ResetStateRes", |o| *o == Owed::Reset)
            .is_none()
        {
            return;
        }
        if let Some(info) = self.banks.get_mut(&bank_id) {
            info.reset_pending = false;
        }
        if result.is_ok() {
            out.push(Action::Store(StoreOp::BankReset { bank_id }));
            let dropped = self.removals.remove(&bank_id).unwrap_or_default();
            for r in dropped {
                self.announce_removed(r.bank, r.client, MapState::DeleteReq, out);
            }
        } else {
            warn!(bank = bank_id, %result, "bankd refused ResetStateReq; sending removals instead");
        }
        self.push(bank_id, out);
    }

    /// Sends a client the configuration it should have, if it differs from
    /// what it was last sent: its ACTIVE map's bank slot and bankd, or
    /// `0.0.0.0:0` once it has none.
    pub(super) fn update_client(&mut self, slot: ClientSlot, out: &mut Vec<Action>) {
        let desired = self
            .by_client
            .get(&slot)
            .and_then(|b| self.maps.get(b))
            .filter(|m| m.state == MapState::Active)
            .and_then(|m| Some((m.bank, IpPort::from(self.endpoint(m.bank.bank_id)?))));
        let Some(client) = self.clients.get_mut(&slot) else {
            return;
        };
        let next = match (desired, &client.configured) {
            (Some(d), _) => d,
            (None, Some((bank, addr))) if !addr.is_none() => (*bank, IpPort::none()),
            (None, _) => return,
        };
        if client.configured.as_ref() == Some(&next) {
            return;
        }
        info!(client = %slot, bank = %next.0, bankd = %rspro::pdu::shown(next.1.socket_addr()), "configuring client");
        out.push(Action::Send(
            client.conn,
            RsproPdu::config_client_bank_req(next.0, next.1.clone()),
        ));
        client.configured = Some(next);
        out.push(Action::Notify(Change::Client(slot)));
    }
}
