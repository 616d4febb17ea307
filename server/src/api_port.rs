//! The management port: one listener serving the whole management
//! router (gRPC over HTTP/2, the C REST API and `/metrics` over HTTP/1.1
//! or HTTP/2), in plain TCP or TLS, under the shared connection policy,
//! with TCP_NODELAY (without it every small answer waits ~40 ms for the
//! caller's delayed ACK) and a graceful end on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use remsim_daemon::listen::{Backoff, Policy, Shutdown, next_connection};
use remsim_daemon::tls::Reloading;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tracing::{Instrument, debug, info_span, warn};

/// How long an HTTP/1.1 caller may take to send its request headers.
const HEADER_BOUND: Duration = Duration::from_secs(10);

/// Serves `app` until `shutdown`, then lets requests in flight finish
/// within the policy's drain bound (Watch streams end on the signal).
pub async fn serve(
    listener: TcpListener,
    policy: Policy,
    tls: Option<Arc<Reloading>>,
    app: Router,
    mut shutdown: Shutdown,
) {
    let mut http = Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_BOUND);
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    let http = Arc::new(http);
    let graceful = GracefulShutdown::new();
    let mut backoff = Backoff::default();
    let port = policy.port;
    loop {
        let (stream, peer, place) = tokio::select! {
            next = next_connection(&listener, &policy, &mut backoff) => next,
            _ = shutdown.wait() => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            warn!(port, %peer, error = %e, "TCP_NODELAY");
        }
        let app = app.clone();
        let http = http.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        let connection = async move {
            // Handlers see the caller's address (ConnectInfo), as with axum::serve.
            let service = TowerToHyperService::new(app.map_request(
                move |mut request: axum::http::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request
                },
            ));
            let served = match tls {
                None => {
                    let io = TokioIo::new(stream);
                    let conn = http.serve_connection_with_upgrades(io, service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(tls) => match tls.accept(stream).await {
                    Ok(stream) => {
                        let conn =
                            http.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        watcher.watch(conn.into_owned()).await
                    }
                    Err(e) => {
                        debug!(error = %e, "TLS handshake failed");
                        return drop(place);
                    }
                },
            };
            if let Err(e) = served {
                debug!(error = %e, "connection ended");
            }
            drop(place);
        };
        tokio::spawn(connection.instrument(info_span!("conn", port, %peer)));
    }
    if tokio::time::timeout(policy.drain, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(port, bound = ?policy.drain, "requests still running after the shutdown bound");
    }
}

/// True when `addr` can be reached only from this host.
pub fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().is_loopback()
}
