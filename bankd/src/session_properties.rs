//! Property tests of the client session: random sequences of client PDUs,
//! map changes, retries and card outcomes, driven by a simulated worker
//! that holds at most one card, as `worker.rs` does. After every step: a
//! card is opened only when none is held and released only when held, APDUs
//! reach the card only while it is open and mapped, every answer to the
//! client is for the slots it named, ConnectClientRes goes out once (a
//! refused second ConnectClientReq aside, which closes), SetAtrReq never
//! before a ConnectClientRes that keeps the link, and nothing happens after a close.

use proptest::prelude::*;
use rspro::{
    BankSlot, ClientSlot, ComponentType, Identity, Msg, ResultCode, RsproPdu, SlotPhysStatus,
};

use crate::card::CardError;
use crate::maps::MapTable;
use crate::session::{Out, Session, State};

const BANK: u32 = 1;
const CLIENT: ClientSlot = ClientSlot {
    client_id: 23,
    slot_nr: 0,
};

#[derive(Debug, Clone)]
enum Step {
    Connect(Option<ClientSlot>),
    Tpdu {
        to: u32,
        len: usize,
    },
    Status {
        rst: bool,
        vcc: bool,
    },
    /// The server maps the client to this slot of the bank, or unmaps it.
    Map(Option<u32>),
    Retry,
    /// How the next card operation ends: opened/answered, or this error.
    CardFails(bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => prop::option::weighted(0.9, (20u32..25).prop_map(|c| ClientSlot::new(c, 0)))
            .prop_map(Step::Connect),
        6 => ((0u32..3), prop_oneof![Just(2usize), 5usize..=260, Just(261usize)])
            .prop_map(|(to, len)| Step::Tpdu { to, len }),
        2 => (any::<bool>(), any::<bool>()).prop_map(|(rst, vcc)| Step::Status { rst, vcc }),
        2 => prop::option::weighted(0.7, 0u32..3).prop_map(Step::Map),
        1 => Just(Step::Retry),
        2 => any::<bool>().prop_map(Step::CardFails),
    ]
}

/// The worker around the session, with a card that works or fails on demand.
struct Sim {
    session: Session,
    maps: MapTable,
    card_held: bool,
    card_fails: bool,
    closed: bool,
    connect_res_ok: bool,
    connect_res_count: usize,
    /// The slot the client identified with.
    client: Option<ClientSlot>,
    log: Vec<String>,
}

impl Sim {
    fn new() -> Self {
        Sim {
            session: Session::new(Identity::new(
                ComponentType::RemsimBankd,
                "b",
                "remsim-bankd",
                "test",
            )),
            maps: MapTable::default(),
            card_held: false,
            card_fails: false,
            closed: false,
            connect_res_ok: false,
            connect_res_count: 0,
            client: None,
            log: Vec::new(),
        }
    }

    fn error(&self) -> CardError {
        CardError::Unresponsive("simulated".into())
    }

    /// Carries out the session's outputs, as worker.rs does.
    fn run(&mut self, outs: Vec<Out>) -> Result<(), String> {
        let mut queue: std::collections::VecDeque<Out> = outs.into();
        while let Some(out) = queue.pop_front() {
            if self.closed {
                return Err(format!("{out:?} after the close"));
            }
            self.log.push(format!("{out:?}"));
            match out {
                Out::Send(pdu) => self.check_sent(&pdu)?,
                Out::Close(_) => self.closed = true,
                Out::Open(bank) => {
                    if self.card_held {
                        return Err("Open while a card is held".into());
                    }
                    if Some(bank) != self.client.and_then(|c| self.maps.bank_for(c)) {
                        return Err(format!("Open of {bank}, not the client's mapped slot"));
                    }
                    let result = if self.card_fails {
                        Err(self.error())
                    } else {
                        self.card_held = true;
                        Ok(vec![0x3B, 0x00])
                    };
                    queue.extend(self.session.on_open(result));
                }
                Out::Transmit(apdu) => {
                    if !self.card_held || self.session.state() != State::MappedCard {
                        return Err("Transmit without an open, mapped card".into());
                    }
                    let result = if self.card_fails {
                        Err(self.error())
                    } else {
                        Ok(vec![0x90, 0x00])
                    };
                    queue.extend(self.session.on_transmit(apdu, result));
                }
                Out::Reset(_) => {
                    if !self.card_held {
                        return Err("Reset without a card".into());
                    }
                    let result = if self.card_fails {
                        Err(self.error())
                    } else {
                        Ok(vec![0x3B, 0x01])
                    };
                    queue.extend(self.session.on_reset(result));
                }
                Out::Release => {
                    if !self.card_held {
                        return Err("Release without a card".into());
                    }
                    self.card_held = false;
                }
                Out::TraceApdu(..) | Out::TraceAtr(..) => {}
            }
        }
        Ok(())
    }

    fn check_sent(&mut self, pdu: &RsproPdu) -> Result<(), String> {
        match &pdu.msg {
            Msg::ConnectClientRes(r) => {
                self.connect_res_count += 1;
                if self.connect_res_count > 1 && r.result != ResultCode::IllegalClientId {
                    return Err("a second ConnectClientRes".into());
                }
                // Anything but a refused identity keeps the link: ok, or a
                // card not (yet) usable, completed by SetAtrReq when it is
                // (the C client waits on cardNotPresent, spec §7.27; on
                // other card errors clients reconnect, ours included).
                if r.result != ResultCode::IllegalClientId {
                    self.connect_res_ok = true;
                }
            }
            Msg::SetAtrReq(m) => {
                if !self.connect_res_ok {
                    return Err("SetAtrReq before a ConnectClientRes that keeps the link".into());
                }
                if Some(m.slot) != self.client {
                    return Err(format!("SetAtrReq for {} instead of the client", m.slot));
                }
            }
            Msg::TpduCardToModem(t) => {
                if Some(t.to_client_slot) != self.client {
                    return Err("TPDU answer for another client".into());
                }
            }
            Msg::ErrorInd(_) => {}
            other => return Err(format!("unexpected {}", other.asn_name())),
        }
        Ok(())
    }

    fn step(&mut self, step: &Step) -> Result<(), String> {
        if self.closed {
            return Ok(());
        }
        let outs = match *step {
            Step::Connect(slot) => {
                let id = Identity::new(ComponentType::RemsimClient, "c", "remsim-client", "test");
                if self.client.is_none() {
                    self.client = slot;
                }
                self.session
                    .on_pdu(RsproPdu::connect_client_req(id, slot), &self.maps)
            }
            Step::Tpdu { to, len } => {
                let from = self.client.unwrap_or(CLIENT);
                let pdu =
                    RsproPdu::tpdu_modem_to_card(from, BankSlot::new(BANK, to), vec![0xA0; len]);
                self.session.on_pdu(pdu, &self.maps)
            }
            Step::Status { rst, vcc } => {
                let from = self.client.unwrap_or(CLIENT);
                let status = SlotPhysStatus::new(rst, vcc, vcc, true);
                let pdu = RsproPdu::client_slot_status_ind(from, BankSlot::new(BANK, 0), status);
                self.session.on_pdu(pdu, &self.maps)
            }
            Step::Map(slot) => {
                let mut maps = MapTable::default();
                if let Some(s) = slot {
                    maps.create(BANK, 8, BankSlot::new(BANK, s), CLIENT);
                }
                self.maps = maps;
                self.session.on_maps(&self.maps)
            }
            Step::Retry => self.session.on_retry(),
            Step::CardFails(fails) => {
                self.card_fails = fails;
                Vec::new()
            }
        };
        self.run(outs)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn the_session_keeps_its_card_and_its_client_straight(steps in prop::collection::vec(step(), 1..50)) {
        let mut sim = Sim::new();
        for (i, step) in steps.iter().enumerate() {
            if let Err(e) = sim.step(step) {
                prop_assert!(false, "step {i} {step:?}: {e}\nlog: {:#?}", sim.log);
            }
        }
        // A mapped, identified session with a working card ends with it open.
        if !sim.closed && sim.session.state() == State::MappedCard {
            prop_assert!(sim.card_held, "MappedCard without a card");
        }
    }
}
