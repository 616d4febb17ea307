//! The management port: its router (gRPC over HTTP/2, the C REST API and
//! `/metrics` over HTTP/1.1 or HTTP/2, behind tokens) and one listener
//! serving it, in plain TCP or TLS, under the shared connection policy,
//! with TCP_NODELAY (without it every small answer waits ~40 ms for the
//! caller's delayed ACK) and a graceful end on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::{StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use remsim_daemon::listen::{self, Accepted, Policy, Shutdown};
use remsim_daemon::tls::Reloading;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::auth::Auth;
use crate::metrics::Metrics;
use crate::{rest, service};

/// How long an HTTP/1.1 caller may take to send its request headers, and
/// any caller its first byte (request line, HTTP/2 preface or TLS hello):
/// silent sockets must not hold the port's places.
const HEADER_BOUND: Duration = Duration::from_secs(10);

/// What one connection may make the server hold: the management API's
/// requests and answers are small, so these bound what a hostile caller
/// can pin (HTTP/1.1 headers; HTTP/2 request data not yet read, answers
/// not yet taken) without slowing anyone.
const HTTP1_BUFFER: usize = 64 * 1024;
const HTTP2_STREAM_WINDOW: u32 = 64 * 1024;
const HTTP2_CONNECTION_WINDOW: u32 = 256 * 1024;
const HTTP2_SEND_BUFFER: usize = 64 * 1024;
const HTTP2_HEADER_LIST: u32 = 16 * 1024;

/// HTTP/2 PINGs: a caller gone without a close (a Watch stream of a
/// vanished host) is dropped after interval + timeout.
const HTTP2_KEEPALIVE: Duration = Duration::from_secs(30);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The port's whole router: gRPC (`grpc`, tonic's services), the C REST
/// API and `/metrics`; behind the token check, all counted in metrics
/// (refusals too: the counting layer is the outermost).
pub fn router(
    grpc: Router,
    service: mpsc::Sender<service::Request>,
    auth: Arc<Auth>,
    metrics: Arc<Metrics>,
) -> Router {
    let scrape = Router::new()
        .route("/metrics", axum::routing::get(crate::metrics::scrape))
        .with_state((metrics.clone(), service.clone()));
    grpc.merge(rest::router(service))
        .merge(scrape)
        .fallback(not_found)
        .layer(from_fn_with_state(auth, crate::auth::check))
        .layer(from_fn_with_state(metrics, crate::metrics::count))
}

/// Anything the router does not know: a gRPC status for gRPC callers, the
/// C REST API's 404 for the rest.
async fn not_found(request: Request) -> Response {
    if is_grpc(&request) {
        let path = request.uri().path();
        return tonic::Status::unimplemented(format!("no method {path} here"))
            .into_http::<axum::body::Body>();
    }
    (StatusCode::NOT_FOUND, "Resource not found").into_response()
}

/// Whether a request is a gRPC call (answered with a gRPC status, not an
/// HTTP one).
pub fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Serves `app` until `shutdown`, then lets requests in flight finish
/// within the policy's drain bound (Watch streams end on the signal).
pub async fn serve(
    listener: TcpListener,
    policy: Policy,
    tls: Option<Arc<Reloading>>,
    app: Router,
    shutdown: Shutdown,
) {
    let mut http = Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_BOUND)
        .max_buf_size(HTTP1_BUFFER);
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .initial_stream_window_size(HTTP2_STREAM_WINDOW)
        .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
        .max_send_buf_size(HTTP2_SEND_BUFFER)
        .max_header_list_size(HTTP2_HEADER_LIST)
        .keep_alive_interval(HTTP2_KEEPALIVE)
        .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT);
    let http = Arc::new(http);
    listen::serve(listener, policy, shutdown, move |accepted| {
        connection(accepted, app.clone(), http.clone(), tls.clone())
    })
    .await;
}

async fn connection(
    accepted: Accepted,
    app: Router,
    http: Arc<Builder<TokioExecutor>>,
    tls: Option<Arc<Reloading>>,
) {
    let Accepted {
        stream,
        peer,
        mut shutdown,
    } = accepted;
    let mut first = [0u8; 1];
    tokio::select! {
        sent = tokio::time::timeout(HEADER_BOUND, stream.peek(&mut first)) => match sent {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return,
            Err(_) => {
                debug!("nothing sent within {HEADER_BOUND:?}: closed");
                return;
            }
        },
        _ = shutdown.wait() => return,
    }
    if let Err(e) = stream.set_nodelay(true) {
        warn!(error = %e, "TCP_NODELAY");
    }
    match tls {
        None => serve_http(&http, TokioIo::new(stream), app, peer, shutdown).await,
        Some(tls) => match tls.accept(stream).await {
            Ok(stream) => serve_http(&http, TokioIo::new(stream), app, peer, shutdown).await,
            // Scanners and probes without TLS end here: not worth a log line each.
            Err(e) => debug!(error = %e, "TLS handshake failed"),
        },
    }
}

/// Serves one connection; on shutdown it finishes the requests it has
/// (HTTP/2 GOAWAY, HTTP/1.1 close after the answer).
async fn serve_http<I>(
    http: &Builder<TokioExecutor>,
    io: TokioIo<I>,
    app: Router,
    peer: SocketAddr,
    mut shutdown: Shutdown,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Handlers see the caller's address (ConnectInfo), as with axum::serve.
    let service = TowerToHyperService::new(app.map_request(
        move |mut request: axum::http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        },
    ));
    let conn = http.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        _ = shutdown.wait() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        debug!(error = %e, "connection ended");
    }
}

/// True when `addr` can be reached only from this host.
pub fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().is_loopback()
}
