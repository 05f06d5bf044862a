//! The daemon as an operator runs it: the `tern` binary (health, metrics, `tern get`,
//! SIGTERM), and the drain of in-flight requests on shutdown.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tern::proto::feast::serving::FieldStatus;
use tern::server::StoreSettings;
use tern::testing::{SyntheticRepo, synthetic_value};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::redis_support::free_port;
use crate::sqlite_store::WriterLock;
use crate::support::*;

const DEADLINE: Duration = Duration::from_secs(20);

/// A `tern serve` child process and its stderr lines.
pub(crate) struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub(crate) seen: Vec<String>,
}

impl Daemon {
    fn spawn(args: &[&str]) -> Self {
        Self::spawn_with_env(args, &[])
    }

    /// `tern` with `args` and these variables added to its environment.
    pub(crate) fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(args)
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tern");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// `tern serve` of `yaml` on free ports (bound by the daemon itself, so no other
    /// test can take them first) with JSON logs and a metrics endpoint, plus `extra`
    /// flags; returns the daemon and its metrics address, read from its log.
    fn serve(yaml: &std::path::Path, extra: &[&str]) -> (Self, String) {
        let mut args = vec![
            "serve",
            "--config",
            yaml.to_str().expect("utf8 path"),
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ];
        args.extend_from_slice(extra);
        let mut daemon = Self::spawn(&args);
        let line = daemon.wait_for_log("serving Prometheus metrics at /metrics");
        let metrics_addr = line["addr"].as_str().expect("metrics addr").to_owned();
        (daemon, metrics_addr)
    }

    /// Sends SIGHUP (reload the registry and TLS certificates).
    pub(crate) fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for a JSON log line whose message is `message`; returns it parsed.
    pub(crate) fn wait_for_log(&mut self, message: &str) -> serde_json::Value {
        loop {
            let line = self.lines.recv_timeout(DEADLINE).unwrap_or_else(|_| {
                panic!("no log line {message:?}; saw:\n{}", self.seen.join("\n"))
            });
            self.seen.push(line.clone());
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["message"] == message
            {
                return v;
            }
        }
    }

    /// Sends SIGTERM and waits for the exit without blocking the runtime, so clients
    /// in this process can still answer the server's shutdown handshake.
    pub(crate) async fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let mut child =
            std::mem::replace(&mut self.child, Command::new("true").spawn().expect("true"));
        let wait = tokio::task::spawn_blocking(move || child.wait());
        tokio::time::timeout(DEADLINE, wait)
            .await
            .expect("tern exits after SIGTERM")
            .expect("join")
            .expect("wait")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A synthetic repo of 3 drivers x 2 features, written to a fresh folder.
pub fn small_repo() -> (tempfile::TempDir, SyntheticRepo, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = SyntheticRepo {
        entities: 3,
        features: 2,
        ..SyntheticRepo::default()
    };
    let yaml = repo.write(dir.path()).unwrap();
    (dir, repo, yaml)
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

#[tokio::test]
async fn tern_serve_binary_health_metrics_get_and_sigterm() {
    let (_dir, _repo, yaml) = small_repo();
    let (mut daemon, metrics_addr) = Daemon::serve(&yaml, &[]);
    let loaded = daemon.wait_for_log("registry snapshot loaded");
    assert_eq!(loaded["views"], 1, "{loaded}");
    let serving = daemon.wait_for_log("serving gRPC");
    let addr = serving["addr"].as_str().expect("addr field").to_owned();
    let url = format!("http://{addr}");

    // Before any request, the request path's series already exist, at zero.
    let idle = http_get(&metrics_addr, "/metrics").unwrap_or_default();
    for expected in [
        r#"tern_grpc_requests_total{service="feast.serving.ServingService",method="GetOnlineFeatures",code="OK"} 0"#,
        r#"tern_feature_values_total{status="PRESENT"} 0"#,
        "tern_entity_rows_total 0",
        "tern_requests_in_flight 0",
        r#"tern_sqlite_reads_total{path="inline"} 0"#,
        r#"tern_sqlite_reads_total{path="handed_over"} 0"#,
        r#"tern_http_requests_total{path="/get-online-features",status="200"} 0"#,
    ] {
        assert!(idle.contains(expected), "missing {expected:?} in:\n{idle}");
    }

    let ch = channel(&url).await;
    let status = HealthClient::new(ch.clone())
        .check(HealthCheckRequest {
            service: "feast.serving.ServingService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let r = call(
        &ch,
        Route::FeatureServer,
        refs_request(&["bench:f1"], vec![("driver_id", vec![int64(2)])]),
    )
    .await
    .unwrap();
    assert_eq!(column(&r, "f1").0, [double(synthetic_value(2, 1))]);
    assert_eq!(column(&r, "f1").1, [FieldStatus::Present]);

    // A write through the daemon, and one it refuses: both counted below.
    let mut writer = tern::grpc::OnlineWriterClient::new(ch.clone());
    let col = |name: &str, v: tern::proto::feast::types::Value| tern::proto::tern::v1::Column {
        name: name.into(),
        values: vec![v],
    };
    let write = tern::proto::tern::v1::WriteFeaturesRequest {
        feature_view: "bench".into(),
        version: None,
        columns: vec![
            col("driver_id", int64(99)),
            col("f0", double(9.5)),
            col("f1", double(9.75)),
        ],
        event_timestamps: vec![],
    };
    let written = writer
        .write_features(write.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(written.rows_written, 1);
    let mut bad = write;
    bad.columns[1].values[0] = string("fast");
    let refused = writer.write_features(bad).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    // `tern get`, as a person would try the server.
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args([
            "get",
            "--addr",
            &url,
            "--features",
            "bench:f0,bench:f1",
            "--entity",
            "driver_id=1,3,42",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["driver_id", "f0", "f1"],
        "{table}"
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["1", "1", "1.01"],
        "{table}"
    );
    assert_eq!(
        lines[3].split_whitespace().collect::<Vec<_>>(),
        ["42", "<not", "found>", "<not", "found>"],
        "{table}"
    );

    // Feast's HTTP API on the same port: one answer, one refusal.
    let http_addr: std::net::SocketAddr = addr.parse().unwrap();
    let post = |body: &'static str| {
        crate::http_api::http1(
            http_addr,
            "POST",
            "/get-online-features",
            Some("application/json"),
            Some(body.as_bytes()),
        )
    };
    let ok = post(r#"{"features":["bench:f1"],"entities":{"driver_id":[2]}}"#).await;
    let ok_body = String::from_utf8(ok.body).unwrap();
    assert_eq!(ok.status, 200, "{ok_body}");
    assert!(
        ok_body.ends_with(r#""metadata":{"feature_names":["driver_id","f1"]}}"#),
        "{ok_body}"
    );
    let missing = post(r#"{"features":["nope:f1"],"entities":{"driver_id":[2]}}"#).await;
    assert_eq!(missing.status, 404, "{missing:?}");

    let metrics = eventually(DEADLINE, "metrics endpoint", || {
        let addr = metrics_addr.clone();
        async move { http_get(&addr, "/metrics").filter(|b| b.contains("tern_grpc_requests_total")) }
    })
    .await;
    for expected in [
        r#"tern_grpc_requests_total{service="GrpcFeatureServer",method="GetOnlineFeatures",code="OK"} 1"#,
        r#"tern_grpc_requests_total{service="feast.serving.ServingService",method="GetOnlineFeatures",code="OK"} 1"#,
        r#"tern_grpc_requests_total{service="tern.v1.OnlineWriter",method="WriteFeatures",code="OK"} 1"#,
        r#"tern_grpc_requests_total{service="tern.v1.OnlineWriter",method="WriteFeatures",code="INVALID_ARGUMENT"} 1"#,
        r#"tern_online_write_rows_total{view="bench"} 1"#,
        "tern_registry_generation 1",
        "tern_registry_load_duration_seconds_count 1",
        "tern_requests_in_flight 0",
        "tern_entity_rows_total 5",
        r#"tern_feature_values_total{status="NOT_FOUND"} 2"#,
        r#"tern_http_requests_total{path="/get-online-features",status="200"} 1"#,
        r#"tern_http_requests_total{path="/get-online-features",status="404"} 1"#,
        "tern_http_request_duration_seconds_bucket{",
        // The three reads had a few keys: each ran on its request's thread.
        r#"tern_sqlite_reads_total{path="inline"} 3"#,
        r#"tern_sqlite_reads_total{path="pool"} 0"#,
        "tern_store_read_duration_seconds_bucket{store=\"sqlite\"",
        "tern_grpc_request_duration_seconds_bucket{",
    ] {
        assert!(
            metrics.contains(expected),
            "metrics lack {expected:?}:\n{metrics}"
        );
    }

    // The client stays connected: shutdown must not wait on an idle connection.
    let status = daemon.terminate().await;
    assert!(status.success(), "exit status {status:?}");
    daemon.wait_for_log("shutdown requested: health NOT_SERVING, draining in-flight requests");
    daemon.wait_for_log("server stopped");
    assert!(
        !daemon
            .seen
            .iter()
            .any(|l| l.contains("drain timeout reached")),
        "an idle client connection held the drain open:\n{}",
        daemon.seen.join("\n")
    );
    drop(ch);
}

#[tokio::test]
async fn tern_serve_refuses_to_start_without_a_registry() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("feature_store.yaml");
    std::fs::write(&yaml, "project: demo\nregistry: data/registry.db\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args([
            "serve",
            "--config",
            yaml.to_str().unwrap(),
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Registry not found at path") && err.contains("registry.db"),
        "{err}"
    );

    std::fs::write(
        &yaml,
        "project: demo\nregistry: {path: r.db, cache_ttl_seconds: soon}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["serve", "--config", yaml.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cache_ttl_seconds"),
        "a bad value names its key: {err}"
    );
}

#[tokio::test]
async fn shutdown_drains_a_request_in_flight() {
    // The read waits on a lock on purpose; this test is about draining, not the store
    // timeout, so the lock must not outlast it.
    let (dir, _repo, server) = crate::limits::serve(tern::testing::TestOptions {
        store: StoreSettings {
            timeout: Duration::from_secs(60),
            ..StoreSettings::default()
        },
        ..Default::default()
    })
    .await;
    let addr = server.addr;
    let ch = channel(&server.url()).await;

    // A writer holds SQLite's exclusive lock: the read blocks in the store, in flight.
    let lock = WriterLock::hold(&dir.path().join("data/online.db"));
    let request = tokio::spawn({
        let ch = ch.clone();
        async move {
            call(
                &ch,
                Route::Serving,
                refs_request(&["bench:f0"], vec![("driver_id", vec![int64(1)])]),
            )
            .await
        }
    });
    let serving = server.serving.clone();
    eventually(DEADLINE, "request in flight", || {
        let n = serving.in_flight();
        async move { (n == 1).then_some(()) }
    })
    .await;

    let stopped = tokio::spawn(server.stop());
    eventually(DEADLINE, "listener closed", || async move {
        TcpStream::connect(addr).is_err().then_some(())
    })
    .await;
    assert!(
        !request.is_finished(),
        "the request is still waiting on the lock"
    );

    lock.release();
    let r = request
        .await
        .unwrap()
        .expect("the in-flight request completes during the drain");
    assert_eq!(column(&r, "f0").0, [double(synthetic_value(1, 0))]);
    stopped
        .await
        .unwrap()
        .expect("server stops cleanly after draining");
}

#[tokio::test]
async fn passwords_stay_out_of_the_logs() {
    use crate::redis_support::RedisServer;
    const RIGHT: &str = "Right-Secret-4711";
    const WRONG: &str = "Wrong-Secret-0815";
    let redis = RedisServer::start(&["--requirepass", RIGHT]).expect("redis-server starts");
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "  type: redis\n  connection_string: \"{},password={WRONG}\"\n",
        redis.addr()
    );
    let yaml = crate::redis_support::redis_repo_yaml(dir.path(), &store, true);
    let mut daemon = Daemon::spawn(&[
        "serve",
        "--config",
        yaml.to_str().unwrap(),
        "--grpc-addr",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--log-level",
        "debug",
    ]);
    let refused =
        daemon.wait_for_log("online store not answering: health NOT_SERVING until it does");
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains(&redis.addr()),
        "{refused}"
    );
    let serving = daemon.wait_for_log("serving gRPC");
    let url = format!("http://{}", serving["addr"].as_str().unwrap());
    let ch = channel(&url).await;
    let status = call(&ch, Route::Serving, conv_rate_request())
        .await
        .unwrap_err();
    assert!(!status.message().contains(WRONG));
    drop(ch);
    let status = daemon.terminate().await;
    assert!(status.success());
    daemon.wait_for_log("server stopped");
    let logs = daemon.seen.join("\n");
    assert!(
        !logs.contains(WRONG) && !logs.contains(RIGHT),
        "a password reached the log:\n{logs}"
    );
}

#[tokio::test]
async fn waits_for_the_registry_and_reloads_on_sighup() {
    let (dir, _repo, yaml) = small_repo();
    let registry = dir.path().join("data/registry.db");
    let aside = dir.path().join("registry.db.later");
    std::fs::rename(&registry, &aside).unwrap();
    let (mut daemon, metrics_addr) = Daemon::serve(&yaml, &["--wait-for-registry"]);
    let waiting =
        daemon.wait_for_log("registry not loadable yet; waiting for it (--wait-for-registry)");
    assert!(
        waiting["error"]
            .as_str()
            .unwrap()
            .contains("Registry not found at path"),
        "{waiting}"
    );
    std::fs::rename(&aside, &registry).unwrap();
    let loaded = daemon.wait_for_log("registry snapshot loaded");
    assert_eq!(
        (loaded["generation"].as_u64(), loaded["reason"].as_str()),
        (Some(1), Some("initial"))
    );
    daemon.wait_for_log("serving gRPC");

    let hup = Command::new("kill")
        .args(["-HUP", &daemon.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    daemon.wait_for_log("SIGHUP received: reloading the registry");
    let reloaded = daemon.wait_for_log("registry snapshot loaded");
    assert_eq!(
        (reloaded["generation"].as_u64(), reloaded["reason"].as_str()),
        (Some(2), Some("forced"))
    );

    let metrics =
        eventually(DEADLINE, "reload metrics", || {
            let addr = metrics_addr.clone();
            async move {
                http_get(&addr, "/metrics").filter(|b| b.contains("tern_registry_reloads_total"))
            }
        })
        .await;
    for expected in [
        r#"tern_registry_reloads_total{result="swapped"} 1"#,
        "tern_registry_generation 2",
        "tern_registry_last_success_timestamp_seconds ",
    ] {
        assert!(
            metrics.contains(expected),
            "metrics lack {expected:?}:\n{metrics}"
        );
    }

    // A broken registry: logged with the file and cause, counted, not served.
    std::fs::write(&registry, b"not a registry").unwrap();
    let failed =
        daemon.wait_for_log("registry reload failed; still serving the last good snapshot");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("registry.db is not a valid Feast registry"),
        "{failed}"
    );
    assert_eq!(failed["generation"].as_u64(), Some(2), "{failed}");
    eventually(DEADLINE, "the failure counted", || {
        let addr = metrics_addr.clone();
        async move {
            http_get(&addr, "/metrics")
                .filter(|b| b.contains(r#"tern_registry_reloads_total{result="failed"}"#))
        }
    })
    .await;
    assert!(daemon.terminate().await.success());
}

/// The example repo over a Redis address nobody listens on (yet): its folder, the
/// port, and the YAML.
fn unreachable_redis_repo() -> (tempfile::TempDir, u16, std::path::PathBuf) {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let yaml = crate::redis_support::redis_repo_yaml(
        dir.path(),
        &format!("  type: redis\n  connection_string: \"127.0.0.1:{port}\"\n"),
        true,
    );
    (dir, port, yaml)
}

#[tokio::test]
async fn redis_appearing_after_start_is_counted_as_a_reconnect() {
    use crate::redis_support::RedisServer;
    let (_dir, port, yaml) = unreachable_redis_repo();
    let (mut daemon, metrics_addr) = Daemon::serve(&yaml, &[]);
    let down = daemon.wait_for_log("online store not answering: health NOT_SERVING until it does");
    assert!(
        down["error"]
            .as_str()
            .unwrap()
            .contains(&format!("redis 127.0.0.1:{port}")),
        "{down}"
    );
    let serving = daemon.wait_for_log("serving gRPC");
    let url = format!("http://{}", serving["addr"].as_str().unwrap());
    let refused = call(&channel(&url).await, Route::Serving, conv_rate_request())
        .await
        .unwrap_err();
    assert!(
        refused
            .message()
            .contains(&format!("redis 127.0.0.1:{port}")),
        "{refused:?}"
    );
    let _redis = RedisServer::start_on(port, &[]).expect("redis-server starts");
    daemon.wait_for_log("online store answering again: health SERVING");
    let metrics = eventually(DEADLINE, "store metrics", || {
        let addr = metrics_addr.clone();
        async move {
            http_get(&addr, "/metrics").filter(|b| b.contains(r#"tern_store_up{store="redis"} 1"#))
        }
    })
    .await;
    assert!(
        metrics.contains(r#"tern_store_reconnects_total{store="redis"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"tern_store_errors_total{store="redis",kind="#),
        "errors by kind: {metrics}"
    );
    assert!(daemon.terminate().await.success());
}

#[tokio::test]
async fn deadlines_decode_errors_and_in_flight_are_counted() {
    let (dir, _repo, yaml) = small_repo();
    let (mut daemon, metrics_addr) = Daemon::serve(
        &yaml,
        &["--request-timeout-ms", "300", "--store-timeout-ms", "60000"],
    );
    let serving = daemon.wait_for_log("serving gRPC");
    let url = format!("http://{}", serving["addr"].as_str().unwrap());
    let ch = channel(&url).await;
    let req = || refs_request(&["bench:f0"], vec![("driver_id", vec![int64(1)])]);

    // Past its deadline: DEADLINE_EXCEEDED from Tern, not CANCELLED from the transport.
    let mut writer = rusqlite::Connection::open(dir.path().join("data/online.db")).unwrap();
    let lock = writer
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .unwrap();
    let status = call(&ch, Route::Serving, req()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    lock.commit().unwrap();

    // Bytes that are not a request.
    let status = crate::limits::call_undecodable(&ch, Route::FeatureServer).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // Many requests at once from several tasks: the in-flight gauge ends at 0.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let ch = ch.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    call(&ch, Route::Serving, req()).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }

    let metrics = eventually(DEADLINE, "metrics", || {
        let addr = metrics_addr.clone();
        async move { http_get(&addr, "/metrics").filter(|b| b.contains("DEADLINE_EXCEEDED")) }
    })
    .await;
    for expected in [
        r#"tern_grpc_requests_total{service="feast.serving.ServingService",method="GetOnlineFeatures",code="DEADLINE_EXCEEDED"} 1"#,
        r#"tern_grpc_requests_total{service="GrpcFeatureServer",method="GetOnlineFeatures",code="INVALID_ARGUMENT"} 1"#,
        r#"tern_grpc_requests_total{service="feast.serving.ServingService",method="GetOnlineFeatures",code="OK"} 400"#,
        "tern_requests_in_flight 0\n",
    ] {
        assert!(
            metrics.contains(expected),
            "metrics lack {expected:?}:\n{metrics}"
        );
    }
    assert!(daemon.terminate().await.success());
}

#[tokio::test]
async fn sigterm_while_a_registry_read_hangs_exits_within_the_drain_bound() {
    use crate::sql_registry::{blocked_on, connect, feast_pg_registry, yaml};
    let db = feast_pg_registry().await;
    let dir = tempfile::tempdir().unwrap();
    let config = yaml(dir.path(), &db.url(), true, 0);
    // A registry timeout far beyond the test: only shutdown can end the hung read.
    let (mut daemon, _) = Daemon::serve(
        &config,
        &["--registry-timeout-ms", "600000", "--drain-timeout-s", "1"],
    );
    daemon.wait_for_log("serving gRPC");

    let locker = connect(&db.name).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE entities IN ACCESS EXCLUSIVE MODE;")
        .await
        .unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &daemon.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    blocked_on(&db.name, "entities").await;

    let status = daemon.terminate().await;
    assert!(status.success(), "exit status {status:?}");
    daemon.wait_for_log("server stopped");
    // The read never finished: the lock was held until after the exit.
    locker.batch_execute("ROLLBACK").await.unwrap();
    db.drop().await;
}

#[tokio::test]
async fn an_outage_does_not_flood_the_log() {
    // A Redis nobody listens on: every request fails.
    let (_dir, _port, yaml) = unreachable_redis_repo();
    // Each failure takes at most the store timeout: keep it short.
    let (mut daemon, _) = Daemon::serve(&yaml, &["--store-timeout-ms", "20"]);
    let serving = daemon.wait_for_log("serving gRPC");
    let url = format!("http://{}", serving["addr"].as_str().unwrap());
    let ch = channel(&url).await;
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let ch = ch.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    assert!(
                        call(&ch, Route::Serving, conv_rate_request())
                            .await
                            .is_err()
                    );
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let seconds = started.elapsed().as_secs() + 2;
    assert!(daemon.terminate().await.success());
    daemon.wait_for_log("server stopped");
    let failures: Vec<serde_json::Value> = daemon
        .seen
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "GetOnlineFeatures failed")
        .collect();
    // At most 5 lines in any second the 400 failures spanned; the lines say how many
    // were held back.
    assert!(
        !failures.is_empty() && failures.len() as u64 <= 5 * seconds,
        "{} failure lines for 400 failed requests in about {seconds} s",
        failures.len()
    );
    let held_back: u64 = failures
        .iter()
        .filter_map(|v| v["suppressed"].as_u64())
        .sum();
    assert!(held_back > 0, "the held-back count is reported");
}

/// `tern health [--addr] [--service]`, run as a probe runs it: its exit code and its
/// one line.
fn tern_health(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .arg("health")
        .args(args)
        .env_remove("TERN_ADDR")
        .output()
        .expect("run tern health");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What exec probes and Docker's HEALTHCHECK rely on: exit 0 with `SERVING` only when
/// ready; exit 1 (never Docker's reserved 2) with one line saying why otherwise; the
/// `liveness` service answers SERVING while the online store is down, so a Redis
/// outage makes a pod unready without getting it restarted.
#[tokio::test]
async fn health_command_follows_readiness_and_liveness() {
    use crate::redis_support::RedisServer;
    let one_line = |err: &str| {
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    };

    let nobody = format!("127.0.0.1:{}", free_port());
    let (code, out, err) = tern_health(&["--addr", &nobody]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains(&format!("cannot connect to http://{nobody}")),
        "{err}"
    );
    one_line(&err);

    // Accepts connections (the kernel does) but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("addr").to_string();
    let (code, _, err) = tern_health(&["--addr", &silent_addr, "--timeout-ms", "300"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "no answer from http://{silent_addr} within 300 ms"
        )),
        "{err}"
    );
    one_line(&err);

    let (_dir, port, yaml) = unreachable_redis_repo();
    let (mut daemon, _metrics) = Daemon::serve(&yaml, &[]);
    daemon.wait_for_log("online store not answering: health NOT_SERVING until it does");
    let serving = daemon.wait_for_log("serving gRPC");
    let addr = serving["addr"].as_str().expect("addr").to_owned();

    let (code, out, err) = tern_health(&["--addr", &addr]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains(&format!(
            "http://{addr} answers NOT_SERVING for health service \"\""
        )),
        "{err}"
    );
    one_line(&err);
    let (code, out, err) = tern_health(&["--addr", &addr, "--service", "liveness"]);
    assert_eq!((code, out.as_str()), (Some(0), "SERVING\n"), "{err}");
    let (code, _, err) = tern_health(&["--addr", &addr, "--service", "nope"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("http://{addr} has no health service \"nope\"")),
        "{err}"
    );

    let _redis = RedisServer::start_on(port, &[]).expect("redis-server starts");
    daemon.wait_for_log("online store answering again: health SERVING");
    let url = format!("http://{addr}");
    let ready = eventually(DEADLINE, "tern health exits 0", || {
        let url = url.clone();
        async move {
            let (code, out, _) = tern_health(&["--addr", &url]);
            (code == Some(0)).then_some(out)
        }
    })
    .await;
    assert_eq!(ready, "SERVING\n");
    assert!(daemon.terminate().await.success());
}

/// What a readiness probe and a health-watching client see of a drain: the standard
/// health service turns NOT_SERVING the moment shutdown starts, while calls already in
/// flight (here, the watch itself) go on being answered.
#[tokio::test]
async fn a_drain_turns_readiness_not_serving_at_once() {
    let (_dir, _repo, server) = crate::limits::serve(Default::default()).await;
    let ch = channel(&server.url()).await;
    let health = HealthClient::new(ch.clone());
    let watch = |service: &str| {
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        let mut health = health.clone();
        async move { health.watch(request).await.expect("watch").into_inner() }
    };
    let mut ready = watch("").await;
    let mut live = watch("liveness").await;
    let next = |m: Option<tonic_health::pb::HealthCheckResponse>| m.expect("an update").status;
    assert_eq!(
        next(ready.message().await.expect("stream")),
        ServingStatus::Serving as i32
    );
    assert_eq!(
        next(live.message().await.expect("stream")),
        ServingStatus::Serving as i32
    );

    let stopped = tokio::spawn(server.stop());
    assert_eq!(
        next(ready.message().await.expect("the watch is still answered")),
        ServingStatus::NotServing as i32
    );
    drop((ready, live, health, ch));
    stopped
        .await
        .expect("join")
        .expect("the server stops once the watchers are gone");
}
