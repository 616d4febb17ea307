//! The management port's accept side: tonic gets its connections through
//! the shared connection policy (a limit, back-off on accept errors) and
//! with TCP_NODELAY, which tonic's builder sets only on listeners it binds.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use remsim_daemon::listen::{Backoff, Limit, next_connection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::warn;

/// The management port's connections for tonic: a socket that holds its
/// place under the port's limit until it is dropped.
pub struct Limited {
    stream: TcpStream,
    _place: OwnedSemaphorePermit,
}

impl Limited {
    /// Accepts the API port's connections under `limit`, with TCP_NODELAY
    /// (without it every answer waits ~40 ms for the caller's delayed ACK).
    pub fn incoming(
        listener: TcpListener,
        limit: Limit,
        port: &'static str,
    ) -> impl futures::Stream<Item = io::Result<Limited>> {
        futures::stream::unfold(
            (listener, limit, Backoff::default()),
            move |(listener, limit, mut backoff)| async move {
                let (stream, peer, place) =
                    next_connection(&listener, port, &limit, &mut backoff).await;
                if let Err(e) = stream.set_nodelay(true) {
                    warn!(port, %peer, error = %e, "TCP_NODELAY");
                }
                let limited = Limited {
                    stream,
                    _place: place,
                };
                Some((Ok(limited), (listener, limit, backoff)))
            },
        )
    }
}

impl Connected for Limited {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
