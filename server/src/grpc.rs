//! The `remsim.v1.RemsimService` gRPC service: validates requests, asks the
//! service task, and maps its errors to status codes a person can act on.

use std::net::SocketAddr;
use std::pin::Pin;

use remsim_api::v1 as pb;
use remsim_api::v1::remsim_service_server::RemsimService;
use rspro::{BankSlot, ClientSlot};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::engine::{ApiError, MapKey};
use crate::service::{self, ServiceError};

pub struct Api {
    service: mpsc::Sender<service::Request>,
    /// Turns true on shutdown: Watch streams end then, so that a watching
    /// remsimctl does not hold the graceful shutdown up.
    shutdown: watch::Receiver<bool>,
}

impl Api {
    pub fn new(service: mpsc::Sender<service::Request>, shutdown: watch::Receiver<bool>) -> Self {
        Api { service, shutdown }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ServiceError>>) -> service::Request,
    ) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.service
            .send(make(tx))
            .await
            .map_err(|_| Status::unavailable("the server is shutting down"))?;
        rx.await
            .map_err(|_| Status::unavailable("the server is shutting down"))?
            .map_err(status)
    }
}

/// The largest request message accepted (tonic's default is 4 MB): the
/// API's requests are a few ids and an endpoint; a larger one is refused
/// (OUT_OF_RANGE) from its length prefix, before it is read.
pub const MAX_REQUEST: usize = 16 * 1024;

fn status(e: ServiceError) -> Status {
    match e {
        ServiceError::Api(ApiError::InvalidArgument(m)) => Status::invalid_argument(m),
        ServiceError::Api(ApiError::NotFound(m)) => Status::not_found(m),
        ServiceError::Api(ApiError::AlreadyExists(m)) => Status::already_exists(m),
        // The database refused the write (disk full, read-only file): a
        // condition of the server's, not of the request; it may pass.
        ServiceError::Store(m) => Status::unavailable(format!(
            "could not store the change ({m}); nothing was changed: try again once the database is writable"
        )),
        ServiceError::Internal(m) => Status::internal(m),
    }
}

fn bank_slot(b: Option<pb::BankSlot>, what: &str) -> Result<BankSlot, Status> {
    b.map(|b| BankSlot::new(b.bank_id, b.slot_nr))
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "{what}: bank slot missing (\"bank\": {{\"bankId\": .., \"slotNr\": ..}})"
            ))
        })
}

fn client_slot(c: Option<pb::ClientSlot>, what: &str) -> Result<ClientSlot, Status> {
    c.map(|c| ClientSlot::new(c.client_id, c.slot_nr))
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "{what}: client slot missing (\"client\": {{\"clientId\": .., \"slotNr\": ..}})"
            ))
        })
}

fn get_key(key: Option<pb::get_slotmap_request::Key>) -> Result<MapKey, Status> {
    use pb::get_slotmap_request::Key;
    match key {
        Some(Key::Bank(b)) => Ok(MapKey::Bank(BankSlot::new(b.bank_id, b.slot_nr))),
        Some(Key::Client(c)) => Ok(MapKey::Client(ClientSlot::new(c.client_id, c.slot_nr))),
        None => Err(Status::invalid_argument(
            "name the slot map by \"bank\" or \"client\"",
        )),
    }
}

fn delete_key(key: Option<pb::delete_slotmap_request::Key>) -> Result<MapKey, Status> {
    use pb::delete_slotmap_request::Key;
    match key {
        Some(Key::Bank(b)) => Ok(MapKey::Bank(BankSlot::new(b.bank_id, b.slot_nr))),
        Some(Key::Client(c)) => Ok(MapKey::Client(ClientSlot::new(c.client_id, c.slot_nr))),
        None => Err(Status::invalid_argument(
            "name the slot map by \"bank\" or \"client\"",
        )),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl RemsimService for Api {
    async fn list_banks(
        &self,
        _: Request<pb::ListBanksRequest>,
    ) -> Result<Response<pb::ListBanksResponse>, Status> {
        let banks = self.ask(service::Request::ListBanks).await?;
        Ok(Response::new(pb::ListBanksResponse { banks }))
    }

    async fn get_bank(
        &self,
        request: Request<pb::GetBankRequest>,
    ) -> Result<Response<pb::Bank>, Status> {
        let bank_id = request.into_inner().bank_id;
        self.ask(|r| service::Request::GetBank(bank_id, r))
            .await
            .map(Response::new)
    }

    async fn list_clients(
        &self,
        _: Request<pb::ListClientsRequest>,
    ) -> Result<Response<pb::ListClientsResponse>, Status> {
        let clients = self.ask(service::Request::ListClients).await?;
        Ok(Response::new(pb::ListClientsResponse { clients }))
    }

    async fn get_client(
        &self,
        request: Request<pb::GetClientRequest>,
    ) -> Result<Response<pb::Client>, Status> {
        let slot = client_slot(request.into_inner().client, "GetClient")?;
        self.ask(|r| service::Request::GetClient(slot, r))
            .await
            .map(Response::new)
    }

    async fn list_slotmaps(
        &self,
        _: Request<pb::ListSlotmapsRequest>,
    ) -> Result<Response<pb::ListSlotmapsResponse>, Status> {
        let slotmaps = self.ask(service::Request::ListSlotmaps).await?;
        Ok(Response::new(pb::ListSlotmapsResponse { slotmaps }))
    }

    async fn get_slotmap(
        &self,
        request: Request<pb::GetSlotmapRequest>,
    ) -> Result<Response<pb::Slotmap>, Status> {
        let key = get_key(request.into_inner().key)?;
        self.ask(|r| service::Request::GetSlotmap(key, r))
            .await
            .map(Response::new)
    }

    async fn create_slotmap(
        &self,
        request: Request<pb::CreateSlotmapRequest>,
    ) -> Result<Response<pb::Slotmap>, Status> {
        let req = request.into_inner();
        let bank = bank_slot(req.bank, "CreateSlotmap")?;
        let client = client_slot(req.client, "CreateSlotmap")?;
        self.ask(|r| service::Request::CreateSlotmap(bank, client, r))
            .await
            .map(Response::new)
    }

    async fn create_slotmaps(
        &self,
        request: Request<pb::CreateSlotmapsRequest>,
    ) -> Result<Response<pb::CreateSlotmapsResponse>, Status> {
        let pairs = request
            .into_inner()
            .slotmaps
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                let what = format!("CreateSlotmaps, map {i}");
                Ok((bank_slot(m.bank, &what)?, client_slot(m.client, &what)?))
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let slotmaps = self
            .ask(|r| service::Request::CreateSlotmaps(pairs, r))
            .await?;
        Ok(Response::new(pb::CreateSlotmapsResponse { slotmaps }))
    }

    async fn delete_slotmap(
        &self,
        request: Request<pb::DeleteSlotmapRequest>,
    ) -> Result<Response<pb::Slotmap>, Status> {
        let key = delete_key(request.into_inner().key)?;
        self.ask(|r| service::Request::DeleteSlotmap(key, r))
            .await
            .map(Response::new)
    }

    async fn reset_all(
        &self,
        _: Request<pb::ResetAllRequest>,
    ) -> Result<Response<pb::ResetAllResponse>, Status> {
        let deleted = self.ask(service::Request::ResetAll).await?;
        Ok(Response::new(pb::ResetAllResponse { deleted }))
    }

    async fn set_bank_endpoint(
        &self,
        request: Request<pb::SetBankEndpointRequest>,
    ) -> Result<Response<pb::Bank>, Status> {
        let req = request.into_inner();
        let endpoint = match req.endpoint.trim() {
            "" => None,
            text => Some(text.parse::<SocketAddr>().map_err(|_| {
                Status::invalid_argument(format!(
                    "endpoint {text:?} is not ip:port (e.g. 192.0.2.10:9999 or [2001:db8::1]:9999)"
                ))
            })?),
        };
        self.ask(|r| service::Request::SetBankEndpoint(req.bank_id, endpoint, r))
            .await
            .map(Response::new)
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let snapshot = request.into_inner().snapshot;
        let (events, receiver) = self.ask(|r| service::Request::Watch(snapshot, r)).await?;
        let live = BroadcastStream::new(receiver).map(|e| {
            e.map_err(|lagged| {
                Status::data_loss(format!(
                    "watcher too slow: {lagged}; watch again with a snapshot"
                ))
            })
        });
        let stream = tokio_stream::iter(events.into_iter().map(Ok)).chain(live);
        let mut shutdown = self.shutdown.clone();
        let stream = futures::StreamExt::take_until(stream, async move {
            let _ = shutdown.wait_for(|down| *down).await;
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
