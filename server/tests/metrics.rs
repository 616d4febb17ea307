//! `/metrics` as Prometheus scrapes it: after known activity (a bankd, a
//! client, a map made ACTIVE, API calls that succeed and fail, a peer that
//! stops answering PINGs) every figure says what happened, and the whole
//! exposition parses.

mod common;

use std::collections::HashMap;

use common::http::{answer_requests, request};
use common::*;
use remsim_api::v1 as pb;
use rspro::{ClientSlot, RsproPdu};
use tokio::io::AsyncReadExt;

/// Parses the text exposition into `name{labels}` → value; checks every
/// line's form and the closing `# EOF`.
fn parse(text: &str) -> HashMap<String, f64> {
    assert!(text.ends_with("# EOF\n"), "no # EOF at the end:\n{text}");
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line:?}"));
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            name.starts_with("remsim_server_")
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "metric name {name:?}"
        );
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "{series} twice"
        );
    }
    samples
}

async fn scrape(server: &Server) -> HashMap<String, f64> {
    let answer = request(server.api, "GET", "/metrics", &[], b"").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(
        answer
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        answer.header("content-type")
    );
    parse(&String::from_utf8_lossy(&answer.body))
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("{series} missing; have {:?}", samples.keys()))
}

#[tokio::test]
async fn a_scrape_reports_what_happened() {
    let dir = TempDir::new("metrics");
    let server = Server::start(&dir.path("t.db")).await;
    let before = scrape(&server).await;
    assert_eq!(value(&before, "remsim_server_bankds_connected"), 0.0);
    assert_eq!(
        value(&before, r#"remsim_server_slotmaps{state="ACTIVE"}"#),
        0.0
    );

    let _bankd = answer_requests(bankd(&server, 1, 8).await);
    let _client = answer_requests(client(&server, ClientSlot::new(23, 0)).await);
    let mut api = server.api().await;
    api.create_slotmap(pb::CreateSlotmapRequest::new((1, 0), (23, 0)))
        .await
        .expect("create");
    wait_maps(&mut api, |m| {
        m.len() == 1 && m[0].state() == pb::SlotmapState::Active
    })
    .await;
    let missing = api.get_bank(pb::GetBankRequest { bank_id: 99 }).await;
    assert_eq!(
        missing.expect_err("no bank 99").code(),
        tonic::Code::NotFound
    );
    let rest = request(server.api, "GET", "/api/backend/v1/banks/99", &[], b"").await;
    assert_eq!(rest.status, 404);

    // The bankd and the client hold a place each on the RSPRO port.
    let settled = scrape(&server).await;
    assert_eq!(
        value(&settled, r#"remsim_server_connections_open{port="rspro"}"#),
        2.0
    );

    // A client that identifies and then never answers a PING (keep-alive
    // 1 s + 1 s in these tests): the server counts the failure, then
    // closes the connection; the close is the event waited for.
    let mut silent = Peer::connect(server.rspro).await;
    silent
        .send(&RsproPdu::connect_client_req(
            client_identity(),
            Some(ClientSlot::new(24, 0)),
        ))
        .await;
    let mut silent = silent.into_stream();
    let mut sink = Vec::new();
    tokio::time::timeout(GUARD, silent.read_to_end(&mut sink))
        .await
        .expect("closed by the server in time")
        .expect("read");
    let after = scrape(&server).await;

    for (series, expected) in [
        ("remsim_server_bankds_connected", 1.0),
        ("remsim_server_clients_connected", 1.0),
        (r#"remsim_server_slotmaps{state="ACTIVE"}"#, 1.0),
        (r#"remsim_server_slotmaps{state="NEW"}"#, 0.0),
        (
            r#"remsim_server_rspro_pdus_total{direction="rx",type="connectBankReq"}"#,
            1.0,
        ),
        (
            r#"remsim_server_rspro_pdus_total{direction="tx",type="connectBankRes"}"#,
            1.0,
        ),
        (
            r#"remsim_server_rspro_pdus_total{direction="tx",type="createMappingReq"}"#,
            1.0,
        ),
        (
            r#"remsim_server_rspro_pdus_total{direction="rx",type="createMappingRes"}"#,
            1.0,
        ),
        (
            r#"remsim_server_rspro_pdus_total{direction="rx",type="connectClientReq"}"#,
            2.0,
        ),
        (
            r#"remsim_server_api_requests_total{method="remsim.v1.RemsimService/CreateSlotmap",code="OK"}"#,
            1.0,
        ),
        (
            r#"remsim_server_api_requests_total{method="remsim.v1.RemsimService/GetBank",code="NotFound"}"#,
            1.0,
        ),
        (
            r#"remsim_server_api_requests_total{method="GET /api/backend/v1/banks/{id}",code="404"}"#,
            1.0,
        ),
        ("remsim_server_keepalive_failures_total", 1.0),
    ] {
        assert_eq!(value(&after, series), expected, "{series}");
    }
    // Only what exists: no allow-list here, no table state for removals.
    for absent in [
        r#"remsim_server_connections_refused_total{port="rspro",reason="allow"}"#,
        r#"remsim_server_slotmaps{state="DELETING"}"#,
    ] {
        assert!(!after.contains_key(absent), "{absent}");
    }
    let config = value(
        &after,
        r#"remsim_server_rspro_pdus_total{direction="tx",type="configClientBankReq"}"#,
    );
    assert!(config >= 1.0, "the client was configured: {config}");
    // One write for the create at least, each within the histogram.
    let writes = value(&after, "remsim_server_store_write_seconds_count");
    assert!(writes >= 1.0, "{writes}");
    assert_eq!(
        value(
            &after,
            r#"remsim_server_store_write_seconds_bucket{le="+Inf"}"#
        ),
        writes
    );
    // Scrapes count themselves once answered: the first one at least.
    let scrapes = r#"remsim_server_api_requests_total{method="GET /metrics",code="200"}"#;
    assert!(value(&after, scrapes) >= 1.0);
}
