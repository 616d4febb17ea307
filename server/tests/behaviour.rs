//! remsim-server as a process against simulated bankds and clients: what
//! needs the real program (persistence across kill -9 and SIGTERM, probes
//! over real PINGs, raw frames, gRPC codes and streams, reflection, socket
//! options, a full bank through the connection queues). The engine's logic
//! story by story is in `server/src/engine/scenarios.rs`, its invariants
//! in `properties.rs`, both without sockets.

mod common;

use common::*;
use pb::SlotmapState as S;
use remsim_api::v1 as pb;
use rspro::{BankSlot, ClientSlot, Msg, ResultCode, RsproPdu};

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

/// CreateSlotmaps: all maps in one request, stored across a kill -9 and
/// pushed to the bankd; a request with one refused map creates none and
/// names that map.
#[tokio::test]
async fn bulk_creates_are_all_or_nothing() {
    let dir = TempDir::new("bulk");
    let db = dir.path("remsim.db");
    let mut server = Server::start(&db).await;
    {
        let mut api = server.api().await;
        let slotmaps = (0..3)
            .map(|i| pb::CreateSlotmapRequest::new((4, i), (50 + i, 0)))
            .collect();
        let created = api
            .create_slotmaps(pb::CreateSlotmapsRequest { slotmaps })
            .await
            .expect("created")
            .into_inner()
            .slotmaps;
        let ids: Vec<u32> = created.iter().map(|m| m.id).collect();
        assert_eq!(ids, [4 << 16, (4 << 16) + 1, (4 << 16) + 2]);
        // Map 1 takes client 60:0 too, map 2 a bank slot already mapped.
        let slotmaps = vec![
            pb::CreateSlotmapRequest::new((4, 5), (60, 0)),
            pb::CreateSlotmapRequest::new((4, 6), (60, 0)),
            pb::CreateSlotmapRequest::new((4, 0), (61, 0)),
        ];
        let refused = api
            .create_slotmaps(pb::CreateSlotmapsRequest { slotmaps })
            .await
            .expect_err("a client slot twice");
        assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");
        assert!(
            refused.message().starts_with("map 1: client slot 60:0"),
            "{refused:?}"
        );
    }
    server.kill9();
    let server = Server::start(&db).await;
    let mut api = server.api().await;
    assert_eq!(
        slotmaps(&mut api).await.len(),
        3,
        "the refused request left nothing"
    );
    let mut bank = bankd(&server, 4, 8).await;
    for i in 0..3 {
        expect_create(&bank.recv().await, (4, i), (50 + i, 0));
    }
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
    // Unknown messages and extensions keep the link (a PING after them is
    // answered, on the same link); a zero-length frame ends it.
    let mut cl = client(&server, ClientSlot::new(1, 0)).await;
    cl.send_raw(&hex::decode("000dee07300a800102810100a202b500").expect("hex"))
        .await;
    cl.send(&RsproPdu::config_client_bank_res(ResultCode::Ok))
        .await;
    cl.send_frame(rspro::ipa::Frame::Ccm(rspro::ipa::Ccm::Ping))
        .await;
    cl.expect_pong().await;
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

#[tokio::test]
async fn sigterm_shuts_down_gracefully() {
    let dir = TempDir::new("sigterm");
    // Slow keep-alive: the silent bankd below must not time out before the
    // SIGTERM, however slow a loaded machine runs this test.
    let slow = ["--keepalive-interval", "60s", "--keepalive-timeout", "30s"];
    let mut server = Server::start_with(&dir.path("db"), &slow).await;
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
    // with the connection when the process went. Events from the shutdown
    // itself (the bankd's connection closing) may come first.
    let mut end = events.message().await;
    while let Ok(Some(_)) = end {
        end = events.message().await;
    }
    assert!(
        matches!(end, Ok(None)),
        "{end:?}; server log:\n{}",
        std::fs::read_to_string(dir.path("db").with_extension("log")).unwrap_or_default()
    );
    let mut seen = Vec::new();
    while let Ok(Ok(Some(m))) = tokio::time::timeout(GUARD, watch.message()).await {
        seen.push(m.status);
    }
    assert_eq!(seen, vec![ServingStatus::NotServing as i32]);
}

/// A server stopping on SIGTERM (an upgrade, a rolling restart) leaves its
/// clients configured: whatever order its connections close in, no client
/// hears that its bankd is gone, so no modem loses its card.
#[tokio::test]
async fn sigterm_leaves_clients_with_their_bankd() {
    let dir = TempDir::new("sigterm-clients");
    let mut server = Server::start(&dir.path("db")).await;
    let mut bank = bankd(&server, 1, 8).await;
    let mut clients = Vec::new();
    for id in 0..4 {
        clients.push(client(&server, ClientSlot::new(60 + id, 0)).await);
    }
    let mut api = server.api().await;
    for id in 0..4 {
        api.create_slotmap(pb::CreateSlotmapRequest::new((1, id), (60 + id, 0)))
            .await
            .expect("created");
        let pdu = bank.recv().await;
        assert!(matches!(pdu.msg, Msg::CreateMappingReq(_)), "{pdu:?}");
        bank.send(&RsproPdu::create_mapping_res(ResultCode::Ok))
            .await;
    }
    for c in &mut clients {
        let pdu = c.recv().await;
        let Msg::ConfigClientBankReq(m) = pdu.msg else {
            panic!("ConfigClientBankReq expected, got {pdu:?}")
        };
        assert_ne!(m.bankd.port, 0, "{m:?}");
    }
    assert!(server.terminate().success());
    for c in &mut clients {
        // Everything the client got until its connection closed.
        while let Some(der) = c.next_rspro(GUARD).await {
            let decoded = rspro::decode(&der).expect("decodes");
            if let rspro::Pdu::Known(p) = decoded.pdu {
                assert!(
                    !matches!(p.msg, Msg::ConfigClientBankReq(_)),
                    "a client was reconfigured while the server stopped: {p:?}"
                );
            }
        }
    }
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
