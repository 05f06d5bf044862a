//! Real `redis-server` processes for the tests, on free loopback ports (never the
//! machine's shared instance), and the Feast-written Redis fixture.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const READY: Duration = Duration::from_secs(20);

/// The fixture's reference time (ttl checks), as in the SQLite compatibility test.
pub const NOW: i64 = 1_736_470_800;

/// Feast's entity key of driver `id` (v3, no project suffix).
pub fn driver_key(id: i64) -> Vec<u8> {
    let mut k = tern::store::key::key_prefix(&["driver_id"], tern::config::KeySerialization::V3);
    tern::store::key::push_value(&mut k, &tern::store::EntityValue::Int64(id));
    k
}

/// Active `conv_rate` and v2's `vip_level` of drivers `ids`.
pub fn driver_request(ids: &[i64]) -> tern::proto::tern::wire::GetOnlineFeaturesRequest {
    crate::support::refs_request(
        &["driver_stats:conv_rate", "driver_stats@v2:vip_level"],
        vec![(
            "driver_id",
            ids.iter().map(|i| crate::support::int64(*i)).collect(),
        )],
    )
}

pub use tern::testing::RedisServer;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

pub fn free_port() -> u16 {
    tern::testing::free_port().expect("free port")
}

/// `tests/fixtures/feast/redis_dump.json`: every key, field and value Feast 0.67's
/// `feast materialize` wrote into Redis for the example repo.
#[derive(Debug, Deserialize)]
pub struct Dump {
    pub keys: Vec<DumpKey>,
}

#[derive(Debug, Deserialize)]
pub struct DumpKey {
    pub key: String,
    pub fields: Vec<DumpField>,
}

#[derive(Debug, Deserialize)]
pub struct DumpField {
    pub field: String,
    pub value: String,
}

pub fn load_dump() -> Dump {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/feast/redis_dump.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("redis_dump.json"))
        .expect("dump parses")
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Writes the dump with HSET, byte for byte.
pub async fn restore(conn: &mut impl redis::aio::ConnectionLike, dump: &Dump) {
    for k in &dump.keys {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(unhex(&k.key));
        for f in &k.fields {
            cmd.arg(unhex(&f.field)).arg(unhex(&f.value));
        }
        cmd.query_async::<i64>(conn).await.expect("HSET");
    }
}

pub async fn connect(addr: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{addr}"))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

/// A 3-primary Redis Cluster of local processes.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub async fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                // Each node has a folder of its own for its nodes.conf, so it rejoins
                // the cluster after a restart.
                RedisServer::start(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    // Failures are noticed within a second, not 15.
                    "--cluster-node-timeout",
                    "1000",
                ])
                .expect("redis-server starts")
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(RedisServer::addr).collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = Self { nodes };
        cluster.wait_for_state(&[0, 1, 2], "ok").await;
        cluster
    }

    /// Waits until each of `nodes` (indexes) reports `cluster_state:{state}`.
    pub async fn wait_for_state(&self, nodes: &[usize], state: &str) {
        let wanted = format!("cluster_state:{state}");
        for &n in nodes {
            let addr = self.nodes[n].addr();
            crate::support::eventually(READY, &wanted, || {
                let (addr, wanted) = (addr.clone(), wanted.clone());
                async move {
                    let mut c = redis::Client::open(format!("redis://{addr}"))
                        .ok()?
                        .get_multiplexed_async_connection()
                        .await
                        .ok()?;
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async(&mut c)
                        .await
                        .ok()?;
                    info.contains(&wanted).then_some(())
                }
            })
            .await;
        }
    }

    /// The `online_store` YAML block of this cluster.
    pub fn online_store(&self) -> String {
        format!(
            "  type: redis\n  redis_type: redis_cluster\n  connection_string: \"{}\"\n",
            self.connection_string()
        )
    }

    pub fn connection_string(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::addr)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub async fn client(&self) -> redis::cluster_async::ClusterConnection {
        redis::cluster::ClusterClient::new(
            self.nodes
                .iter()
                .map(|n| format!("redis://{}", n.addr()))
                .collect::<Vec<_>>(),
        )
        .expect("cluster client")
        .get_async_connection()
        .await
        .expect("cluster connection")
    }
}

/// A transparent TCP relay in front of a real Redis that counts round trips: a burst
/// is client data sent after the server last spoke. Bursts with no HMGET (health
/// pings) are not counted.
pub struct CountingProxy {
    pub port: u16,
    stats: Arc<ProxyStats>,
}

#[derive(Default)]
struct ProxyStats {
    /// 1 when the client spoke last, 2 when the server did.
    last: AtomicU8,
    hmget_bursts: AtomicUsize,
    hmgets: AtomicUsize,
    in_burst_has_hmget: AtomicU8,
}

impl CountingProxy {
    pub async fn start(upstream: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let stats = Arc::new(ProxyStats::default());
        let s = stats.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = s.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    // The last 4 bytes of the previous read, so a command name split
                    // across two reads is still seen once.
                    let mut carry: Vec<u8> = Vec::new();
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let chunk = &buf[..n];
                        carry.extend_from_slice(chunk);
                        let hmgets = carry
                            .windows(5)
                            .filter(|w| w.eq_ignore_ascii_case(b"HMGET"))
                            .count();
                        carry.drain(..carry.len().saturating_sub(4));
                        up.hmgets.fetch_add(hmgets, Ordering::SeqCst);
                        let new_burst = up.last.swap(1, Ordering::SeqCst) != 1;
                        if new_burst {
                            up.in_burst_has_hmget.store(0, Ordering::SeqCst);
                        }
                        if hmgets > 0 && up.in_burst_has_hmget.swap(1, Ordering::SeqCst) == 0 {
                            up.hmget_bursts.fetch_add(1, Ordering::SeqCst);
                        }
                        if sw.write_all(chunk).await.is_err() {
                            break;
                        }
                    }
                });
                let down = s.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        down.last.store(2, Ordering::SeqCst);
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self { port, stats }
    }

    /// (round trips carrying HMGETs, HMGET commands) so far.
    pub fn counts(&self) -> (usize, usize) {
        (
            self.stats.hmget_bursts.load(Ordering::SeqCst),
            self.stats.hmgets.load(Ordering::SeqCst),
        )
    }
}

/// The `online_store` YAML block of a single server at `addr`; `extra` is appended to
/// the connection string (`,password=...`).
pub fn single_store(addr: &str, extra: &str) -> String {
    format!("  type: redis\n  connection_string: \"{addr}{extra}\"\n")
}

/// A Redis store of the example repo's project opened on its own (no server, no
/// health loop) from an `online_store` YAML block, with a 250 ms store timeout.
pub fn open_redis_store(online_store: &str) -> tern::store::RedisStore {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = redis_repo_yaml(dir.path(), online_store, true);
    let config = tern::config::load(&yaml, |_| None).expect("config");
    let tern::config::OnlineStoreConfig::Redis(redis) = &config.online_store else {
        panic!("a Redis store");
    };
    tern::store::RedisStore::open(
        redis,
        "tern_demo",
        tern::store::RedisSettings {
            timeout: Duration::from_millis(250),
            connections: 1,
        },
    )
    .expect("store")
}

/// The server's overall gRPC health status, `None` when it cannot be asked.
pub async fn health(url: &str) -> Option<i32> {
    let ch = tonic::transport::Endpoint::from_shared(url.to_owned())
        .ok()?
        .connect()
        .await
        .ok()?;
    HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()
        .map(|r| r.into_inner().status)
}

/// Writes a feature_store.yaml for the example repo's registry with a Redis online
/// store; returns its path.
pub fn redis_repo_yaml(dir: &Path, online_store: &str, versioning: bool) -> PathBuf {
    let registry =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/feature_repo/data/registry.db");
    let yaml = dir.join("feature_store.yaml");
    std::fs::write(
        &yaml,
        format!(
            "project: tern_demo\nregistry:\n  path: {}\n  enable_online_feature_view_versioning: {versioning}\n\
             online_store:\n{online_store}\nentity_key_serialization_version: 3\n",
            registry.display()
        ),
    )
    .expect("write yaml");
    yaml
}

pub mod tls {
    //! A throwaway private CA with a server and a client certificate, for TLS tests.

    use std::path::{Path, PathBuf};

    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa,
        KeyPair,
    };

    pub struct TestPki {
        pub ca: PathBuf,
        pub server_cert: PathBuf,
        pub server_key: PathBuf,
        pub client_cert: PathBuf,
        pub client_key: PathBuf,
    }

    pub fn write_test_pki(dir: &Path) -> TestPki {
        // Distinct subjects: a leaf whose subject equals its issuer's looks self-signed.
        let named = |cn: &str, sans: Vec<String>| {
            let mut p = CertificateParams::new(sans).expect("params");
            p.distinguished_name = DistinguishedName::new();
            p.distinguished_name.push(DnType::CommonName, cn);
            p
        };
        let mut ca_params = named("tern test CA", Vec::new());
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
        let leaf = |cn: &str, names: Vec<String>| {
            let key = KeyPair::generate().expect("key");
            let cert = named(cn, names).signed_by(&key, &ca).expect("sign");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            "tern test redis",
            vec!["127.0.0.1".into(), "localhost".into()],
        );
        let (client_cert, client_key) = leaf("tern-client", vec!["tern-client".into()]);
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).expect("write pem");
            p
        };
        TestPki {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
        }
    }

    pub async fn admin_connection(addr: &str, pki: &TestPki) -> redis::aio::MultiplexedConnection {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (host, port) = addr.rsplit_once(':').expect("host:port");
        let info = redis::IntoConnectionInfo::into_connection_info(redis::ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port: port.parse().expect("port"),
            insecure: false,
            tls_params: None,
        })
        .expect("info");
        let certs = redis::TlsCertificates {
            client_tls: Some(redis::ClientTlsConfig {
                client_cert: std::fs::read(&pki.client_cert).expect("cert"),
                client_key: std::fs::read(&pki.client_key).expect("key"),
            }),
            root_cert: Some(std::fs::read(&pki.ca).expect("ca")),
        };
        redis::Client::build_with_tls(info, certs)
            .expect("tls client")
            .get_multiplexed_async_connection()
            .await
            .expect("tls connect")
    }
}
