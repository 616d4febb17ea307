//! The connection policy on the RSPRO port, against the real server:
//! thousands of idle connections cost bounded memory and never stop
//! others being served; over the connection limit peers are closed at once.

mod common;

use common::*;
use rspro::ClientSlot;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

#[tokio::test]
async fn five_thousand_idle_connections_cost_bounded_memory_and_others_are_served() {
    const IDLE: usize = 5000;
    remsim_daemon::listen::raise_open_files_limit();
    let dir = TempDir::new("idle");
    let hour = ["--identify-timeout", "1h", "--keepalive-interval", "1h"];
    let server = Server::start_with(&dir.path("db"), &hour).await;
    // A first connection warms up what every connection shares.
    let warm = server.idle_connection().await;
    let before = server.rss_kb();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(server.idle_connection().await);
    }
    let after = server.rss_kb();
    let per_connection = (after.saturating_sub(before)) * 1024 / IDLE as u64;
    eprintln!(
        "{IDLE} idle RSPRO connections: {before} kB -> {after} kB, {per_connection} bytes each"
    );
    assert!(
        per_connection < 32 * 1024,
        "{per_connection} bytes per idle connection"
    );
    // Everyone else is still served: a bankd, a client, the API.
    let _bank = bankd(&server, 1, 8).await;
    let _client = client(&server, ClientSlot::new(23, 0)).await;
    let mut api = server.api().await;
    api.create_slotmap(remsim_api::v1::CreateSlotmapRequest::new((1, 0), (23, 0)))
        .await
        .expect("map created");
    assert_eq!(slotmaps(&mut api).await.len(), 1);
    drop((warm, idle));
}

#[tokio::test]
async fn over_the_connection_limit_peers_are_closed_and_it_is_logged() {
    let dir = TempDir::new("limit");
    let mut server = Server::start_with(&dir.path("db"), &["--max-connections", "3"]).await;
    let held = [
        server.idle_connection().await,
        server.idle_connection().await,
        server.idle_connection().await,
    ];
    let mut over = TcpStream::connect(server.rspro).await.expect("connect");
    let mut buf = [0u8; 4];
    let read = timeout(GUARD, over.read(&mut buf)).await.expect("in time");
    assert!(matches!(read, Ok(0)), "closed without a PING: {read:?}");
    server.wait_log("connection limit reached").await;
    // That a freed place is taken again is asserted in the listener's own
    // tests, where the end of a connection's task can be waited for.
    drop(held);
}
