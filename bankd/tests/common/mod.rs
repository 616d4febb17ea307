//! Test harness: the real `remsim-bankd` binary on 127.0.0.1, a simulated
//! remsim-server that accepts its control link and installs maps, and raw
//! clients (the `rspro` test peer, or the C suite's own frames).

#![allow(dead_code)]

use std::net::SocketAddr;

use rspro::{BankSlot, ClientSlot, ComponentType, Identity, Msg, ResultCode, RsproPdu};
use tokio::net::TcpListener;
use tokio::time::timeout;

use remsim_testing::Proc;
pub use remsim_testing::{GUARD, Peer, free_port};

/// A simulated remsim-server: accepts the bankd's control connection.
pub struct SimServer {
    listener: TcpListener,
    pub port: u16,
}

impl SimServer {
    pub async fn new() -> SimServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        SimServer { listener, port }
    }

    /// Accepts the bankd, checks its ConnectBankReq and answers ok.
    pub async fn accept(&self) -> (Peer, Identity, u32, u32) {
        let (stream, _) = timeout(GUARD, self.listener.accept())
            .await
            .expect("bankd connects in time")
            .expect("accept");
        let mut peer = Peer::from_stream(stream);
        let req = peer.recv().await;
        let Msg::ConnectBankReq(m) = req.msg else {
            panic!("ConnectBankReq expected, got {req:?}")
        };
        let id = Identity::new(
            ComponentType::RemsimServer,
            "sim-server",
            "remsim-server",
            "test",
        );
        peer.send(&RsproPdu::connect_bank_res(id, ResultCode::Ok))
            .await;
        (peer, m.identity, m.bank_id, m.number_of_slots)
    }
}

/// Installs a map at the bankd and returns its result.
pub async fn map(server: &mut Peer, bank: BankSlot, client: ClientSlot) -> ResultCode {
    server
        .send(&RsproPdu::create_mapping_req(client, bank))
        .await;
    let res = server.recv().await;
    let Msg::CreateMappingRes(r) = res.msg else {
        panic!("CreateMappingRes expected, got {res:?}")
    };
    r.result
}

pub async fn unmap(server: &mut Peer, bank: BankSlot, client: ClientSlot) -> ResultCode {
    server
        .send(&RsproPdu::remove_mapping_req(client, bank))
        .await;
    let res = server.recv().await;
    let Msg::RemoveMappingRes(r) = res.msg else {
        panic!("RemoveMappingRes expected, got {res:?}")
    };
    r.result
}

/// The daemon's log: $REMSIM_TEST_LOG if set, else discarded.
fn log_file() -> Option<std::fs::File> {
    std::env::var_os("REMSIM_TEST_LOG").and_then(|path| std::fs::File::create(path).ok())
}

pub struct Bankd {
    pub child: Proc,
    pub port: u16,
}

impl Bankd {
    /// Starts remsim-bankd (bank 1) against `server_port` with extra
    /// flags; returns once it listens for clients.
    pub async fn start(server_port: u16, args: &[&str]) -> Bankd {
        let port = free_port();
        let (server_port, client_port) = (server_port.to_string(), port.to_string());
        let base = [
            "-i",
            "127.0.0.1",
            "-p",
            &server_port,
            "-b",
            "1",
            "-I",
            "127.0.0.1",
            "-P",
            &client_port,
            "-e",
            "debug",
        ];
        let child = remsim_testing::spawn_ready(
            std::path::Path::new(env!("CARGO_BIN_EXE_remsim-bankd")),
            &[&base, args].concat(),
            "serving clients",
            log_file(),
        );
        Bankd { child, port }
    }

    pub fn addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().expect("addr")
    }
}

pub fn client_identity() -> Identity {
    Identity::new(
        ComponentType::RemsimClient,
        "test-client",
        "remsim-client",
        "test",
    )
}

/// A client that identifies; returns the peer and the ConnectClientRes result.
pub async fn client(bankd: &Bankd, slot: ClientSlot) -> (Peer, ResultCode) {
    identify(Peer::connect(bankd.addr()).await, slot).await
}

/// Sends ConnectClientReq on a connected peer; returns it and the result.
pub async fn identify(mut p: Peer, slot: ClientSlot) -> (Peer, ResultCode) {
    p.send(&RsproPdu::connect_client_req(client_identity(), Some(slot)))
        .await;
    let res = p.recv().await;
    assert_eq!(res.tag, 2342);
    let Msg::ConnectClientRes(r) = res.msg else {
        panic!("ConnectClientRes expected, got {res:?}")
    };
    assert_eq!(r.identity.component_type, ComponentType::RemsimBankd);
    (p, r.result)
}

/// Expects SetAtrReq for `slot`; returns the ATR.
pub async fn expect_atr(p: &mut Peer, slot: ClientSlot) -> Vec<u8> {
    let pdu = p.recv().await;
    let Msg::SetAtrReq(m) = pdu.msg else {
        panic!("SetAtrReq expected, got {pdu:?}")
    };
    assert_eq!(m.slot, slot);
    m.atr.to_vec()
}

/// Sends a C-APDU, returns the R-APDU.
pub async fn apdu(p: &mut Peer, client: ClientSlot, bank: BankSlot, command: &[u8]) -> Vec<u8> {
    p.send(&RsproPdu::tpdu_modem_to_card(
        client,
        bank,
        command.to_vec(),
    ))
    .await;
    let pdu = p.recv().await;
    let Msg::TpduCardToModem(t) = pdu.msg else {
        panic!("TpduCardToModem expected, got {pdu:?}")
    };
    assert_eq!((t.from_bank_slot, t.to_client_slot), (bank, client));
    t.data.to_vec()
}
