//! remsim-bankd with soft SIMs behind it, a simulated server and simulated
//! clients: the C client's exchange, late maps, resets, unmapping, bad
//! input, maps refused as the C bankd refuses them, GSMTAP, and 200
//! clients at once.

mod common;

use std::time::Duration;

use common::*;
use remsim_testing::{c_frame, c_frames};
use rspro::{BankSlot, ClientSlot, Msg, ResultCode, RsproPdu, SlotPhysStatus};
use simcard::CardProfile;
use simcard::card::default_atr;
use simcard::fs::swapped_bcd;

const B0: BankSlot = BankSlot {
    bank_id: 1,
    slot_nr: 0,
};
const C23: ClientSlot = ClientSlot {
    client_id: 23,
    slot_nr: 0,
};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

#[tokio::test]
async fn c_client_gets_the_c_bankd_exchange() {
    let sim = SimServer::new().await;
    let bankd = Bankd::start(
        sim.port,
        &["--backend", "soft", "-n", "8", "-N", "bank-one"],
    )
    .await;
    let (mut server, identity, bank_id, slots) = sim.accept().await;
    assert_eq!(
        (
            identity.name.as_str(),
            identity.software.as_str(),
            bank_id,
            slots
        ),
        ("bank-one", "remsim-bankd", 1, 8)
    );
    assert_eq!(map(&mut server, B0, C23).await, ResultCode::Ok);

    // The C client's own frames: ConnectClientReq (23:0), then SetAtrRes.
    let mut client = Peer::connect(bankd.addr()).await;
    client
        .send_raw(&c_frame("connectClientReq", "client -> bankd"))
        .await;
    let res = client.recv().await;
    assert_eq!((res.version, res.tag), (2, 2342));
    let Msg::ConnectClientRes(r) = res.msg else {
        panic!("{res:?}")
    };
    assert_eq!(
        (r.result, r.identity.name.as_str()),
        (ResultCode::Ok, "bank-one")
    );
    assert_eq!(expect_atr(&mut client, C23).await, default_atr());
    client
        .send_raw(&c_frame("setAtrRes", "client -> bankd"))
        .await;

    // The C client's TPDUs (23:0 -> 1:0), answered by the soft card.
    let tpdus = c_frames("tpduModemToCard", "client -> bankd");
    let mut answers = Vec::new();
    for hex_frame in &tpdus[..4] {
        client.send_raw(&h(hex_frame)).await;
        let pdu = client.recv().await;
        let Msg::TpduCardToModem(t) = pdu.msg else {
            panic!("{pdu:?}")
        };
        assert_eq!(
            (t.from_bank_slot, t.to_client_slot, t.flags),
            (B0, C23, Default::default())
        );
        answers.push(hex::encode(&t.data));
    }
    // SELECT MF (GSM), GET RESPONSE 12, SELECT MF (UICC, no data), READ BINARY with no EF.
    assert_eq!(answers[0], "9f16");
    assert!(
        answers[1].ends_with("9000") && answers[1].len() == 2 * 14,
        "{}",
        answers[1]
    );
    assert_eq!(answers[2], "9000");
    assert_eq!(answers[3], "6986");
    // READ BINARY of EF_ICCID: the card of bank 1 slot 0.
    assert_eq!(
        apdu(&mut client, C23, B0, &h("00a4000c022fe2")).await,
        h("9000")
    );
    let iccid = apdu(&mut client, C23, B0, &h("00b000000a")).await;
    let expected = CardProfile::generated(1024);
    assert_eq!(iccid[..10], swapped_bcd(&expected.iccid, 10)[..]);
    // The C client's ClientSlotStatusInd (RST asserted, VCC off): cold reset, new ATR.
    client
        .send_raw(&c_frame("clientSlotStatusInd", "client -> bankd"))
        .await;
    assert_eq!(expect_atr(&mut client, C23).await, default_atr());
}

#[tokio::test]
async fn late_map_completes_a_waiting_client() {
    let sim = SimServer::new().await;
    let bankd = Bankd::start(sim.port, &["--backend", "soft"]).await;
    let (mut server, ..) = sim.accept().await;
    let (mut client, result) = client(&bankd, C23).await;
    assert_eq!(result, ResultCode::CardNotPresent);
    // The connection stays open and silent until the map: the first PDU
    // after it is the SetAtrReq (anything earlier, or a close, fails here).
    assert_eq!(map(&mut server, B0, C23).await, ResultCode::Ok);
    assert_eq!(expect_atr(&mut client, C23).await, default_atr());
    assert_eq!(
        apdu(&mut client, C23, B0, &h("a0a40000023f00")).await,
        h("9f16")
    );
}

#[tokio::test]
async fn resets_unmapping_and_bad_tpdus() {
    let sim = SimServer::new().await;
    let bankd = Bankd::start(sim.port, &["--backend", "soft"]).await;
    let (mut server, ..) = sim.accept().await;
    map(&mut server, B0, C23).await;
    let (mut client, result) = client(&bankd, C23).await;
    assert_eq!(result, ResultCode::Ok);
    expect_atr(&mut client, C23).await;
    // Warm reset on the RST edge: the new ATR is sent (the C bankd does not).
    let status =
        |rst| RsproPdu::client_slot_status_ind(C23, B0, SlotPhysStatus::new(rst, true, true, true));
    client.send(&status(false)).await;
    client.send(&status(true)).await;
    assert_eq!(expect_atr(&mut client, C23).await, default_atr());
    // A TPDU too short for any command: 6700, and the link stays.
    assert_eq!(apdu(&mut client, C23, B0, &h("a0a4")).await, h("6700"));
    assert_eq!(apdu(&mut client, C23, B0, &[0u8; 261]).await, h("6700"));
    assert_eq!(apdu(&mut client, C23, B0, &[0u8; 60_000]).await, h("6700"));
    assert_eq!(
        apdu(&mut client, C23, B0, &h("a0a40000023f00")).await,
        h("9f16")
    );
    // Unmapped while connected: dropped without a PDU, as the C bankd does.
    assert_eq!(unmap(&mut server, B0, C23).await, ResultCode::Ok);
    client.expect_closed().await;
}

/// A TPDU for a bank slot or from a client slot that is not the
/// connection's: the link is closed, as the C bankd does (spec §5.9);
/// the card is given up and the next connection gets it.
#[tokio::test]
async fn a_tpdu_for_another_slot_closes_the_link() {
    let sim = SimServer::new().await;
    let bankd = Bankd::start(sim.port, &["--backend", "soft", "-n", "4"]).await;
    let (mut server, ..) = sim.accept().await;
    map(&mut server, B0, C23).await;
    for (from, to) in [
        (C23, BankSlot::new(1, 1)),
        (C23, BankSlot::new(1, 1023)),
        (ClientSlot::new(24, 0), B0),
    ] {
        let (mut client, result) = client(&bankd, C23).await;
        assert_eq!(result, ResultCode::Ok);
        expect_atr(&mut client, C23).await;
        client
            .send(&RsproPdu::tpdu_modem_to_card(from, to, h("a0a40000023f00")))
            .await;
        client.expect_closed().await;
    }
}

#[tokio::test]
async fn maps_are_checked_as_the_c_bankd_does() {
    let sim = SimServer::new().await;
    let bankd = Bankd::start(sim.port, &["--backend", "soft", "-n", "4"]).await;
    let (mut server, ..) = sim.accept().await;
    assert_eq!(
        map(&mut server, BankSlot::new(2, 0), C23).await,
        ResultCode::IllegalBankId
    );
    assert_eq!(
        map(&mut server, BankSlot::new(1, 4), C23).await,
        ResultCode::IllegalSlotId
    );
    assert_eq!(
        unmap(&mut server, B0, C23).await,
        ResultCode::UnknownSlotmap
    );
    assert_eq!(map(&mut server, B0, C23).await, ResultCode::Ok);
    let (mut client, _) = client(&bankd, C23).await;
    expect_atr(&mut client, C23).await;
    server.send(&RsproPdu::reset_state_req()).await;
    let Msg::ResetStateRes(r) = server.recv().await.msg else {
        panic!("ResetStateRes")
    };
    assert_eq!(r.result, ResultCode::Ok);
    client.expect_closed().await;
}

/// A client that sends APDUs and never reads the answers: the bankd's send
/// to it gives up after its bound (the keep-alive timeout) and closes it,
/// and another client is served all the while.
#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_and_others_are_served() {
    use tokio::io::AsyncWriteExt;
    let sim = SimServer::new().await;
    let bankd = Bankd::start(
        sim.port,
        &["--backend", "soft", "--keepalive-timeout", "1s"],
    )
    .await;
    let (mut server, ..) = sim.accept().await;
    let c24 = ClientSlot::new(24, 0);
    let b1 = BankSlot::new(1, 1);
    map(&mut server, B0, C23).await;
    map(&mut server, b1, c24).await;
    // A small receive window fills after few answers.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(bankd.addr()).await.expect("connect");
    let (mut reader, result) = identify(remsim_testing::Peer::from_stream(stream), C23).await;
    assert_eq!(result, ResultCode::Ok);
    expect_atr(&mut reader, C23).await;
    let mut flood = reader.into_stream();
    let frame = rspro::ipa::Frame::rspro(&RsproPdu::tpdu_modem_to_card(C23, B0, h("a0f2000016")))
        .expect("encodes");
    let mut bytes = bytes::BytesMut::new();
    tokio_util::codec::Encoder::encode(&mut rspro::ipa::IpaCodec::default(), frame, &mut bytes)
        .expect("frame");
    let batch = bytes.repeat(64);
    let flooder = tokio::spawn(async move {
        // Ends when the bankd closes the connection: the write fails.
        let mut sent = 0u64;
        while flood.write_all(&batch).await.is_ok() {
            sent += 64;
        }
        sent
    });
    let (mut other, result) = client(&bankd, c24).await;
    assert_eq!(result, ResultCode::Ok);
    expect_atr(&mut other, c24).await;
    for _ in 0..20 {
        assert_eq!(
            apdu(&mut other, c24, b1, &h("a0a40000023f00")).await,
            h("9f16")
        );
    }
    let sent = tokio::time::timeout(remsim_testing::GUARD, flooder)
        .await
        .expect("the flooding client is cut off in time")
        .expect("task");
    assert!(sent > 0);
    for _ in 0..20 {
        assert_eq!(
            apdu(&mut other, c24, b1, &h("a0a40000023f00")).await,
            h("9f16")
        );
    }
}

/// SIGTERM: the bankd stops accepting, ends its client sessions (their
/// cards released) and exits 0.
#[tokio::test]
async fn sigterm_ends_client_sessions_and_exits_cleanly() {
    let sim = SimServer::new().await;
    let mut bankd = Bankd::start(sim.port, &["--backend", "soft"]).await;
    let (mut server, ..) = sim.accept().await;
    map(&mut server, B0, C23).await;
    let (mut client, result) = client(&bankd, C23).await;
    assert_eq!(result, ResultCode::Ok);
    assert_eq!(expect_atr(&mut client, C23).await, default_atr());
    let status = tokio::task::spawn_blocking(move || {
        let status = bankd.child.terminate();
        (bankd, status)
    });
    client.expect_closed().await;
    let (bankd, status) = status.await.expect("joined");
    assert!(status.success(), "exit status {status}");
    assert!(
        tokio::net::TcpStream::connect(bankd.addr()).await.is_err(),
        "nothing listens after the exit"
    );
}

#[tokio::test]
async fn silent_clients_are_dropped() {
    let sim = SimServer::new().await;
    let bankd = Bankd::start(
        sim.port,
        &["--backend", "soft", "--identify-timeout", "300ms"],
    )
    .await;
    let _server = sim.accept().await;
    let mut silent = Peer::connect(bankd.addr()).await;
    silent.expect_closed().await;
    // A second ConnectClientReq is refused and the connection closed.
    let (mut c, _) = client(&bankd, C23).await;
    c.send(&RsproPdu::connect_client_req(client_identity(), Some(C23)))
        .await;
    let Msg::ConnectClientRes(r) = c.recv().await.msg else {
        panic!("ConnectClientRes")
    };
    assert_eq!(r.result, ResultCode::IllegalClientId);
    c.expect_closed().await;
}

#[tokio::test]
async fn gsmtap_traces_atrs_and_apdus_with_a_bank_checked_filter() {
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("udp");
    let target = udp.local_addr().expect("addr").to_string();
    let sim = SimServer::new().await;
    let bankd = Bankd::start(sim.port, &["--backend", "soft", "-g", &target, "-G", "1:0"]).await;
    let (mut server, ..) = sim.accept().await;
    map(&mut server, B0, C23).await;
    map(&mut server, BankSlot::new(1, 1), ClientSlot::new(24, 0)).await;
    let (mut c1, _) = client(&bankd, C23).await;
    let atr = expect_atr(&mut c1, C23).await;
    let (mut c2, _) = client(&bankd, ClientSlot::new(24, 0)).await;
    expect_atr(&mut c2, ClientSlot::new(24, 0)).await;
    apdu(
        &mut c2,
        ClientSlot::new(24, 0),
        BankSlot::new(1, 1),
        &h("a0a40000023f00"),
    )
    .await;
    apdu(&mut c1, C23, B0, &h("a0a40000023f00")).await;
    let mut buf = [0u8; 600];
    let mut packets = Vec::new();
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), udp.recv(&mut buf)).await
    {
        packets.push(buf[..n].to_vec());
    }
    // Only slot 1:0: its ATR and its one APDU exchange.
    assert_eq!(packets.len(), 2, "{packets:?}");
    assert_eq!(&packets[0][..4], &[0x02, 0x04, 0x04, 0x00]);
    assert_eq!(packets[0][12], 0x01, "ATR");
    assert_eq!(&packets[0][16..], &atr[..]);
    assert_eq!(packets[1][12], 0x00, "APDU");
    assert_eq!(hex::encode(&packets[1][16..]), "a0a40000023f009f16");
}

#[tokio::test]
async fn two_hundred_clients_at_once() {
    const N: u32 = 200;
    let sim = SimServer::new().await;
    let bankd = Bankd::start(sim.port, &["--backend", "soft", "-n", "200"]).await;
    let (mut server, ..) = sim.accept().await;
    for i in 0..N {
        assert_eq!(
            map(&mut server, BankSlot::new(1, i), ClientSlot::new(i, 0)).await,
            ResultCode::Ok
        );
    }
    let mut tasks = Vec::new();
    let addr = bankd.addr();
    for i in 0..N {
        tasks.push(tokio::spawn(async move {
            let (client_slot, bank) = (ClientSlot::new(i, 0), BankSlot::new(1, i));
            let mut p = Peer::connect(addr).await;
            p.send(&RsproPdu::connect_client_req(
                client_identity(),
                Some(client_slot),
            ))
            .await;
            let Msg::ConnectClientRes(r) = p.recv().await.msg else {
                panic!("ConnectClientRes")
            };
            assert_eq!(r.result, ResultCode::Ok);
            expect_atr(&mut p, client_slot).await;
            assert_eq!(
                apdu(&mut p, client_slot, bank, &h("00a4000c022fe2")).await,
                h("9000")
            );
            let r = apdu(&mut p, client_slot, bank, &h("00b000000a")).await;
            r[..10].to_vec()
        }));
    }
    let mut iccids = std::collections::HashSet::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let iccid = t.await.expect("client task");
        assert_eq!(
            iccid,
            swapped_bcd(&CardProfile::generated(1024 + i as u32).iccid, 10)
        );
        iccids.insert(iccid);
    }
    assert_eq!(iccids.len(), N as usize);
}

/// `GET /metrics` on the bankd's metrics port, as Prometheus scrapes it.
async fn scrape(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("metrics port");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: bankd\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut answer = Vec::new();
    tokio::time::timeout(remsim_testing::GUARD, stream.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    let answer = String::from_utf8(answer).expect("text");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer
}

#[tokio::test]
async fn metrics_count_apdus_per_slot_and_clients() {
    let sim = SimServer::new().await;
    let metrics_port = remsim_testing::free_port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let bankd = Bankd::start(
        sim.port,
        &["--backend", "soft", "--metrics-listen", &listen],
    )
    .await;
    let (mut server, ..) = sim.accept().await;
    assert_eq!(map(&mut server, B0, C23).await, ResultCode::Ok);
    let (mut client, _) = client(&bankd, C23).await;
    expect_atr(&mut client, C23).await;
    for _ in 0..3 {
        assert_eq!(
            apdu(&mut client, C23, B0, &h("a0a40000023f00")).await,
            h("9f16")
        );
    }
    let text = scrape(metrics_port).await;
    for line in [
        "remsim_bankd_apdus_total{slot=\"0\"} 3",
        "remsim_bankd_apdu_seconds_count 3",
        "remsim_bankd_clients_connected 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    // Unmapped: the bankd ends the session (the close is the event); it
    // counts the client out before it closes the socket.
    assert_eq!(unmap(&mut server, B0, C23).await, ResultCode::Ok);
    client.expect_closed().await;
    let text = scrape(metrics_port).await;
    assert!(
        text.lines()
            .any(|l| l == "remsim_bankd_clients_connected 0"),
        "{text}"
    );
}

#[tokio::test]
async fn clients_from_outside_the_allow_list_are_closed_at_accept() {
    let sim = SimServer::new().await;
    let bankd = Bankd::start(
        sim.port,
        &["--backend", "soft", "--rspro-allow", "192.0.2.0/24"],
    )
    .await;
    let mut outsider = Peer::connect(bankd.addr()).await;
    outsider.expect_closed().await;
    let sim = SimServer::new().await;
    let bankd = Bankd::start(
        sim.port,
        &["--backend", "soft", "--rspro-allow", "127.0.0.1"],
    )
    .await;
    let (_client, result) = client(&bankd, C23).await;
    assert_eq!(result, ResultCode::CardNotPresent, "served (no map yet)");
}

/// Hostile clients on the bankd's port: a ConnectClientReq one byte per
/// write is understood; garbage, a zero-length frame and a 65,535-byte
/// frame of junk are closed at once; a client id beyond 1023 is refused; the port
/// serves a proper client afterwards.
#[tokio::test]
async fn hostile_clients_are_understood_refused_or_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sim = SimServer::new().await;
    // No identify deadline to hide behind: each close is the input's doing.
    let bankd = Bankd::start(sim.port, &["--backend", "soft", "--identify-timeout", "1h"]).await;
    let (mut server, ..) = sim.accept().await;
    map(&mut server, B0, C23).await;

    let req = rspro::ipa::Frame::rspro(&RsproPdu::connect_client_req(client_identity(), Some(C23)))
        .expect("frame")
        .to_bytes()
        .expect("bytes");
    let mut stream = tokio::net::TcpStream::connect(bankd.addr())
        .await
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    for byte in req.iter() {
        stream.write_all(&[*byte]).await.expect("a byte");
        tokio::task::yield_now().await;
    }
    let mut bytewise = Peer::from_stream(stream);
    let res = bytewise.recv().await;
    let Msg::ConnectClientRes(r) = res.msg else {
        panic!("{res:?}")
    };
    assert_eq!(r.result, ResultCode::Ok);
    drop(bytewise);

    // The largest frame IPA allows (LEN 65535, spec §1.3), full of junk:
    // undecodable, which closes a bankd worker's connection as in C.
    let mut largest = vec![0xff, 0xff, 0xee, 0x07];
    largest.extend(std::iter::repeat_n(0x30, 65534));
    for bytes in [
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![0x00, 0x00, 0xee],
        vec![0x00, 0x02, 0x42, 0x00, 0x00],
        largest,
    ] {
        let mut stream = tokio::net::TcpStream::connect(bankd.addr())
            .await
            .expect("connect");
        let _ = stream.write_all(&bytes).await;
        let mut sink = [0u8; 4096];
        let closed = tokio::time::timeout(remsim_testing::GUARD, async {
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
        assert!(closed.is_ok(), "closed after {:02x?}", &bytes[..3]);
    }

    let (_, result) = client(&bankd, ClientSlot::new(5000, 0)).await;
    assert_ne!(result, ResultCode::Ok, "client id 5000");
    let (mut proper, result) = client(&bankd, C23).await;
    assert_eq!(result, ResultCode::Ok);
    expect_atr(&mut proper, C23).await;
}

/// 2,000 connections to the client port that never identify: a client is
/// served beside them, and they cost bounded memory (measured). They are
/// closed after --identify-timeout (`silent_clients_are_dropped`).
#[tokio::test]
async fn two_thousand_idle_clients_cost_bounded_memory_and_others_are_served() {
    const IDLE: usize = 2000;
    remsim_daemon::listen::raise_open_files_limit();
    let sim = SimServer::new().await;
    let bankd = Bankd::start(sim.port, &["--backend", "soft", "--identify-timeout", "1h"]).await;
    let (mut server, ..) = sim.accept().await;
    map(&mut server, B0, C23).await;
    let rss_kb = || remsim_testing::rss_kb(bankd.child.0.id());
    let before = rss_kb();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(
            tokio::net::TcpStream::connect(bankd.addr())
                .await
                .expect("connect"),
        );
    }
    // Accepted in order: the client after them is served once they are all
    // accepted and their sessions started.
    let (mut client, result) = client(&bankd, C23).await;
    assert_eq!(result, ResultCode::Ok);
    expect_atr(&mut client, C23).await;
    assert_eq!(
        apdu(&mut client, C23, B0, &h("a0a40000023f00")).await,
        h("9f16")
    );
    let after = rss_kb();
    let per_connection = after.saturating_sub(before) * 1024 / IDLE as u64;
    eprintln!(
        "{IDLE} idle client connections: bankd RSS {before} kB -> {after} kB, {per_connection} bytes each"
    );
    assert!(per_connection < 32 * 1024, "{per_connection} bytes each");
    drop(idle);
}
