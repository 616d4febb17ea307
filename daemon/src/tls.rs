//! TLS for remsim's own links (rustls, ring): server configurations that
//! reload their certificate and key from disk (cert-manager rotates them),
//! optionally requiring client certificates, and the client side that
//! RSPRO links use to reach a TLS port of ours. C peers never see TLS.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rspro::link::{BoxedTransport, Connection, ConnectionConfig, LinkError, Upgrade, Upgrading};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{info, warn};

/// How long a TLS handshake may take before the connection is dropped: a
/// peer that connects and says nothing must not hold a task.
pub const HANDSHAKE_BOUND: Duration = Duration::from_secs(10);

fn handshake_timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("TLS handshake not done within {HANDSHAKE_BOUND:?}"),
    )
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem(path: &Path, what: &str) -> anyhow::Result<String> {
    crate::files::read_text(path, crate::files::PEM_LIMIT)
        .with_context(|| format!("reading {what} from {}", path.display()))
}

fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let text = pem(path, "certificates")?;
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

fn roots(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots
            .add(cert)
            .with_context(|| format!("CA certificate in {}", path.display()))?;
    }
    Ok(roots)
}

fn private_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem(path, "a PEM private key")?.as_bytes())
        .with_context(|| format!("reading a PEM private key from {}", path.display()))
}

/// What files were stamped with when read: a rotation changes them.
type Stamp = Vec<Option<(SystemTime, u64)>>;

fn stamp_of(paths: &[&Path]) -> Stamp {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// The files a TLS port serves with.
#[derive(Debug, Clone)]
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA whose certificates clients must present; `None`: no client certificates.
    pub client_ca: Option<PathBuf>,
}

impl ServerFiles {
    /// From a port's options: none given means no TLS; a certificate
    /// without its key (or the reverse) is an error.
    pub fn from_options(
        what: &str,
        cert: Option<&Path>,
        key: Option<&Path>,
        client_ca: Option<&Path>,
    ) -> anyhow::Result<Option<ServerFiles>> {
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(ServerFiles {
                cert: cert.to_owned(),
                key: key.to_owned(),
                client_ca: client_ca.map(Path::to_owned),
            })),
            (None, None) if client_ca.is_none() => Ok(None),
            (None, None) => anyhow::bail!("{what}: a client CA needs a certificate and key too"),
            _ => anyhow::bail!("{what}: give both the certificate and its key"),
        }
    }

    fn config(&self, alpn: &[&[u8]]) -> anyhow::Result<ServerConfig> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                        .build()
                        .with_context(|| format!("client CA {}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certificates(&self.cert)?, private_key(&self.key)?)
            .with_context(|| {
                format!(
                    "{} and {} are not a certificate and its key",
                    self.cert.display(),
                    self.key.display()
                )
            })?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// What the files look like now, to notice a rotation.
    fn stamp(&self) -> Stamp {
        let mut paths = vec![self.cert.as_path(), self.key.as_path()];
        paths.extend(self.client_ca.as_deref());
        stamp_of(&paths)
    }
}

/// A TLS server configuration that can be reloaded while connections run:
/// each handshake takes the configuration current at that moment.
pub struct Reloading {
    what: &'static str,
    files: ServerFiles,
    alpn: Vec<&'static [u8]>,
    current: RwLock<Arc<ServerConfig>>,
    stamp: Mutex<Stamp>,
}

impl Reloading {
    /// Loads the files; an error here stops the program (a port must not
    /// come up without the TLS it was asked for).
    pub fn load(
        what: &'static str,
        files: ServerFiles,
        alpn: &[&'static [u8]],
    ) -> anyhow::Result<Arc<Self>> {
        let stamp = files.stamp();
        let config = files.config(alpn).with_context(|| format!("{what} TLS"))?;
        info!(
            port = what,
            cert = %files.cert.display(),
            client_certificates = files.client_ca.is_some(),
            "TLS on"
        );
        Ok(Arc::new(Reloading {
            what,
            alpn: alpn.to_vec(),
            files,
            current: RwLock::new(Arc::new(config)),
            stamp: Mutex::new(stamp),
        }))
    }

    /// The acceptor for the next handshake.
    pub fn acceptor(&self) -> TlsAcceptor {
        // A panic elsewhere cannot leave the Arc half-written: take it as it is.
        let config = self.current.read().unwrap_or_else(|p| p.into_inner());
        TlsAcceptor::from(config.clone())
    }

    /// Reads the files again. A broken new pair (a half-written rotation)
    /// is logged and the old configuration kept.
    pub fn reload_now(&self) -> bool {
        let stamp = self.files.stamp();
        match self.files.config(&self.alpn) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
                *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) = stamp;
                info!(port = self.what, cert = %self.files.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                warn!(
                    port = self.what,
                    error = format!("{e:#}"),
                    "TLS reload failed; keeping the previous certificate"
                );
                false
            }
        }
    }

    /// Reloads when a file changed on disk since the last load.
    pub fn reload_when_changed(&self) -> bool {
        let now = self.files.stamp();
        let changed = *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) != now;
        changed && self.reload_now()
    }

    /// Completes a handshake on an accepted socket, within the bound.
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        let handshake = self.acceptor().accept(tcp);
        tokio::time::timeout(HANDSHAKE_BOUND, handshake)
            .await
            .unwrap_or_else(|_| Err(handshake_timed_out()))
    }
}

/// Takes over an accepted socket for RSPRO: as it is, or after a TLS
/// handshake (bounded; a failure is logged, as it means a peer or a
/// certificate to fix).
pub async fn rspro_connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    tls: Option<&Reloading>,
    config: ConnectionConfig,
) -> Result<Connection, LinkError> {
    let Some(tls) = tls else {
        return Connection::new(stream, config).await;
    };
    stream.set_nodelay(true)?;
    let stream = tls.accept(stream).await.inspect_err(|e| {
        info!(%peer, error = %e, "TLS handshake failed");
    })?;
    Connection::over(Box::new(stream), peer, config).await
}

impl crate::Reload for Reloading {
    fn reload(&self) {
        self.reload_now();
    }

    fn reload_if_changed(&self) {
        self.reload_when_changed();
    }
}

/// How often certificate files are checked for a rotation (SIGHUP reloads at once).
pub const RELOAD_CHECK: Duration = Duration::from_secs(10);

/// The client side's files: the CA of our servers' certificates, and our
/// own certificate for ports that require one.
#[derive(Debug, Clone)]
struct ClientFiles {
    ca: PathBuf,
    identity: Option<(PathBuf, PathBuf)>,
}

impl ClientFiles {
    fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![self.ca.as_path()];
        if let Some((cert, key)) = &self.identity {
            paths.extend([cert.as_path(), key.as_path()]);
        }
        paths
    }

    fn connector(&self) -> anyhow::Result<TlsConnector> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots(&self.ca)?);
        let config = match &self.identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(certificates(cert)?, private_key(key)?)
                .with_context(|| {
                    format!(
                        "{} and {} are not a certificate and its key",
                        cert.display(),
                        key.display()
                    )
                })?,
            None => builder.with_no_client_auth(),
        };
        Ok(TlsConnector::from(Arc::new(config)))
    }
}

/// The client side of our TLS links. Its files are read again at the next
/// connect after they change, so a rotated client certificate needs no restart.
pub struct Client {
    files: ClientFiles,
    current: Mutex<(Stamp, TlsConnector)>,
    /// Checked instead of the configured host (an address in a certificate
    /// made for a name, say).
    server_name: Option<ServerName<'static>>,
}

impl Client {
    /// From the `--tls-ca`, `--tls-cert`, `--tls-key` options; `None` when
    /// no CA is given (plain TCP, as C peers speak).
    pub fn from_options(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
        server_name: Option<&str>,
    ) -> anyhow::Result<Option<Client>> {
        let Some(ca) = ca else {
            if cert.is_some() || key.is_some() {
                anyhow::bail!(
                    "--tls-cert and --tls-key need --tls-ca (the CA of the server's certificate)"
                );
            }
            return Ok(None);
        };
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert.to_owned(), key.to_owned())),
            (None, None) => None,
            _ => anyhow::bail!("give both --tls-cert and --tls-key"),
        };
        let files = ClientFiles {
            ca: ca.to_owned(),
            identity,
        };
        let stamp = stamp_of(&files.paths());
        let connector = files.connector()?;
        let server_name = server_name
            .map(|n| {
                ServerName::try_from(n.to_owned())
                    .with_context(|| format!("--tls-server-name {n:?} is not a host name"))
            })
            .transpose()?;
        Ok(Some(Client {
            files,
            current: Mutex::new((stamp, connector)),
            server_name,
        }))
    }

    /// The connector for the next connect, rebuilt first if the files
    /// changed; a broken rotation keeps the previous one (and is tried again).
    fn connector(&self) -> TlsConnector {
        let now = stamp_of(&self.files.paths());
        // A panic elsewhere cannot leave the pair half-written: take it as it is.
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.0 != now {
            match self.files.connector() {
                Ok(connector) => {
                    info!(ca = %self.files.ca.display(), "TLS client files reloaded");
                    *current = (now, connector);
                }
                Err(e) => warn!(
                    error = format!("{e:#}"),
                    "TLS client files changed but do not load; keeping the previous ones"
                ),
            }
        }
        current.1.clone()
    }
}

impl Upgrade for Client {
    fn upgrade(&self, tcp: TcpStream, host: &str) -> Upgrading {
        let connector = self.connector();
        let name = match &self.server_name {
            Some(name) => Ok(name.clone()),
            None => ServerName::try_from(host.to_owned()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{host:?} is not a host name or address to check a certificate against"
                    ),
                )
            }),
        };
        Box::pin(async move {
            let handshake = connector.connect(name?, tcp);
            let stream = tokio::time::timeout(HANDSHAKE_BOUND, handshake)
                .await
                .unwrap_or_else(|_| Err(handshake_timed_out()))?;
            Ok(Box::new(stream) as BoxedTransport)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use remsim_testing::pki::Pki;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("remsim-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn a_rotation_on_disk_is_picked_up_and_a_broken_one_keeps_the_old_pair() {
        let dir = temp_dir("rotate");
        let (first, second) = (Pki::new(&dir, "first"), Pki::new(&dir, "second"));
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::copy(&first.server_cert, &cert).expect("copy");
        std::fs::copy(&first.server_key, &key).expect("copy");
        let files = ServerFiles::from_options("test", Some(&cert), Some(&key), None)
            .expect("options")
            .expect("TLS on");
        let tls = Reloading::load("test", files, &[]).expect("loads");
        assert!(!tls.reload_when_changed(), "nothing changed on disk");

        // A half-written rotation: the new key beside the old certificate.
        std::fs::copy(&second.server_key, &key).expect("copy");
        let before = Arc::as_ptr(&tls.current.read().expect("lock").clone());
        assert!(
            !tls.reload_when_changed(),
            "a key that does not fit is refused"
        );
        assert_eq!(
            Arc::as_ptr(&tls.current.read().expect("lock").clone()),
            before
        );
        // The rotation completes: picked up, and only once.
        std::fs::copy(&second.server_cert, &cert).expect("copy");
        assert!(tls.reload_when_changed());
        assert_ne!(
            Arc::as_ptr(&tls.current.read().expect("lock").clone()),
            before
        );
        assert!(!tls.reload_when_changed());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn options_name_what_is_missing() {
        let p = Path::new("x.pem");
        assert!(
            ServerFiles::from_options("t", None, None, None)
                .expect("ok")
                .is_none()
        );
        assert!(ServerFiles::from_options("t", Some(p), None, None).is_err());
        assert!(ServerFiles::from_options("t", None, None, Some(p)).is_err());
        assert!(Client::from_options(None, Some(p), Some(p), None).is_err());
        assert!(
            Client::from_options(None, None, None, None)
                .expect("ok")
                .is_none()
        );
        let e = ServerFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            client_ca: None,
        }
        .config(&[])
        .expect_err("no files");
        assert!(format!("{e:#}").contains("/nonexistent/cert.pem"), "{e:#}");
    }
}
