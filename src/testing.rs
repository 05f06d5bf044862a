//! Test and bench helpers (feature `testing`): an in-process server on a free port,
//! synthetic Feast repos (registry + SQLite online store in Feast's layout) of any size,
//! and real `redis-server` processes on free loopback ports.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::{self, KeySerialization};
use crate::proto::feast::core as pb;
use crate::proto::feast::types::value::Val;
use crate::proto::feast::types::{Value, value_type::Enum as ValueType};
use crate::registry::{ReloadHandle, Reloader};
use crate::server::{self, ServerSettings, StartupError, StoreSettings};
use crate::serving::{Clock, Limits, Serving};
use crate::store::redis::WriteRow;
use crate::store::{EntityValue, RedisSettings, RedisStore, StorageLayout, key, sqlite};

/// A server running in this process on `127.0.0.1:<free port>`.
#[derive(Debug)]
pub struct TestServer {
    /// Bound address.
    pub addr: SocketAddr,
    /// The serving core behind it.
    pub serving: Arc<Serving>,
    /// Forces registry reloads and reads reload counters.
    pub reload: Option<ReloadHandle>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), StartupError>>,
}

/// What a [`TestServer`] runs with.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// Store settings (two SQLite readers by default).
    pub store: StoreSettings,
    /// Request limits.
    pub limits: Limits,
    /// Server settings (deadlines, drain).
    pub server: ServerSettings,
}

impl Default for TestOptions {
    fn default() -> Self {
        Self {
            store: StoreSettings {
                sqlite_readers: 2,
                ..StoreSettings::default()
            },
            limits: Limits::default(),
            server: ServerSettings::default(),
        }
    }
}

impl TestServer {
    /// Loads `feature_store.yaml` and serves it with `clock`, reloading the registry as
    /// the daemon does (two SQLite readers, other store settings at their defaults).
    pub async fn start(config_path: &Path, clock: Clock) -> Result<Self, StartupError> {
        Self::start_with(config_path, clock, TestOptions::default()).await
    }

    /// [`start`](Self::start) with other settings.
    pub async fn start_with(
        config_path: &Path,
        clock: Clock,
        options: TestOptions,
    ) -> Result<Self, StartupError> {
        let config = config::load(config_path, |_| None)
            .map_err(|e| StartupError::Unsupported(e.to_string()))?;
        let (serving, reloader) = server::open_serving(&config, &options.store, clock).await?;
        let server = ServerSettings {
            config_path: options
                .server
                .config_path
                .or_else(|| Some(config_path.to_owned())),
            ..options.server
        };
        Self::serve_with(
            Arc::new(serving.with_limits(options.limits)),
            Some(reloader),
            server,
        )
        .await
    }

    /// Serves an already built core (and reloads its registry, if given a reloader).
    pub async fn serve(
        serving: Arc<Serving>,
        reloader: Option<Reloader>,
    ) -> Result<Self, StartupError> {
        Self::serve_with(serving, reloader, ServerSettings::default()).await
    }

    async fn serve_with(
        serving: Arc<Serving>,
        reloader: Option<Reloader>,
        settings: ServerSettings,
    ) -> Result<Self, StartupError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| StartupError::Unsupported(e.to_string()))?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartupError::Unsupported(e.to_string()))?;
        let reload = reloader.as_ref().map(Reloader::handle);
        let (tx, rx) = oneshot::channel::<()>();
        let core = serving.clone();
        let task = tokio::spawn(async move {
            server::run(listener, core, reloader, &settings, async {
                let _ = rx.await;
            })
            .await
        });
        Ok(Self {
            addr,
            serving,
            reload,
            shutdown: Some(tx),
            task,
        })
    }

    /// `http://addr`, for tonic clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts the shutdown sequence and waits for the server to stop.
    pub async fn stop(mut self) -> Result<(), StartupError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task)
            .await
            .map_err(|e| StartupError::Unsupported(e.to_string()))?
    }
}

/// Shape of a synthetic repo: one entity `driver` (join key `driver_id`, INT64) and one
/// view `bench` of `features` DOUBLE features `f0..`, `entities` drivers `1..=entities`.
#[derive(Debug, Clone)]
pub struct SyntheticRepo {
    /// Feast project.
    pub project: String,
    /// Number of drivers stored.
    pub entities: i64,
    /// Number of features of the view.
    pub features: usize,
    /// View ttl (0 = none).
    pub ttl_seconds: i64,
    /// Event time of every row.
    pub event_ts: i64,
    /// Entity key layout written (and declared in the YAML).
    pub key_serialization: KeySerialization,
}

impl Default for SyntheticRepo {
    fn default() -> Self {
        Self {
            project: "synthetic".into(),
            entities: 1000,
            features: 10,
            ttl_seconds: 0,
            event_ts: 1_736_467_200,
            key_serialization: KeySerialization::V3,
        }
    }
}

/// The value stored for driver `id`, feature `f`.
pub fn synthetic_value(id: i64, f: usize) -> f64 {
    id as f64 + f as f64 / 100.0
}

impl SyntheticRepo {
    /// The view's name.
    pub const VIEW: &'static str = "bench";

    /// Refs to every feature, `bench:f0,...`.
    pub fn refs(&self) -> Vec<String> {
        (0..self.features)
            .map(|f| format!("{}:f{f}", Self::VIEW))
            .collect()
    }

    /// The registry this repo holds.
    pub fn registry(&self) -> pb::Registry {
        let project = self.project.clone();
        pb::Registry {
            projects: vec![pb::Project {
                spec: Some(pb::ProjectSpec {
                    name: project.clone(),
                    ..Default::default()
                }),
                meta: None,
            }],
            entities: vec![pb::Entity {
                spec: Some(pb::EntitySpecV2 {
                    name: "driver".into(),
                    project: project.clone(),
                    value_type: ValueType::Int64 as i32,
                    join_key: "driver_id".into(),
                    ..Default::default()
                }),
                meta: None,
            }],
            feature_views: vec![pb::FeatureView {
                spec: Some(pb::FeatureViewSpec {
                    name: Self::VIEW.into(),
                    project,
                    entities: vec!["driver".into()],
                    features: (0..self.features)
                        .map(|f| pb::FeatureSpecV2 {
                            name: format!("f{f}"),
                            value_type: ValueType::Double as i32,
                            ..Default::default()
                        })
                        .collect(),
                    entity_columns: vec![pb::FeatureSpecV2 {
                        name: "driver_id".into(),
                        value_type: ValueType::Int64 as i32,
                        ..Default::default()
                    }],
                    ttl: (self.ttl_seconds > 0).then_some(prost_types::Duration {
                        seconds: self.ttl_seconds,
                        nanos: 0,
                    }),
                    online: true,
                    ..Default::default()
                }),
                meta: Some(pb::FeatureViewMeta::default()),
            }],
            registry_schema_version: "1".into(),
            ..Default::default()
        }
    }

    /// Writes `feature_store.yaml`, `data/registry.db` and `data/online.db` under `dir`
    /// and returns the YAML's path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, Box<dyn std::error::Error + Send + Sync>> {
        let data = dir.join("data");
        std::fs::create_dir_all(&data)?;
        std::fs::write(data.join("registry.db"), self.registry().encode_to_vec())?;

        let mut conn = rusqlite::Connection::open(data.join("online.db"))?;
        let table = format!("{}_{}", self.project, Self::VIEW);
        sqlite::create_table(&conn, &table)?;
        let prefix = key::key_prefix(&["driver_id"], self.key_serialization);
        let mut rows = Vec::with_capacity(self.entities as usize * self.features);
        for id in 1..=self.entities {
            let mut k = prefix.clone();
            key::push_value(&mut k, &EntityValue::Int64(id));
            for f in 0..self.features {
                let v = Value {
                    val: Some(Val::DoubleVal(synthetic_value(id, f))),
                }
                .encode_to_vec();
                rows.push((k.clone(), format!("f{f}"), v));
            }
        }
        sqlite::write_rows(
            &mut conn,
            &table,
            rows.iter().map(|(k, f, v)| sqlite::WriteRow {
                entity_key: k,
                feature: f,
                value: v,
                event_ts: self.event_ts,
                created_ts: Some(self.event_ts),
            }),
        )?;

        self.write_yaml(dir, "  type: sqlite\n  path: data/online.db\n")
    }

    /// Writes `feature_store.yaml` and `data/registry.db` under `dir`, and the values
    /// into the Redis server at `addr` with Tern's writer (Feast's layout and rules);
    /// returns the YAML's path.
    pub async fn write_redis(
        &self,
        dir: &Path,
        addr: &str,
    ) -> Result<PathBuf, Box<dyn std::error::Error + Send + Sync>> {
        std::fs::create_dir_all(dir.join("data"))?;
        std::fs::write(
            dir.join("data/registry.db"),
            self.registry().encode_to_vec(),
        )?;
        let yaml = self.write_yaml(
            dir,
            &format!("  type: redis\n  connection_string: \"{addr}\"\n"),
        )?;
        let config::OnlineStoreConfig::Redis(redis) = config::load(&yaml, |_| None)?.online_store
        else {
            return Err("the YAML just written names no Redis store".into());
        };
        let store = RedisStore::open(
            &redis,
            &self.project,
            RedisSettings {
                // Fixture batches are large: give each round trip room.
                timeout: std::time::Duration::from_secs(30),
                connections: 1,
            },
        )?;
        let features: Vec<String> = (0..self.features).map(|f| format!("f{f}")).collect();
        let layout = StorageLayout::new(&self.project, Self::VIEW, 0, features.clone());
        let prefix = key::key_prefix(&["driver_id"], self.key_serialization);
        let event_time = prost_types::Timestamp {
            seconds: self.event_ts,
            nanos: 0,
        };
        for chunk in (1..=self.entities).collect::<Vec<_>>().chunks(500) {
            let mut keys = Vec::with_capacity(chunk.len());
            let mut values = Vec::with_capacity(chunk.len());
            for &id in chunk {
                let mut k = prefix.clone();
                key::push_value(&mut k, &EntityValue::Int64(id));
                keys.push(k);
                values.push(
                    (0..self.features)
                        .map(|f| {
                            Value {
                                val: Some(Val::DoubleVal(synthetic_value(id, f))),
                            }
                            .encode_to_vec()
                        })
                        .collect::<Vec<_>>(),
                );
            }
            let pairs: Vec<Vec<(&str, &[u8])>> = values
                .iter()
                .map(|row| {
                    features
                        .iter()
                        .map(String::as_str)
                        .zip(row.iter().map(Vec::as_slice))
                        .collect()
                })
                .collect();
            let rows: Vec<WriteRow<'_>> = keys
                .iter()
                .zip(&pairs)
                .map(|(k, v)| WriteRow {
                    entity_key: k,
                    values: v,
                    event_time,
                })
                .collect();
            store.write_batch(&layout, &rows).await?;
        }
        Ok(yaml)
    }

    fn write_yaml(
        &self,
        dir: &Path,
        online_store: &str,
    ) -> Result<PathBuf, Box<dyn std::error::Error + Send + Sync>> {
        let yaml = dir.join("feature_store.yaml");
        std::fs::write(
            &yaml,
            format!(
                "project: {}\nregistry: data/registry.db\nonline_store:\n{online_store}entity_key_serialization_version: {}\n",
                self.project,
                match self.key_serialization {
                    KeySerialization::V2 => 2,
                    KeySerialization::V3 => 3,
                }
            ),
        )?;
        Ok(yaml)
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

/// A `redis-server` child process on loopback (never the machine's shared instance),
/// keeping nothing on disk but its own folder (a cluster node's `nodes.conf`); killed
/// on drop.
#[derive(Debug)]
pub struct RedisServer {
    /// Port it listens on (TLS or plain, as started).
    pub port: u16,
    child: std::process::Child,
    /// The `redis-server` arguments after the common ones, for restarts.
    extra: Vec<String>,
    dir: tempfile::TempDir,
}

/// Why a `redis-server` did not start.
#[derive(Debug)]
enum Launch {
    /// Another process took the port between the free-port probe and the bind.
    PortTaken(std::io::Error),
    Failed(std::io::Error),
}

impl Launch {
    fn into_io(self) -> std::io::Error {
        match self {
            Launch::PortTaken(e) | Launch::Failed(e) => e,
        }
    }
}

impl RedisServer {
    /// How long a server may take to say it accepts connections.
    const READY: std::time::Duration = std::time::Duration::from_secs(20);
    /// Fresh ports tried when another process takes the probed one first.
    const PORT_ATTEMPTS: usize = 20;

    /// Starts a server on a free port; `extra` are more `redis-server` arguments. A free
    /// port can be taken by a parallel test before the server binds it: then it starts
    /// again on another.
    pub fn start(extra: &[&str]) -> std::io::Result<Self> {
        let mut last = None;
        for _ in 0..Self::PORT_ATTEMPTS {
            match Self::launch(free_port()?, extra, tempfile::tempdir()?) {
                Ok(server) => return Ok(server),
                Err(Launch::PortTaken(e)) => last = Some(e),
                Err(Launch::Failed(e)) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free port for redis-server")))
    }

    /// Starts a server on `port` (`--tls-port` in `extra` makes that the TLS port) and
    /// returns once it accepts connections, as its log says: no sleeping. For a port
    /// fixed in advance (a store configured before its server starts).
    pub fn start_on(port: u16, extra: &[&str]) -> std::io::Result<Self> {
        Self::launch(port, extra, tempfile::tempdir()?).map_err(Launch::into_io)
    }

    /// Starts the same server again (after [`RedisServer::kill`], or killing it first):
    /// same port, folder and arguments, so a cluster node keeps its `nodes.conf` and
    /// rejoins its cluster. Data is not kept.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        let child = Self::spawn(self.port, &self.extra, self.dir.path())?;
        self.child = Self::ready(child, self.port).map_err(Launch::into_io)?;
        Ok(())
    }

    fn launch(port: u16, extra: &[&str], dir: tempfile::TempDir) -> Result<Self, Launch> {
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let child = Self::spawn(port, &extra, dir.path()).map_err(Launch::Failed)?;
        Ok(Self {
            port,
            child: Self::ready(child, port)?,
            extra,
            dir,
        })
    }

    fn spawn(port: u16, extra: &[String], dir: &Path) -> std::io::Result<std::process::Child> {
        use std::process::{Command, Stdio};
        let plain_port = if extra.iter().any(|a| a == "--tls-port") {
            "0".to_owned()
        } else {
            port.to_string()
        };
        Command::new("redis-server")
            .args(["--port", &plain_port])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--dir"])
            .arg(dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "redis-server must be installed (apt-get install -y redis-server): {e}"
                    ),
                )
            })
    }

    /// Waits until `child` says it accepts connections; kills it otherwise.
    fn ready(mut child: std::process::Child, port: u16) -> Result<std::process::Child, Launch> {
        use std::io::BufRead;
        let Some(out) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Launch::Failed(std::io::Error::other("redis-server stdout")));
        };
        // Drained for the server's lifetime, so it never blocks on a full pipe.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut port_taken = false;
        loop {
            match rx.recv_timeout(Self::READY) {
                Ok(line) if line.contains("Ready to accept connections") => return Ok(child),
                Ok(line) => port_taken |= line.contains("Address already in use"),
                // Exited (its output ended), or silent for too long.
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let e =
                        std::io::Error::other(format!("redis-server on port {port} did not start"));
                    return Err(if port_taken {
                        Launch::PortTaken(e)
                    } else {
                        Launch::Failed(e)
                    });
                }
            }
        }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's process id (benches read its CPU time).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A 2048-bit RSA key made with `openssl`, for signing RS256 tokens as an OIDC provider
/// would, and its public JWK (for the provider's JWKS).
#[derive(Debug)]
pub struct RsaKey {
    kid: String,
    pem: Vec<u8>,
    /// The public key as a JWK (`kty`, `kid`, `use`, `alg`, `n`, `e`).
    pub jwk: serde_json::Value,
}

/// Why a test key could not be made or used.
pub type KeyError = Box<dyn std::error::Error + Send + Sync>;

impl RsaKey {
    /// Makes a key in `dir` (as `<kid>.pem`) with the `openssl` command.
    pub fn make(dir: &Path, kid: &str) -> Result<Self, KeyError> {
        use base64::Engine as _;
        let path = dir.join(format!("{kid}.pem"));
        let openssl = |args: &[&str]| -> Result<Vec<u8>, KeyError> {
            let out = std::process::Command::new("openssl")
                .args(args)
                .arg(&path)
                .output()
                .map_err(|e| format!("cannot run openssl: {e}"))?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
            }
            Ok(out.stdout)
        };
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])?;
        let modulus = String::from_utf8(openssl(&["rsa", "-noout", "-modulus", "-in"])?)?;
        let hex = modulus.trim().trim_start_matches("Modulus=");
        let n = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("-"), 16))
            .collect::<Result<Vec<u8>, _>>()?;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        Ok(Self {
            kid: kid.to_owned(),
            pem: std::fs::read(&path)?,
            jwk: serde_json::json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64.encode(n), "e": "AQAB"}),
        })
    }

    /// `claims` signed with this key (RS256, this key's `kid` in the header).
    pub fn sign(&self, claims: &serde_json::Value) -> Result<String, KeyError> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&self.pem)?;
        Ok(jsonwebtoken::encode(&header, claims, &key)?)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    fn pong(port: u16) -> bool {
        let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let mut reply = [0u8; 7];
        conn.write_all(b"PING\r\n").is_ok()
            && conn.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    #[test]
    fn a_port_taken_before_the_bind_is_told_apart() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = RedisServer::launch(port, &[], tempfile::tempdir().unwrap()).unwrap_err();
        assert!(matches!(err, Launch::PortTaken(_)), "{err:?}");
    }

    #[test]
    fn restart_serves_again_on_the_same_port() {
        let mut server = RedisServer::start(&[]).unwrap();
        assert!(pong(server.port));
        server.kill();
        assert!(!pong(server.port));
        server.restart().unwrap();
        assert!(pong(server.port));
    }
}
