//! Unit tests of single engine transitions; sequences and invariants are
//! in the harness.

use super::*;
use rspro::ComponentType;

fn engine() -> Engine {
    let id = Identity::new(ComponentType::RemsimServer, "srv", "remsim-server", "test");
    Engine::new(id, Duration::from_millis(500), false)
}

fn peer() -> SocketAddr {
    "127.0.0.1:40000".parse().expect("addr")
}

fn bank_req(bank_id: u32) -> RsproPdu {
    let id = Identity::new(ComponentType::RemsimBankd, "b", "remsim-bankd", "test");
    RsproPdu::connect_bank_req(id, bank_id, 8)
}

fn sent(actions: &[Action]) -> Vec<&'static str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(_, p) => Some(p.msg.asn_name()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_bank_owed_many_requests_gets_them_in_a_window() {
    let mut e = engine();
    let n = MAX_OWED as u32 + 44;
    for s in 0..n {
        let (bank, client) = (BankSlot::new(1, s), ClientSlot::new(s, 0));
        e.check_create(bank, client).expect("valid");
        e.create(bank, client);
    }
    // Deleted and mapped again while the bankd is away: a removal and a
    // create owed for each of the first 100 slots.
    for s in 0..100 {
        e.delete(BankSlot::new(1, s));
        e.create(BankSlot::new(1, s), ClientSlot::new(s, 1));
    }
    e.on_accept(1, peer());
    let first = sent(&e.on_pdu(1, bank_req(1)));
    assert_eq!(
        first.len(),
        1 + MAX_OWED,
        "ConnectBankRes and a full window"
    );
    assert_eq!(first[1..101], ["removeMappingReq"; 100]);
    assert!(first[101..].iter().all(|m| *m == "createMappingReq"));
    let mut total = first.len() - 1;
    // Each answer makes room for one more, until all are out.
    loop {
        let owed = e.banks[&1].live.as_ref().expect("live").owed.front();
        let res = match owed {
            None => break,
            Some(Owed::Create(..)) => RsproPdu::create_mapping_res(ResultCode::Ok),
            Some(_) => RsproPdu::remove_mapping_res(ResultCode::Ok),
        };
        let more = sent(&e.on_pdu(1, res)).len();
        assert!(more <= 1, "one answer, at most one more request");
        total += more;
    }
    assert_eq!(total, 100 + n as usize);
    assert!(e.slotmaps().all(|m| m.state == MapState::Active));
}

#[test]
fn identify_timer_closes_only_unidentified_connections() {
    let mut e = engine();
    assert_eq!(
        e.on_accept(1, peer()),
        vec![Action::StartTimer(1, IDENTIFY_TIMEOUT, Timer::Identify)]
    );
    assert_eq!(e.on_timer(1, Timer::Identify), vec![Action::Close(1)]);
    e.on_accept(2, peer());
    e.on_pdu(2, bank_req(1));
    assert!(e.on_timer(2, Timer::Identify).is_empty());
    let mut e = engine().with_identify_timeout(Duration::from_secs(3));
    assert_eq!(
        e.on_accept(1, peer()),
        vec![Action::StartTimer(
            1,
            Duration::from_secs(3),
            Timer::Identify
        )]
    );
}

#[test]
fn unsolicited_and_mismatched_responses_are_ignored() {
    let mut e = engine();
    e.on_accept(1, peer());
    e.on_pdu(1, bank_req(1));
    assert!(
        e.on_pdu(1, RsproPdu::create_mapping_res(ResultCode::Ok))
            .is_empty()
    );
    e.check_create(BankSlot::new(1, 0), ClientSlot::new(2, 0))
        .expect("valid");
    assert_eq!(
        sent(&e.create(BankSlot::new(1, 0), ClientSlot::new(2, 0))),
        vec!["createMappingReq"]
    );
    // A RemoveMappingRes while a create is owed does not consume it.
    assert!(
        e.on_pdu(1, RsproPdu::remove_mapping_res(ResultCode::Ok))
            .is_empty()
    );
    e.on_pdu(1, RsproPdu::create_mapping_res(ResultCode::Ok));
    let map = e.slotmap(MapKey::Bank(BankSlot::new(1, 0))).expect("map");
    assert_eq!(map.state, MapState::Active);
}

#[test]
fn live_holder_wins_after_the_probe() {
    let mut e = engine();
    e.on_accept(1, peer());
    e.on_pdu(1, bank_req(3));
    e.on_accept(2, peer());
    let actions = e.on_pdu(2, bank_req(3));
    assert!(actions.contains(&Action::Probe(1)), "{actions:?}");
    assert!(sent(&actions).is_empty(), "no answer before the verdict");
    let verdict = e.on_probe_alive(1);
    assert_eq!(sent(&verdict), vec!["connectBankRes"]);
    let Some(Action::Send(_, res)) = verdict.first() else {
        panic!("{verdict:?}")
    };
    assert_eq!(res.msg.result(), Some(ResultCode::IdentityInUse));
    assert_eq!(e.on_timer(2, Timer::RejectClose), vec![Action::Close(2)]);
    assert!(
        e.on_timer(2, Timer::ProbeVerdict).is_empty(),
        "decided already"
    );
}

#[test]
fn dead_holder_lets_the_newcomer_in() {
    let mut e = engine();
    e.on_accept(1, peer());
    e.on_pdu(1, bank_req(3));
    e.on_accept(2, peer());
    e.on_pdu(2, bank_req(3));
    let actions = e.on_close(1);
    assert!(sent(&actions).contains(&"connectBankRes"), "{actions:?}");
    assert!(e.on_timer(2, Timer::ProbeVerdict).is_empty());
    assert_eq!(
        e.bank(3).and_then(|b| b.live.as_ref()).map(|l| l.conn),
        Some(2)
    );
}

#[test]
fn state_names_and_ids_are_the_c_servers() {
    let names: Vec<&str> = [
        MapState::New,
        MapState::Unacknowledged,
        MapState::Active,
        MapState::DeleteReq,
        MapState::Deleting,
        MapState::Refused,
    ]
    .iter()
    .map(|s| s.name())
    .collect();
    assert_eq!(
        names,
        [
            "NEW",
            "UNACKNOWLEDGED",
            "ACTIVE",
            "DELETE_REQ",
            "DELETING",
            "REFUSED"
        ]
    );
    let map = |bank, slot| Slotmap {
        bank: BankSlot::new(bank, slot),
        client: ClientSlot::new(0, 0),
        state: MapState::New,
        result: None,
    };
    assert_eq!(map(1, 0).id(), 65536);
    assert_eq!(map(2, 3).id(), 131075);
    assert_eq!(map(1023, 1023).id(), 1023 * 65536 + 1023);
}

/// A batch of creates (one store transaction) answers as the same creates
/// made one after another: later ones that take a bank or client slot an
/// earlier one took are refused, as are those the state refuses.
#[test]
fn creates_planned_together_answer_as_one_after_another() {
    let mut e = engine();
    let (b, c) = (BankSlot::new, ClientSlot::new);
    let plan = e
        .plan(ApiCommand::CreateSlotmap(b(1, 0), c(1, 0)))
        .expect("first map");
    let _ = e.apply(plan);
    let creates = [
        (b(1, 1), c(2, 0)),
        (b(1, 1), c(3, 0)),
        (b(1, 2), c(2, 0)),
        (b(1, 0), c(4, 0)),
        (b(1, 3), c(5, 2000)),
        (b(1, 4), c(6, 0)),
    ];
    let plans = e.plan_creates(&creates);
    let verdicts: Vec<&str> = plans
        .iter()
        .map(|p| match p {
            Ok(_) => "ok",
            Err(ApiError::AlreadyExists(_)) => "exists",
            Err(ApiError::InvalidArgument(_)) => "invalid",
            Err(_) => "other",
        })
        .collect();
    assert_eq!(
        verdicts,
        ["ok", "exists", "exists", "exists", "invalid", "ok"]
    );
    let Err(ApiError::AlreadyExists(why)) = &plans[2] else {
        panic!("{plans:?}");
    };
    assert_eq!(why, "client slot 2:0 is already mapped to bank slot 1:1");
    let mut created = 0;
    for plan in plans.into_iter().flatten() {
        let _ = e.apply(plan);
        created += 1;
    }
    assert_eq!((created, e.slotmaps().count()), (2, 3));
}
