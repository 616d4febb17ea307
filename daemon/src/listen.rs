//! The accept side of every remsim port, one policy for all: a connection
//! limit (a peer over it is closed at once, with a log line when the limit
//! is reached), back-off when accept fails for want of resources (EMFILE),
//! a tracing span per connection, an optional allow-list of source
//! networks (`--rspro-allow`), and shutdown: stop accepting, tell every
//! connection, then wait for them to end within a bound.

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::{Instrument, info, info_span, warn};

/// How long a shutdown waits for connections to end by default.
pub const DRAIN_BOUND: Duration = Duration::from_secs(3);

/// Back-off after an accept error: from the first to the last, doubling.
const BACKOFF_FIRST: Duration = Duration::from_millis(10);
const BACKOFF_LAST: Duration = Duration::from_secs(1);

/// The policy of one port.
#[derive(Debug, Clone)]
pub struct Policy {
    /// What the port is, for logs ("rspro", "clients", "api").
    pub port: &'static str,
    /// Connections held at once; more are closed as they come.
    pub limit: Limit,
    /// How long shutdown waits for open connections to end.
    pub drain: Duration,
    /// Source networks served; others are closed at accept.
    pub allow: Allow,
}

impl Policy {
    pub fn new(port: &'static str, max_connections: usize) -> Self {
        Policy {
            port,
            limit: Limit::new(max_connections),
            drain: DRAIN_BOUND,
            allow: Allow::default(),
        }
    }

    pub fn with_allow(mut self, allow: Allow) -> Self {
        self.allow = allow;
        self
    }
}

/// Addresses remembered for the "refused" log line; beyond, refusals are
/// only counted (a scan from many addresses must not grow memory).
const REFUSED_LOGGED: usize = 4096;

/// The networks a port serves (`--rspro-allow 10.0.0.0/8,192.0.2.7`);
/// empty: everyone. A clone shares the refusal count.
#[derive(Debug, Clone, Default)]
pub struct Allow {
    nets: Arc<Vec<ipnet::IpNet>>,
    refused: Arc<AtomicU64>,
    logged: Arc<std::sync::Mutex<HashSet<IpAddr>>>,
}

impl Allow {
    /// Parses a comma-separated list of networks (`10.0.0.0/8`) and
    /// addresses (`192.0.2.7`, `::1`).
    pub fn parse(list: &str) -> Result<Allow, String> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let net = match item.parse::<ipnet::IpNet>() {
                Ok(net) => net,
                Err(_) => item
                    .parse::<IpAddr>()
                    .map(ipnet::IpNet::from)
                    .map_err(|_| {
                        format!("{item:?} is not a network (10.0.0.0/8, fd00::/8) or an address")
                    })?,
            };
            nets.push(net);
        }
        if nets.is_empty() {
            return Err("the allow-list names no network".into());
        }
        Ok(Allow {
            nets: Arc::new(nets),
            ..Allow::default()
        })
    }

    /// Whether `peer` may connect; a refusal is counted, and logged once
    /// per address.
    pub fn admits(&self, port: &str, peer: SocketAddr) -> bool {
        let ip = canonical(peer.ip());
        if self.nets.is_empty() || self.nets.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut logged) = self.logged.lock()
            && logged.len() < REFUSED_LOGGED
            && logged.insert(ip)
        {
            warn!(port, peer = %ip, "connection from outside the allow-list closed (logged once per address)");
        }
        false
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Whether the list is empty (everyone admitted).
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The same networks with counts of its own, for another port.
    pub fn for_another_port(&self) -> Allow {
        Allow {
            nets: self.nets.clone(),
            ..Allow::default()
        }
    }
}

/// An IPv4 peer on a dual-stack socket shows as `::ffff:a.b.c.d`; the
/// allow-list names it as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Tells every task of a program that it is shutting down.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl From<watch::Receiver<bool>> for Shutdown {
    fn from(rx: watch::Receiver<bool>) -> Self {
        Shutdown(rx)
    }
}

impl Shutdown {
    /// A trigger and the signal it sends.
    pub fn channel() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (tx, Shutdown(rx))
    }

    /// Resolves once shutdown is asked for (or its trigger is gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|down| *down).await;
    }
}

/// Counts a port's connections against its limit. A clone shares the count.
#[derive(Debug, Clone)]
pub struct Limit {
    permits: Arc<Semaphore>,
    max: usize,
    /// Set while connections are being refused, so the log says it once.
    full: Arc<std::sync::atomic::AtomicBool>,
    /// Connections closed for want of a place.
    refused: Arc<AtomicU64>,
}

impl Limit {
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Limit {
            permits: Arc::new(Semaphore::new(max)),
            max,
            full: Arc::default(),
            refused: Arc::default(),
        }
    }

    /// Connections closed so far because the port was full.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// A place for one more connection, or None (logged when the port
    /// becomes full, and when it has room again).
    pub fn admit(&self, port: &str, peer: SocketAddr) -> Option<OwnedSemaphorePermit> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                if self.full.swap(false, Ordering::Relaxed) {
                    info!(port, max = self.max, "connection limit: accepting again");
                }
                Some(permit)
            }
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                if !self.full.swap(true, Ordering::Relaxed) {
                    warn!(port, max = self.max, %peer, "connection limit reached; closing new connections until some end");
                }
                None
            }
        }
    }

    /// Resolves once there is a place for one more connection.
    pub async fn freed(&self) {
        let _ = self.permits.acquire().await;
    }

    /// Waits until every connection has ended, at most `bound`; returns
    /// how many are still open then.
    pub async fn drained(&self, bound: Duration) -> usize {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        match tokio::time::timeout(bound, self.permits.acquire_many(all)).await {
            Ok(_) => 0,
            Err(_) => self.open(),
        }
    }
}

/// What a connection's handler gets besides the socket.
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub shutdown: Shutdown,
}

/// Accepts on `listener` until `shutdown`, runs `handler` for each
/// connection in its own task and span, and returns once the connections
/// have ended or the drain bound passed; the result is how many were
/// still open then.
pub async fn serve<H, F>(
    listener: TcpListener,
    policy: Policy,
    mut shutdown: Shutdown,
    handler: H,
) -> usize
where
    H: Fn(Accepted) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut backoff = Backoff::default();
    let port = policy.port;
    loop {
        let (stream, peer, place) = tokio::select! {
            next = next_connection(&listener, &policy, &mut backoff) => next,
            _ = shutdown.wait() => break,
        };
        let span = info_span!("conn", port, %peer);
        let task = handler(Accepted {
            stream,
            peer,
            shutdown: shutdown.clone(),
        });
        // The place is given back when the task ends. `map`, not an
        // async block awaiting `task`: that would hold the handler's
        // future twice (captured, and being awaited), doubling what every
        // idle connection costs.
        tokio::spawn(task.map(move |()| drop(place)).instrument(span));
    }
    let drain = policy.drain;
    let left = policy.limit.drained(drain).await;
    if left > 0 {
        warn!(port, left, bound = ?drain, "connections still open after the shutdown bound");
    }
    left
}

/// The next connection of a port, with its place under the limit. Over the
/// limit, or from outside the allow-list, a socket is dropped as it comes:
/// the peer sees the close at once instead of hanging in the backlog.
/// Accept errors that mean no resources pause the loop. Cancel-safe:
/// nothing accepted is lost on cancellation.
pub async fn next_connection(
    listener: &TcpListener,
    policy: &Policy,
    backoff: &mut Backoff,
) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff.reset();
                if !policy.allow.admits(policy.port, peer) {
                    continue;
                }
                if let Some(place) = policy.limit.admit(policy.port, peer) {
                    return (stream, peer, place);
                }
            }
            Err(e) => {
                if let Some(pause) = backoff.on_error(&e) {
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

/// The pause after a failed accept. Errors about one connection (reset
/// before it was taken, say) cost nothing; running out of descriptors or
/// memory would otherwise spin the loop, so those wait, doubling, and are
/// logged once per run of failures.
#[derive(Debug, Default)]
pub struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    pub fn reset(&mut self) {
        self.next = None;
    }

    pub fn on_error(&mut self, e: &io::Error) -> Option<Duration> {
        if !exhausts_resources(e) {
            return None;
        }
        let pause = match self.next {
            None => {
                warn!(error = %e, "accept failed; backing off until it works again");
                BACKOFF_FIRST
            }
            Some(pause) => pause,
        };
        self.next = Some((pause * 2).min(BACKOFF_LAST));
        Some(pause)
    }
}

fn exhausts_resources(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM on Linux.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12)) || e.kind() == io::ErrorKind::OutOfMemory
}

/// Raises the soft limit on open files to the hard one: a server holding
/// thousands of connections needs more than the usual 1,024.
/// How many connections the kernel may hold complete before they are
/// accepted (capped by net.core.somaxconn). The default of std and tokio
/// (128) made thousands of modems connecting at once after an outage wait
/// for SYN retransmits (1 s, 3 s, ...).
pub const BACKLOG: u32 = 4096;

/// Binds a listening port with [`BACKLOG`] (and SO_REUSEADDR, as std does).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

pub fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(now) => tracing::debug!(open_files = now, "open files limit"),
        Err(e) => warn!(error = %e, "could not raise the open files limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn emfile() -> io::Error {
        io::Error::from_raw_os_error(24)
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets_on_success() {
        let mut b = Backoff::default();
        let pauses: Vec<_> = (0..10).map(|_| b.on_error(&emfile())).collect();
        assert_eq!(pauses[0], Some(BACKOFF_FIRST));
        assert_eq!(pauses[1], Some(BACKOFF_FIRST * 2));
        assert_eq!(pauses[9], Some(BACKOFF_LAST));
        b.reset();
        assert_eq!(b.on_error(&emfile()), Some(BACKOFF_FIRST));
    }

    #[test]
    fn errors_about_one_connection_cost_no_pause() {
        let mut b = Backoff::default();
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(b.on_error(&aborted), None);
        assert_eq!(
            b.on_error(&io::Error::from_raw_os_error(23)),
            Some(BACKOFF_FIRST)
        );
    }

    #[test]
    fn the_allow_list_takes_networks_and_addresses_and_counts_refusals() {
        let allow = Allow::parse("10.0.0.0/8, 192.0.2.7,fd00::/8").expect("parses");
        let at = |ip: &str| SocketAddr::new(ip.parse().expect("ip"), 4000);
        assert!(allow.admits("t", at("10.1.2.3")));
        assert!(allow.admits("t", at("192.0.2.7")));
        assert!(
            allow.admits("t", at("::ffff:10.9.9.9")),
            "IPv4 seen on a dual-stack socket"
        );
        assert!(allow.admits("t", at("fd00::1")));
        assert!(!allow.admits("t", at("192.0.2.8")));
        assert!(!allow.admits("t", at("192.0.2.8")));
        assert!(!allow.admits("t", at("127.0.0.1")));
        assert_eq!(allow.refused(), 3);
        assert_eq!(
            allow.logged.lock().expect("lock").len(),
            2,
            "logged once per address"
        );
        assert!(
            Allow::default().admits("t", at("203.0.113.1")),
            "no list: everyone"
        );
        assert!(Allow::parse("10.0.0.0/33").is_err());
        assert!(Allow::parse("bank-a").is_err());
        assert!(Allow::parse(" , ").is_err());
    }

    /// The kernel shows a listening socket's backlog as its Send-Q.
    #[tokio::test]
    async fn ports_listen_with_the_large_backlog() {
        let listener = bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let out = std::process::Command::new("ss")
            .args(["-Hltn", &format!("sport = :{port}")])
            .output()
            .expect("ss (iproute2)");
        let line = String::from_utf8_lossy(&out.stdout).into_owned();
        let send_q: u32 = line
            .split_whitespace()
            .nth(2)
            .and_then(|q| q.parse().ok())
            .unwrap_or_else(|| panic!("no Send-Q in {line:?}"));
        let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(BACKLOG);
        assert_eq!(send_q, BACKLOG.min(somaxconn), "{line}");
        assert!(send_q > 128, "more than std's 128");
    }

    /// Reads until EOF; true if the server closed without sending.
    async fn closed_at_once(stream: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await,
            Ok(Ok(0))
        )
    }

    #[tokio::test]
    async fn over_the_limit_a_peer_is_closed_and_a_freed_place_is_taken_again() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (trigger, shutdown) = Shutdown::channel();
        let (events_tx, mut events) = tokio::sync::mpsc::channel::<&str>(8);
        let policy = Policy {
            drain: Duration::from_millis(100),
            ..Policy::new("test", 2)
        };
        let limit = policy.limit.clone();
        // Each handler holds its connection until the peer closes it.
        let server = tokio::spawn(serve(listener, policy, shutdown, move |mut a: Accepted| {
            let events = events_tx.clone();
            async move {
                let _ = events.send("started").await;
                let mut buf = [0u8; 16];
                while matches!(a.stream.read(&mut buf).await, Ok(n) if n > 0) {}
            }
        }));
        let first = TcpStream::connect(addr).await.expect("connect");
        let _second = TcpStream::connect(addr).await.expect("connect");
        let mut third = TcpStream::connect(addr).await.expect("connect");
        assert!(closed_at_once(&mut third).await, "third over a limit of 2");
        assert_eq!(events.recv().await, Some("started"));
        assert_eq!(events.recv().await, Some("started"));
        assert_eq!(limit.open(), 2);
        drop(first);
        // The place comes back when the first connection's task has ended.
        tokio::time::timeout(Duration::from_secs(10), limit.freed())
            .await
            .expect("a place freed");
        let _fourth = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(events.recv().await, Some("started"), "the fourth is taken");
        trigger.send(true).expect("shutdown");
        // The handlers ignore shutdown: the second and the fourth are left.
        assert_eq!(server.await.expect("serve"), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_connections_that_end_on_the_signal() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (trigger, shutdown) = Shutdown::channel();
        let (started_tx, mut started) = tokio::sync::mpsc::channel::<()>(8);
        let server = tokio::spawn(serve(
            listener,
            Policy::new("test", 8),
            shutdown,
            move |mut a: Accepted| {
                let started = started_tx.clone();
                async move {
                    let _ = started.send(()).await;
                    a.shutdown.wait().await;
                    // Some work after the signal, under the bound.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        ));
        let _a = TcpStream::connect(addr).await.expect("connect");
        let _b = TcpStream::connect(addr).await.expect("connect");
        started.recv().await.expect("first");
        started.recv().await.expect("second");
        trigger.send(true).expect("shutdown");
        assert_eq!(server.await.expect("serve"), 0);
    }
}
