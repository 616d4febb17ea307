//! Hostile peers on the server's RSPRO port: a byte-by-byte sender, a PING
//! flood from a peer that never reads, garbage and oversized frames, ids
//! beyond the protocol's range, hundreds of half-open senders. Each gets
//! its answer or its close; everyone else is served meanwhile, and the
//! server's memory stays bounded (printed, not asserted).

mod common;

use common::*;
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
