//! One client's data connection as a sans-I/O state machine, with the C
//! bankd's worker states (CONN_WAIT_ID, CONN_CLIENT_WAIT_MAP,
//! CONN_CLIENT_MAPPED, CONN_CLIENT_MAPPED_CARD, CONN_CLIENT_UNMAPPED) and its
//! bugs fixed (spec §7 items 20-24): a map that arrives later completes the
//! connection with SetAtrReq, card errors are reported instead of ignored,
//! a reset sends the new ATR, reset edges are tracked per client, and a bad
//! TPDU length is answered 6700 instead of dropping the link.

use rspro::{
    BankSlot, ClientSlot, ComponentType, ErrorCode, ErrorSeverity, Identity, Msg, ResultCode,
    RsproPdu,
};

use crate::card::{CardError, ResetKind};
use crate::maps::MapTable;

use rspro::pdu::TPDU_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// CONN_WAIT_ID: waiting for ConnectClientReq.
    WaitId,
    /// CONN_CLIENT_WAIT_MAP: identified, no map for the client yet.
    WaitMap,
    /// CONN_CLIENT_MAPPED: mapped, card not open.
    Mapped,
    /// CONN_CLIENT_MAPPED_CARD: mapped and the card open.
    MappedCard,
    /// CONN_CLIENT_UNMAPPED: the map went away; closing.
    Unmapped,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    Send(RsproPdu),
    /// Open the card of this slot; report with `on_open`.
    Open(BankSlot),
    /// Send this C-APDU to the card; report with `on_transmit`.
    Transmit(Vec<u8>),
    /// Reset the card; report with `on_reset`.
    Reset(ResetKind),
    /// Power the card down and give it up.
    Release,
    /// Trace an APDU exchange / an ATR (GSMTAP).
    TraceApdu(BankSlot, Vec<u8>, Vec<u8>),
    TraceAtr(BankSlot, Vec<u8>),
    /// Close the connection.
    Close(&'static str),
}

pub struct Session {
    identity: Identity,
    state: State,
    client: Option<ClientSlot>,
    bank: Option<BankSlot>,
    /// Whether ConnectClientRes went out already.
    answered: bool,
    /// Whether the client was told its card is unavailable (retries that
    /// fail again stay quiet until the card is back).
    reported: bool,
    last_vcc: bool,
    last_rst: bool,
}

impl Session {
    /// `identity`: the bankd's, sent in ConnectClientRes.
    pub fn new(identity: Identity) -> Self {
        Session {
            identity,
            state: State::WaitId,
            client: None,
            bank: None,
            answered: false,
            reported: false,
            last_vcc: true,
            last_rst: false,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn client(&self) -> Option<ClientSlot> {
        self.client
    }

    pub fn bank(&self) -> Option<BankSlot> {
        self.bank
    }

    fn connect_res(&mut self, result: ResultCode, out: &mut Vec<Out>) {
        if !self.answered {
            self.answered = true;
            out.push(Out::Send(RsproPdu::connect_client_res(
                self.identity.clone(),
                result,
            )));
        }
    }

    fn error_ind(&self, e: &CardError) -> Out {
        Out::Send(RsproPdu::error_ind(
            ComponentType::RemsimBankd,
            ErrorSeverity::Major,
            ErrorCode::UnexpectedDisconnect,
            self.bank,
            self.client,
            Some(
                format!("{}: {e}", e.result_code())
                    .chars()
                    .take(rspro::validate::MAX_ERROR_STRING_LEN)
                    .collect(),
            ),
        ))
    }

    pub fn on_pdu(&mut self, pdu: RsproPdu, maps: &MapTable) -> Vec<Out> {
        let mut out = Vec::new();
        match pdu.msg {
            Msg::ConnectClientReq(req) => {
                let slot = match (self.state, req.client_slot) {
                    (State::WaitId, Some(slot)) => slot,
                    _ => {
                        out.push(Out::Send(RsproPdu::connect_client_res(
                            self.identity.clone(),
                            ResultCode::IllegalClientId,
                        )));
                        out.push(Out::Close(
                            "ConnectClientReq without a slot, or a second one",
                        ));
                        return out;
                    }
                };
                self.client = Some(slot);
                match maps.bank_for(slot) {
                    Some(bank) => {
                        self.bank = Some(bank);
                        self.state = State::Mapped;
                        out.push(Out::Open(bank));
                    }
                    None => {
                        // Kept open: completed when the map arrives.
                        self.state = State::WaitMap;
                        self.connect_res(ResultCode::CardNotPresent, &mut out);
                    }
                }
            }
            Msg::TpduModemToCard(t) => match self.state {
                State::MappedCard => {
                    if Some(t.to_bank_slot) != self.bank || Some(t.from_client_slot) != self.client
                    {
                        out.push(Out::Close("TPDU for another slot"));
                    } else if !TPDU_LEN.contains(&t.data.len()) {
                        tracing::warn!(client = %rspro::pdu::shown(self.client), len = t.data.len(), "TPDU length outside 5..260; answered 6700");
                        out.push(Out::Send(RsproPdu::tpdu_card_to_modem(
                            t.to_bank_slot,
                            t.from_client_slot,
                            vec![0x67, 0x00],
                        )));
                    } else {
                        out.push(Out::Transmit(t.data.to_vec()));
                    }
                }
                State::Mapped | State::WaitMap => {
                    out.push(self.error_ind(&CardError::NotPresent(
                        "no card open for this client".into(),
                    )));
                }
                State::WaitId | State::Unmapped => {
                    out.push(Out::Close("TPDU before identification"))
                }
            },
            Msg::ClientSlotStatusInd(ind) => {
                let s = ind.slot_phys_status;
                let cold = s.vcc_present == Some(false) && self.last_vcc;
                let warm = !cold && s.reset_active && !self.last_rst;
                if let Some(vcc) = s.vcc_present {
                    self.last_vcc = vcc;
                }
                self.last_rst = s.reset_active;
                if self.state == State::MappedCard && (cold || warm) {
                    out.push(Out::Reset(if cold {
                        ResetKind::Cold
                    } else {
                        ResetKind::Warm
                    }));
                }
            }
            Msg::SetAtrRes(_) => {}
            other => tracing::debug!(msg = other.asn_name(), "ignored on a client connection"),
        }
        out
    }

    /// The map table changed.
    pub fn on_maps(&mut self, maps: &MapTable) -> Vec<Out> {
        let mut out = Vec::new();
        let Some(client) = self.client else {
            return out;
        };
        let now = maps.bank_for(client);
        match self.state {
            State::WaitMap => {
                if let Some(bank) = now {
                    self.bank = Some(bank);
                    self.state = State::Mapped;
                    out.push(Out::Open(bank));
                }
            }
            State::Mapped | State::MappedCard if now != self.bank => {
                // As the C bankd: the card is released and the client dropped
                // without a PDU; the server tells the client separately.
                if self.state == State::MappedCard {
                    out.push(Out::Release);
                }
                self.state = State::Unmapped;
                out.push(Out::Close("slot map removed"));
            }
            _ => {}
        }
        out
    }

    /// Periodic retry while mapped without a card.
    pub fn on_retry(&mut self) -> Vec<Out> {
        match (self.state, self.bank) {
            (State::Mapped, Some(bank)) => vec![Out::Open(bank)],
            _ => Vec::new(),
        }
    }

    pub fn on_open(&mut self, result: Result<Vec<u8>, CardError>) -> Vec<Out> {
        let mut out = Vec::new();
        if self.state != State::Mapped {
            // The map went away while opening.
            if result.is_ok() {
                out.push(Out::Release);
            }
            return out;
        }
        let (Some(client), Some(bank)) = (self.client, self.bank) else {
            return out;
        };
        match result {
            Ok(atr) => {
                self.state = State::MappedCard;
                self.reported = false;
                self.connect_res(ResultCode::Ok, &mut out);
                out.push(Out::Send(RsproPdu::set_atr_req(client, atr.clone())));
                out.push(Out::TraceAtr(bank, atr));
            }
            Err(e) => {
                tracing::info!(%client, %bank, error = %e, "card not available");
                if !self.answered {
                    self.connect_res(e.result_code(), &mut out);
                } else if !self.reported {
                    out.push(self.error_ind(&e));
                }
                self.reported = true;
            }
        }
        out
    }

    pub fn on_transmit(&mut self, apdu: Vec<u8>, result: Result<Vec<u8>, CardError>) -> Vec<Out> {
        let mut out = Vec::new();
        let (Some(client), Some(bank)) = (self.client, self.bank) else {
            return out;
        };
        match result {
            Ok(response) => {
                out.push(Out::Send(RsproPdu::tpdu_card_to_modem(
                    bank,
                    client,
                    response.clone(),
                )));
                out.push(Out::TraceApdu(bank, apdu, response));
            }
            Err(e) => self.card_lost(&e, &mut out),
        }
        out
    }

    pub fn on_reset(&mut self, result: Result<Vec<u8>, CardError>) -> Vec<Out> {
        let mut out = Vec::new();
        let (Some(client), Some(bank)) = (self.client, self.bank) else {
            return out;
        };
        match result {
            Ok(atr) => {
                out.push(Out::Send(RsproPdu::set_atr_req(client, atr.clone())));
                out.push(Out::TraceAtr(bank, atr));
            }
            Err(e) => self.card_lost(&e, &mut out),
        }
        out
    }

    /// The card failed: tell the client, give the card up, retry later.
    fn card_lost(&mut self, e: &CardError, out: &mut Vec<Out>) {
        tracing::warn!(client = %rspro::pdu::shown(self.client), bank = %rspro::pdu::shown(self.bank), error = %e, "card failed");
        out.push(self.error_ind(e));
        self.reported = true;
        out.push(Out::Release);
        if self.state == State::MappedCard {
            self.state = State::Mapped;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rspro::SlotPhysStatus;

    fn identity() -> Identity {
        Identity::new(ComponentType::RemsimBankd, "b", "remsim-bankd", "test")
    }

    fn connect(slot: ClientSlot) -> RsproPdu {
        let id = Identity::new(ComponentType::RemsimClient, "c", "remsim-client", "test");
        RsproPdu::connect_client_req(id, Some(slot))
    }

    fn mapped(bank: BankSlot, client: ClientSlot) -> MapTable {
        let mut t = MapTable::default();
        t.create(bank.bank_id, 8, bank, client);
        t
    }

    fn names(out: &[Out]) -> Vec<String> {
        out.iter()
            .map(|o| match o {
                Out::Send(p) => p.msg.asn_name().to_string(),
                other => format!("{other:?}")
                    .split('(')
                    .next()
                    .unwrap_or("")
                    .to_string(),
            })
            .collect()
    }

    const B: BankSlot = BankSlot {
        bank_id: 1,
        slot_nr: 0,
    };
    const C: ClientSlot = ClientSlot {
        client_id: 23,
        slot_nr: 0,
    };

    #[test]
    fn late_map_completes_with_set_atr() {
        let mut s = Session::new(identity());
        let out = s.on_pdu(connect(C), &MapTable::default());
        assert_eq!(names(&out), vec!["connectClientRes"]);
        let Out::Send(res) = &out[0] else { panic!() };
        assert_eq!(res.msg.result(), Some(ResultCode::CardNotPresent));
        assert_eq!(s.state(), State::WaitMap);
        assert_eq!(s.on_maps(&mapped(B, C)), vec![Out::Open(B)]);
        let out = s.on_open(Ok(vec![0x3B, 0x00]));
        assert_eq!(names(&out), vec!["setAtrReq", "TraceAtr"]);
        assert_eq!(s.state(), State::MappedCard);
    }

    #[test]
    fn resets_follow_vcc_and_rst_edges_per_client() {
        let mut s = Session::new(identity());
        s.on_pdu(connect(C), &mapped(B, C));
        s.on_open(Ok(vec![0x3B]));
        let ind = |rst, vcc| {
            RsproPdu::client_slot_status_ind(C, B, SlotPhysStatus::new(rst, vcc, vcc, true))
        };
        assert_eq!(s.on_pdu(ind(false, true), &mapped(B, C)), vec![]);
        assert_eq!(
            s.on_pdu(ind(true, false), &mapped(B, C)),
            vec![Out::Reset(ResetKind::Cold)]
        );
        assert_eq!(s.on_pdu(ind(false, true), &mapped(B, C)), vec![]);
        assert_eq!(
            s.on_pdu(ind(true, true), &mapped(B, C)),
            vec![Out::Reset(ResetKind::Warm)]
        );
        assert_eq!(s.on_pdu(ind(true, true), &mapped(B, C)), vec![], "no edge");
        assert_eq!(
            names(&s.on_reset(Ok(vec![0x3B, 0x01]))),
            vec!["setAtrReq", "TraceAtr"]
        );
    }

    #[test]
    fn card_errors_are_reported_and_retried() {
        let mut s = Session::new(identity());
        s.on_pdu(connect(C), &mapped(B, C));
        let out = s.on_open(Err(CardError::Unresponsive("mute".into())));
        let Out::Send(res) = &out[0] else { panic!() };
        assert_eq!(res.msg.result(), Some(ResultCode::CardUnresponsive));
        assert_eq!(s.on_retry(), vec![Out::Open(B)]);
        s.on_open(Ok(vec![0x3B]));
        let out = s.on_transmit(vec![0; 5], Err(CardError::NotPresent("removed".into())));
        assert_eq!(names(&out), vec!["errorInd", "Release"]);
        assert_eq!(s.state(), State::Mapped);
        assert_eq!(s.on_retry(), vec![Out::Open(B)]);
        assert!(
            s.on_open(Err(CardError::NotPresent("still gone".into())))
                .is_empty(),
            "reported once"
        );
        assert_eq!(
            names(&s.on_open(Ok(vec![0x3B]))),
            vec!["setAtrReq", "TraceAtr"]
        );
    }

    #[test]
    fn bad_tpdus_and_unmapping() {
        let mut s = Session::new(identity());
        s.on_pdu(connect(C), &mapped(B, C));
        s.on_open(Ok(vec![0x3B]));
        let short = RsproPdu::tpdu_modem_to_card(C, B, vec![0xA0, 0xA4]);
        let out = s.on_pdu(short, &mapped(B, C));
        let Out::Send(p) = &out[0] else { panic!() };
        let Msg::TpduCardToModem(t) = &p.msg else {
            panic!()
        };
        assert_eq!(&t.data[..], &[0x67, 0x00]);
        let elsewhere = RsproPdu::tpdu_modem_to_card(C, BankSlot::new(1, 5), vec![0; 5]);
        assert!(matches!(
            s.on_pdu(elsewhere, &mapped(B, C)).last(),
            Some(Out::Close(_))
        ));
        let mut s = Session::new(identity());
        s.on_pdu(connect(C), &mapped(B, C));
        s.on_open(Ok(vec![0x3B]));
        let out = s.on_maps(&MapTable::default());
        assert_eq!(out, vec![Out::Release, Out::Close("slot map removed")]);
    }

    #[test]
    fn other_clients_map_changes_leave_a_session_alone() {
        let mut s = Session::new(identity());
        assert_eq!((s.client(), s.bank()), (None, None));
        s.on_pdu(connect(C), &mapped(B, C));
        assert_eq!((s.client(), s.bank()), (Some(C), Some(B)));
        s.on_open(Ok(vec![0x3B]));
        // Another client is mapped to another slot: nothing changes here.
        let mut both = mapped(B, C);
        both.create(1, 8, BankSlot::new(1, 1), ClientSlot::new(24, 0));
        assert_eq!(s.on_maps(&both), vec![]);
        assert_eq!(s.state(), State::MappedCard);
        assert_eq!((s.client(), s.bank()), (Some(C), Some(B)));
    }
}
