//! Hostile callers on the management port (gRPC, the C REST API and
//! /metrics on one port): bytes that are not HTTP, a broken HTTP/2
//! session, oversized headers, requests never finished, sockets that say
//! nothing, gRPC messages far beyond any request of the API and absurd
//! values. Each gets a clear answer or its close, the port serves everyone
//! else meanwhile, and the server's memory stays bounded (measured).

mod common;

use common::*;
use remsim_api::v1 as pb;
use remsim_api::v1::remsim_service_client::RemsimServiceClient;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tonic::Code;

/// The server closes connections that send nothing, or never finish their
/// headers, after its 10 s header bound; wait for that beyond the guard.
const AFTER_HEADER_BOUND: std::time::Duration = std::time::Duration::from_secs(30);

/// The types of the HTTP/2 frames in `bytes` (as the server sent them).
fn h2_frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let length =
            usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + length).min(bytes.len())..];
    }
    types
}

/// The open connections of the management port, as /metrics tells them.
async fn open_api_connections(server: &Server) -> u64 {
    let answer = http::request(server.api, "GET", "/metrics", &[], b"").await;
    let text = answer.text();
    text.lines()
        .find(|l| l.starts_with("remsim_server_connections_open{port=\"api\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no api connections gauge in\n{text}"))
}

#[tokio::test]
async fn junk_broken_and_oversized_http_is_answered_or_closed() {
    let dir = TempDir::new("api-junk");
    let server = Server::start(&dir.path("t.db")).await;

    // Not HTTP at all: 400, closed.
    let junk = http::exchange_raw(server.api, b"\x16\x03\x01\x00\x05hello\r\n\r\n", "junk").await;
    assert!(junk.starts_with(b"HTTP/1.1 400"), "{junk:?}");
    // The HTTP/2 preface, then a frame of a type and length that make no
    // sense: the session ends (GOAWAY), closed.
    let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2.extend_from_slice(&[0xff, 0xff, 0xff, 0x04, 0xff, 0xff, 0xff, 0xff, 0xff]);
    h2.extend_from_slice(&[0u8; 64]);
    let frames = h2_frame_types(&http::exchange_raw(server.api, &h2, "broken HTTP/2").await);
    const GOAWAY: u8 = 7;
    assert!(frames.contains(&GOAWAY), "frames {frames:?}");
    // Headers beyond the port's 64 kB buffer: 431, closed, nothing kept.
    let mut big = b"GET /api/backend/v1/slotmaps HTTP/1.1\r\nHost: x\r\nX-Junk: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 200 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    let too_big = http::exchange_raw(server.api, &big, "oversized headers").await;
    assert!(
        too_big.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        &too_big[..too_big.len().min(40)]
    );

    // A request never finished, and a socket that says nothing: both
    // closed after the header bound, not held for ever.
    let mut half = TcpStream::connect(server.api).await.expect("connect");
    half.write_all(b"GET /api/backend/v1/slotmaps HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("half a request");
    let mut silent = TcpStream::connect(server.api).await.expect("connect");
    // Everyone else is served meanwhile.
    let mut api = server.api().await;
    api.create_slotmap(pb::CreateSlotmapRequest::new((1, 0), (23, 0)))
        .await
        .expect("served beside them");
    assert!(
        remsim_testing::closed_within(&mut half, AFTER_HEADER_BOUND).await,
        "half request"
    );
    assert!(
        remsim_testing::closed_within(&mut silent, AFTER_HEADER_BOUND).await,
        "silent socket"
    );
    assert_eq!(slotmaps(&mut api).await.len(), 1);
}

#[tokio::test]
async fn oversized_and_absurd_grpc_requests_get_clear_errors_in_bounded_memory() {
    let dir = TempDir::new("api-grpc");
    let server = Server::start(&dir.path("t.db")).await;
    // A client that would send anything.
    let mut api =
        RemsimServiceClient::new(server.channel().await).max_encoding_message_size(usize::MAX);
    let endpoint = |bytes: usize| pb::SetBankEndpointRequest {
        bank_id: 1,
        endpoint: "9".repeat(bytes),
    };
    // Warm up what every call shares, then measure.
    let _ = api.set_bank_endpoint(endpoint(10)).await;
    let before = server.rss_kb();

    // A message beyond the API's 16 kB (and within tonic's default 4 MB):
    // refused from its length prefix.
    for _ in 0..20 {
        let status = api
            .set_bank_endpoint(endpoint(1 << 20))
            .await
            .expect_err("a 1 MB request");
        assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
        assert!(
            status.message().contains("too large"),
            "{}",
            status.message()
        );
    }
    // Within the size, nonsense: named as such.
    for _ in 0..200 {
        let status = api
            .set_bank_endpoint(endpoint(15 * 1024))
            .await
            .expect_err("an endpoint of 15 kB of digits");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    let after = server.rss_kb();
    eprintln!("20 requests of 1 MB and 200 of 15 kB: server RSS {before} kB -> {after} kB");
    assert!(
        after.saturating_sub(before) < 32 * 1024,
        "memory grew by {} kB",
        after - before
    );

    // Every id and slot number at and beyond its limit.
    for (bank, client) in [
        ((1024, 0), (23, 0)),
        ((1, 0), (1024, 0)),
        ((u32::MAX, u32::MAX), (u32::MAX, u32::MAX)),
        ((1, 1024), (23, 0)),
        ((1, 0), (23, 1024)),
    ] {
        let status = api
            .create_slotmap(pb::CreateSlotmapRequest::new(bank, client))
            .await
            .expect_err("out of range");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{bank:?} {client:?}: {status:?}"
        );
    }
    let status = api
        .create_slotmap(pb::CreateSlotmapRequest {
            bank: None,
            client: None,
        })
        .await
        .expect_err("no slots at all");
    assert_eq!(status.code(), Code::InvalidArgument);
    for bank_id in [1024, u32::MAX] {
        let status = api
            .get_bank(pb::GetBankRequest { bank_id })
            .await
            .expect_err("no such bank");
        assert!(
            matches!(status.code(), Code::InvalidArgument | Code::NotFound),
            "{status:?}"
        );
        let status = api
            .set_bank_endpoint(pb::SetBankEndpointRequest {
                bank_id,
                endpoint: "127.0.0.1:9999".into(),
            })
            .await
            .expect_err("bank id out of range");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    // Nothing of it stuck; the API works.
    api.create_slotmap(pb::CreateSlotmapRequest::new((1, 0), (23, 0)))
        .await
        .expect("a proper map");
    assert_eq!(slotmaps(&mut api).await.len(), 1);
}

/// 2,000 sockets that connect to the management port and say nothing:
/// the API serves beside them, they cost bounded memory, and each is
/// closed after the header bound, so they cannot hold the port's places.
#[tokio::test]
async fn thousands_of_silent_connections_are_closed_and_others_are_served() {
    const SILENT: usize = 2000;
    remsim_daemon::listen::raise_open_files_limit();
    let dir = TempDir::new("api-silent");
    let server = Server::start_with(&dir.path("t.db"), &["--api-max-connections", "4096"]).await;
    let mut api = server.api().await;
    let _ = slotmaps(&mut api).await;
    let before = server.rss_kb();
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        silent.push(TcpStream::connect(server.api).await.expect("connect"));
    }
    // Accepted in order: once a later caller is answered, the server holds
    // them all (and the gRPC channel, and the scrape itself).
    api.create_slotmap(pb::CreateSlotmapRequest::new((1, 0), (23, 0)))
        .await
        .expect("served beside them");
    let open = open_api_connections(&server).await;
    let after = server.rss_kb();
    let per_connection = after.saturating_sub(before) * 1024 / SILENT as u64;
    eprintln!(
        "{SILENT} silent API connections: {before} kB -> {after} kB, {per_connection} bytes each"
    );
    assert!(open >= SILENT as u64, "{open} open");
    assert!(per_connection < 32 * 1024, "{per_connection} bytes each");
    for (i, stream) in silent.iter_mut().enumerate() {
        assert!(
            remsim_testing::closed_within(stream, AFTER_HEADER_BOUND).await,
            "silent connection {i} still open"
        );
    }
    assert!(
        open_api_connections(&server).await < 10,
        "their places are free"
    );
    assert_eq!(slotmaps(&mut api).await.len(), 1);
}
