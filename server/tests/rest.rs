//! The C server's REST API (RSRES) on the management port, spoken by a
//! plain HTTP/1.1 client as curl, python-requests or osmo-remsim-apitool
//! speak it. `conformance/rsres/` holds osmo-remsim-server's real answers
//! to one scenario (a bankd with 8 slots, a client, a slot map created,
//! listed, deleted, recreated, a global reset); the first test replays it
//! and compares status codes and JSON (keys in C's order), the second
//! covers where C was wrong and the limits C did not have.

mod common;

use std::net::SocketAddr;

use common::http::{Answer, answer_requests, exchange, request};
use common::*;
use rspro::{ClientSlot, ComponentType, Identity, Msg, ResultCode, RsproPdu};
use serde_json::Value;
use tokio::task::JoinHandle;

const V1: &str = "/api/backend/v1";
const C_ANSWERS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../conformance/rsres/");
const JSON: Option<&str> = Some("application/json");
/// The map of the C scenario: bank 1 slot 0 to client 23 slot 0.
const MAP: &[u8] = br#"{"bank":{"bankId":1,"slotNr":0},"client":{"clientId":23,"slotNr":0}}"#;

/// One HTTP/1.1 request as curl sends it, with `Connection: close`.
async fn http(
    api: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Answer {
    let headers: Vec<(&str, &str)> = content_type
        .map(|t| ("Content-Type", t))
        .into_iter()
        .collect();
    request(api, method, &format!("{V1}{path}"), &headers, body).await
}

async fn get(api: SocketAddr, path: &str) -> Answer {
    http(api, "GET", path, None, b"").await
}

async fn post(api: SocketAddr, path: &str, content_type: Option<&str>, body: &[u8]) -> Answer {
    http(api, "POST", path, content_type, body).await
}

async fn delete(api: SocketAddr, path: &str) -> Answer {
    http(api, "DELETE", path, None, b"").await
}

/// The C server's answer from the repository's copy.
fn c_answer(name: &str) -> Answer {
    let path = format!("{C_ANSWERS}{name}.http");
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Answer::parse(&raw, &path)
}

/// JSON re-serialised compactly, keys in their order (serde_json keeps it
/// in this workspace): equal strings mean equal JSON in the same order.
fn compact(body: &[u8], what: &str) -> String {
    serde_json::from_slice::<Value>(body)
        .unwrap_or_else(|e| {
            panic!(
                "{what}: not JSON ({e}): {:?}",
                String::from_utf8_lossy(body)
            )
        })
        .to_string()
}

/// Our answer against C's: the same status; where C answered JSON, the
/// same JSON as `application/json`; where C's body was empty, ours is too
/// for a success and a message for people for an error.
fn like_c(ours: &Answer, name: &str) {
    let c = c_answer(name);
    assert_eq!(ours.status, c.status, "{name}: ours is {}", ours.text());
    if c.header("content-type") == Some("application/json") {
        assert_eq!(
            ours.header("content-type"),
            Some("application/json"),
            "{name}"
        );
        assert_eq!(compact(&ours.body, name), compact(&c.body, name), "{name}");
    } else if c.status < 400 {
        assert!(
            ours.body.is_empty(),
            "{name}: no body expected: {}",
            ours.text()
        );
    } else {
        expect_message(ours, name);
    }
}

/// An error answer says why, in text.
fn expect_message(ours: &Answer, what: &str) {
    assert!(
        !ours.body.is_empty()
            && ours
                .header("content-type")
                .is_some_and(|t| t.starts_with("text/plain")),
        "{what}: a text message expected: {}",
        ours.text()
    );
}

fn expect_refused(ours: &Answer, status: u16, what: &str) {
    assert_eq!(ours.status, status, "{what}: {}", ours.text());
    expect_message(ours, what);
}

/// Whether a slot map list holds maps, all ACTIVE.
/// GET /slotmaps once the bankd has confirmed the maps (C's answer was
/// taken then): after the server's Watch stream says they are ACTIVE.
async fn slotmaps_once_active(server: &Server) -> Answer {
    let mut api = server.api().await;
    wait_maps(&mut api, |maps| {
        !maps.is_empty()
            && maps
                .iter()
                .all(|m| m.state() == remsim_api::v1::SlotmapState::Active)
    })
    .await;
    get(server.api, "/slotmaps").await
}

/// The C scenario's bankd: bank 1 with 8 slots, as osmo-remsim-bankd 1.0.0
/// introduces itself.
async fn c_bankd(server: &Server) -> JoinHandle<()> {
    let mut bankd = Peer::connect(server.rspro).await;
    let identity = Identity::new(
        ComponentType::RemsimBankd,
        "fixme-name",
        "remsim-bankd",
        "1.0.0",
    );
    bankd
        .send(&RsproPdu::connect_bank_req(identity, 1, 8))
        .await;
    let res = bankd.recv().await;
    let Msg::ConnectBankRes(r) = res.msg else {
        panic!("ConnectBankRes expected, got {res:?}")
    };
    assert_eq!(r.result, ResultCode::Ok);
    answer_requests(bankd)
}

/// The C scenario's client: C23:0 on host "simhost".
async fn c_client(server: &Server) -> JoinHandle<()> {
    let mut client = Peer::connect(server.rspro).await;
    let identity = Identity::new(
        ComponentType::RemsimClient,
        "simhost",
        "remsim-client",
        "1.0.0",
    );
    client
        .send(&RsproPdu::connect_client_req(
            identity,
            Some(ClientSlot::new(23, 0)),
        ))
        .await;
    let res = client.recv().await;
    let Msg::ConnectClientRes(r) = res.msg else {
        panic!("ConnectClientRes expected, got {res:?}")
    };
    assert_eq!(r.result, ResultCode::Ok);
    answer_requests(client)
}

#[tokio::test]
async fn answers_as_the_c_server() {
    let dir = TempDir::new("rest-c");
    let server = Server::start(&dir.path("remsim.db")).await;
    let api = server.api;

    like_c(&get(api, "/banks").await, "01-get-banks-empty");
    like_c(&get(api, "/clients").await, "02-get-clients-empty");
    like_c(&get(api, "/slotmaps").await, "03-get-slotmaps-empty");

    let _bankd = c_bankd(&server).await;
    like_c(&get(api, "/banks").await, "04-get-banks");
    like_c(&get(api, "/banks/1").await, "05-get-bank-1");
    like_c(&post(api, "/slotmaps", JSON, MAP).await, "06-post-slotmap");
    like_c(
        &slotmaps_once_active(&server).await,
        "07-get-slotmaps-active",
    );
    like_c(
        &post(api, "/slotmaps", JSON, MAP).await,
        "08-post-slotmap-duplicate",
    );
    like_c(
        &post(
            api,
            "/slotmaps",
            JSON,
            br#"{"bank":{"bankId":1,"slotNr":0},"client":"#,
        )
        .await,
        "09-post-slotmap-badjson",
    );

    let _client = c_client(&server).await;
    like_c(&get(api, "/clients").await, "10-get-clients");
    // 11: C answered GET /clients/23 with 200 and an empty body (it looked
    // for a client whose *bank* id was 23). We answer client 23, which is
    // what C's 12 shows: compared with that.
    let ours = get(api, "/clients/23").await;
    assert_eq!(ours.status, c_answer("11-get-client-23").status);
    like_c(&ours, "12-get-client-0");
    // 12: C answered GET /clients/0 with client 23 (every client's bank id
    // is 0). There is no client 0: 404.
    expect_refused(&get(api, "/clients/0").await, 404, "GET /clients/0");
    like_c(&get(api, "/banks").await, "13-get-banks");
    like_c(&slotmaps_once_active(&server).await, "14-get-slotmaps");

    like_c(&delete(api, "/slotmaps/65536").await, "15-delete-slotmap");
    like_c(&get(api, "/slotmaps").await, "16-get-slotmaps-after-delete");
    like_c(&get(api, "/clients").await, "17-get-clients-after-delete");
    like_c(
        &post(api, "/slotmaps", JSON, MAP).await,
        "18-post-slotmap-again",
    );
    like_c(
        &slotmaps_once_active(&server).await,
        "19-get-slotmaps-recreated",
    );

    like_c(
        &post(api, "/global-reset", None, b"").await,
        "20-post-global-reset",
    );
    like_c(&get(api, "/slotmaps").await, "21-get-slotmaps-after-reset");
    like_c(&get(api, "/clients").await, "22-get-clients-after-reset");
    like_c(&get(api, "/banks").await, "23-get-banks-after-reset");
}

#[tokio::test]
async fn refuses_what_c_got_wrong_and_bounds_bodies() {
    let dir = TempDir::new("rest-fixes");
    let server = Server::start(&dir.path("remsim.db")).await;
    let api = server.api;

    // C: 200 with an empty body for an unknown bank.
    expect_refused(&get(api, "/banks/99").await, 404, "GET /banks/99");
    // C: "abc" read as 0.
    expect_refused(&get(api, "/banks/abc").await, 400, "GET /banks/abc");
    expect_refused(&get(api, "/banks/65536").await, 400, "GET /banks/65536");
    expect_refused(&get(api, "/clients/x1").await, 400, "GET /clients/x1");
    expect_refused(&delete(api, "/slotmaps/abc").await, 400, "DELETE abc");
    expect_refused(&delete(api, "/slotmaps/65536").await, 404, "DELETE unknown");

    // C cut 65537 to 16 bits: bank 1.
    let bank_65537 = br#"{"bank":{"bankId":65537,"slotNr":0},"client":{"clientId":23,"slotNr":0}}"#;
    expect_refused(
        &post(api, "/slotmaps", JSON, bank_65537).await,
        400,
        "bankId 65537",
    );
    let negative = br#"{"bank":{"bankId":1,"slotNr":-1},"client":{"clientId":23,"slotNr":0}}"#;
    expect_refused(
        &post(api, "/slotmaps", JSON, negative).await,
        400,
        "slotNr -1",
    );
    let real = br#"{"bank":{"bankId":1.5,"slotNr":0},"client":{"clientId":23,"slotNr":0}}"#;
    expect_refused(&post(api, "/slotmaps", JSON, real).await, 400, "bankId 1.5");
    let no_client = br#"{"bank":{"bankId":1,"slotNr":0}}"#;
    expect_refused(
        &post(api, "/slotmaps", JSON, no_client).await,
        400,
        "no client",
    );
    expect_refused(
        &post(api, "/slotmaps", JSON, b"[1,2]").await,
        400,
        "an array",
    );
    // C reads the body only when it is declared JSON.
    let text = Some("text/plain");
    expect_refused(&post(api, "/slotmaps", text, MAP).await, 400, "text/plain");
    expect_refused(
        &post(api, "/slotmaps", None, MAP).await,
        400,
        "no Content-Type",
    );

    // 1 MB declared: refused before it is read.
    let huge = vec![b' '; 1 << 20];
    expect_refused(&post(api, "/slotmaps", JSON, &huge).await, 413, "1 MB");
    // 8 kB without a length (chunked): cut at the limit while read.
    let mut chunked = format!(
        "POST {V1}/slotmaps HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2000\r\n"
    )
    .into_bytes();
    chunked.extend_from_slice(&[b' '; 0x2000]);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    expect_refused(
        &exchange(api, &chunked, "chunked 8 kB").await,
        413,
        "chunked 8 kB",
    );

    // None of the above made a map.
    let maps = get(api, "/slotmaps").await;
    assert_eq!(
        (maps.status, compact(&maps.body, "GET /slotmaps")),
        (200, r#"{"slotmaps":[]}"#.to_string())
    );

    // Unknown paths and methods: C's web server default.
    for (method, path) in [
        ("GET", "/nothing"),
        ("PUT", "/banks"),
        ("GET", "/banks/1/x"),
    ] {
        let ours = http(api, method, path, None, b"").await;
        assert_eq!(
            (ours.status, ours.body.as_slice()),
            (404, b"Resource not found".as_slice()),
            "{method} {path}"
        );
    }
    // A stub in C: 200, empty.
    let counter = get(api, "/restart-counter").await;
    assert_eq!((counter.status, counter.body.len()), (200, 0));
}
