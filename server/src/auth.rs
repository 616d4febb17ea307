//! Who may do what on the management port: bearer tokens with a role
//! (`admin` or `read`) from a file (`--api-tokens`, re-read on SIGHUP),
//! checked by one layer in front of gRPC, the C REST API and `/metrics`.
//! Health stays open for Kubernetes probes, which send no headers.
//! Tokens are kept as SHA-256 digests, compared in constant time (so not
//! even their length shows in the timing) and never logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// List, Get and Watch; HTTP GET.
    Read,
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Health: open to anyone.
    Open,
    Read,
    Write,
}

/// The gRPC health service's path prefix.
const HEALTH: &str = "/grpc.health.v1.Health/";
const REMSIM_SERVICE: &str = "/remsim.v1.RemsimService/";
const REFLECTION: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// What a request to `path` with `method` needs.
pub fn access(method: &Method, path: &str) -> Access {
    if path.starts_with(HEALTH) {
        return Access::Open;
    }
    if let Some(rpc) = path.strip_prefix(REMSIM_SERVICE) {
        let reads = rpc.starts_with("List") || rpc.starts_with("Get") || rpc == "Watch";
        return if reads { Access::Read } else { Access::Write };
    }
    // Reflection describes the API; it changes nothing.
    if REFLECTION.iter().any(|p| path.starts_with(p)) {
        return Access::Read;
    }
    match *method {
        Method::GET | Method::HEAD => Access::Read,
        _ => Access::Write,
    }
}

type Digest = [u8; 32];

fn digest(token: &[u8]) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token).as_ref());
    out
}

/// The tokens of a tokens file, as digests.
#[derive(Default)]
pub struct Tokens {
    entries: Vec<(Role, Digest)>,
}

impl Tokens {
    /// Parses `ROLE:TOKEN` lines; `#` starts a comment line.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = n + 1;
            // The message names the line, never the token.
            let (role, token) = line
                .split_once(':')
                .ok_or_else(|| format!("line {at}: expected ROLE:TOKEN"))?;
            let role = match role.trim() {
                "admin" => Role::Admin,
                "read" => Role::Read,
                other => {
                    return Err(format!(
                        "line {at}: role {other:?} is neither \"admin\" nor \"read\""
                    ));
                }
            };
            let token = token.trim();
            if token.is_empty() || token.chars().any(char::is_whitespace) {
                return Err(format!("line {at}: the token is empty or holds spaces"));
            }
            entries.push((role, digest(token.as_bytes())));
        }
        if entries.is_empty() {
            return Err("no token in the file: nobody could use the API".into());
        }
        Ok(Tokens { entries })
    }

    /// The role of a presented token. Every entry is compared, each in
    /// constant time, so the answer's timing tells nothing of the tokens.
    pub fn role(&self, presented: &[u8]) -> Option<Role> {
        let presented = digest(presented);
        let mut found = None;
        for (role, token) in &self.entries {
            if bool::from(token.ct_eq(&presented)) && found.is_none() {
                found = Some(*role);
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Never true for parsed tokens (an empty file is refused); clippy
    /// asks for it beside `len` now that the type is public.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The port's authentication: off, or tokens from a file.
pub struct Auth {
    file: Option<PathBuf>,
    tokens: RwLock<Arc<Tokens>>,
    /// The file as last read, to notice a change (a rotated Secret).
    stamp: Mutex<Option<(SystemTime, u64)>>,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Auth {
    /// No authentication (local use, the default).
    pub fn off() -> Arc<Auth> {
        Arc::new(Auth {
            file: None,
            tokens: RwLock::default(),
            stamp: Mutex::default(),
        })
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Arc<Auth>> {
        let read_at = stamp(path);
        let tokens = read(path)?;
        info!(file = %path.display(), tokens = tokens.len(), "API tokens loaded");
        Ok(Arc::new(Auth {
            file: Some(path.to_owned()),
            tokens: RwLock::new(Arc::new(tokens)),
            stamp: Mutex::new(read_at),
        }))
    }

    pub fn is_on(&self) -> bool {
        self.file.is_some()
    }

    /// Re-reads the tokens file; a broken file keeps the previous tokens.
    fn reload_now(&self) {
        let Some(path) = &self.file else { return };
        let read_at = stamp(path);
        match read(path) {
            Ok(tokens) => {
                let count = tokens.len();
                // Poisoning cannot leave an Arc half-written: take it as it is.
                *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tokens);
                *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) = read_at;
                // Logged once in force: what the log says is what is served.
                info!(file = %path.display(), tokens = count, "API tokens reloaded");
            }
            Err(e) => {
                warn!(file = %path.display(), error = format!("{e:#}"), "API tokens not reloaded; keeping the previous ones")
            }
        }
    }

    fn changed_on_disk(&self) -> bool {
        let Some(path) = &self.file else {
            return false;
        };
        let now = stamp(path);
        *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) != now
    }

    fn tokens(&self) -> Arc<Tokens> {
        self.tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl remsim_daemon::Reload for Auth {
    fn reload(&self) {
        self.reload_now();
    }

    fn reload_if_changed(&self) {
        if self.changed_on_disk() {
            self.reload_now();
        }
    }
}

fn read(path: &Path) -> anyhow::Result<Tokens> {
    let text = remsim_daemon::files::read_text(path, remsim_daemon::files::FILE_LIMIT)
        .with_context(|| format!("reading API tokens from {}", path.display()))?;
    Tokens::parse(&text).map_err(|e| anyhow::anyhow!("API tokens file {}: {e}", path.display()))
}

/// The token of an `authorization: Bearer TOKEN` header.
fn bearer(request: &Request) -> Option<&[u8]> {
    let value = request.headers().get(header::AUTHORIZATION)?.as_bytes();
    let scheme = value.get(..7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| value[7..].trim_ascii())
}

/// Refuses a request the way its protocol understands: a gRPC status for
/// gRPC callers, an HTTP status for the rest.
fn refuse(grpc: bool, status: tonic::Status, http: StatusCode) -> Response {
    if grpc {
        return status.into_http::<Body>();
    }
    let mut response = (http, format!("{}\n", status.message())).into_response();
    if http == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// The layer: lets a request through or refuses it.
pub async fn check(State(auth): State<Arc<Auth>>, request: Request, next: Next) -> Response {
    if !auth.is_on() {
        return next.run(request).await;
    }
    let needs = access(request.method(), request.uri().path());
    if needs == Access::Open {
        return next.run(request).await;
    }
    let grpc = crate::api_port::is_grpc(&request);
    let role = bearer(&request).and_then(|t| auth.tokens().role(t));
    match (role, needs) {
        (None, _) => refuse(
            grpc,
            tonic::Status::unauthenticated(
                "a token is needed: send \"authorization: Bearer TOKEN\" (remsimctl --token-file)",
            ),
            StatusCode::UNAUTHORIZED,
        ),
        (Some(Role::Read), Access::Write) => refuse(
            grpc,
            tonic::Status::permission_denied(
                "this token may only read; changes need an admin token",
            ),
            StatusCode::FORBIDDEN,
        ),
        _ => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_are_told_apart_by_method() {
        let post = Method::POST;
        let rpc = |m: &str| access(&post, &format!("{REMSIM_SERVICE}{m}"));
        assert_eq!(rpc("ListBanks"), Access::Read);
        assert_eq!(rpc("GetSlotmap"), Access::Read);
        assert_eq!(rpc("Watch"), Access::Read);
        assert_eq!(rpc("CreateSlotmap"), Access::Write);
        assert_eq!(rpc("DeleteSlotmap"), Access::Write);
        assert_eq!(rpc("ResetAll"), Access::Write);
        assert_eq!(rpc("SetBankEndpoint"), Access::Write);
        assert_eq!(access(&post, "/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(
            access(
                &post,
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
            ),
            Access::Read
        );
        assert_eq!(access(&Method::GET, "/metrics"), Access::Read);
        assert_eq!(
            access(&Method::GET, "/api/backend/v1/slotmaps"),
            Access::Read
        );
        assert_eq!(access(&post, "/api/backend/v1/slotmaps"), Access::Write);
        assert_eq!(
            access(&Method::DELETE, "/api/backend/v1/slotmaps/1"),
            Access::Write
        );
    }

    #[test]
    fn a_tokens_file_gives_each_token_its_role() {
        let tokens = Tokens::parse("# ops\nadmin:s3cret\n\n  read : viewer-1 \n").expect("parses");
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens.role(b"s3cret"), Some(Role::Admin));
        assert_eq!(tokens.role(b"viewer-1"), Some(Role::Read));
        assert_eq!(tokens.role(b"s3cre"), None);
        assert_eq!(tokens.role(b"s3cret2"), None);
        assert_eq!(tokens.role(b""), None);
    }

    #[test]
    fn a_bad_tokens_file_is_refused_without_showing_a_token() {
        let e = Tokens::parse("admin:ok\nroot:hunter2\n")
            .err()
            .expect("refused");
        assert!(e.contains("line 2") && !e.contains("hunter2"), "{e}");
        assert!(Tokens::parse("admin hunter2").is_err());
        assert!(Tokens::parse("read:").is_err());
        assert!(Tokens::parse("read:two words").is_err());
        assert!(Tokens::parse("# nothing\n").is_err());
    }

    #[test]
    fn a_changed_tokens_file_is_read_again_and_a_broken_one_keeps_the_tokens() {
        use remsim_daemon::Reload;
        let path = std::env::temp_dir().join(format!("remsim-tokens-{}", std::process::id()));
        std::fs::write(&path, "read:first-token\n").expect("write");
        let auth = Auth::from_file(&path).expect("loads");
        auth.reload_if_changed();
        assert_eq!(auth.tokens().role(b"first-token"), Some(Role::Read));
        std::fs::write(&path, "admin:second-token-longer\n").expect("write");
        auth.reload_if_changed();
        assert_eq!(auth.tokens().role(b"first-token"), None);
        assert_eq!(
            auth.tokens().role(b"second-token-longer"),
            Some(Role::Admin)
        );
        std::fs::write(&path, "root:x\n").expect("write");
        auth.reload_if_changed();
        assert_eq!(
            auth.tokens().role(b"second-token-longer"),
            Some(Role::Admin),
            "kept"
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let req = |v: &str| {
            Request::builder()
                .header(header::AUTHORIZATION, v)
                .body(Body::empty())
                .expect("request")
        };
        assert_eq!(bearer(&req("Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(&req("bearer  abc ")), Some(&b"abc"[..]));
        assert_eq!(bearer(&req("Basic abc")), None);
        assert_eq!(bearer(&req("Bear")), None);
    }
}
