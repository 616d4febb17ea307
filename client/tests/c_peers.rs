//! Our client against the C suite's own frames: a fake server and a fake
//! bankd replay what the C server and C bankd sent in the reference
//! session, and the client must answer with the C client's frames.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use remsim_testing::{GUARD, Peer, c_frame, c_frames};
use rspro::ipa::Frame;
use rspro::{ComponentType, IpPort, Msg, Pdu, RsproPdu};
use tokio::net::TcpListener;

fn pdu_of(frame_bytes: &[u8]) -> RsproPdu {
    match rspro::decode(&frame_bytes[4..]).expect("decodes").pdu {
        Pdu::Known(p) => p,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn c_server_and_c_bankd_see_the_c_client_exchange() {
    let server_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let bankd_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server_port = server_listener.local_addr().expect("addr").port();
    let bankd_port = bankd_listener.local_addr().expect("addr").port();
    let mut client = Command::new(env!("CARGO_BIN_EXE_remsim-client"))
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &server_port.to_string(),
            "-c",
            "23",
            "-n",
            "0",
            "shell",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("client starts");
    let mut stdin = client.stdin.take().expect("stdin");
    let stdout = client.stdout.take().expect("stdout");
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = line_tx.send(line);
        }
    });
    let next_line = || line_rx.recv_timeout(GUARD).expect("a line from the client");

    // As the C server: PING at accept, then the C server's answers.
    let (stream, _) = tokio::time::timeout(GUARD, server_listener.accept())
        .await
        .expect("client connects")
        .expect("accept");
    let mut server = Peer::from_stream(stream);
    server.send_frame(Frame::Ccm(rspro::ipa::Ccm::Ping)).await;
    let req = server.recv().await;
    let c_req = pdu_of(&c_frame("connectClientReq", "client -> server"));
    let (Msg::ConnectClientReq(ours), Msg::ConnectClientReq(theirs)) = (&req.msg, &c_req.msg)
    else {
        panic!("{req:?}")
    };
    assert_eq!((req.version, req.tag), (c_req.version, c_req.tag));
    assert_eq!(ours.client_slot, theirs.client_slot);
    assert_eq!(
        (
            ours.identity.component_type,
            ours.identity.software.as_str()
        ),
        (ComponentType::RemsimClient, "remsim-client")
    );
    server
        .send_raw(&c_frame("connectClientRes", "server -> client"))
        .await;
    // The C server's ConfigClientBankReq, pointed at our fake bankd's port.
    let mut config = pdu_of(&c_frame("configClientBankReq", "server -> client"));
    if let Msg::ConfigClientBankReq(m) = &mut config.msg {
        m.bankd = IpPort::from(std::net::SocketAddr::from(([127, 0, 0, 1], bankd_port)));
    }
    server.send(&config).await;
    assert_eq!(
        server.recv_frame_hex().await,
        hex::encode(c_frame("configClientBankRes", "client -> server"))
    );

    // As the C bankd.
    let (stream, _) = tokio::time::timeout(GUARD, bankd_listener.accept())
        .await
        .expect("client connects")
        .expect("accept");
    let mut bankd = Peer::from_stream(stream);
    let req = bankd.recv().await;
    let Msg::ConnectClientReq(m) = &req.msg else {
        panic!("{req:?}")
    };
    assert_eq!(m.client_slot, Some(rspro::ClientSlot::new(23, 0)));
    bankd
        .send_raw(&c_frame("connectClientRes", "bankd -> client"))
        .await;
    assert_eq!(
        next_line(),
        "SET_ATR: 3b 00 ",
        "the local ATR once the bankd is connected"
    );
    bankd
        .send_raw(&c_frame("setAtrReq", "bankd -> client"))
        .await;
    assert_eq!(
        bankd.recv_frame_hex().await,
        hex::encode(c_frame("setAtrRes", "client -> bankd"))
    );
    let atr = next_line();
    assert_eq!(
        atr,
        "SET_ATR: 3b 9f 96 80 1f c7 80 31 a0 73 be 21 13 67 43 20 07 18 00 00 01 a5 "
    );

    // The modem's APDU reaches the bankd as the C client's TpduModemToCard.
    writeln!(stdin, "a0a40000023f00").expect("stdin");
    stdin.flush().expect("flush");
    assert_eq!(
        bankd.recv_frame_hex().await,
        c_frames("tpduModemToCard", "client -> bankd").remove(0)
    );
    bankd
        .send_raw(&c_frame("tpduCardToModem", "bankd -> client"))
        .await;
    assert_eq!(next_line(), "R-APDU: 61 0c ");
    // RESET: the C client's ClientSlotStatusInd (power off), then power on,
    // so that every RESET, not only the first, is an edge the bankd acts on.
    let off = c_frame("clientSlotStatusInd", "client -> bankd");
    let Msg::ClientSlotStatusInd(off_ind) = pdu_of(&off).msg else {
        panic!("vector is a ClientSlotStatusInd")
    };
    for _ in 0..2 {
        writeln!(stdin, "RESET").expect("stdin");
        stdin.flush().expect("flush");
        assert_eq!(bankd.recv_frame_hex().await, hex::encode(&off));
        let Msg::ClientSlotStatusInd(on) = bankd.recv().await.msg else {
            panic!("power-on ClientSlotStatusInd expected")
        };
        assert_eq!(on.from_client_slot, off_ind.from_client_slot);
        assert_eq!(on.to_bank_slot, off_ind.to_bank_slot);
        assert!(!on.slot_phys_status.reset_active);
        assert_eq!(on.slot_phys_status.vcc_present, Some(true));
    }

    // EOF on stdin: the client exits cleanly.
    drop(stdin);
    let status = remsim_testing::exit_status(&mut client, "EOF on stdin");
    assert!(status.success(), "{status}");
}
