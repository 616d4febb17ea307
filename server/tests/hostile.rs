//! Hostile peers on the server's RSPRO port: a byte-by-byte sender, a PING
//! flood from a peer that never reads, garbage and oversized frames, ids
//! beyond the protocol's range, hundreds of half-open senders. Each gets
//! its answer or its close; everyone else is served meanwhile, and the
//! server's memory stays bounded (printed, not asserted).

mod common;

use common::*;
use remsim_api::v1 as pb;
use rspro::ipa::{Ccm, Frame};
use rspro::{Msg, ResultCode, RsproPdu};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn frame_bytes(frame: Frame) -> Vec<u8> {
    frame.to_bytes().expect("encodes").to_vec()
}

fn connect_bank(bank_id: u32) -> Vec<u8> {
    let pdu = RsproPdu::connect_bank_req(bankd_identity(), bank_id, 8);
    frame_bytes(Frame::rspro(&pdu).expect("frame"))
}

#[tokio::test]
async fn a_byte_by_byte_sender_is_understood() {
    let dir = TempDir::new("bytewise");
    let server = Server::start(&dir.path("t.db")).await;
    let mut stream = TcpStream::connect(server.rspro).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    for byte in connect_bank(3) {
        stream.write_all(&[byte]).await.expect("a byte");
        tokio::task::yield_now().await;
    }
    let mut peer = Peer::from_stream(stream);
    let res = peer.recv().await;
    let Msg::ConnectBankRes(r) = res.msg else {
        panic!("{res:?}")
    };
    assert_eq!(r.result, ResultCode::Ok);
}

#[tokio::test]
async fn garbage_oversized_and_out_of_range_input_is_closed_or_refused() {
    let dir = TempDir::new("garbage");
    // No identify deadline to hide behind: each close is the input's doing.
    let server = Server::start_with(&dir.path("t.db"), &["--identify-timeout", "1h"]).await;
    // Not IPA at all; a zero-length frame; a frame of an unknown protocol.
    for bytes in [
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![0x00, 0x00, 0xee],
        vec![0x00, 0x02, 0x42, 0x00, 0x00],
    ] {
        let mut stream = TcpStream::connect(server.rspro).await.expect("connect");
        let _ = stream.write_all(&bytes).await;
        assert!(
            closed(&mut stream).await,
            "closed after {:02x?}",
            &bytes[..3]
        );
    }
    // The largest frame IPA allows (LEN 65535, spec §1.3), full of junk: the
    // server drops the undecodable PDU and keeps the link, as the C server
    // does; the bankd that sent it identifies afterwards.
    let mut largest = vec![0xff, 0xff, 0xee, 0x07];
    largest.extend(std::iter::repeat_n(0x30, 65534));
    let mut peer = Peer::connect(server.rspro).await;
    peer.send_raw(&largest).await;
    peer.send_raw(&connect_bank(2)).await;
    let res = peer.recv().await;
    let Msg::ConnectBankRes(r) = res.msg else {
        panic!("{res:?}")
    };
    assert_eq!(r.result, ResultCode::Ok, "identified after the junk frame");
    // Ids beyond 0..1023 are refused, not taken.
    let mut peer = Peer::connect(server.rspro).await;
    peer.send_raw(&connect_bank(5000)).await;
    let res = peer.recv().await;
    let Msg::ConnectBankRes(r) = res.msg else {
        panic!("{res:?}")
    };
    assert_ne!(r.result, ResultCode::Ok, "bank id 5000");
    // And the port still serves.
    let _bankd = bankd(&server, 1, 8).await;
}

#[tokio::test]
async fn a_ping_flood_that_never_reads_is_cut_off_and_others_are_served() {
    let dir = TempDir::new("ping-flood");
    let server = Server::start(&dir.path("t.db")).await;
    // A small receive window: the server's PONGs back up quickly.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut flood = socket.connect(server.rspro).await.expect("connect");
    let batch = frame_bytes(Frame::Ccm(Ccm::Ping)).repeat(1024);
    let flooder = tokio::spawn(async move {
        let mut sent = 0u64;
        while flood.write_all(&batch).await.is_ok() {
            sent += 1024;
        }
        sent
    });
    // Served meanwhile.
    let _bankd = bankd(&server, 1, 8).await;
    let mut api = server.api().await;
    api.list_banks(remsim_api::v1::ListBanksRequest {})
        .await
        .expect("the API answers");
    let sent = tokio::time::timeout(GUARD, flooder)
        .await
        .expect("the flood is cut off in time")
        .expect("task");
    assert!(sent > 0);
}

#[tokio::test]
async fn hundreds_of_half_sent_frames_cost_bounded_memory() {
    let dir = TempDir::new("half-frames");
    // Nothing ends these connections during the test but the test.
    let hour = [
        "--identify-timeout",
        "1h",
        "--keepalive-interval",
        "1h",
        "--keepalive-timeout",
        "1h",
    ];
    let server = Server::start_with(&dir.path("t.db"), &hour).await;
    let before = server.rss_kb();
    // 500 connections, each set up by the server (its first PING is the
    // event), then the first half of a ConnectBankReq, then silence.
    let half = connect_bank(9);
    let half = &half[..half.len() / 2];
    let mut held = Vec::new();
    for _ in 0..500 {
        let mut s = server.idle_connection().await;
        s.write_all(half).await.expect("half a frame");
        held.push(s);
    }
    // Served beside them.
    let _bankd = bankd(&server, 1, 8).await;
    let during = server.rss_kb();
    eprintln!(
        "500 half-sent frames: server RSS {before} kB → {during} kB ({} bytes each)",
        (during.saturating_sub(before)) * 1024 / 500
    );
    // Bounded: far below a megabyte per connection (the frame buffer holds
    // at most one frame of 64 kB; these hold 30 bytes).
    assert!(
        during.saturating_sub(before) < 500 * 64,
        "{before} kB → {during} kB"
    );
    drop(held);
}

/// Identifies on a new connection and returns the result (or None: closed
/// without an answer).
async fn identify(server: &Server, pdu: &RsproPdu) -> (Peer, Option<ResultCode>) {
    let mut peer = Peer::connect(server.rspro).await;
    peer.send(pdu).await;
    let result = match peer.next_rspro(GUARD).await {
        None => None,
        Some(der) => match rspro::decode(&der).expect("decodes").pdu {
            rspro::Pdu::Known(p) => match p.msg {
                Msg::ConnectBankRes(r) => Some(r.result),
                Msg::ConnectClientRes(r) => Some(r.result),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        },
    };
    (peer, result)
}

/// Every RSPRO field at its limit and beyond it: what the protocol allows
/// is served, ids beyond it are refused with their result code, a slot
/// count of 2³²−1 allocates nothing per slot (memory measured), a name
/// empty or of 60,000 bytes (the ASN.1 limit is 32, which the C suite does
/// not check either) is kept as sent without harm, and maps to slots the bank does not have are refused.
#[tokio::test]
async fn rspro_fields_at_and_beyond_their_limits() {
    use rspro::{ClientSlot, ComponentType, Identity};
    let dir = TempDir::new("limits");
    let server = Server::start_with(&dir.path("t.db"), &["--identify-timeout", "1h"]).await;
    let mut api = server.api().await;
    let bank = |id, slots, name: &str| {
        RsproPdu::connect_bank_req(
            Identity::new(ComponentType::RemsimBankd, name, "remsim-bankd", "1"),
            id,
            slots,
        )
    };
    let client = |slot: Option<ClientSlot>| {
        RsproPdu::connect_client_req(
            Identity::new(ComponentType::RemsimClient, "c", "remsim-client", "1"),
            slot,
        )
    };

    let (_b1023, r) = identify(&server, &bank(1023, 1023, "b")).await;
    assert_eq!(r, Some(ResultCode::Ok), "bank id 1023");
    let (_, r) = identify(&server, &bank(1024, 8, "b")).await;
    assert_eq!(r, Some(ResultCode::IllegalBankId), "bank id 1024");
    let before = server.rss_kb();
    let (_huge, r) = identify(&server, &bank(1, u32::MAX, "")).await;
    assert_eq!(r, Some(ResultCode::Ok), "2^32-1 slots, an empty name");
    let long = "n".repeat(60_000);
    let (_long, r) = identify(&server, &bank(2, 4, &long)).await;
    assert_eq!(r, Some(ResultCode::Ok), "a 60,000-byte name");
    let after = server.rss_kb();
    eprintln!("2^32-1 slots and a 60 kB name: server RSS {before} kB -> {after} kB");
    assert!(
        after.saturating_sub(before) < 8 * 1024,
        "{before} -> {after} kB"
    );
    let shown = api
        .get_bank(pb::GetBankRequest { bank_id: 2 })
        .await
        .expect("bank 2")
        .into_inner();
    assert_eq!(shown.identity.expect("identity").name.len(), 60_000);
    let status = api
        .create_slotmap(pb::CreateSlotmapRequest::new((2, 4), (23, 0)))
        .await
        .expect_err("bank 2 has 4 slots");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    api.create_slotmap(pb::CreateSlotmapRequest::new((1, 1023), (23, 0)))
        .await
        .expect("the last slot of any bank");

    let (_c, r) = identify(&server, &client(Some(ClientSlot::new(1023, 1023)))).await;
    assert_eq!(r, Some(ResultCode::Ok), "client 1023:1023");
    for slot in [ClientSlot::new(1024, 0), ClientSlot::new(0, 1024)] {
        let (_, r) = identify(&server, &client(Some(slot))).await;
        assert_eq!(r, Some(ResultCode::IllegalClientId), "{slot}");
    }
    // No client slot at all: the C server closes without an answer.
    let (mut none, r) = identify(&server, &client(None)).await;
    assert_eq!(r, None, "closed without an answer");
    none.expect_closed().await;
    assert_eq!(slotmaps(&mut api).await.len(), 1);
}
