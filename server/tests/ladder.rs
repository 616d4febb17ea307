//! The C server's message ladder (conformance vectors, section C): a bankd
//! and a client replay the C suite's own frames, the map is created and
//! deleted over gRPC, and every frame the server sends without an identity
//! in it is byte-identical to the C server's.

mod common;

use common::*;
use remsim_api::v1 as pb;
use remsim_testing::{c_frame, c_frames};
use rspro::ipa::Frame;
use rspro::{ComponentType, Msg, ResultCode};

#[tokio::test]
async fn c_equivalent_ladder() {
    let dir = TempDir::new("ladder");
    let server = Server::start(&dir.path("remsim.db")).await;
    let mut api = server.api().await;

    // bankd: the C bankd's own ConnectBankReq (bank 1, 8 slots).
    let mut bankd = Peer::connect(server.rspro).await;
    assert_eq!(
        bankd.next_frame(GUARD).await,
        Some(Frame::Ccm(rspro::ipa::Ccm::Ping)),
        "PING at accept, as the C server"
    );
    bankd
        .send_raw(&c_frame("connectBankReq", "bankd -> server"))
        .await;
    let res = bankd.recv().await;
    assert_eq!((res.version, res.tag), (2, 0));
    let Msg::ConnectBankRes(r) = res.msg else {
        panic!("{res:?}")
    };
    assert_eq!(
        (r.result, r.identity.component_type),
        (ResultCode::Ok, ComponentType::RemsimServer)
    );
    assert_eq!(r.identity.software, "remsim-server");

    // Map created over gRPC: the C server's CreateMappingReq, byte for byte.
    let map = api
        .create_slotmap(pb::CreateSlotmapRequest::new((1, 0), (23, 0)))
        .await
        .expect("created")
        .into_inner();
    assert_eq!(map.id, 65536);
    assert_eq!(
        bankd.recv_frame_hex().await,
        hex::encode(c_frame("createMappingReq", "server -> bankd"))
    );
    bankd
        .send_raw(&c_frame("createMappingRes", "bankd -> server"))
        .await;
    wait_maps(&mut api, |m| {
        m.len() == 1 && m[0].state() == remsim_api::v1::SlotmapState::Active
    })
    .await;

    // Client: the C client's ConnectClientReq (23:0); ConnectClientRes with
    // tag 2342, then the C server's ConfigClientBankReq (127.0.0.1:9999).
    let mut client = Peer::connect(server.rspro).await;
    client
        .send_raw(&c_frame("connectClientReq", "client -> server"))
        .await;
    let res = client.recv().await;
    assert_eq!((res.version, res.tag), (2, 2342));
    let Msg::ConnectClientRes(r) = res.msg else {
        panic!("{res:?}")
    };
    assert_eq!(r.result, ResultCode::Ok);
    let config = c_frames("configClientBankReq", "server -> client");
    assert_eq!(client.recv_frame_hex().await, config[0]);
    client
        .send_raw(&c_frame("configClientBankRes", "client -> server"))
        .await;

    // Deleted over gRPC: RemoveMappingReq, RemoveMappingRes, then the client
    // hears 0.0.0.0:0, all as in the C ladder.
    api.delete_slotmap(by_bank((1, 0))).await.expect("deleted");
    assert_eq!(
        bankd.recv_frame_hex().await,
        hex::encode(c_frame("removeMappingReq", "server -> bankd"))
    );
    // (That the client hears nothing before the bankd's answer, and that
    // nothing else follows, is asserted exactly in the engine's scenarios.)
    bankd
        .send_raw(&c_frame("removeMappingRes", "bankd -> server"))
        .await;
    assert_eq!(client.recv_frame_hex().await, config[1]);
    assert!(slotmaps(&mut api).await.is_empty());
}
