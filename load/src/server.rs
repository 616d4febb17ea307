//! One simulated remsim-server, for the bankd scenario: it accepts one
//! real bankd, answers its ConnectBankReq with ConnectBankRes(ok),
//! installs slot maps with CreateMappingReq one at a time (each answer
//! awaited: answers carry no tag, so order is all that matches them) and
//! then holds the link, PINGs sent and answered as remsim-server does,
//! everything else ignored.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use rspro::link::{Connection, ConnectionConfig};
use rspro::{BankSlot, ClientSlot, ComponentType, Identity, Msg, ResultCode, RsproPdu};
use tokio::net::TcpListener;
use tokio::time::{Instant, timeout_at};

use crate::{identity, known};

/// A bankd that announced itself and was accepted.
pub struct BankdLink {
    link: Connection,
    pub peer: SocketAddr,
    /// What its ConnectBankReq said.
    pub identity: Identity,
    pub bank_id: u32,
    pub slots: u32,
    /// Bound of each request's answer.
    timeout: Duration,
}

/// Listens on `listen` (HOST:PORT) for the bankd under test.
pub async fn bind(listen: &str) -> anyhow::Result<TcpListener> {
    let addr = tokio::net::lookup_host(listen)
        .await
        .with_context(|| format!("--listen {listen:?} is not HOST:PORT"))?
        .next()
        .with_context(|| format!("--listen {listen:?} has no address"))?;
    remsim_daemon::listen::bind(addr).with_context(|| format!("listen on {addr} for the bankd"))
}

/// Accepts one connection and waits on it for ConnectBankReq, answered
/// with ConnectBankRes(ok); all within `timeout`, which also bounds each
/// later request.
pub async fn accept_bankd(listener: &TcpListener, timeout: Duration) -> anyhow::Result<BankdLink> {
    let deadline = Instant::now() + timeout;
    let (stream, peer) = timeout_at(deadline, listener.accept())
        .await
        .map_err(|_| anyhow!("no bankd connected within {timeout:?}"))?
        .context("accept the bankd")?;
    // As remsim-server: it pings from the start, so a dead bankd shows.
    let mut link = Connection::new(stream, ConnectionConfig::server())
        .await
        .context("the bankd's server link")?;
    let req = loop {
        let received = timeout_at(deadline, link.recv())
            .await
            .map_err(|_| anyhow!("no connectBankReq from {peer} in time"))?
            .context("the bankd's server link")?;
        if let Some(Msg::ConnectBankReq(req)) = known(received) {
            break req;
        }
    };
    let kind = req.identity.component_type;
    if kind != ComponentType::RemsimBankd {
        bail!("{peer} sent connectBankReq as a {kind}, not a remsimBankd");
    }
    let welcome = RsproPdu::connect_bank_res(identity(ComponentType::RemsimServer), ResultCode::Ok);
    link.send(&welcome)
        .await
        .context("the bankd's server link")?;
    Ok(BankdLink {
        link,
        peer,
        identity: req.identity,
        bank_id: req.bank_id,
        slots: req.number_of_slots,
        timeout,
    })
}

impl BankdLink {
    /// CreateMappingReq for `bank` → `client`, and the result of its answer.
    pub async fn create_mapping(
        &mut self,
        client: ClientSlot,
        bank: BankSlot,
    ) -> anyhow::Result<ResultCode> {
        let deadline = Instant::now() + self.timeout;
        let req = RsproPdu::create_mapping_req(client, bank);
        self.link
            .send(&req)
            .await
            .context("the bankd's server link")?;
        loop {
            let received = timeout_at(deadline, self.link.recv())
                .await
                .map_err(|_| anyhow!("no createMappingRes for {bank} → {client} in time"))?
                .context("the bankd's server link")?;
            if let Some(Msg::CreateMappingRes(res)) = known(received) {
                return Ok(res.result);
            }
        }
    }

    /// Holds the link until it fails (the task is dropped otherwise), and
    /// says why it failed.
    pub async fn hold(mut self) -> String {
        loop {
            if let Err(e) = self.link.recv().await {
                return format!("the bankd's server link: {e}");
            }
        }
    }
}
