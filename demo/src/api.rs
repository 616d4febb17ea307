//! The demo's calls to the gRPC management API (the same API remsimctl and
//! grpcurl use): wait for the server and the bank, set the bank's endpoint,
//! create and delete slot maps. Every call and every wait is bounded.

use std::time::Duration;

use anyhow::{Context, bail};
use remsim_api::v1 as pb;
use remsim_api::v1::remsim_service_client::RemsimServiceClient;
use tonic::transport::{Channel, Endpoint};

/// How long the server or the bank may take to come up.
const START_BOUND: Duration = Duration::from_secs(20);
/// How long one call may take.
const CALL_BOUND: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);

pub struct Api {
    client: RemsimServiceClient<Channel>,
}

impl Api {
    /// Connects once the server listens; `alive` fails when it has died.
    pub async fn connect(
        port: u16,
        mut alive: impl FnMut() -> anyhow::Result<()>,
    ) -> anyhow::Result<Api> {
        let endpoint = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .context("API address")?
            .connect_timeout(CALL_BOUND)
            .timeout(CALL_BOUND)
            .tcp_nodelay(true);
        let deadline = tokio::time::Instant::now() + START_BOUND;
        loop {
            alive()?;
            if let Ok(channel) = endpoint.connect().await {
                return Ok(Api {
                    client: RemsimServiceClient::new(channel),
                });
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "remsim-server's API on 127.0.0.1:{port} did not come up within {START_BOUND:?}"
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until bank `bank_id` is connected to the server.
    pub async fn wait_for_bank(
        &mut self,
        bank_id: u32,
        mut alive: impl FnMut() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + START_BOUND;
        loop {
            alive()?;
            let banks = self
                .client
                .list_banks(pb::ListBanksRequest {})
                .await
                .context("ListBanks")?
                .into_inner()
                .banks;
            if banks.iter().any(|b| b.bank_id == bank_id && b.connected) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("bank {bank_id} did not connect to the server within {START_BOUND:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Tells the server where clients reach the bank: RSPRO carries no bankd
    /// port, so the server would send the C default 9999.
    pub async fn set_bank_endpoint(
        &mut self,
        bank_id: u32,
        endpoint: String,
    ) -> anyhow::Result<()> {
        self.client
            .set_bank_endpoint(pb::SetBankEndpointRequest { bank_id, endpoint })
            .await
            .context("SetBankEndpoint")?;
        Ok(())
    }

    /// Maps client slot `client_id:0` to bank slot `bank`.
    pub async fn create(&mut self, client_id: u32, bank: (u32, u32)) -> anyhow::Result<()> {
        self.client
            .create_slotmap(pb::CreateSlotmapRequest::new(bank, (client_id, 0)))
            .await
            .with_context(|| format!("CreateSlotmap {}:{} -> {client_id}:0", bank.0, bank.1))?;
        Ok(())
    }

    /// Deletes the map of client slot `client_id:0`.
    pub async fn delete_client_map(&mut self, client_id: u32) -> anyhow::Result<()> {
        let key = pb::delete_slotmap_request::Key::Client(pb::ClientSlot {
            client_id,
            slot_nr: 0,
        });
        self.client
            .delete_slotmap(pb::DeleteSlotmapRequest { key: Some(key) })
            .await
            .with_context(|| format!("DeleteSlotmap of client {client_id}:0"))?;
        Ok(())
    }
}
