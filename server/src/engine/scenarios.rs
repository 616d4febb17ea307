//! The engine's behaviour story by story, in the deterministic world: the
//! C server's bugs fixed (spec §7 items 8-16), refused and unacknowledged
//! maps, remaps, a bankd going and coming back, reset on connect, endpoint
//! overrides, ResetAll, and Watch for a bank that never connects. Each
//! "nothing more is sent" is exact here, not a quiet period on a socket.

use std::net::SocketAddr;

use rspro::{BankSlot, ClientSlot, IpPort, Msg, ResultCode, RsproPdu};

use super::harness::{World, server_identity};
use super::*;

fn b(bank: u32, slot: u32) -> BankSlot {
    BankSlot::new(bank, slot)
}

fn c(client: u32, slot: u32) -> ClientSlot {
    ClientSlot::new(client, slot)
}

fn create(world: &mut World, bank: BankSlot, client: ClientSlot) {
    world
        .api(ApiCommand::CreateSlotmap(bank, client), false)
        .expect("created");
}

fn delete(world: &mut World, bank: BankSlot) {
    world
        .api(ApiCommand::DeleteSlotmap(MapKey::Bank(bank)), false)
        .expect("deleted");
}

/// The requests as (kind, bank slot, client slot).
fn requests(pdus: &[RsproPdu]) -> Vec<(&'static str, Option<BankSlot>, Option<ClientSlot>)> {
    pdus.iter()
        .map(|p| match &p.msg {
            Msg::CreateMappingReq(m) => ("create", Some(m.bank), Some(m.client)),
            Msg::RemoveMappingReq(m) => ("remove", Some(m.bank), Some(m.client)),
            other => (other.asn_name(), None, None),
        })
        .collect()
}

/// A bankd at 10.0.0.1 is sent to clients as 10.0.0.1:9999.
fn bankd_addr(world: &World, bank_id: u32) -> IpPort {
    IpPort::from(world.engine.endpoint(bank_id).expect("bank connected"))
}

#[test]
fn refused_map_shows_its_result_and_is_not_configured() {
    let mut w = World::default();
    let bank = w.connect_bank(1, 8);
    let client = w.connect_client(c(23, 0));
    create(&mut w, b(1, 3), c(23, 0));
    assert_eq!(
        requests(&w.take_requests(bank)),
        [("create", Some(b(1, 3)), Some(c(23, 0)))]
    );
    w.deliver(
        bank,
        RsproPdu::create_mapping_res(ResultCode::IllegalSlotId),
    );
    assert_eq!(
        w.map_state(b(1, 3)),
        Some((MapState::Refused, Some(ResultCode::IllegalSlotId)))
    );
    assert!(w.take_configs(client).is_empty());
    // Unsolicited responses are ignored, not applied to anything.
    w.deliver(bank, RsproPdu::create_mapping_res(ResultCode::Ok));
    w.deliver(bank, RsproPdu::remove_mapping_res(ResultCode::Ok));
    assert_eq!(w.map_state(b(1, 3)).map(|s| s.0), Some(MapState::Refused));
    assert!(w.take_configs(client).is_empty());
    w.check_always().expect("invariants");
}

#[test]
fn unacknowledged_map_can_be_deleted() {
    let mut w = World::default();
    let bank = w.connect_bank(1, 8);
    let client = w.connect_client(c(23, 0));
    create(&mut w, b(1, 0), c(23, 0));
    w.take_requests(bank);
    assert_eq!(
        w.map_state(b(1, 0)).map(|s| s.0),
        Some(MapState::Unacknowledged)
    );
    delete(&mut w, b(1, 0));
    assert_eq!(
        requests(&w.take_requests(bank)),
        [("remove", Some(b(1, 0)), Some(c(23, 0)))]
    );
    assert!(w.maps().is_empty());
    // The late answers arrive in order; the map does not come back.
    w.deliver(bank, RsproPdu::create_mapping_res(ResultCode::Ok));
    w.deliver(bank, RsproPdu::remove_mapping_res(ResultCode::Ok));
    assert!(w.maps().is_empty());
    assert!(w.take_configs(client).is_empty());
    // The slot is free again.
    create(&mut w, b(1, 0), c(23, 0));
}

#[test]
fn delete_and_recreate_keeps_the_client_on_its_new_map() {
    let mut w = World::default();
    let bank = w.connect_bank(1, 8);
    let client = w.connect_client(c(23, 0));
    create(&mut w, b(1, 0), c(23, 0));
    w.bank_answers(bank, 1);
    let addr = bankd_addr(&w, 1);
    assert_eq!(w.take_configs(client), [(b(1, 0), addr.clone())]);
    // Delete and at once re-map the client to another bank slot.
    delete(&mut w, b(1, 0));
    create(&mut w, b(1, 1), c(23, 0));
    // Removal first, then the create (the C server sends creates first).
    let sent = w.take_requests(bank);
    assert_eq!(
        requests(&sent),
        [
            ("remove", Some(b(1, 0)), Some(c(23, 0))),
            ("create", Some(b(1, 1)), Some(c(23, 0)))
        ]
    );
    w.deliver(bank, RsproPdu::remove_mapping_res(ResultCode::Ok));
    w.deliver(bank, RsproPdu::create_mapping_res(ResultCode::Ok));
    // The client's last word is its new map, never 0.0.0.0:0 after it.
    let configs = w.take_configs(client);
    assert_eq!(configs.last(), Some(&(b(1, 1), addr)));
}

#[test]
fn bankd_loss_tells_clients_and_reconnect_resyncs() {
    let mut w = World::default();
    let bank = w.connect_bank(1, 8);
    let client = w.connect_client(c(23, 0));
    create(&mut w, b(1, 0), c(23, 0));
    create(&mut w, b(1, 1), c(24, 0));
    w.settle();
    let addr = bankd_addr(&w, 1);
    assert_eq!(w.take_configs(client), [(b(1, 0), addr.clone())]);
    // The bankd goes: the client is told (the C server says nothing).
    w.disconnect(bank);
    assert_eq!(w.take_configs(client), [(b(1, 0), IpPort::none())]);
    assert!(w.maps().values().all(|m| m.state == MapState::New));
    // A map deleted while the bankd is away is removed at the bankd when
    // it returns, before the rest is pushed.
    delete(&mut w, b(1, 1));
    let bank = w.connect_bank(1, 8);
    assert_eq!(
        requests(&w.take_requests(bank)),
        [
            ("remove", Some(b(1, 1)), Some(c(24, 0))),
            ("create", Some(b(1, 0)), Some(c(23, 0)))
        ]
    );
    w.deliver(
        bank,
        RsproPdu::remove_mapping_res(ResultCode::UnknownSlotmap),
    );
    w.deliver(bank, RsproPdu::create_mapping_res(ResultCode::Ok));
    // The bankd came back from another address: clients are sent there.
    let addr = bankd_addr(&w, 1);
    assert_eq!(w.take_configs(client), [(b(1, 0), addr)]);
    assert_eq!(w.maps().len(), 1);
    assert_eq!(w.map_state(b(1, 0)).map(|s| s.0), Some(MapState::Active));
    assert!(w.stored_removals.is_empty());
}

#[test]
fn reset_banks_on_connect_clears_the_bankd_first() {
    let engine = Engine::new(server_identity(), Duration::from_secs(2), true);
    let mut w = World::new(engine);
    create(&mut w, b(1, 0), c(23, 0));
    create(&mut w, b(1, 1), c(24, 0));
    delete(&mut w, b(1, 1));
    let bank = w.connect_bank(1, 8);
    assert_eq!(
        requests(&w.take_requests(bank)),
        [
            ("resetStateReq", None, None),
            ("create", Some(b(1, 0)), Some(c(23, 0)))
        ]
    );
    w.deliver(bank, RsproPdu::reset_state_res(ResultCode::Ok));
    w.deliver(bank, RsproPdu::create_mapping_res(ResultCode::Ok));
    assert_eq!(w.map_state(b(1, 0)).map(|s| s.0), Some(MapState::Active));
    // The removal was covered by the reset: nothing more is sent.
    assert!(w.take_requests(bank).is_empty());
    assert!(w.stored_removals.is_empty());
}

#[test]
fn bank_endpoint_override_reaches_clients() {
    let mut w = World::default();
    w.connect_bank(1, 8);
    let client = w.connect_client(c(23, 0));
    create(&mut w, b(1, 0), c(23, 0));
    w.settle();
    let default = bankd_addr(&w, 1);
    assert_eq!(w.take_configs(client), [(b(1, 0), default.clone())]);
    let set = |w: &mut World, e: Option<&str>| {
        let endpoint = e.map(|e| e.parse::<SocketAddr>().expect("addr"));
        w.api(ApiCommand::SetBankEndpoint(1, endpoint), false)
    };
    assert_eq!(
        set(&mut w, Some("192.0.2.10:7777")),
        Ok(ApiOutcome::Bank(1))
    );
    let v4: SocketAddr = "192.0.2.10:7777".parse().expect("addr");
    assert_eq!(w.take_configs(client), [(b(1, 0), IpPort::from(v4))]);
    set(&mut w, Some("[2001:db8::5]:9999")).expect("set");
    let v6: SocketAddr = "[2001:db8::5]:9999".parse().expect("addr");
    assert_eq!(w.take_configs(client), [(b(1, 0), IpPort::from(v6))]);
    set(&mut w, None).expect("cleared");
    assert_eq!(w.take_configs(client), [(b(1, 0), default)]);
    // Addresses no client can reach are refused, and change nothing.
    for bad in ["0.0.0.0:9999", "192.0.2.1:0", "255.255.255.255:9999"] {
        assert!(set(&mut w, Some(bad)).is_err(), "{bad}");
    }
    assert!(w.take_configs(client).is_empty());
}

#[test]
fn reset_all_removes_everything_and_tells_clients() {
    let mut w = World::default();
    let bank = w.connect_bank(1, 8);
    let clients: Vec<ConnId> = (0..2).map(|i| w.connect_client(c(40 + i, 0))).collect();
    for i in 0..2 {
        create(&mut w, b(1, i), c(40 + i, 0));
    }
    w.settle();
    for (i, conn) in clients.iter().enumerate() {
        assert_eq!(w.take_configs(*conn).len(), 1, "client {i} configured");
    }
    assert_eq!(
        w.api(ApiCommand::ResetAll, false),
        Ok(ApiOutcome::Deleted(2))
    );
    assert!(w.maps().is_empty());
    assert_eq!(
        requests(&w.take_requests(bank)),
        [
            ("remove", Some(b(1, 0)), Some(c(40, 0))),
            ("remove", Some(b(1, 1)), Some(c(41, 0)))
        ]
    );
    // Clients hear when the bankd confirms, as in the C ladder.
    for conn in &clients {
        assert!(w.take_configs(*conn).is_empty());
    }
    for _ in 0..2 {
        w.deliver(bank, RsproPdu::remove_mapping_res(ResultCode::Ok));
    }
    assert!(
        w.take_requests(bank).is_empty(),
        "nothing else for the bankd"
    );
    for conn in clients {
        let configs = w.take_configs(conn);
        assert_eq!(configs.len(), 1);
        assert!(configs[0].1.is_none(), "unconfigured: {configs:?}");
    }
}

/// A Watch-fed mirror equals List after each change, also for maps of a
/// bank that never connects, and the removal owed to it goes once.
#[test]
fn watch_mirror_equals_list_for_a_bank_that_never_connects() {
    let mut w = World::default();
    for _ in 0..3 {
        create(&mut w, b(7, 1), c(50, 0));
        w.check_always().expect("after create");
        assert_eq!(w.mirror.len(), 1);
        delete(&mut w, b(7, 1));
        w.check_always().expect("after delete");
        assert!(w.mirror.is_empty());
    }
    let bank = w.connect_bank(7, 2);
    assert_eq!(
        requests(&w.take_requests(bank)),
        [("remove", Some(b(7, 1)), Some(c(50, 0)))]
    );
}

#[test]
fn identity_in_use_is_refused_for_a_live_holder_and_closed_later() {
    let mut w = World::default();
    let holder = w.connect_bank(5, 8);
    let dup = w.connect_bank(5, 8);
    // The simulated holder answers its probe at once: the newcomer loses.
    assert_eq!(w.bank_conn(5), Some(holder));
    assert!(
        !w.closed.contains(&dup),
        "closed only after its answer had time"
    );
    w.advance(REJECT_CLOSE_DELAY);
    assert!(w.closed.contains(&dup));
    // With the holder gone, the identity is free.
    w.disconnect(holder);
    let next = w.connect_bank(5, 8);
    assert_eq!(w.bank_conn(5), Some(next));
}

#[test]
fn wrong_component_types_and_missing_slots_are_closed_or_refused() {
    let mut w = World::default();
    let bank_as_client = w.connect_silent();
    let client_id = Identity::new(
        rspro::ComponentType::RemsimClient,
        "c",
        "remsim-client",
        "test",
    );
    w.deliver(
        bank_as_client,
        RsproPdu::connect_bank_req(client_id.clone(), 1, 8),
    );
    assert!(w.closed.contains(&bank_as_client));
    let no_slot = w.connect_silent();
    w.deliver(
        no_slot,
        RsproPdu::connect_client_req(client_id.clone(), None),
    );
    assert!(w.closed.contains(&no_slot));
    let out_of_range = w.connect_client(c(4000, 0));
    assert_eq!(w.client_conn(c(4000, 0)), None, "refused");
    w.advance(REJECT_CLOSE_DELAY);
    assert!(w.closed.contains(&out_of_range));
}

#[test]
fn loaded_state_is_pushed_when_the_bank_connects() {
    let mut w = World::default();
    let endpoint: SocketAddr = "192.0.2.7:7000".parse().expect("addr");
    w.engine.load(
        vec![(b(3, 0), c(30, 0)), (b(3, 1), c(31, 0))],
        vec![(b(3, 2), c(32, 0))],
        vec![(3, Some(endpoint))],
    );
    w.stored_maps = [(b(3, 0), c(30, 0)), (b(3, 1), c(31, 0))].into();
    w.stored_removals = [(b(3, 2), c(32, 0))].into();
    for (bank, _) in w.stored_maps.clone() {
        let m = w
            .engine
            .slotmap(MapKey::Bank(bank))
            .cloned()
            .expect("loaded");
        w.mirror.insert(m.id(), m);
    }
    assert_eq!(w.engine.bank_ids(), [3]);
    let client = w.connect_client(c(30, 0));
    let bank = w.connect_bank(3, 8);
    assert_eq!(
        requests(&w.pending_requests(bank)),
        [
            ("remove", Some(b(3, 2)), Some(c(32, 0))),
            ("create", Some(b(3, 0)), Some(c(30, 0))),
            ("create", Some(b(3, 1)), Some(c(31, 0)))
        ]
    );
    w.settle();
    // The loaded endpoint override is what the client is sent.
    assert_eq!(w.take_configs(client), [(b(3, 0), IpPort::from(endpoint))]);
    assert!(w.stored_removals.is_empty());
    w.check_settled().expect("settled");
}

#[test]
fn banks_and_clients_are_listed_and_found() {
    let mut w = World::default();
    assert!(w.engine.find_bank(1).is_err());
    // Known from a map before it ever connects.
    create(&mut w, b(2, 0), c(20, 0));
    assert_eq!(w.engine.bank_ids(), [2]);
    assert!(w.engine.bank_known(2));
    assert_eq!(w.engine.find_bank(2), Ok(()));
    // Known from its connection, without maps.
    w.connect_bank(4, 8);
    assert_eq!(w.engine.bank_ids(), [2, 4]);
    assert_eq!(w.engine.find_bank(4), Ok(()));
    assert!(!w.engine.bank_known(5));
    assert!(matches!(w.engine.find_bank(5), Err(ApiError::NotFound(_))));
    // Known from an endpoint setting alone.
    w.api(ApiCommand::SetBankEndpoint(6, None), false)
        .expect("set");
    assert_eq!(w.engine.bank_ids(), [2, 4, 6]);
    // Clients: listed while connected, found by slot, gone when they go.
    assert!(matches!(
        w.engine.find_client(c(20, 0)),
        Err(ApiError::NotFound(_))
    ));
    let conn = w.connect_client(c(20, 0));
    w.connect_client(c(21, 1));
    let listed: Vec<ClientSlot> = w.engine.clients().map(|(s, _)| *s).collect();
    assert_eq!(listed, [c(20, 0), c(21, 1)]);
    assert_eq!(w.engine.find_client(c(20, 0)).map(|l| l.conn), Ok(conn));
    w.disconnect(conn);
    assert!(w.engine.client(c(20, 0)).is_none());
    assert_eq!(w.engine.clients().count(), 1);
}

#[test]
fn ids_and_slots_beyond_1023_are_invalid_arguments() {
    let mut w = World::default();
    let invalid = |r: Result<ApiOutcome, String>| r.is_err();
    for (bank, client) in [
        (b(1024, 0), c(1, 0)),
        (b(1, 1024), c(1, 0)),
        (b(1, 0), c(1024, 0)),
        (b(1, 0), c(1, 1024)),
    ] {
        let r = w.engine.plan(ApiCommand::CreateSlotmap(bank, client));
        assert!(
            matches!(r, Err(ApiError::InvalidArgument(_))),
            "{bank} {client}: {r:?}"
        );
    }
    create(&mut w, b(1023, 1023), c(1023, 1023));
    for key in [MapKey::Bank(b(1024, 0)), MapKey::Client(c(0, 1024))] {
        let r = w.engine.plan(ApiCommand::DeleteSlotmap(key));
        assert!(matches!(r, Err(ApiError::InvalidArgument(_))), "{key:?}");
    }
    assert!(matches!(
        w.engine.find_client(c(1024, 0)),
        Err(ApiError::InvalidArgument(_))
    ));
    assert!(invalid(
        w.api(ApiCommand::SetBankEndpoint(1024, None), false)
    ));
    assert!(
        w.api(ApiCommand::SetBankEndpoint(1023, None), false)
            .is_ok()
    );
    // A connected bank's size bounds its slots.
    w.connect_bank(1, 4);
    assert!(matches!(
        w.engine.plan(ApiCommand::CreateSlotmap(b(1, 4), c(5, 0))),
        Err(ApiError::InvalidArgument(_))
    ));
    assert!(
        w.engine
            .plan(ApiCommand::CreateSlotmap(b(1, 3), c(5, 0)))
            .is_ok()
    );
}

#[test]
fn a_holder_that_never_answers_its_probe_costs_the_newcomer_its_place() {
    let mut w = World::default();
    let holder = w.connect_client(c(23, 0));
    w.mute.insert(holder);
    let newcomer = w.connect_client(c(23, 0));
    // Waiting on the verdict: neither refused nor admitted yet.
    assert_eq!(w.client_conn(c(23, 0)), Some(holder));
    assert!(!w.closed.contains(&newcomer));
    // No verdict within the probe window: the newcomer is refused (the
    // holder's link normally ends first, when its PONG does not come).
    w.advance(Duration::from_secs(2));
    w.advance(REJECT_CLOSE_DELAY);
    assert!(w.closed.contains(&newcomer));
    // The holder's link then ends: the next newcomer gets the slot.
    w.disconnect(holder);
    let next = w.connect_client(c(23, 0));
    assert_eq!(w.client_conn(c(23, 0)), Some(next));
}

#[test]
fn watch_hears_delete_req_at_delete_and_deleting_at_the_bankds_answer() {
    let mut w = World::default();
    let bank = w.connect_bank(1, 8);
    create(&mut w, b(1, 0), c(23, 0));
    w.settle();
    w.changes.clear();
    delete(&mut w, b(1, 0));
    let removed = |w: &World| -> Vec<MapState> {
        w.changes
            .iter()
            .filter_map(|ch| match ch {
                Change::SlotmapRemoved(m) => Some(m.state),
                _ => None,
            })
            .collect()
    };
    assert_eq!(removed(&w), [MapState::DeleteReq]);
    w.bank_answers(bank, 1);
    assert_eq!(removed(&w), [MapState::DeleteReq, MapState::Deleting]);
}

/// Identities probed at once: each verdict and each departure concerns
/// only its own identity.
#[test]
fn probe_verdicts_concern_only_their_own_identity() {
    let mut w = World::default();
    let holder_a = w.connect_client(c(23, 0));
    let holder_b = w.connect_client(c(24, 0));
    let holder_c = w.connect_client(c(25, 0));
    w.mute.extend([holder_a, holder_c]);
    let newcomer_a = w.connect_client(c(23, 0));
    let newcomer_c = w.connect_client(c(25, 0));
    // A's holder answers: A's newcomer is refused, C's still waits.
    w.probe_answered(holder_a);
    w.advance(REJECT_CLOSE_DELAY);
    assert!(w.closed.contains(&newcomer_a));
    assert!(!w.closed.contains(&newcomer_c));
    // B's holder goes: nobody waits for B, so C's newcomer keeps waiting.
    w.disconnect(holder_b);
    assert!(
        w.engine
            .client(c(25, 0))
            .is_some_and(|l| l.conn == holder_c)
    );
    assert!(w.engine.client(c(24, 0)).is_none());
    // C's holder goes: C's newcomer takes the slot.
    w.disconnect(holder_c);
    assert!(
        w.engine
            .client(c(25, 0))
            .is_some_and(|l| l.conn == newcomer_c)
    );
    assert!(
        w.engine
            .client(c(23, 0))
            .is_some_and(|l| l.conn == holder_a)
    );
}

#[test]
fn a_refused_map_leaves_without_its_old_result() {
    let mut w = World::default();
    let bank = w.connect_bank(1, 8);
    create(&mut w, b(1, 3), c(23, 0));
    w.take_requests(bank);
    w.deliver(
        bank,
        RsproPdu::create_mapping_res(ResultCode::IllegalSlotId),
    );
    w.changes.clear();
    delete(&mut w, b(1, 3));
    let removed: Vec<&Slotmap> = w
        .changes
        .iter()
        .filter_map(|ch| match ch {
            Change::SlotmapRemoved(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(removed.len(), 1);
    assert_eq!(
        (removed[0].state, removed[0].result),
        (MapState::DeleteReq, None)
    );
}

/// Bank ids, client ids and client slot numbers go up to 1023; beyond,
/// Connect*Res says illegalBankId / illegalClientId and the link closes.
#[test]
fn identities_up_to_1023_are_admitted_and_beyond_refused() {
    let mut w = World::default();
    w.connect_bank(1023, 8);
    assert!(w.bank_conn(1023).is_some());
    let refused = w.connect_bank(1024, 8);
    assert!(w.bank_conn(1024).is_none());
    for slot in [c(1023, 0), c(0, 1023)] {
        w.connect_client(slot);
        assert!(w.client_conn(slot).is_some(), "{slot}");
    }
    let mut refused_clients = Vec::new();
    for slot in [c(1024, 0), c(0, 1024)] {
        refused_clients.push(w.connect_client(slot));
        assert!(w.client_conn(slot).is_none(), "{slot}");
    }
    w.advance(REJECT_CLOSE_DELAY);
    assert!(w.closed.contains(&refused));
    assert!(refused_clients.iter().all(|c| w.closed.contains(c)));
}
