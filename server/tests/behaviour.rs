//! remsim-server against simulated bankds and clients: slot-map states and
//! results, the C server's bugs fixed (spec §7 items 8-16), persistence
//! across kill -9, identity conflicts, endpoints, reset and watch.

mod common;

use std::time::Duration;

use common::*;
use pb::SlotmapState as S;
use remsim_api::v1 as pb;
use rspro::{BankSlot, ClientSlot, IpPort, Msg, ResultCode, RsproPdu};

fn expect_create(pdu: &RsproPdu, bank: (u32, u32), client: (u32, u32)) {
    let Msg::CreateMappingReq(m) = &pdu.msg else {
        panic!("CreateMappingReq expected, got {pdu:?}")
    };
    assert_eq!(
        (m.bank, m.client),
        (
            BankSlot::new(bank.0, bank.1),
            ClientSlot::new(client.0, client.1)
        )
    );
}

fn expect_remove(pdu: &RsproPdu, bank: (u32, u32), client: (u32, u32)) {
    let Msg::RemoveMappingReq(m) = &pdu.msg else {
        panic!("RemoveMappingReq expected, got {pdu:?}")
    };
    assert_eq!(
        (m.bank, m.client),
        (
            BankSlot::new(bank.0, bank.1),
            ClientSlot::new(client.0, client.1)
        )
    );
}

/// The bank slot and address of a ConfigClientBankReq.
fn config(pdu: &RsproPdu) -> (BankSlot, IpPort) {
    let Msg::ConfigClientBankReq(m) = &pdu.msg else {
        panic!("ConfigClientBankReq expected, got {pdu:?}")
    };
    (m.bank_slot, m.bankd.clone())
}

fn addr(s: &str) -> IpPort {
    IpPort::from(s.parse::<std::net::SocketAddr>().expect("addr"))
}

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn refused_map_shows_its_result_and_is_not_configured() {
    let dir = TempDir::new("refused");
    let server = Server::start(&dir.path("db")).await;
    let mut api = server.api().await;
    let mut bank = bankd(&server, 1, 8).await;
    let mut cl = client(&server, ClientSlot::new(23, 0)).await;
    api.create_slotmap(pb::CreateSlotmapRequest::new((1, 3), (23, 0)))
        .await
        .expect("created");
    expect_create(&bank.recv().await, (1, 3), (23, 0));
    bank.send(&RsproPdu::create_mapping_res(ResultCode::IllegalSlotId))
        .await;
    let maps = wait_maps(&mut api, |m| {
        m.first().is_some_and(|m| m.state() == S::Refused)
    })
    .await;
    assert_eq!(maps[0].result, "illegalSlotId");
    cl.expect_quiet(QUIET).await;
    // An unsolicited response is ignored, not applied to anything.
    bank.send(&RsproPdu::create_mapping_res(ResultCode::Ok))
        .await;
    bank.send(&RsproPdu::remove_mapping_res(ResultCode::Ok))
        .await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(slotmaps(&mut api).await[0].state(), S::Refused);
}

#[tokio::test]
async fn unacknowledged_map_can_be_deleted() {
    let dir = TempDir::new("unack");
    let server = Server::start(&dir.path("db")).await;
    let mut api = server.api().await;
    let mut bank = bankd(&server, 1, 8).await;
    let mut cl = client(&server, ClientSlot::new(23, 0)).await;
    api.create_slotmap(pb::CreateSlotmapRequest::new((1, 0), (23, 0)))
        .await
        .expect("created");
    expect_create(&bank.recv().await, (1, 0), (23, 0));
    assert_eq!(slotmaps(&mut api).await[0].state(), S::Unacknowledged);
    api.delete_slotmap(by_bank((1, 0)))
        .await
        .expect("deleted while unacknowledged");
    expect_remove(&bank.recv().await, (1, 0), (23, 0));
    assert!(slotmaps(&mut api).await.is_empty());
    // The late answers arrive in order; the map does not come back.
    bank.send(&RsproPdu::create_mapping_res(ResultCode::Ok))
        .await;
    bank.send(&RsproPdu::remove_mapping_res(ResultCode::Ok))
        .await;
    tokio::time::sleep(QUIET).await;
    assert!(slotmaps(&mut api).await.is_empty());
    cl.expect_quiet(QUIET).await;
    // The slot is free again.
    api.create_slotmap(pb::CreateSlotmapRequest::new((1, 0), (23, 0)))
        .await
        .expect("re-created");
}

#[tokio::test]
async fn delete_and_recreate_keeps_the_client_on_its_new_map() {
    let dir = TempDir::new("race");
    let server = Server::start(&dir.path("db")).await;
    let mut api = server.api().await;
    let mut bank = bankd(&server, 1, 8).await;
    let mut cl = client(&server, ClientSlot::new(23, 0)).await;
    api.create_slotmap(pb::CreateSlotmapRequest::new((1, 0), (23, 0)))
        .await
        .expect("created");
    expect_create(&bank.recv().await, (1, 0), (23, 0));
    bank.send(&RsproPdu::create_mapping_res(ResultCode::Ok))
        .await;
    assert_eq!(
        config(&cl.recv().await),
        (BankSlot::new(1, 0), addr("127.0.0.1:9999"))
    );
    // Delete and at once re-map the client to another bank slot.
    api.delete_slotmap(by_bank((1, 0))).await.expect("deleted");
    api.create_slotmap(pb::CreateSlotmapRequest::new((1, 1), (23, 0)))
        .await
        .expect("re-created");
    // Removal first, then the create (the C server sends creates first).
    expect_remove(&bank.recv().await, (1, 0), (23, 0));
    expect_create(&bank.recv().await, (1, 1), (23, 0));
    bank.send(&RsproPdu::remove_mapping_res(ResultCode::Ok))
        .await;
    bank.send(&RsproPdu::create_mapping_res(ResultCode::Ok))
        .await;
    // The client's last word is its new map, never 0.0.0.0:0 after it.
    let mut last = config(&cl.recv().await);
    while let Some(der) = cl.next_rspro(QUIET).await {
        last = config(
            &rspro::decode(&der)
                .map(|d| match d.pdu {
                    rspro::Pdu::Known(p) => p,
                    _ => panic!(),
                })
                .expect("pdu"),
        );
    }
    assert_eq!(last, (BankSlot::new(1, 1), addr("127.0.0.1:9999")));
}

#[tokio::test]
async fn bankd_loss_tells_clients_and_reconnect_resyncs() {
    let dir = TempDir::new("resync");
    let server = Server::start(&dir.path("db")).await;
    let mut api = server.api().await;
    let mut bank = bankd(&server, 1, 8).await;
    let mut cl = client(&server, ClientSlot::new(23, 0)).await;
    for (b, c) in [((1, 0), (23, 0)), ((1, 1), (24, 0))] {
        api.create_slotmap(pb::CreateSlotmapRequest::new(b, c))
            .await
            .expect("created");
        expect_create(&bank.recv().await, b, c);
        bank.send(&RsproPdu::create_mapping_res(ResultCode::Ok))
            .await;
    }
    assert_eq!(config(&cl.recv().await).0, BankSlot::new(1, 0));
    // bankd goes away: the client is told (the C server says nothing).
    drop(bank);
    assert_eq!(
        config(&cl.recv().await),
        (BankSlot::new(1, 0), IpPort::none())
    );
    wait_maps(&mut api, |m| m.iter().all(|m| m.state() == S::New)).await;
    // A map deleted while the bankd is away...
    api.delete_slotmap(by_bank((1, 1))).await.expect("deleted");
    // ...is removed at the bankd when it returns, before the rest is pushed.
    let mut bank = bankd(&server, 1, 8).await;
    expect_remove(&bank.recv().await, (1, 1), (24, 0));
    expect_create(&bank.recv().await, (1, 0), (23, 0));
    bank.send(&RsproPdu::remove_mapping_res(ResultCode::UnknownSlotmap))
        .await;
    bank.send(&RsproPdu::create_mapping_res(ResultCode::Ok))
        .await;
    assert_eq!(
        config(&cl.recv().await),
        (BankSlot::new(1, 0), addr("127.0.0.1:9999"))
    );
    let maps = wait_maps(&mut api, |m| m.len() == 1 && m[0].state() == S::Active).await;
    assert_eq!(maps[0].id, 65536);
}

#[tokio::test]
async fn maps_survive_kill_9_and_are_pushed_again() {
    let dir = TempDir::new("kill9");
    let db = dir.path("remsim.db");
    let mut server = Server::start(&db).await;
    {
        let mut api = server.api().await;
        for i in 0..3 {
            api.create_slotmap(pb::CreateSlotmapRequest::new((2, i), (30 + i, 0)))
                .await
                .expect("created");
        }
        api.delete_slotmap(by_bank((2, 2))).await.expect("deleted");
    }
    server.kill9();
    let server = Server::start(&db).await;
    let mut api = server.api().await;
    let maps = slotmaps(&mut api).await;
    let ids: Vec<u32> = maps.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![2 << 16, (2 << 16) + 1]);
    assert!(maps.iter().all(|m| m.state() == S::New));
    // The bankd gets the owed removal, then both maps.
    let mut bank = bankd(&server, 2, 4).await;
    expect_remove(&bank.recv().await, (2, 2), (32, 0));
    expect_create(&bank.recv().await, (2, 0), (30, 0));
    expect_create(&bank.recv().await, (2, 1), (31, 0));
}

/// After SIGTERM the database file alone holds every map: the write-ahead
/// log is folded back, so a backup that copies only the file loses nothing.
#[tokio::test]
async fn sigterm_leaves_a_complete_database_file() {
    let dir = TempDir::new("sigterm-db");
    let db = dir.path("remsim.db");
    let mut server = Server::start(&db).await;
    {
        let mut api = server.api().await;
        api.create_slotmap(pb::CreateSlotmapRequest::new((3, 1), (40, 0)))
            .await
            .expect("created");
    }
    assert!(server.terminate().success());
    let wal = std::fs::metadata(dir.path("remsim.db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "the WAL still holds commits after a clean exit");
    let copy = dir.path("copy.db");
    std::fs::copy(&db, &copy).expect("copy of the file alone");
    let server = Server::start(&copy).await;
    let mut api = server.api().await;
    let ids: Vec<u32> = slotmaps(&mut api).await.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![(3 << 16) + 1]);
}

#[tokio::test]
async fn reset_banks_on_connect_clears_the_bankd_first() {
    let dir = TempDir::new("reset-on-connect");
    let server = Server::start_with(&dir.path("db"), &["--reset-banks-on-connect"]).await;
    let mut api = server.api().await;
    api.create_slotmap(pb::CreateSlotmapRequest::new((1, 0), (23, 0)))
        .await
        .expect("created");
    api.create_slotmap(pb::CreateSlotmapRequest::new((1, 1), (24, 0)))
        .await
        .expect("created");
    api.delete_slotmap(by_bank((1, 1))).await.expect("deleted");
    let mut bank = bankd(&server, 1, 8).await;
    let first = bank.recv().await;
    assert!(matches!(first.msg, Msg::ResetStateReq(_)), "{first:?}");
    expect_create(&bank.recv().await, (1, 0), (23, 0));
    bank.send(&RsproPdu::reset_state_res(ResultCode::Ok)).await;
    bank.send(&RsproPdu::create_mapping_res(ResultCode::Ok))
        .await;
    wait_maps(&mut api, |m| m.len() == 1 && m[0].state() == S::Active).await;
    // The removal was covered by the reset: nothing more is sent.
    bank.expect_quiet(QUIET).await;
}

#[tokio::test]
async fn identity_in_use_only_for_a_live_holder() {
    let dir = TempDir::new("identity");
    let server = Server::start(&dir.path("db")).await;
    // A live bankd keeps its bank id: the newcomer is refused and closed.
    let mut holder = bankd(&server, 5, 8).await;
    // The holder reads (and so answers PINGs) in the background.
    let holder = tokio::spawn(async move { while holder.next_rspro(GUARD).await.is_some() {} });
    let mut dup = Peer::connect(server.rspro).await;
    dup.send(&RsproPdu::connect_bank_req(bankd_identity(), 5, 8))
        .await;
    let Msg::ConnectBankRes(r) = dup.recv().await.msg else {
        panic!("ConnectBankRes")
    };
    assert_eq!(r.result, ResultCode::IdentityInUse);
    dup.expect_closed().await;
    holder.abort();
    // A dead client (no PONGs) does not lock its slot: the newcomer gets it
    // once the probe fails (300 ms), long before keep-alive would tell (here
    // after 60 + 30 s, beyond the test's 10 s guard).
    let server = Server::start_with(
        &dir.path("db2"),
        &["--keepalive-interval", "60s", "--keepalive-timeout", "30s"],
    )
    .await;
    let mut dead = client(&server, ClientSlot::new(23, 0)).await;
    dead.answer_pings = false;
    let mut fresh = Peer::connect(server.rspro).await;
    fresh
        .send(&RsproPdu::connect_client_req(
            client_identity(),
            Some(ClientSlot::new(23, 0)),
        ))
        .await;
    let Msg::ConnectClientRes(r) = fresh.recv().await.msg else {
        panic!("ConnectClientRes")
    };
    assert_eq!(r.result, ResultCode::Ok);
    dead.expect_closed().await;
}

#[tokio::test]
async fn wrong_component_types_and_missing_slot_are_closed() {
    let dir = TempDir::new("types");
    let server = Server::start(&dir.path("db")).await;
    let mut p = Peer::connect(server.rspro).await;
    p.send(&RsproPdu::connect_bank_req(client_identity(), 1, 8))
        .await;
    p.expect_closed().await;
    let mut p = Peer::connect(server.rspro).await;
    p.send(&RsproPdu::connect_client_req(client_identity(), None))
        .await;
    p.expect_closed().await;
    let mut p = Peer::connect(server.rspro).await;
    p.send(&RsproPdu::connect_client_req(
        client_identity(),
        Some(ClientSlot::new(4000, 0)),
    ))
    .await;
    let Msg::ConnectClientRes(r) = p.recv().await.msg else {
        panic!("ConnectClientRes")
    };
    assert_eq!(r.result, ResultCode::IllegalClientId);
    // Unknown messages and extensions keep the link; a zero-length frame ends it.
    let mut cl = client(&server, ClientSlot::new(1, 0)).await;
    cl.send_raw(&hex::decode("000dee07300a800102810100a202b500").expect("hex"))
        .await;
    cl.send(&RsproPdu::config_client_bank_res(ResultCode::Ok))
        .await;
    cl.expect_quiet(QUIET).await;
    cl.send_raw(&[0, 0, 0xee]).await;
    cl.expect_closed().await;
}

#[tokio::test]
async fn api_errors_carry_the_right_codes() {
    use tonic::Code;
    let dir = TempDir::new("errors");
    let server = Server::start(&dir.path("db")).await;
    let mut api = server.api().await;
    let _bank = bankd(&server, 1, 4).await;
    let code =
        |r: Result<tonic::Response<pb::Slotmap>, tonic::Status>| r.expect_err("refused").code();
    assert_eq!(
        code(
            api.create_slotmap(pb::CreateSlotmapRequest::new((5000, 0), (1, 0)))
                .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            api.create_slotmap(pb::CreateSlotmapRequest::new((1, 0), (1, 1024)))
                .await
        ),
        Code::InvalidArgument
    );
    let beyond = api
        .create_slotmap(pb::CreateSlotmapRequest::new((1, 4), (1, 0)))
        .await
        .expect_err("slot 4 of 4");
    assert_eq!(beyond.code(), Code::InvalidArgument);
    assert!(
        beyond.message().contains("has 4 slots"),
        "{}",
        beyond.message()
    );
    assert_eq!(
        code(
            api.create_slotmap(pb::CreateSlotmapRequest {
                bank: None,
                client: None
            })
            .await
        ),
        Code::InvalidArgument
    );
    api.create_slotmap(pb::CreateSlotmapRequest::new((1, 0), (1, 0)))
        .await
        .expect("created");
    let dup = api
        .create_slotmap(pb::CreateSlotmapRequest::new((1, 0), (2, 0)))
        .await
        .expect_err("bank slot taken");
    assert_eq!(dup.code(), Code::AlreadyExists);
    assert!(dup.message().contains("1:0"), "{}", dup.message());
    assert_eq!(
        code(
            api.create_slotmap(pb::CreateSlotmapRequest::new((1, 1), (1, 0)))
                .await
        ),
        Code::AlreadyExists
    );
    assert_eq!(
        code(api.delete_slotmap(by_bank((1, 3))).await),
        Code::NotFound
    );
    let get = pb::GetSlotmapRequest {
        key: Some(pb::get_slotmap_request::Key::Client(pb::ClientSlot {
            client_id: 1,
            slot_nr: 0,
        })),
    };
    assert_eq!(
        api.get_slotmap(get).await.expect("found").into_inner().id,
        65536
    );
    assert_eq!(
        api.get_bank(pb::GetBankRequest { bank_id: 77 })
            .await
            .expect_err("unknown")
            .code(),
        Code::NotFound
    );
    let bad = pb::SetBankEndpointRequest {
        bank_id: 1,
        endpoint: "not an address".into(),
    };
    assert_eq!(
        api.set_bank_endpoint(bad).await.expect_err("bad").code(),
        Code::InvalidArgument
    );
    // A map for a bank that never connected is fine: it waits in NEW.
    let later = api
        .create_slotmap(pb::CreateSlotmapRequest::new((9, 0), (9, 0)))
        .await
        .expect("provisioned")
        .into_inner();
    assert_eq!(later.state(), S::New);
}

#[tokio::test]
async fn bank_endpoint_override_reaches_clients() {
    let dir = TempDir::new("endpoint");
    let server = Server::start(&dir.path("db")).await;
    let mut api = server.api().await;
    let mut bank = bankd(&server, 1, 8).await;
    let mut cl = client(&server, ClientSlot::new(23, 0)).await;
    api.create_slotmap(pb::CreateSlotmapRequest::new((1, 0), (23, 0)))
        .await
        .expect("created");
    bank.recv().await;
    bank.send(&RsproPdu::create_mapping_res(ResultCode::Ok))
        .await;
    assert_eq!(config(&cl.recv().await).1, addr("127.0.0.1:9999"));
    let set = |e: &str| pb::SetBankEndpointRequest {
        bank_id: 1,
        endpoint: e.into(),
    };
    let b = api
        .set_bank_endpoint(set("192.0.2.10:7777"))
        .await
        .expect("set")
        .into_inner();
    assert_eq!(
        (b.endpoint.as_str(), b.endpoint_override.as_str()),
        ("192.0.2.10:7777", "192.0.2.10:7777")
    );
    assert_eq!(config(&cl.recv().await).1, addr("192.0.2.10:7777"));
    api.set_bank_endpoint(set("[2001:db8::5]:9999"))
        .await
        .expect("set");
    let (_, v6) = config(&cl.recv().await);
    assert!(matches!(v6.ip, rspro::IpAddress::Ipv6(_)));
    assert_eq!(v6, addr("[2001:db8::5]:9999"));
    api.set_bank_endpoint(set("")).await.expect("cleared");
    assert_eq!(config(&cl.recv().await).1, addr("127.0.0.1:9999"));
}

#[tokio::test]
async fn reset_all_removes_everything_and_tells_clients() {
    let dir = TempDir::new("reset");
    let server = Server::start(&dir.path("db")).await;
    let mut api = server.api().await;
    let mut bank = bankd(&server, 1, 8).await;
    let mut clients = Vec::new();
    for i in 0..2 {
        clients.push(client(&server, ClientSlot::new(40 + i, 0)).await);
        api.create_slotmap(pb::CreateSlotmapRequest::new((1, i), (40 + i, 0)))
            .await
            .expect("created");
        bank.recv().await;
        bank.send(&RsproPdu::create_mapping_res(ResultCode::Ok))
            .await;
        assert_eq!(
            config(&clients[i as usize].recv().await).0,
            BankSlot::new(1, i)
        );
    }
    let deleted = api
        .reset_all(pb::ResetAllRequest {})
        .await
        .expect("reset")
        .into_inner()
        .deleted;
    assert_eq!(deleted, 2);
    for i in 0..2 {
        expect_remove(&bank.recv().await, (1, i), (40 + i, 0));
    }
    for _ in 0..2 {
        bank.send(&RsproPdu::remove_mapping_res(ResultCode::Ok))
            .await;
    }
    for c in &mut clients {
        assert_eq!(config(&c.recv().await).1, IpPort::none());
    }
    assert!(slotmaps(&mut api).await.is_empty());
}

async fn next_event(stream: &mut tonic::Streaming<pb::Event>) -> pb::event::Event {
    tokio::time::timeout(GUARD, stream.message())
        .await
        .expect("event in time")
        .expect("stream")
        .expect("event")
        .event
        .expect("set")
}

#[tokio::test]
async fn watch_streams_a_snapshot_then_changes() {
    use pb::event::Event as E;
    let dir = TempDir::new("watch");
    let server = Server::start(&dir.path("db")).await;
    let mut api = server.api().await;
    api.create_slotmap(pb::CreateSlotmapRequest::new((3, 0), (7, 0)))
        .await
        .expect("created");
    let mut stream = api
        .watch(pb::WatchRequest { snapshot: true })
        .await
        .expect("watch")
        .into_inner();
    assert!(matches!(next_event(&mut stream).await, E::Bank(b) if b.bank_id == 3 && !b.connected));
    assert!(
        matches!(next_event(&mut stream).await, E::Slotmap(m) if m.id == 3 << 16 && m.state() == S::New)
    );
    assert!(matches!(next_event(&mut stream).await, E::SnapshotEnd(_)));
    let mut bank = bankd(&server, 3, 2).await;
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|e| matches!(e, E::Slotmap(m) if m.state() == S::Unacknowledged))
    {
        seen.push(next_event(&mut stream).await);
    }
    assert!(
        seen.iter()
            .any(|e| matches!(e, E::Bank(b) if b.connected && b.number_of_slots == 2)),
        "{seen:?}"
    );
    bank.recv().await;
    bank.send(&RsproPdu::create_mapping_res(ResultCode::Ok))
        .await;
    assert!(matches!(next_event(&mut stream).await, E::Slotmap(m) if m.state() == S::Active));
    // The map leaves List and Watch at once; the bankd's confirmation
    // follows as a second removal (DELETING).
    api.delete_slotmap(by_bank((3, 0))).await.expect("deleted");
    assert!(
        matches!(next_event(&mut stream).await, E::SlotmapRemoved(m) if m.id == 3 << 16 && m.state() == S::DeleteReq)
    );
    assert!(slotmaps(&mut api).await.is_empty());
    bank.recv().await;
    bank.send(&RsproPdu::remove_mapping_res(ResultCode::Ok))
        .await;
    assert!(
        matches!(next_event(&mut stream).await, E::SlotmapRemoved(m) if m.id == 3 << 16 && m.state() == S::Deleting)
    );
}

/// A Watch-fed mirror equals List after each change, also for maps of a
/// bank that never connects (their removals stay owed).
#[tokio::test]
async fn watch_mirror_equals_list_for_a_bank_that_never_connects() {
    use pb::event::Event as E;
    let dir = TempDir::new("mirror");
    let server = Server::start(&dir.path("db")).await;
    let mut api = server.api().await;
    let mut stream = api
        .watch(pb::WatchRequest { snapshot: true })
        .await
        .expect("watch")
        .into_inner();
    assert!(matches!(next_event(&mut stream).await, E::SnapshotEnd(_)));
    let mut mirror = std::collections::BTreeSet::new();
    for round in 0..3 {
        api.create_slotmap(pb::CreateSlotmapRequest::new((7, 1), (50, 0)))
            .await
            .expect("created");
        match next_event(&mut stream).await {
            E::Slotmap(m) => mirror.insert(m.id),
            other => panic!("{other:?}"),
        };
        let listed: std::collections::BTreeSet<u32> =
            slotmaps(&mut api).await.iter().map(|m| m.id).collect();
        assert_eq!(mirror, listed, "round {round}, after create");
        api.delete_slotmap(by_bank((7, 1))).await.expect("deleted");
        match next_event(&mut stream).await {
            E::SlotmapRemoved(m) => mirror.remove(&m.id),
            other => panic!("{other:?}"),
        };
        assert!(slotmaps(&mut api).await.is_empty());
        assert!(mirror.is_empty(), "round {round}, after delete");
    }
    // When the bank comes, the owed removal goes once, not once per round:
    // the next request after it is the create of a new map (removals go
    // before creates, so a second one would come first).
    let mut bank = bankd(&server, 7, 2).await;
    expect_remove(&bank.recv().await, (7, 1), (50, 0));
    bank.send(&RsproPdu::remove_mapping_res(ResultCode::Ok))
        .await;
    api.create_slotmap(pb::CreateSlotmapRequest::new((7, 0), (51, 0)))
        .await
        .expect("created");
    expect_create(&bank.recv().await, (7, 0), (51, 0));
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully() {
    let dir = TempDir::new("sigterm");
    let mut server = Server::start(&dir.path("db")).await;
    let _bank = bankd(&server, 1, 8).await;
    // Kubernetes watches health: it must turn NOT_SERVING before the exit.
    let channel = server.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    use tonic_health::pb::health_check_response::ServingStatus;
    let first = watch.message().await.expect("status").expect("one");
    assert_eq!(first.status, ServingStatus::Serving as i32);
    let mut api = server.api().await;
    let mut events = api
        .watch(pb::WatchRequest { snapshot: false })
        .await
        .expect("watch")
        .into_inner();
    let status = server.terminate();
    assert!(status.success(), "{status}");
    // The event stream was ended by the server (OK trailers), not cut off
    // with the connection when the process went.
    assert!(matches!(events.message().await, Ok(None)));
    let mut seen = Vec::new();
    while let Ok(Ok(Some(m))) = tokio::time::timeout(GUARD, watch.message()).await {
        seen.push(m.status);
    }
    assert_eq!(seen, vec![ServingStatus::NotServing as i32]);
}

#[tokio::test]
async fn reflection_v1_lists_the_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{FileDescriptorResponse, ServerReflectionRequest};

    let dir = TempDir::new("reflection");
    let server = Server::start(&dir.path("db")).await;
    let channel = server.channel().await;
    let mut reflection = ServerReflectionClient::new(channel);
    let ask = |m: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    };
    let requests = tokio_stream::iter([
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol(
            "remsim.v1.RemsimService".into(),
        )),
    ]);
    let mut answers = reflection
        .server_reflection_info(requests)
        .await
        .expect("reflection v1")
        .into_inner();
    let list = answers.message().await.expect("answer").expect("one");
    let Some(MessageResponse::ListServicesResponse(list)) = list.message_response else {
        panic!("{list:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in [
        "remsim.v1.RemsimService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(names.iter().any(|n| n == wanted), "{wanted} in {names:?}");
    }
    let file = answers.message().await.expect("answer").expect("two");
    let Some(MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
        file_descriptor_proto,
    })) = file.message_response
    else {
        panic!("{file:?}")
    };
    assert!(!file_descriptor_proto.is_empty());
}

#[tokio::test]
async fn a_full_bank_gets_all_its_maps_at_once() {
    // 1024 slots (the RSPRO maximum), all mapped before the bankd connects:
    // every CreateMappingReq is pushed in one burst and none may be lost,
    // nor the bankd dropped as a slow reader.
    const SLOTS: u32 = 1024;
    let dir = TempDir::new("fullbank");
    let server = Server::start(&dir.path("db")).await;
    let mut api = server.api().await;
    for slot in 0..SLOTS {
        api.create_slotmap(pb::CreateSlotmapRequest::new((1, slot), (slot, 0)))
            .await
            .expect("created");
    }
    let mut bank = bankd(&server, 1, SLOTS).await;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < SLOTS as usize {
        let pdu = bank.recv().await;
        let Msg::CreateMappingReq(m) = pdu.msg else {
            panic!("CreateMappingReq expected, got {pdu:?}")
        };
        assert_eq!(m.client.client_id, m.bank.slot_nr);
        seen.insert(m.bank.slot_nr);
        bank.send(&RsproPdu::create_mapping_res(ResultCode::Ok))
            .await;
    }
    wait_maps(&mut api, |m| {
        m.len() == SLOTS as usize && m.iter().all(|m| m.state() == S::Active)
    })
    .await;
}

/// 100 management calls on one connection, in a network namespace of the
/// test's own. An answer held back by Nagle until the caller's delayed ACK
/// (no TCP_NODELAY on the accepted socket; about 40 ms each) shows up in the
/// namespace's DelayedACKs counter; without such waits it stays near zero.
/// Counted, not timed.
#[tokio::test]
async fn management_calls_do_not_wait_for_delayed_acks() {
    if !remsim_testing::in_namespace(
        "management_calls_do_not_wait_for_delayed_acks",
        "REMSIM_TEST_NODELAY_INNER",
    ) {
        return;
    }
    let dir = TempDir::new("nodelay");
    let server = Server::start(&dir.path("db")).await;
    let mut api = server.api().await;
    api.list_banks(pb::ListBanksRequest {})
        .await
        .expect("warm-up");
    let before = remsim_testing::delayed_acks();
    for _ in 0..100 {
        api.list_banks(pb::ListBanksRequest {})
            .await
            .expect("answer");
    }
    let delayed = remsim_testing::delayed_acks() - before;
    assert!(
        delayed < 20,
        "{delayed} delayed ACKs in 100 calls: the answers wait for them"
    );
}

/// The C server's options in an existing unit or /etc/default file start
/// ours unchanged.
#[tokio::test]
async fn the_c_servers_debug_and_colour_options_are_accepted() {
    let dir = TempDir::new("c-options");
    let server = Server::start_with(&dir.path("db"), &["-d", "DMAIN:DREST", "-L"]).await;
    let mut api = server.api().await;
    assert!(slotmaps(&mut api).await.is_empty());
}

/// A connection that never identifies is closed after --identify-timeout.
#[tokio::test]
async fn a_peer_that_never_identifies_is_closed() {
    let dir = TempDir::new("identify");
    let server = Server::start_with(&dir.path("db"), &["--identify-timeout", "1s"]).await;
    // It answers PINGs (alive) but never says who it is.
    let mut silent = Peer::connect(server.rspro).await;
    silent.expect_closed().await;
}
