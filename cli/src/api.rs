//! The gRPC side of remsimctl: connecting with timeouts, and turning
//! failures into one-line messages and exit codes scripts can rely on.

use std::process::ExitCode;
use std::time::Duration;

use remsim_api::v1::remsim_service_client::RemsimServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

pub type Client = RemsimServiceClient<Channel>;

/// Exit codes (documented in the README and `--help`).
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_INVALID: u8 = 2;
pub const EXIT_NOT_FOUND: u8 = 3;
pub const EXIT_CONFLICT: u8 = 4;
pub const EXIT_UNREACHABLE: u8 = 5;

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(EXIT_INVALID, message)
    }

    pub fn exit(&self) -> ExitCode {
        eprintln!("remsimctl: {}", self.message);
        ExitCode::from(self.code)
    }
}

impl From<Status> for Failure {
    fn from(s: Status) -> Self {
        let code = match s.code() {
            Code::InvalidArgument | Code::OutOfRange => EXIT_INVALID,
            Code::NotFound => EXIT_NOT_FOUND,
            Code::AlreadyExists | Code::FailedPrecondition => EXIT_CONFLICT,
            Code::Unavailable | Code::DeadlineExceeded => EXIT_UNREACHABLE,
            _ => EXIT_FAILURE,
        };
        let message = if s.message().is_empty() {
            format!("{:?}", s.code())
        } else {
            s.message().to_string()
        };
        Failure::new(code, message)
    }
}

/// Connects to the server, within `connect_timeout`; each request is bounded
/// by `timeout` (none for streams when `None`).
pub async fn connect(
    server: &str,
    connect_timeout: Duration,
    timeout: Option<Duration>,
) -> Result<Client, Failure> {
    let mut endpoint = Endpoint::from_shared(server.to_string())
        .map_err(|e| Failure::invalid(format!("server address {server:?}: {e}")))?
        .connect_timeout(connect_timeout);
    if let Some(t) = timeout {
        endpoint = endpoint.timeout(t);
    }
    let channel = endpoint.connect().await.map_err(|e| {
        Failure::new(
            EXIT_UNREACHABLE,
            format!("cannot reach the server at {server}: {e}"),
        )
    })?;
    Ok(RemsimServiceClient::new(channel))
}
