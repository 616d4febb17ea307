//! The C server's REST API (RSRES, spec section 4) under `/api/backend/v1`,
//! for `osmo-remsim-apitool`, curl and scripts written against
//! osmo-remsim-server: the same paths, status codes and compact JSON (keys
//! in C's order), answered from the service task like the gRPC API.
//!
//! Where C is wrong, this is right (spec 4.1 [BUG]s):
//! * `GET /banks/{id}` and `GET /clients/{id}` of an unknown or disconnected
//!   id answer 404 (C: 200 with an empty body); `/clients/{id}` matches the
//!   client id (C compared the bank id, so `/clients/0` was any client) and
//!   answers its connected slot with the lowest slot number.
//! * Ids in paths must be decimal numbers: `abc` is a 400 (C read it as 0,
//!   so `DELETE /slotmaps/abc` deleted bank 0 slot 0).
//! * `POST /slotmaps` refuses values above 1023 (C cut them to 16 bits
//!   first, so 65537 mapped bank 1), and whatever the gRPC API refuses too
//!   (e.g. a slot beyond a connected bankd's numberOfSlots), with 400.
//! * `hwModel` is shown when the peer sent one (C never showed it).
//!
//! Differences a client may see:
//! * Error answers carry a short `text/plain` message saying what to do
//!   (C sends an empty body); the status codes are C's.
//! * Slot maps the bankd refused are listed with the state `"REFUSED"` (C
//!   has no such state; they are retried when the bankd reconnects). Maps
//!   being deleted are left out, as C's global list does.
//! * Bodies above [`BODY_LIMIT`] get 413, a service that cannot answer in
//!   time or is shutting down 503, a failed database write 503.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use remsim_api::v1 as pb;
use rspro::validate::MAX_ID;
use rspro::{BankSlot, ClientSlot};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::engine::{ApiError, MapKey};
use crate::service::{self, ServiceError};

/// The largest request body accepted: a slot map request is about 70 bytes.
pub const BODY_LIMIT: usize = 4096;
/// How long a request may wait for the service (queue and answer).
const SERVICE_WAIT: Duration = Duration::from_secs(10);
/// The largest bank or client id in a path, as C checks: above is a 400,
/// an id below that nobody has is a 404.
const PATH_ID_MAX: u32 = 65535;
/// What `POST /slotmaps` expects, for error messages.
const MAP_EXAMPLE: &str = r#"{"bank":{"bankId":1,"slotNr":0},"client":{"clientId":23,"slotNr":0}}"#;

/// A path under the API prefix.
macro_rules! v1 {
    ($path:literal) => {
        concat!("/api/backend/v1", $path)
    };
}

/// The REST API's routes, full paths included, ready to be merged into the
/// management port's router.
pub fn router(service: mpsc::Sender<service::Request>) -> Router {
    Router::new()
        .route(
            v1!("/restart-counter"),
            get(restart_counter).fallback(resource_not_found),
        )
        .route(v1!("/banks"), get(list_banks).fallback(resource_not_found))
        .route(
            v1!("/banks/{id}"),
            get(get_bank).fallback(resource_not_found),
        )
        .route(
            v1!("/clients"),
            get(list_clients).fallback(resource_not_found),
        )
        .route(
            v1!("/clients/{id}"),
            get(get_client).fallback(resource_not_found),
        )
        .route(
            v1!("/slotmaps"),
            get(list_slotmaps)
                .post(create_slotmap)
                .fallback(resource_not_found),
        )
        .route(
            v1!("/slotmaps/{id}"),
            delete(delete_slotmap).fallback(resource_not_found),
        )
        .route(
            v1!("/global-reset"),
            post(global_reset).fallback(resource_not_found),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(Rest { service })
}

#[derive(Clone)]
struct Rest {
    service: mpsc::Sender<service::Request>,
}

impl Rest {
    /// Asks the service task, bounded: a busy or stuck service is a 503,
    /// not a request that hangs.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, ServiceError>>) -> service::Request,
    ) -> Result<T, Failure> {
        let (tx, rx) = oneshot::channel();
        let exchange = async {
            if self.service.send(make(tx)).await.is_err() {
                return Err(shutting_down());
            }
            rx.await.map_err(|_| shutting_down())
        };
        match tokio::time::timeout(SERVICE_WAIT, exchange).await {
            Ok(answer) => answer?.map_err(failure),
            Err(_) => {
                warn!(bound = ?SERVICE_WAIT, "REST request: the service did not answer in time");
                Err(Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the server did not answer within {} s; a change may still be made: \
                         check with GET before trying again",
                        SERVICE_WAIT.as_secs()
                    ),
                ))
            }
        }
    }
}

/// A refused request: C's status code, with a message a person can act on.
struct Failure {
    status: StatusCode,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Failure::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Failure::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.status, self.message).into_response()
    }
}

fn shutting_down() -> Failure {
    Failure::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server is shutting down",
    )
}

/// The service's refusals with the status codes C uses for them.
fn failure(e: ServiceError) -> Failure {
    match e {
        ServiceError::Api(ApiError::InvalidArgument(m) | ApiError::AlreadyExists(m)) => {
            Failure::bad_request(m)
        }
        ServiceError::Api(ApiError::NotFound(m)) => Failure::not_found(m),
        ServiceError::Store(m) => Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("could not store the change ({m}); nothing was changed, try again"),
        ),
        ServiceError::Internal(m) => Failure::new(StatusCode::INTERNAL_SERVER_ERROR, m),
    }
}

/// A decimal id from a path, at most `max`: digits only.
fn decimal(text: &str, what: &str, max: u32) -> Result<u32, Failure> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Failure::bad_request(format!(
            "{what} {text:?} is not a decimal number"
        )));
    }
    text.parse::<u32>()
        .ok()
        .filter(|n| *n <= max)
        .ok_or_else(|| Failure::bad_request(format!("{what} {text} is out of range 0..{max}")))
}

// ----- JSON as C writes it ----------------------------------------------

/// An object with its keys in the order given (serde_json keeps insertion
/// order in this workspace).
fn object<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn component_id(id: pb::ComponentIdentity) -> Value {
    let mut out = Map::new();
    out.insert("type_".to_owned(), id.r#type.into());
    out.insert("name".to_owned(), id.name.into());
    out.insert("software".to_owned(), id.software.into());
    out.insert("swVersion".to_owned(), id.sw_version.into());
    let optional = [
        ("hwManufacturer", id.hw_manufacturer),
        ("hwModel", id.hw_model),
        ("hwSerialNr", id.hw_serial_nr),
        ("hwVersion", id.hw_version),
        ("fwVersion", id.fw_version),
    ];
    for (key, value) in optional {
        if !value.is_empty() {
            out.insert(key.to_owned(), value.into());
        }
    }
    Value::Object(out)
}

fn bank_json(b: pb::Bank) -> Value {
    object([
        ("peer", format!("B{}", b.bank_id).into()),
        ("state", "CONNECTED_BANKD".into()),
        ("component_id", component_id(b.identity.unwrap_or_default())),
        ("bankId", b.bank_id.into()),
        ("numberOfSlots", b.number_of_slots.into()),
    ])
}

fn client_json(c: pb::Client) -> Value {
    let slot = c.slot.unwrap_or_default();
    object([
        (
            "peer",
            format!("C{}:{}", slot.client_id, slot.slot_nr).into(),
        ),
        ("state", "CONNECTED_CLIENT".into()),
        ("component_id", component_id(c.identity.unwrap_or_default())),
    ])
}

/// A map as listed; None for maps being deleted, which C does not list.
fn slotmap_json(m: pb::Slotmap) -> Option<Value> {
    use pb::SlotmapState as S;
    let state = match m.state() {
        S::New => "NEW",
        S::Unacknowledged => "UNACKNOWLEDGED",
        S::Active => "ACTIVE",
        S::Refused => "REFUSED",
        S::DeleteReq | S::Deleting | S::Unspecified => return None,
    };
    let bank = m.bank.unwrap_or_default();
    let client = m.client.unwrap_or_default();
    Some(object([
        (
            "bank",
            object([
                ("bankId", bank.bank_id.into()),
                ("slotNr", bank.slot_nr.into()),
            ]),
        ),
        (
            "client",
            object([
                ("clientId", client.client_id.into()),
                ("slotNr", client.slot_nr.into()),
            ]),
        ),
        ("state", state.into()),
    ]))
}

/// 200 with compact JSON.
fn json_answer(value: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// 200 with `{"<key>":[...]}`.
fn listing(key: &str, items: Vec<Value>) -> Response {
    json_answer(&object([(key, Value::Array(items))]))
}

// ----- handlers -----------------------------------------------------------

/// ulfius' default answer, for a known path with another method (other
/// paths get the same from the management port's fallback).
async fn resource_not_found() -> Response {
    (StatusCode::NOT_FOUND, "Resource not found").into_response()
}

/// A stub in C too: 200 with an empty body.
async fn restart_counter() -> StatusCode {
    StatusCode::OK
}

async fn list_banks(State(rest): State<Rest>) -> Result<Response, Failure> {
    let banks = rest.ask(service::Request::ListBanks).await?;
    let banks = banks
        .into_iter()
        .filter(|b| b.connected)
        .map(bank_json)
        .collect();
    Ok(listing("banks", banks))
}

async fn get_bank(State(rest): State<Rest>, Path(id): Path<String>) -> Result<Response, Failure> {
    let bank_id = decimal(&id, "bank id", PATH_ID_MAX)?;
    let bank = rest
        .ask(|reply| service::Request::GetBank(bank_id, reply))
        .await?;
    if !bank.connected {
        return Err(Failure::not_found(format!(
            "bank {bank_id} is not connected"
        )));
    }
    Ok(json_answer(&bank_json(bank)))
}

async fn list_clients(State(rest): State<Rest>) -> Result<Response, Failure> {
    let clients = rest.ask(service::Request::ListClients).await?;
    let clients = clients
        .into_iter()
        .filter(|c| c.connected)
        .map(client_json)
        .collect();
    Ok(listing("clients", clients))
}

async fn get_client(State(rest): State<Rest>, Path(id): Path<String>) -> Result<Response, Failure> {
    let client_id = decimal(&id, "client id", PATH_ID_MAX)?;
    let clients = rest.ask(service::Request::ListClients).await?;
    let client = clients
        .into_iter()
        .filter(|c| c.connected && c.slot.is_some_and(|s| s.client_id == client_id))
        .min_by_key(|c| c.slot.map_or(0, |s| s.slot_nr))
        .ok_or_else(|| Failure::not_found(format!("no client with id {client_id} is connected")))?;
    Ok(json_answer(&client_json(client)))
}

async fn list_slotmaps(State(rest): State<Rest>) -> Result<Response, Failure> {
    let maps = rest.ask(service::Request::ListSlotmaps).await?;
    let maps = maps.into_iter().filter_map(slotmap_json).collect();
    Ok(listing("slotmaps", maps))
}

/// Whether the request has exactly one Content-Type, naming JSON: C reads
/// the body only then.
fn is_json(headers: &HeaderMap) -> bool {
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    match (types.next(), types.next()) {
        (Some(value), None) => value
            .to_str()
            .is_ok_and(|t| t.to_ascii_lowercase().contains("application/json")),
        _ => false,
    }
}

fn too_large() -> Failure {
    Failure::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is larger than {BODY_LIMIT} bytes; send {MAP_EXAMPLE}"),
    )
}

async fn create_slotmap(State(rest): State<Rest>, request: Request) -> Result<Response, Failure> {
    // Refused before reading: a huge body is not even received.
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(too_large());
    }
    if !is_json(request.headers()) {
        return Err(Failure::bad_request(format!(
            "send one Content-Type: application/json header and a body like {MAP_EXAMPLE}"
        )));
    }
    // Bodies without a length are cut at BODY_LIMIT (DefaultBodyLimit).
    let body = Bytes::from_request(request, &()).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            Failure::new(
                r.status(),
                format!("could not read the body: {}", r.body_text()),
            )
        }
    })?;
    let (bank, client) = slot_pair(&body)?;
    rest.ask(|reply| service::Request::CreateSlotmap(bank, client, reply))
        .await?;
    // As C: no body, no Location.
    Ok(StatusCode::CREATED.into_response())
}

/// The bank and client slot of a `POST /slotmaps` body; other keys are
/// ignored, as C does.
fn slot_pair(body: &[u8]) -> Result<(BankSlot, ClientSlot), Failure> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Failure::bad_request(format!("the body is not JSON ({e}); send {MAP_EXAMPLE}"))
    })?;
    let Value::Object(request) = value else {
        return Err(Failure::bad_request(format!(
            "the body must be a JSON object: {MAP_EXAMPLE}"
        )));
    };
    let bank = member(&request, "bank")?;
    let client = member(&request, "client")?;
    Ok((
        BankSlot::new(
            slot_id(bank, "bank", "bankId")?,
            slot_id(bank, "bank", "slotNr")?,
        ),
        ClientSlot::new(
            slot_id(client, "client", "clientId")?,
            slot_id(client, "client", "slotNr")?,
        ),
    ))
}

fn member<'a>(
    request: &'a Map<String, Value>,
    key: &str,
) -> Result<&'a Map<String, Value>, Failure> {
    request
        .get(key)
        .and_then(Value::as_object)
        .ok_or_else(|| Failure::bad_request(format!("\"{key}\" must be an object: {MAP_EXAMPLE}")))
}

/// An id or slot number: a JSON integer 0..1023 (reals, negative and larger
/// numbers are refused, not cut).
fn slot_id(object: &Map<String, Value>, parent: &str, key: &str) -> Result<u32, Failure> {
    let value = object
        .get(key)
        .ok_or_else(|| Failure::bad_request(format!("{parent}.{key} is missing: {MAP_EXAMPLE}")))?;
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n <= MAX_ID)
        .ok_or_else(|| {
            Failure::bad_request(format!(
                "{parent}.{key} is {value}; it must be an integer 0..{MAX_ID}"
            ))
        })
}

async fn delete_slotmap(
    State(rest): State<Rest>,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    // C's slot map id: bank id × 65536 + slot number.
    let id = decimal(&id, "slot map id", u32::MAX)?;
    let bank = BankSlot::new(id >> 16, id & 0xffff);
    if bank.bank_id > MAX_ID || bank.slot_nr > MAX_ID {
        return Err(Failure::not_found(format!(
            "no slot map {id} (bank {} slot {}): ids are bankId*65536+slotNr",
            bank.bank_id, bank.slot_nr
        )));
    }
    rest.ask(|reply| service::Request::DeleteSlotmap(MapKey::Bank(bank), reply))
        .await?;
    Ok(StatusCode::OK.into_response())
}

async fn global_reset(State(rest): State<Rest>) -> Result<Response, Failure> {
    rest.ask(service::Request::ResetAll).await?;
    Ok(StatusCode::OK.into_response())
}
