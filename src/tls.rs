//! Server TLS: the certificate, its key and (for mutual TLS) the client CA, from PEM
//! files, re-read when they change or on SIGHUP without dropping a connection.
//!
//! Owns: building a rustls `ServerConfig` (TLS 1.3 and 1.2 only, ALPN h2 and
//! http/1.1, ring as every other TLS client here) and publishing it atomically. Each
//! accepted connection takes the config current at its handshake, so a rotation
//! applies to new connections and leaves open ones alone. A rotation that does not
//! load (a file missing or half-written, a key that does not match its certificate) is
//! logged and counted and the previous config keeps serving; it is retried on the next
//! change, because certificate tools often write the certificate and the key one after
//! the other.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;

use crate::metrics as m;
use crate::registry::file::{self, FileStamp};

/// How often the PEM files are checked for a change.
pub const FILE_POLL: Duration = Duration::from_secs(1);

/// Where the server's TLS material lives (`--tls-cert`, `--tls-key`,
/// `--tls-client-ca`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates a client certificate must chain to; `None`: no client
    /// certificates asked for.
    pub client_ca: Option<PathBuf>,
}

/// TLS material that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {what} {}: {cause}", path.display())]
    Read {
        /// Which file (`--tls-cert`, ...).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        cause: std::io::Error,
    },
    /// A file holds no usable PEM item of the kind expected.
    #[error("{what} {} {problem}", path.display())]
    Pem {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// rustls refused the combination (for instance, a key that is not the
    /// certificate's).
    #[error("TLS configuration from {} and {}: {cause}", cert.display(), key.display())]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        cause: rustls::Error,
    },
    /// The client CA file cannot verify client certificates.
    #[error("--tls-client-ca {}: {cause}", path.display())]
    ClientCa {
        /// Its path.
        path: PathBuf,
        /// Why.
        cause: String,
    },
}

/// The server's current TLS config, replaced whole on rotation.
#[derive(Debug)]
pub struct ServerTls {
    files: TlsFiles,
    current: ArcSwap<ServerConfig>,
}

impl ServerTls {
    /// Loads `files`; fails, naming the file and the problem, if they do not make a
    /// working config.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let config = build(&files)?;
        Ok(Self {
            files,
            current: ArcSwap::from_pointee(config),
        })
    }

    /// The files it was loaded from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// What a connection accepted now handshakes with.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    /// Re-reads the files and, if they make a working config, serves it from the next
    /// handshake on. Blocking file reads: call off the reactor.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build(&self.files)?;
        self.current.store(Arc::new(config));
        Ok(())
    }

    /// Reloads when any file changes (checked every [`FILE_POLL`]) and on SIGHUP, until
    /// `stop` turns true.
    pub async fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut seen = stamps(&self.files);
        let mut poll = tokio::time::interval(FILE_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hup = sighup();
        loop {
            let forced = tokio::select! {
                _ = stop.changed() => return,
                _ = poll.tick() => false,
                Some(()) = recv(&mut hup) => true,
            };
            let tls = self.clone();
            let Ok(now) = tokio::task::spawn_blocking(move || stamps(&tls.files)).await else {
                continue;
            };
            if !forced && now == seen {
                continue;
            }
            seen = now;
            let tls = self.clone();
            let result = tokio::task::spawn_blocking(move || tls.reload()).await;
            match result {
                Ok(Ok(())) => {
                    metrics::counter!(m::TLS_RELOADS, "result" => "loaded").increment(1);
                    tracing::info!(
                        cert = %self.files.cert.display(),
                        reason = if forced { "SIGHUP" } else { "changed" },
                        "TLS certificates reloaded"
                    );
                }
                Ok(Err(e)) => {
                    metrics::counter!(m::TLS_RELOADS, "result" => "failed").increment(1);
                    tracing::error!(error = %e, "TLS certificates not reloaded; still serving the previous ones");
                }
                Err(e) => tracing::error!(error = %e, "TLS reload task failed"),
            }
        }
    }
}

fn build(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&files.cert, "--tls-cert")?;
    let key = read_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|cause| TlsError::Config {
            cert: files.cert.clone(),
            key: files.key.clone(),
            cause,
        })?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca, "--tls-client-ca")? {
                roots.add(cert).map_err(|e| TlsError::ClientCa {
                    path: ca.clone(),
                    cause: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: ca.clone(),
                    cause: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|cause| TlsError::Config {
            cert: files.cert.clone(),
            key: files.key.clone(),
            cause,
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|cause| TlsError::Read {
        what,
        path: path.to_owned(),
        cause,
    })
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            path: path.to_owned(),
            problem: format!("is not valid PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            path: path.to_owned(),
            problem: "holds no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path, "--tls-key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        what: "--tls-key",
        path: path.to_owned(),
        problem: format!("holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
    })
}

/// Each file's stamp (size, modification time, inode): a change in any means "read
/// again" (Kubernetes rotates mounted secrets by swapping a symlink).
fn stamps(files: &TlsFiles) -> Vec<Option<FileStamp>> {
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| file::stamp(p).ok())
    .collect()
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

fn sighup() -> Hangup {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    None
}

async fn recv(hup: &mut Hangup) -> Option<()> {
    #[cfg(unix)]
    if let Some(signal) = hup {
        return signal.recv().await;
    }
    #[cfg(not(unix))]
    let _ = hup;
    std::future::pending().await
}
