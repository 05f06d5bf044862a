//! Open-loop load run against `tern serve`, beside the same load against a no-op tonic
//! server answering the same response bodies (the floor: generator, gRPC and loopback
//! cost with no feature serving at all).
//!
//! Requests are sent on a fixed schedule from a dedicated sender thread; each latency
//! is counted from the request's scheduled time, not from when it was actually sent,
//! so a stalled server or a late generator shows up in the tail instead of being
//! hidden (a closed-loop tool would just send less).
//!
//! For each store (SQLite and Redis) it also measures capacity with a closed loop, and
//! for Redis runs `redis-benchmark` HMGETs against the same Redis, in the same run.
//!
//! Each row also gives the server process's CPU time per answered request (and Redis's,
//! apart), from `/proc/PID/stat` before and after the run.
//!
//! Then, on the example repo Feast wrote, Tern's HTTP API beside its gRPC and beside
//! `feast serve` (open loop at one rate, and capacity), when a Feast venv is found.
//!
//! Last (with `LOAD_TLS=1`), the same W1 over gRPC against `tern serve` in plaintext,
//! with TLS, with OIDC bearer tokens, and with both, beside a no-op floor with and
//! without TLS, all in one run (issue 17). Needs `openssl` (the RSA signing key).
//!
//! `cargo bench --bench load` (env: LOAD_STORE="sqlite,redis", LOAD_ENTITIES="100000"
//! (drivers stored; a list runs each size), LOAD_RATES_1="1000,4000" for 1 entity x 10
//! features, LOAD_RATES_100="500,1000" for 100 x 10, LOAD_SECONDS=10,
//! LOAD_REDIS_CONNECTIONS=1, LOAD_RELOAD_CHECK=1, LOAD_TERN_BIN=path to another `tern`,
//! LOAD_HTTP=1, LOAD_HTTP_RATE=200, LOAD_FEAST_VENV=the venv holding `feast`,
//! LOAD_TLS=0, LOAD_TLS_RATE=1000, LOAD_SQLITE_WAL=1 for a SQLite database in WAL mode,
//! LOAD_PERF=DIR for `perf stat` over each open-loop row and `perf record` over each
//! capacity row, per server).

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use prost::Message;
use tern::grpc::ServingServiceClient;
use tern::proto::feast::serving::get_online_features_request::Kind;
use tern::proto::feast::serving::{FeatureList, GetOnlineFeaturesRequest};
use tern::proto::feast::types::value::Val;
use tern::proto::feast::types::{RepeatedValue, Value};
use tern::proto::tern::wire;
use tern::testing::{RedisServer, SyntheticRepo};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

const CONNECTIONS: usize = 4;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--noop-server") {
        noop::serve(&args[i + 1..]);
        return;
    }
    // Rates per scenario: the 100-entity request costs ~10x the CPU of the 1-entity one.
    let rates = |var: &str, default: &str| -> Vec<f64> {
        std::env::var(var)
            .unwrap_or_else(|_| default.into())
            .split(',')
            .map(|r| r.trim().parse().expect("rates: numbers"))
            .collect()
    };
    let rates_small = rates("LOAD_RATES_1", "1000,4000");
    let rates_large = rates("LOAD_RATES_100", "500,1000");
    let env_num = |var: &str, default: u64| {
        std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let seconds = env_num("LOAD_SECONDS", 10);
    let stores = std::env::var("LOAD_STORE").unwrap_or_else(|_| "sqlite,redis".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");

    println!("machine: {}", common::machine());
    println!(
        "open loop, {CONNECTIONS} HTTP/2 connections, {seconds}s per run, latency from scheduled send time"
    );
    let tern_bin =
        std::env::var("LOAD_TERN_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_tern").into());
    for (entities, store) in common::sizes("LOAD_ENTITIES", "100000")
        .into_iter()
        .flat_map(|n| {
            stores
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(move |s| (n, s))
        })
    {
        let repo = SyntheticRepo {
            entities,
            ..SyntheticRepo::default()
        };
        let scenarios: Vec<(&str, GetOnlineFeaturesRequest, &[f64])> = vec![
            ("1x10", request(&repo, 1), &rates_small),
            ("100x10", request(&repo, 100), &rates_large),
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        let mut redis = None;
        let mut extra_args = Vec::new();
        let mut wal = false;
        let yaml = match store {
            "sqlite" => {
                let yaml = repo.write(dir.path()).expect("write repo");
                if env_num("LOAD_SQLITE_WAL", 0) == 1 {
                    // What `tern materialize` leaves: a database in WAL mode.
                    let db = rusqlite::Connection::open(dir.path().join("data/online.db"))
                        .expect("open online.db");
                    let mode: String = db
                        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
                        .expect("journal_mode");
                    assert_eq!(mode, "wal");
                    wal = true;
                }
                yaml
            }
            "redis" => {
                let server = RedisServer::start(&[]).expect("redis-server");
                let yaml = rt
                    .block_on(repo.write_redis(dir.path(), &server.addr()))
                    .expect("write redis repo");
                extra_args = vec![
                    "--redis-connections".to_owned(),
                    env_num("LOAD_REDIS_CONNECTIONS", 1).to_string(),
                ];
                redis = Some(server);
                yaml
            }
            other => panic!("LOAD_STORE: unknown store {other}"),
        };
        let db_size = std::fs::metadata(dir.path().join("data/online.db")).map_or(0, |m| m.len());
        let mut tern = Server::spawn(
            Command::new(&tern_bin)
                .args([
                    "serve",
                    "--config",
                    yaml.to_str().expect("utf8 path"),
                    "--grpc-addr",
                    "127.0.0.1:0",
                ])
                .args(["--log-format", "json"])
                .args(&extra_args),
            grpc_addr_in_log,
        );
        let tern_channels = rt.block_on(channels(tern.addr));
        // The no-op server answers with Tern's own response bytes for each scenario.
        let mut noop_args = vec!["--noop-server".to_owned()];
        for (name, req, _) in &scenarios {
            let resp = rt
                .block_on(
                    ServingServiceClient::new(tern_channels[0].clone())
                        .get_online_features(req.clone()),
                )
                .expect("tern answers");
            let path = dir.path().join(format!("{name}.bin"));
            std::fs::write(&path, resp.into_inner().encode_to_vec()).expect("write body");
            noop_args.push(path.to_string_lossy().into_owned());
        }
        let mut noop = Server::spawn(
            Command::new(std::env::current_exe().expect("exe")).args(&noop_args),
            |line| line.strip_prefix("listening ").map(str::to_owned),
        );
        let noop_channels = rt.block_on(channels(noop.addr));

        println!(
            "\n## {store}, {entities} entities{}{}",
            if db_size > 0 {
                format!(
                    " (online.db {} MiB{})",
                    db_size >> 20,
                    if wal { ", WAL journal" } else { "" }
                )
            } else {
                String::new()
            },
            if extra_args.is_empty() {
                String::new()
            } else {
                format!(" ({})", extra_args.join(" "))
            }
        );
        let redis_pid = redis.as_ref().map(RedisServer::pid);
        println!(
            "| scenario | rate (req/s) | server | p50 (ms) | p99 (ms) | p99.9 (ms) | max (ms) | achieved (req/s) | server CPU/req (µs) | redis CPU/req (µs) | errors |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for (name, req, rates) in &scenarios {
            for &rate in rates.iter() {
                for (server, chans, pid) in [
                    ("no-op floor", &noop_channels, noop.child.id()),
                    ("tern", &tern_channels, tern.child.id()),
                ] {
                    // Warm up connections, caches and plans, then measure.
                    let caller = Caller::grpc(chans, req);
                    let _ = run(&rt, &caller, rate, Duration::from_secs(1));
                    let perf =
                        Perf::count(pid, &format!("{store}-{entities}-{name}-{rate}-{server}"));
                    let (r, cpu, redis_cpu) = with_cpu(pid, redis_pid, || {
                        run(&rt, &caller, rate, Duration::from_secs(seconds))
                    });
                    if let Some(counts) = perf.per_request(r.hist.len()) {
                        println!("<!-- {server}, {name} at {rate:.0}: per request {counts} -->");
                    }
                    println!(
                        "| {name} | {rate:.0} | {server} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} | {:.1} | {} | {} |",
                        r.ms(0.5),
                        r.ms(0.99),
                        r.ms(0.999),
                        r.max_ms(),
                        r.achieved,
                        cpu,
                        redis_cpu,
                        r.errors
                    );
                }
            }
        }
        println!(
            "\nclosed loop, {SATURATION_IN_FLIGHT} requests in flight, {seconds}s: maximum throughput"
        );
        println!(
            "| scenario | server | requests/s | p50 (ms) | p99 (ms) | server CPU/req (µs) | redis CPU/req (µs) | errors |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for (name, req, _) in &scenarios {
            for (server, chans, pid) in [
                ("no-op floor", &noop_channels, noop.child.id()),
                ("tern", &tern_channels, tern.child.id()),
            ] {
                let caller = Caller::grpc(chans, req);
                let _ = saturate(&rt, &caller, Duration::from_secs(1));
                let perf = Perf::record(pid, &format!("{store}-{entities}-{name}-{server}"));
                let (r, cpu, redis_cpu) = with_cpu(pid, redis_pid, || {
                    saturate(&rt, &caller, Duration::from_secs(seconds))
                });
                drop(perf);
                println!(
                    "| {name} | {server} | {:.0} | {:.3} | {:.3} | {:.1} | {} | {} |",
                    r.achieved,
                    r.ms(0.5),
                    r.ms(0.99),
                    cpu,
                    redis_cpu,
                    r.errors
                );
            }
        }
        if store == "sqlite" && env_num("LOAD_RELOAD_CHECK", 1) == 1 {
            // Registry reloads must not show in latency: SIGHUP forces a full reload,
            // rebuild and swap (and so new resolution plans) every second. The two
            // conditions alternate, to spread the machine's noise over both.
            let (name, req, _) = &scenarios[0];
            println!(
                "\nregistry reload every second (SIGHUP: re-read, rebuild, swap), {name} at 1000 req/s, alternating runs"
            );
            println!("| run | reloads | p50 (ms) | p99 (ms) | p99.9 (ms) | max (ms) | errors |");
            println!("|---|---|---|---|---|---|---|");
            let caller = Caller::grpc(&tern_channels, req);
            let _ = run(&rt, &caller, 1000.0, Duration::from_secs(1));
            for round in 1..=3 {
                for reloading in [false, true] {
                    let hups = reloading.then(|| Sighups::start(tern.child.id()));
                    let r = run(&rt, &caller, 1000.0, Duration::from_secs(seconds));
                    let sent = hups.map_or(0, Sighups::stop);
                    println!(
                        "| {round}{} | {sent} | {:.3} | {:.3} | {:.3} | {:.3} | {} |",
                        if reloading { " reloading" } else { " steady" },
                        r.ms(0.5),
                        r.ms(0.99),
                        r.ms(0.999),
                        r.max_ms(),
                        r.errors
                    );
                }
            }
        }
        if let Some(redis) = &redis {
            println!(
                "\nredis-benchmark on the same Redis, same run ({CONNECTIONS} clients; one HMGET of 11 fields, and 100 per pipeline):"
            );
            println!("| command | requests/s | p50 (ms) | p99 (ms) |");
            println!("|---|---|---|---|");
            for (label, pipeline) in [("HMGET x1", 1), ("HMGET x100 pipelined", 100)] {
                let (rps, p50, p99) = benchmark_hmget(redis, seconds, pipeline);
                println!("| {label} | {rps:.0} | {p50:.3} | {p99:.3} |");
            }
        }
        tern.stop();
        noop.stop();
    }
    if env_num("LOAD_HTTP", 1) == 1 {
        http_comparison(
            &rt,
            &tern_bin,
            seconds,
            env_num("LOAD_HTTP_RATE", 200) as f64,
        );
    }
    if env_num("LOAD_TLS", 0) == 1 {
        tls_auth(
            &rt,
            &tern_bin,
            seconds,
            env_num("LOAD_TLS_RATE", 1000) as f64,
        );
    }
}

/// W1 on the example repo: driver_stats' 6 features (its active version) and 4 of
/// customer_profile's, for driver 1001 and customer c1.
const W1_FEATURES: [&str; 10] = [
    "driver_stats:conv_rate",
    "driver_stats:acc_rate",
    "driver_stats:avg_daily_trips",
    "driver_stats:name",
    "driver_stats:active",
    "driver_stats:ratings",
    "customer_profile:tier",
    "customer_profile:lifetime_value",
    "customer_profile:age",
    "customer_profile:tags",
];

/// W1 as a gRPC GetOnlineFeatures.
fn w1_request() -> GetOnlineFeaturesRequest {
    GetOnlineFeaturesRequest {
        kind: Some(Kind::Features(FeatureList {
            val: W1_FEATURES.iter().map(|f| (*f).to_owned()).collect(),
        })),
        entities: [
            (
                "driver_id".to_owned(),
                RepeatedValue {
                    val: vec![Value {
                        val: Some(Val::Int64Val(1001)),
                    }],
                },
            ),
            (
                "customer_id".to_owned(),
                RepeatedValue {
                    val: vec![Value {
                        val: Some(Val::StringVal("c1".into())),
                    }],
                },
            ),
        ]
        .into(),
        ..Default::default()
    }
}

/// A copy of the example repo (`examples/feature_repo`: its feature_store.yaml, registry
/// and online store) in `dir`; the copied feature_store.yaml.
fn copy_example(dir: &std::path::Path) -> std::path::PathBuf {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/feature_repo");
    std::fs::create_dir_all(dir.join("data")).expect("data dir");
    std::fs::copy(
        example.join("feature_store.yaml"),
        dir.join("feature_store.yaml"),
    )
    .expect("copy yaml");
    for file in ["registry.db", "online.db"] {
        std::fs::copy(example.join("data").join(file), dir.join("data").join(file))
            .expect("copy data");
    }
    dir.join("feature_store.yaml")
}

/// The example repo (what Feast wrote) served three ways in one run: Tern over gRPC,
/// Tern's HTTP API, and `feast serve` (when a Feast venv is found: `LOAD_FEAST_VENV`,
/// default `~/.cache/tern/feast-0.67.0-venv`). W1: one entity row x 10 features (driver_stats'
/// 6 and customer_profile's 4, for driver 1001 and customer c1).
fn http_comparison(rt: &tokio::runtime::Runtime, tern_bin: &str, seconds: u64, rate: f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = copy_example(dir.path());
    let mut tern = Server::spawn(
        Command::new(tern_bin)
            .args(["serve", "--config", yaml.to_str().expect("utf8 path")])
            .args(["--grpc-addr", "127.0.0.1:0", "--log-format", "json"]),
        grpc_addr_in_log,
    );
    let venv = std::env::var("LOAD_FEAST_VENV").unwrap_or_else(|_| {
        format!(
            "{}/.cache/tern/feast-0.67.0-venv",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let feast_bin = std::path::Path::new(&venv).join("bin/feast");
    let mut feast = feast_bin.exists().then(|| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(&feast_bin)
            .args([
                "serve",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "--no-access-log",
            ])
            // No worker restarts: Feast's default restarts its worker about every
            // 1,000 requests, which shows here as errors and second-long stalls.
            .args(["--max-requests", "0"])
            .current_dir(dir.path())
            .env("TZ", "UTC")
            .env("PYTHONHASHSEED", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn feast serve");
        Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    });
    let body: Arc<[u8]> = serde_json::to_vec(&serde_json::json!({
        "features": W1_FEATURES,
        "entities": {"driver_id": [1001], "customer_id": ["c1"]},
        "full_feature_names": false,
        "include_feature_view_version_metadata": false,
    }))
    .expect("json")
    .into();
    let req = w1_request();
    let tern_http = Arc::new(http1::Pool::new(tern.addr, SATURATION_IN_FLIGHT));
    let mut callers = vec![
        (
            "tern gRPC",
            Caller::grpc(&rt.block_on(channels(tern.addr)), &req),
            tern.child.id(),
        ),
        (
            "tern HTTP/1.1",
            Caller::Http(tern_http, body.clone()),
            tern.child.id(),
        ),
    ];
    if let Some(feast) = &feast {
        let pool = Arc::new(http1::Pool::new(feast.addr, SATURATION_IN_FLIGHT));
        let deadline = Instant::now() + Duration::from_secs(120);
        rt.block_on(async {
            while pool.get("/health").await != Some(200) {
                assert!(
                    Instant::now() < deadline,
                    "feast serve did not start within 120 s"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        callers.push((
            "feast serve HTTP/1.1",
            Caller::Http(pool, body),
            feast.child.id(),
        ));
    } else {
        println!("\n(no Feast venv at {venv}: feast serve rows left out)");
    }
    println!(
        "\n## HTTP API beside gRPC and feast serve: example repo, W1 (1 entity row x 10 features)"
    );
    println!(
        "open loop at {rate:.0} req/s, {seconds}s; HTTP/1.1 keep-alive over up to {SATURATION_IN_FLIGHT} connections"
    );
    println!(
        "| server | p50 (ms) | p99 (ms) | p99.9 (ms) | achieved (req/s) | server CPU/req (µs) | errors |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, caller, pid) in &callers {
        let _ = run(rt, caller, rate, Duration::from_secs(1));
        let (r, cpu, _) = with_cpu(*pid, None, || {
            run(rt, caller, rate, Duration::from_secs(seconds))
        });
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.0} | {cpu:.1} | {} |",
            r.ms(0.5),
            r.ms(0.99),
            r.ms(0.999),
            r.achieved,
            r.errors
        );
    }
    println!("\nclosed loop, {SATURATION_IN_FLIGHT} requests in flight, {seconds}s");
    println!("| server | requests/s | p50 (ms) | p99 (ms) | server CPU/req (µs) | errors |");
    println!("|---|---|---|---|---|---|");
    for (name, caller, pid) in &callers {
        let _ = saturate(rt, caller, Duration::from_secs(1));
        let (r, cpu, _) = with_cpu(*pid, None, || {
            saturate(rt, caller, Duration::from_secs(seconds))
        });
        println!(
            "| {name} | {:.0} | {:.3} | {:.3} | {cpu:.1} | {} |",
            r.achieved,
            r.ms(0.5),
            r.ms(0.99),
            r.errors
        );
    }
    tern.stop();
    if let Some(feast) = &mut feast {
        feast.stop();
    }
}

/// Issue 17: W1 on the example repo over gRPC against `tern serve` four ways, in one
/// run: plaintext, TLS, OIDC (plaintext, a bearer token on every call) and TLS + OIDC;
/// beside the no-op floor in plaintext and with tonic's own TLS. Every connection is made
/// (and its TLS handshake done) before the runs: the figures are the cost per request on
/// long-lived connections. The OIDC provider (discovery document and JWKS) is served on
/// loopback from this process; the key is a 2048-bit RSA key made with `openssl`.
fn tls_auth(rt: &tokio::runtime::Runtime, tern_bin: &str, seconds: u64, rate: f64) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = copy_example(dir.path());
    let pki = pki::write(dir.path());
    let ca_pem = std::fs::read(&pki.ca).expect("ca");
    let key = oidc::RsaKey::make(dir.path(), "bench-key").expect("RSA key (openssl)");
    let provider = rt.block_on(oidc::provider(&key));
    // The same repo with `auth` on, beside the plain feature_store.yaml (paths in it are
    // relative to its directory, the same data).
    let oidc_yaml = dir.path().join("feature_store_oidc.yaml");
    let mut text = std::fs::read_to_string(&yaml).expect("read yaml");
    text.push_str(&format!(
        "auth:\n  type: oidc\n  auth_discovery_url: http://{provider}/.well-known/openid-configuration\n  client_id: {}\n  audience: {}\n  issuer: {}\n",
        oidc::CLIENT_ID,
        oidc::AUDIENCE,
        oidc::ISSUER
    ));
    std::fs::write(&oidc_yaml, text).expect("write yaml");
    let token = key.sign(&oidc::claims(3600)).expect("sign");

    let tern = |config: &std::path::Path, tls: bool| {
        let mut cmd = Command::new(tern_bin);
        cmd.args(["serve", "--config", config.to_str().expect("utf8 path")])
            .args(["--grpc-addr", "127.0.0.1:0", "--log-format", "json"]);
        if tls {
            cmd.arg("--tls-cert")
                .arg(&pki.server_cert)
                .arg("--tls-key")
                .arg(&pki.server_key);
        }
        Server::spawn(&mut cmd, grpc_addr_in_log)
    };
    let req = w1_request();
    let plain = tern(&yaml, false);
    // The no-op floor answers with Tern's own W1 response bytes.
    let body = dir.path().join("w1.bin");
    let resp = rt
        .block_on(
            ServingServiceClient::new(rt.block_on(channels(plain.addr)).remove(0))
                .get_online_features(req.clone()),
        )
        .expect("tern answers");
    std::fs::write(&body, resp.into_inner().encode_to_vec()).expect("write body");
    let body = body.to_string_lossy().into_owned();
    let noop = |tls: bool| {
        let mut cmd = Command::new(std::env::current_exe().expect("exe"));
        cmd.arg("--noop-server");
        if tls {
            cmd.arg("--tls").arg(&pki.server_cert).arg(&pki.server_key);
        }
        Server::spawn(cmd.args([&body, &body]), |line| {
            line.strip_prefix("listening ").map(str::to_owned)
        })
    };
    let mut servers = vec![
        ("no-op floor", noop(false), false, false),
        ("no-op floor, TLS", noop(true), true, false),
    ];
    servers.push(("tern, plaintext", plain, false, false));
    servers.push(("tern, TLS", tern(&yaml, true), true, false));
    servers.push(("tern, OIDC", tern(&oidc_yaml, false), false, true));
    servers.push(("tern, TLS + OIDC", tern(&oidc_yaml, true), true, true));
    let callers: Vec<(&str, Caller, u32)> = servers
        .iter()
        .map(|(name, server, tls, auth)| {
            let chans = rt.block_on(tls_channels(server.addr, tls.then_some(ca_pem.as_slice())));
            let caller = Caller::grpc_with_token(&chans, &req, auth.then_some(token.as_str()));
            if *auth {
                // The keys are fetched in the background: wait for the token to pass,
                // and check that a call without one is refused.
                let deadline = Instant::now() + Duration::from_secs(20);
                while !rt.block_on(caller.call(0)) {
                    assert!(
                        Instant::now() < deadline,
                        "{name}: the token is not accepted"
                    );
                    rt.block_on(tokio::time::sleep(Duration::from_millis(100)));
                }
                assert!(
                    !rt.block_on(Caller::grpc(&chans, &req).call(0)),
                    "{name}: a call without a token is answered"
                );
            }
            assert!(rt.block_on(caller.call(0)), "{name}: W1 is not answered");
            (*name, caller, server.child.id())
        })
        .collect();

    println!(
        "\n## TLS and OIDC beside plaintext: example repo, W1 (1 entity row x 10 features), gRPC"
    );
    println!(
        "open loop at {rate:.0} req/s, {seconds}s; {CONNECTIONS} HTTP/2 connections per server, connected (and TLS handshakes done) before the runs; OIDC: one RS256 token (2048-bit RSA key) on every call"
    );
    println!(
        "| server | p50 (ms) | p99 (ms) | p99.9 (ms) | max (ms) | achieved (req/s) | server CPU/req (µs) | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, caller, pid) in &callers {
        let _ = run(rt, caller, rate, Duration::from_secs(1));
        let (r, cpu, _) = with_cpu(*pid, None, || {
            run(rt, caller, rate, Duration::from_secs(seconds))
        });
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} | {cpu:.1} | {} |",
            r.ms(0.5),
            r.ms(0.99),
            r.ms(0.999),
            r.max_ms(),
            r.achieved,
            r.errors
        );
    }
    println!(
        "\nclosed loop, {SATURATION_IN_FLIGHT} requests in flight, {seconds}s (generator: this process, which shares the 2 cores)"
    );
    println!(
        "| server | requests/s | p50 (ms) | p99 (ms) | server CPU/req (µs) | generator CPU/req (µs) | errors |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, caller, pid) in &callers {
        let _ = saturate(rt, caller, Duration::from_secs(1));
        let own_before = own_cpu_time();
        let (r, cpu, _) = with_cpu(*pid, None, || {
            saturate(rt, caller, Duration::from_secs(seconds))
        });
        let own = own_cpu_time().saturating_sub(own_before).as_secs_f64() * 1e6
            / (r.hist.len() as f64).max(1.0);
        println!(
            "| {name} | {:.0} | {:.3} | {:.3} | {cpu:.1} | {own:.1} | {} |",
            r.achieved,
            r.ms(0.5),
            r.ms(0.99),
            r.errors
        );
    }
    for (_, server, _, _) in &mut servers {
        server.stop();
    }
}

/// User + system CPU time of this process alone (its threads, not its children), from
/// `/proc/self/stat`.
fn own_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // Kernel clock ticks: 100 per second on Linux everywhere (`getconf CLK_TCK`).
    Duration::from_millis(ticks * 10)
}

mod pki {
    //! A throwaway private CA and a server certificate for 127.0.0.1 and localhost
    //! (rcgen, as the TLS tests make theirs).

    use std::path::{Path, PathBuf};

    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa,
        KeyPair,
    };

    pub(super) struct Pki {
        pub(super) ca: PathBuf,
        pub(super) server_cert: PathBuf,
        pub(super) server_key: PathBuf,
    }

    pub(super) fn write(dir: &Path) -> Pki {
        // Distinct subjects: a leaf whose subject equals its issuer's looks self-signed.
        let named = |cn: &str, sans: Vec<String>| {
            let mut p = CertificateParams::new(sans).expect("params");
            p.distinguished_name = DistinguishedName::new();
            p.distinguished_name.push(DnType::CommonName, cn);
            p
        };
        let mut ca_params = named("tern bench CA", Vec::new());
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
        let key = KeyPair::generate().expect("key");
        let cert = named(
            "tern bench server",
            vec!["127.0.0.1".into(), "localhost".into()],
        )
        .signed_by(&key, &ca)
        .expect("sign");
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).expect("write pem");
            p
        };
        Pki {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &cert.pem()),
            server_key: write("server.key", &key.serialize_pem()),
        }
    }
}

mod oidc {
    //! An identity provider on loopback (discovery document and JWKS, as the OIDC tests
    //! serve theirs), an RSA key made with `openssl`, and tokens signed with it.

    use std::net::SocketAddr;
    use std::time::{SystemTime, UNIX_EPOCH};

    use serde_json::json;

    pub(super) const AUDIENCE: &str = "tern";
    pub(super) const ISSUER: &str = "https://idp.bench/realms/ml";
    pub(super) const CLIENT_ID: &str = "tern";

    pub(super) use tern::testing::RsaKey;

    /// A token's claims as a Keycloak-like provider writes them, expiring in
    /// `expires_in` seconds.
    pub(super) fn claims(expires_in: u64) -> serde_json::Value {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "u-1",
            "preferred_username": "bench",
            "exp": now + expires_in,
            "iat": now,
            "resource_access": {CLIENT_ID: {"roles": ["reader"]}},
        })
    }

    /// Serves the discovery document and `key`'s JWKS on loopback (on the calling
    /// runtime, for as long as it runs); its address.
    pub(super) async fn provider(key: &RsaKey) -> SocketAddr {
        use axum::routing::get;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let discovery = json!({
            "issuer": ISSUER,
            "authorization_endpoint": format!("http://{addr}/auth"),
            "token_endpoint": format!("http://{addr}/token"),
            "jwks_uri": format!("http://{addr}/jwks"),
        })
        .to_string();
        let jwks = json!({"keys": [key.jwk.clone()]}).to_string();
        let json = |body: String| {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
        };
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || async move { json(discovery) }),
            )
            .route("/jwks", get(move || async move { json(jwks) }));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        addr
    }
}

mod http1 {
    //! A minimal HTTP/1.1 keep-alive client for the load runs (`feast serve` speaks no
    //! HTTP/2): a pool of connections, one request at a time on each.

    use std::net::SocketAddr;

    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
    use tokio::net::TcpStream;
    use tokio::sync::{Mutex, Semaphore};

    pub(super) struct Pool {
        addr: SocketAddr,
        idle: Mutex<Vec<BufReader<TcpStream>>>,
        slots: Semaphore,
    }

    impl Pool {
        pub(super) fn new(addr: SocketAddr, connections: usize) -> Self {
            Self {
                addr,
                idle: Mutex::new(Vec::new()),
                slots: Semaphore::new(connections),
            }
        }

        pub(super) async fn post_json(&self, path: &str, body: &[u8]) -> Option<u16> {
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                self.addr,
                body.len()
            );
            self.send(head.as_bytes(), body).await
        }

        pub(super) async fn get(&self, path: &str) -> Option<u16> {
            let head = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr);
            self.send(head.as_bytes(), &[]).await
        }

        /// One exchange on an idle (or new) connection; the status, or `None` when the
        /// connection failed (it is then dropped).
        async fn send(&self, head: &[u8], body: &[u8]) -> Option<u16> {
            let _slot = self.slots.acquire().await.ok()?;
            let idle = self.idle.lock().await.pop();
            let mut conn = match idle {
                Some(conn) => conn,
                None => {
                    let stream = TcpStream::connect(self.addr).await.ok()?;
                    stream.set_nodelay(true).ok()?;
                    BufReader::new(stream)
                }
            };
            let status = exchange(&mut conn, head, body).await?;
            self.idle.lock().await.push(conn);
            Some(status)
        }
    }

    async fn exchange(conn: &mut BufReader<TcpStream>, head: &[u8], body: &[u8]) -> Option<u16> {
        let stream = conn.get_mut();
        stream.write_all(head).await.ok()?;
        stream.write_all(body).await.ok()?;
        let mut line = String::new();
        conn.read_line(&mut line).await.ok()?;
        let status = line.split(' ').nth(1)?.parse().ok()?;
        let mut length = 0usize;
        loop {
            line.clear();
            conn.read_line(&mut line).await.ok()?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().ok()?;
            }
        }
        let mut rest = vec![0u8; length];
        conn.read_exact(&mut rest).await.ok()?;
        Some(status)
    }
}

/// The gRPC address in `tern serve`'s JSON log line that announces it.
fn grpc_addr_in_log(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    (v["message"] == "serving gRPC")
        .then(|| v["addr"].as_str().map(str::to_owned))
        .flatten()
}

/// Runs `measure` and gives the CPU per answered request of the server `pid` (user +
/// system time over the run, divided by the requests it answered), and of Redis apart
/// (`-` without Redis).
fn with_cpu(
    pid: u32,
    redis_pid: Option<u32>,
    measure: impl FnOnce() -> RunResult,
) -> (RunResult, f64, String) {
    let before = common::cpu_time(pid);
    let redis_before = redis_pid.map(common::cpu_time);
    let r = measure();
    let answered = (r.hist.len() as f64).max(1.0);
    let per_request = |pid: u32, before: Duration| {
        common::cpu_time(pid).saturating_sub(before).as_secs_f64() * 1e6 / answered
    };
    let redis = redis_pid
        .zip(redis_before)
        .map_or("-".to_owned(), |(p, b)| format!("{:.1}", per_request(p, b)));
    let server = per_request(pid, before);
    (r, server, redis)
}

/// `LOAD_PERF=DIR`: `perf` attached to one server process over a row, its output in
/// `DIR/<label>.*`: over the open-loop rows `perf stat` counts system calls (in all, and
/// the common ones) and context switches, printed per request; over the capacity rows
/// `perf record` samples where the CPU goes (cpu-clock, no call graphs), for `perf
/// report` or `benches/tools/perf_by_component.py`. Sampling costs the server CPU:
/// capacity rows recorded this way are not comparable with unrecorded ones.
struct Perf(Option<(Child, PathBuf)>);

/// What `Perf::count` counts.
const PERF_EVENTS: &[&str] = &[
    "raw_syscalls:sys_enter",
    "context-switches",
    "syscalls:sys_enter_writev",
    "syscalls:sys_enter_recvfrom",
    "syscalls:sys_enter_epoll_wait",
    "syscalls:sys_enter_futex",
    "syscalls:sys_enter_fcntl",
    "syscalls:sys_enter_newfstatat",
    "syscalls:sys_enter_pread64",
];

impl Perf {
    fn record(pid: u32, label: &str) -> Self {
        Self::start(pid, label, "data", |cmd| {
            cmd.args(["record", "-q", "-e", "cpu-clock", "-F", "4999"]);
        })
    }

    fn count(pid: u32, label: &str) -> Self {
        Self::start(pid, label, "stat", |cmd| {
            cmd.args(["stat", "-x", ",", "-e", &PERF_EVENTS.join(",")]);
        })
    }

    fn start(pid: u32, label: &str, ext: &str, args: impl FnOnce(&mut Command)) -> Self {
        let Ok(dir) = std::env::var("LOAD_PERF") else {
            return Self(None);
        };
        let out = PathBuf::from(dir).join(format!("{}.{ext}", label.replace([' ', '/'], "_")));
        let mut cmd = Command::new("perf");
        args(&mut cmd);
        let child = cmd
            .arg("-p")
            .arg(pid.to_string())
            .arg("-o")
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run perf (is it installed?)");
        Self(Some((child, out)))
    }

    /// Stops counting; each counted event divided by `answered`.
    fn per_request(mut self, answered: u64) -> Option<String> {
        let (child, out) = self.0.take()?;
        stop_perf(child);
        let text = std::fs::read_to_string(out).ok()?;
        let counts: Vec<String> = text
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                let n: f64 = f.first()?.parse().ok()?;
                let event = f
                    .get(2)?
                    .rsplit(':')
                    .next()?
                    .trim_start_matches("sys_enter_");
                Some(format!("{event} {:.2}", n / answered.max(1) as f64))
            })
            .collect();
        Some(counts.join(", "))
    }
}

fn stop_perf(mut child: Child) {
    // perf writes its output on SIGINT.
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

impl Drop for Perf {
    fn drop(&mut self) {
        if let Some((child, _)) = self.0.take() {
            stop_perf(child);
        }
    }
}

/// Requests kept in flight by the closed-loop throughput run.
const SATURATION_IN_FLIGHT: usize = 32;

/// Closed loop: `SATURATION_IN_FLIGHT` workers each send the next request as soon as
/// the previous one answers. This measures capacity (requests/s), not latency under a
/// given load; the open-loop runs are the latency figures.
fn saturate(rt: &tokio::runtime::Runtime, caller: &Caller, duration: Duration) -> RunResult {
    let start = Instant::now();
    let end = start + duration;
    let workers: Vec<_> = (0..SATURATION_IN_FLIGHT)
        .map(|i| {
            let caller = caller.clone();
            rt.spawn(async move {
                let mut hist =
                    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
                let (mut done, mut errors) = (0u64, 0u64);
                while Instant::now() < end {
                    let t = Instant::now();
                    let ok = caller.call(i).await;
                    let _ = hist.record((t.elapsed().as_micros() as u64).max(1));
                    done += 1;
                    errors += u64::from(!ok);
                }
                (hist, done, errors)
            })
        })
        .collect();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let (mut done, mut errors) = (0, 0);
    for w in workers {
        let (h, d, e) = rt.block_on(w).expect("worker");
        hist.add(h).expect("merge");
        done += d;
        errors += e;
    }
    RunResult {
        hist,
        errors,
        achieved: done as f64 / start.elapsed().as_secs_f64(),
    }
}

/// Sends SIGHUP to a process every second until stopped.
struct Sighups {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl Sighups {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut sent = 0;
            let mut next = Instant::now() + Duration::from_secs(1);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                wait_until(next);
                next += Duration::from_secs(1);
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let ok = Command::new("kill")
                    .args(["-HUP", &pid.to_string()])
                    .status()
                    .is_ok_and(|s| s.success());
                sent += u64::from(ok);
            }
            sent
        });
        Self { stop, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// redis-benchmark HMGET of an 11-field hash shaped like a Feast entity hash
/// (10 features of 9 bytes and a timestamp): (requests/s, p50 ms, p99 ms).
fn benchmark_hmget(redis: &RedisServer, seconds: u64, pipeline: usize) -> (f64, f64, f64) {
    let port = redis.port.to_string();
    let mut hset = vec![
        "-p".to_owned(),
        port.clone(),
        "HSET".into(),
        "bench:hash".into(),
    ];
    for f in 0..10 {
        hset.extend([format!("f{f}"), "x".repeat(9)]);
    }
    hset.extend(["_ts".into(), "x".repeat(6)]);
    let ok = Command::new("redis-cli")
        .args(&hset)
        .stdout(Stdio::null())
        .status()
        .expect("redis-cli");
    assert!(ok.success());
    let requests = (50_000 * seconds as usize).max(pipeline * 100);
    let mut args = vec![
        "-p".to_owned(),
        port,
        "-c".into(),
        CONNECTIONS.to_string(),
        "-n".into(),
        requests.to_string(),
        "-P".into(),
        pipeline.to_string(),
        "HMGET".into(),
        "bench:hash".into(),
    ];
    args.extend((0..10).map(|f| format!("f{f}")));
    args.push("_ts".into());
    let out = Command::new("redis-benchmark")
        .args(&args)
        .output()
        .expect("redis-benchmark");
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("throughput summary: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    // "latency summary (msec):" then a header "avg min p50 p95 p99 max" and values.
    let lat: Vec<f64> = text
        .lines()
        .skip_while(|l| !l.contains("latency summary"))
        .nth(2)
        .map(|l| {
            l.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    (
        rps,
        lat.get(2).copied().unwrap_or(0.0),
        lat.get(4).copied().unwrap_or(0.0),
    )
}

fn request(repo: &SyntheticRepo, entities: i64) -> GetOnlineFeaturesRequest {
    let ids = (0..entities)
        .map(|i| 1 + (i * 7919) % repo.entities)
        .map(|id| Value {
            val: Some(Val::Int64Val(id)),
        });
    GetOnlineFeaturesRequest {
        kind: Some(Kind::Features(FeatureList { val: repo.refs() })),
        entities: [("driver_id".to_owned(), RepeatedValue { val: ids.collect() })].into(),
        ..Default::default()
    }
}

async fn channels(addr: SocketAddr) -> Vec<Channel> {
    tls_channels(addr, None).await
}

/// `CONNECTIONS` channels to `addr`, over TLS trusting `ca_pem` when given (the server
/// certificate names `localhost`). Each connects here, once: every TLS handshake is done
/// before a run starts, as on a sidecar's or model server's long-lived connections.
async fn tls_channels(addr: SocketAddr, ca_pem: Option<&[u8]>) -> Vec<Channel> {
    let mut out = Vec::new();
    for _ in 0..CONNECTIONS {
        let scheme = if ca_pem.is_some() { "https" } else { "http" };
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
            .expect("url")
            .tcp_nodelay(true);
        if let Some(ca) = ca_pem {
            endpoint = endpoint
                .tls_config(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                        .domain_name("localhost"),
                )
                .expect("client TLS");
        }
        out.push(endpoint.connect().await.expect("connect"));
    }
    out
}

/// Sleeps until shortly before `when`, then spins: a plain sleep overshoots by the
/// kernel's timer slack (~50-100 us), which would count as latency in every figure.
#[expect(
    clippy::disallowed_methods,
    reason = "runs on the generator's own sender thread, never on a tokio worker"
)]
fn wait_until(when: Instant) {
    const SPIN: Duration = Duration::from_micros(150);
    let now = Instant::now();
    if when > now + SPIN {
        std::thread::sleep(when - now - SPIN);
    }
    while Instant::now() < when {
        std::hint::spin_loop();
    }
}

struct RunResult {
    hist: Histogram<u64>,
    errors: u64,
    achieved: f64,
}

impl RunResult {
    /// The latency at quantile `q`, in ms.
    fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    fn max_ms(&self) -> f64 {
        self.hist.max() as f64 / 1000.0
    }
}

/// How a run sends one request.
#[derive(Clone)]
enum Caller {
    /// GetOnlineFeatures over gRPC, spread over the channels, with this `authorization`
    /// metadata when given (the same bearer token on every call, as a model server
    /// sends it until it expires).
    Grpc(
        Vec<Channel>,
        Arc<GetOnlineFeaturesRequest>,
        Option<AsciiMetadataValue>,
    ),
    /// `POST /get-online-features` with this JSON body over HTTP/1.1 keep-alive.
    Http(Arc<http1::Pool>, Arc<[u8]>),
}

impl Caller {
    fn grpc(channels: &[Channel], req: &GetOnlineFeaturesRequest) -> Self {
        Self::Grpc(channels.to_vec(), Arc::new(req.clone()), None)
    }

    /// As [`Caller::grpc`], each call carrying `authorization: Bearer <token>`.
    fn grpc_with_token(
        channels: &[Channel],
        req: &GetOnlineFeaturesRequest,
        token: Option<&str>,
    ) -> Self {
        let bearer = token.map(|t| format!("Bearer {t}").parse().expect("ascii token"));
        Self::Grpc(channels.to_vec(), Arc::new(req.clone()), bearer)
    }

    /// Sends request number `i`; whether it was answered with success.
    async fn call(&self, i: usize) -> bool {
        match self {
            Self::Grpc(channels, req, bearer) => {
                let mut request = tonic::Request::new((**req).clone());
                if let Some(bearer) = bearer {
                    request
                        .metadata_mut()
                        .insert("authorization", bearer.clone());
                }
                ServingServiceClient::new(channels[i % channels.len()].clone())
                    .get_online_features(request)
                    .await
                    .is_ok()
            }
            Self::Http(pool, body) => {
                pool.post_json("/get-online-features", body).await == Some(200)
            }
        }
    }
}

fn run(rt: &tokio::runtime::Runtime, caller: &Caller, rate: f64, duration: Duration) -> RunResult {
    let total = (rate * duration.as_secs_f64()) as usize;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Duration, bool)>();
    let handle = rt.handle().clone();
    let start = Instant::now() + Duration::from_millis(50);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let caller = caller.clone();
    // The schedule lives on its own thread: a busy runtime must not delay sends.
    let sender = std::thread::spawn(move || {
        for i in 0..total {
            let scheduled = start + interval * i as u32;
            wait_until(scheduled);
            let (caller, tx) = (caller.clone(), tx.clone());
            handle.spawn(async move {
                let ok = caller.call(i).await;
                let _ = tx.send((scheduled.elapsed(), ok));
            });
        }
    });
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut errors = 0;
    let mut done = 0;
    rt.block_on(async {
        while let Some((latency, ok)) = rx.recv().await {
            let _ = hist.record((latency.as_micros() as u64).max(1));
            errors += u64::from(!ok);
            done += 1;
            if done == total {
                break;
            }
        }
    });
    sender.join().expect("sender");
    let elapsed = start.elapsed().as_secs_f64();
    RunResult {
        hist,
        errors,
        achieved: done as f64 / elapsed,
    }
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn spawn(cmd: &mut Command, addr_of: impl Fn(&str) -> Option<String>) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let (out, err) = (
            child.stdout.take().expect("stdout"),
            child.stderr.take().expect("stderr"),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let addr = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("server prints its address");
            if let Some(a) = addr_of(&line) {
                break a.parse().expect("address");
            }
        };
        Self { child, addr }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod noop {
    //! A tonic server with Tern's service shape that answers every GetOnlineFeatures
    //! with a fixed, pre-encoded body and does nothing else.

    use super::*;
    use tern::grpc::{ServingService, ServingServiceServer};
    use tern::proto::feast::serving::{GetFeastServingInfoRequest, GetFeastServingInfoResponse};
    use tonic::{Request, Response, Status};

    struct Noop {
        one: bytes::Bytes,
        many: bytes::Bytes,
    }

    #[tonic::async_trait]
    impl ServingService for Noop {
        async fn get_feast_serving_info(
            &self,
            _: Request<GetFeastServingInfoRequest>,
        ) -> Result<Response<GetFeastServingInfoResponse>, Status> {
            Ok(Response::new(GetFeastServingInfoResponse::default()))
        }

        async fn get_online_features(
            &self,
            request: Request<tern::grpc::codec::Decoded<wire::GetOnlineFeaturesRequest>>,
        ) -> Result<Response<tern::grpc::response::EncodedResponse>, Status> {
            let request = request.into_inner().into_message()?;
            let rows = request
                .entities
                .first()
                .and_then(|c| c.value.as_ref())
                .map_or(0, |v| v.val.len());
            Ok(Response::new(
                tern::grpc::response::EncodedResponse::pre_encoded(if rows <= 1 {
                    self.one.clone()
                } else {
                    self.many.clone()
                }),
            ))
        }
    }

    /// `[--tls CERT KEY] ONE MANY`: the bodies for one entity row and for more.
    pub(super) fn serve(args: &[String]) {
        let (tls, bodies) = match args {
            [flag, cert, key, rest @ ..] if flag == "--tls" => (Some((cert, key)), rest),
            _ => (None, args),
        };
        let read = |p: &String| {
            let body = std::fs::read(p).expect("body");
            // Checked once: the file must hold a response.
            wire::GetOnlineFeaturesResponse::decode(body.as_slice()).expect("decode body");
            bytes::Bytes::from(body)
        };
        let noop = Noop {
            one: read(&bodies[0]),
            many: read(&bodies[1]),
        };
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            println!("listening {}", listener.local_addr().expect("addr"));
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let mut builder = tonic::transport::Server::builder();
            if let Some((cert, key)) = tls {
                let identity = tonic::transport::Identity::from_pem(
                    std::fs::read(cert).expect("cert"),
                    std::fs::read(key).expect("key"),
                );
                builder = builder
                    .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                    .expect("server TLS");
            }
            builder
                .add_service(ServingServiceServer::new(noop))
                .serve_with_incoming(incoming)
                .await
                .expect("serve");
        });
    }
}
