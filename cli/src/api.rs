//! The gRPC side of remsimctl: connecting with timeouts, and turning
//! failures into one-line messages and exit codes scripts can rely on.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use remsim_api::v1::remsim_service_client::RemsimServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

pub type Client = RemsimServiceClient<InterceptedService<Channel, Bearer>>;

/// How remsimctl proves who it is: a bearer token, a CA for the server's
/// certificate, a client certificate.
#[derive(Debug, Default, Clone)]
pub struct Credentials {
    /// The token itself (from --token-file or REMSIM_TOKEN).
    pub token: Option<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl Credentials {
    /// Reads the token file, if any: the bare token, surrounding blanks
    /// and a final newline ignored.
    pub fn read_token_file(path: &std::path::Path) -> Result<String, Failure> {
        let text = remsim_daemon::files::read_text(path, remsim_daemon::files::FILE_LIMIT)
            .map_err(|e| Failure::invalid(format!("token file {}: {e}", path.display())))?;
        let token = text.trim();
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(Failure::invalid(format!(
                "token file {}: expected one token, without spaces",
                path.display()
            )));
        }
        Ok(token.to_string())
    }

    fn tls(&self) -> Result<ClientTlsConfig, Failure> {
        let read = |p: &PathBuf| {
            remsim_daemon::files::read_text(p, remsim_daemon::files::PEM_LIMIT)
                .map_err(|e| Failure::invalid(format!("{}: {e}", p.display())))
        };
        let mut tls = match &self.ca {
            Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?)),
            // No CA given: the system's, for a server behind a public certificate.
            None => ClientTlsConfig::new().with_native_roots(),
        };
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?))
            }
            (None, None) => {}
            _ => return Err(Failure::invalid("give both --cert and --key")),
        }
        Ok(tls)
    }
}

/// Adds `authorization: Bearer TOKEN` to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

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
        let mut message = if s.message().is_empty() {
            format!("{:?}", s.code())
        } else {
            s.message().to_string()
        };
        // A transport failure (a refused certificate, say) is in the sources.
        if let Some(source) = std::error::Error::source(&s) {
            let more = causes(source);
            if more.starts_with(&message) {
                message = more;
            } else if !message.contains(&more) {
                message = format!("{message}: {more}");
            }
        }
        Failure::new(code, message)
    }
}

/// An error and its causes, outermost first: tonic's "transport error"
/// alone does not say that a certificate was refused, its sources do.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// Connects to the server, within `connect_timeout`; each request is bounded
/// by `timeout` (none for streams when `None`).
pub async fn connect(
    server: &str,
    credentials: &Credentials,
    connect_timeout: Duration,
    timeout: Option<Duration>,
) -> Result<Client, Failure> {
    let mut endpoint = Endpoint::from_shared(server.to_string())
        .map_err(|e| Failure::invalid(format!("server address {server:?}: {e}")))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    let https = server.starts_with("https://");
    if https {
        endpoint = endpoint
            .tls_config(credentials.tls()?)
            .map_err(|e| Failure::invalid(format!("TLS settings: {e}")))?;
    } else if credentials.ca.is_some() || credentials.cert.is_some() {
        return Err(Failure::invalid(
            "--ca, --cert and --key need an https:// server address",
        ));
    }
    if let Some(t) = timeout {
        endpoint = endpoint.timeout(t);
    }
    let channel = endpoint.connect().await.map_err(|e| {
        Failure::new(
            EXIT_UNREACHABLE,
            format!("cannot reach the server at {server}: {}", causes(&e)),
        )
    })?;
    let bearer = match &credentials.token {
        Some(token) => Some(
            format!("Bearer {token}")
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| {
                    Failure::invalid("the token holds characters a header cannot carry")
                })?,
        ),
        None => None,
    };
    Ok(RemsimServiceClient::with_interceptor(
        channel,
        Bearer(bearer),
    ))
}
