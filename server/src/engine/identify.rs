//! Identification: Connect*Req from bankds and clients, admitted or
//! refused, and a second connection claiming a live identity, which waits
//! while the holder is probed (spec §7: a dead duplicate must not block a
//! slot for ever).

use std::collections::VecDeque;
use std::net::SocketAddr;

use rspro::validate::MAX_ID;
use rspro::{ClientSlot, ComponentType, Identity, ResultCode, RsproPdu};
use tracing::{info, warn};

use super::*;

impl Engine {
    /// The holder of an identity answered its probe: whoever waits for that
    /// identity is the duplicate.
    pub fn on_probe_alive(&mut self, holder: ConnId) -> Vec<Action> {
        let mut out = Vec::new();
        let waiting: Vec<(ConnId, Pending)> = self
            .conns
            .iter()
            .filter_map(|(id, c)| match c {
                Conn::Waiting {
                    holder: h, pending, ..
                } if *h == holder => Some((*id, pending.clone())),
                _ => None,
            })
            .collect();
        for (conn, pending) in waiting {
            self.reject(conn, &pending, ResultCode::IdentityInUse, &mut out);
        }
        out
    }

    /// Admits the first connection waiting for the identity that just left.
    pub(super) fn admit_waiting(
        &mut self,
        matches: impl Fn(&Pending) -> bool,
        out: &mut Vec<Action>,
    ) {
        let waiting = self.conns.iter().find_map(|(id, c)| match c {
            Conn::Waiting {
                peer,
                identity,
                pending,
                ..
            } if matches(pending) => Some((*id, *peer, (**identity).clone(), pending.clone())),
            _ => None,
        });
        if let Some((conn, peer, identity, pending)) = waiting {
            info!(conn, "duplicate's holder is gone; admitting the newcomer");
            self.admit(conn, peer, identity, pending, out);
        }
    }

    pub(super) fn connect_bank(
        &mut self,
        conn: ConnId,
        peer: SocketAddr,
        identity: Identity,
        bank_id: u32,
        number_of_slots: u32,
        out: &mut Vec<Action>,
    ) {
        if identity.component_type != ComponentType::RemsimBankd {
            warn!(conn, kind = %identity.component_type, "ConnectBankReq from a non-bankd; closing");
            out.push(Action::Close(conn));
            return;
        }
        let pending = Pending::Bank {
            bank_id,
            number_of_slots,
        };
        if bank_id > MAX_ID {
            self.reject(conn, &pending, ResultCode::IllegalBankId, out);
            return;
        }
        let holder = self
            .banks
            .get(&bank_id)
            .and_then(|b| b.live.as_ref())
            .map(|l| l.conn);
        self.admit_or_probe(conn, peer, identity, pending, holder, out);
    }

    pub(super) fn connect_client(
        &mut self,
        conn: ConnId,
        peer: SocketAddr,
        identity: Identity,
        slot: Option<ClientSlot>,
        out: &mut Vec<Action>,
    ) {
        if identity.component_type != ComponentType::RemsimClient {
            warn!(conn, kind = %identity.component_type, "ConnectClientReq from a non-client; closing");
            out.push(Action::Close(conn));
            return;
        }
        // No client id allocation (as the C server): a client must know its slot.
        let Some(slot) = slot else {
            warn!(conn, "ConnectClientReq without a client slot; closing");
            out.push(Action::Close(conn));
            return;
        };
        let pending = Pending::Client { slot };
        if slot.client_id > MAX_ID || slot.slot_nr > MAX_ID {
            self.reject(conn, &pending, ResultCode::IllegalClientId, out);
            return;
        }
        let holder = self.clients.get(&slot).map(|c| c.conn);
        self.admit_or_probe(conn, peer, identity, pending, holder, out);
    }

    pub(super) fn admit_or_probe(
        &mut self,
        conn: ConnId,
        peer: SocketAddr,
        identity: Identity,
        pending: Pending,
        holder: Option<ConnId>,
        out: &mut Vec<Action>,
    ) {
        match holder {
            None => self.admit(conn, peer, identity, pending, out),
            Some(old) => {
                info!(conn, old, ?pending, "identity in use; probing the holder");
                self.conns.insert(
                    conn,
                    Conn::Waiting {
                        peer,
                        identity: Box::new(identity),
                        pending,
                        holder: old,
                    },
                );
                out.push(Action::Probe(old));
                out.push(Action::StartTimer(
                    conn,
                    self.probe_window,
                    Timer::ProbeVerdict,
                ));
            }
        }
    }

    pub(super) fn reject(
        &mut self,
        conn: ConnId,
        pending: &Pending,
        result: ResultCode,
        out: &mut Vec<Action>,
    ) {
        info!(conn, ?pending, %result, "rejecting connection");
        let pdu = match pending {
            Pending::Bank { .. } => RsproPdu::connect_bank_res(self.identity.clone(), result),
            Pending::Client { .. } => RsproPdu::connect_client_res(self.identity.clone(), result),
        };
        self.conns.insert(conn, Conn::Rejected);
        out.push(Action::Send(conn, pdu));
        out.push(Action::StartTimer(
            conn,
            REJECT_CLOSE_DELAY,
            Timer::RejectClose,
        ));
    }

    pub(super) fn admit(
        &mut self,
        conn: ConnId,
        peer: SocketAddr,
        identity: Identity,
        pending: Pending,
        out: &mut Vec<Action>,
    ) {
        match pending {
            Pending::Bank {
                bank_id,
                number_of_slots,
            } => {
                info!(bank = bank_id, %peer, slots = number_of_slots, "bankd connected");
                self.conns.insert(conn, Conn::Bank(bank_id));
                out.push(Action::Send(
                    conn,
                    RsproPdu::connect_bank_res(self.identity.clone(), ResultCode::Ok),
                ));
                let info = self.banks.entry(bank_id).or_default();
                info.reset_pending = self.reset_on_connect;
                info.live = Some(LiveBank {
                    conn,
                    number_of_slots,
                    peer,
                    identity,
                    owed: VecDeque::new(),
                });
                // Its maps are all NEW and its removals unsent: loaded so,
                // or put back so when its previous connection ended.
                out.push(Action::Notify(Change::Bank(bank_id)));
                self.push(bank_id, out);
            }
            Pending::Client { slot } => {
                info!(client = %slot, %peer, "client connected");
                self.conns.insert(conn, Conn::Client(slot));
                self.clients.insert(
                    slot,
                    LiveClient {
                        conn,
                        peer,
                        identity,
                        configured: None,
                    },
                );
                out.push(Action::Send(
                    conn,
                    RsproPdu::connect_client_res(self.identity.clone(), ResultCode::Ok),
                ));
                out.push(Action::Notify(Change::Client(slot)));
                self.update_client(slot, out);
            }
        }
    }
}
