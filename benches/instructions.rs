//! Instructions per request on the in-process path, counted by valgrind (callgrind), a
//! figure this VM's noise does not move. For each case the request runs N times in a
//! child process under `valgrind --tool=callgrind`, once with N = 0 and once with N =
//! `INSTR_REQUESTS`; the difference divided by N is one request's instructions in Tern's
//! process (on Redis, the server's own work is not counted: valgrind does not follow
//! it). Both runs first send `WARMUP` requests, so plan builds and statement caches are
//! paid outside the difference.
//!
//! Cases: Tern's `get_online_features` plus the response encoding, as in
//! `benches/serving.rs`, with the Prometheus recorder `tern serve` installs, and beside it the bare store work for the same keys (the same
//! SQLite statement on one connection; the same HMGET pipeline with the redis crate
//! alone), for 1 and 100 entities x 10 features.
//!
//! Each runs on a repo of 1,000 drivers and on one of 100,000 (its SQLite file far larger
//! than SQLite's page cache).
//!
//! `cargo bench --bench instructions` (env: INSTR_REQUESTS=2000, INSTR_CASES=sqlite,redis,
//! INSTR_ENTITIES=1000,100000 (drivers stored), INSTR_PROFILE=DIR to keep the profiles for `callgrind_annotate`). Needs `valgrind`.

mod common;

use common::{entity_keys, ids};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use prost::Message;
use tern::proto::feast::types::value::Val;
use tern::proto::feast::types::{RepeatedValue, Value};
use tern::proto::tern::wire::Column;
use tern::server::{StoreSettings, open_serving};
use tern::serving::{Clock, Request, Selection};
use tern::testing::{RedisServer, SyntheticRepo};

/// Requests sent before counting starts, in both runs of a case.
const WARMUP: usize = 20;

/// What one child process runs.
struct Case {
    /// `tern` or `bare`.
    path: String,
    /// `sqlite` or `redis`.
    store: String,
    entities: i64,
    /// Drivers stored in the repo.
    stored: i64,
    /// The repo's feature_store.yaml.
    yaml: PathBuf,
    /// Redis address (Redis cases).
    redis: Option<String>,
}

/// The child: WARMUP + `n` requests of `case`, then exit.
fn child(case: &Case, n: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let repo = SyntheticRepo {
        entities: case.stored,
        ..SyntheticRepo::default()
    };
    let config = tern::config::load(&case.yaml, |_| None).expect("config");
    match (case.path.as_str(), case.store.as_str()) {
        ("tern", _) => {
            // The Prometheus recorder `tern serve` installs, so metric updates cost what
            // they cost in production.
            rt.block_on(tern::telemetry::install_metrics(
                std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            ))
            .expect("metrics recorder");
            let (serving, _reloader) = rt
                .block_on(open_serving(
                    &config,
                    &StoreSettings::default(),
                    Clock::Fixed(repo.event_ts),
                ))
                .expect("serving");
            let refs = repo.refs();
            let columns = vec![Column {
                key: "driver_id".into(),
                value: Some(RepeatedValue {
                    val: ids(case.entities, case.stored)
                        .into_iter()
                        .map(|id| Value {
                            val: Some(Val::Int64Val(id)),
                        })
                        .collect(),
                }),
            }];
            for _ in 0..WARMUP + n {
                let req = Request {
                    selection: Some(Selection::Refs(&refs)),
                    entities: &columns,
                    full_feature_names: false,
                    include_metadata: false,
                    deadline: Some(Duration::from_secs(5)),
                    caller: None,
                };
                let answer = rt
                    .block_on(serving.get_online_features(req))
                    .expect("answer");
                // Serialized, as tonic does before sending.
                std::hint::black_box(tern::grpc::encode_response(answer).encode_to_vec());
            }
        }
        ("bare", "sqlite") => {
            let db = case
                .yaml
                .parent()
                .expect("repo folder")
                .join("data/online.db");
            let conn = common::bare_connection(&db);
            let keys = entity_keys(case.entities, case.stored);
            for _ in 0..WARMUP + n {
                std::hint::black_box(common::bare_select(&conn, &keys));
            }
        }
        ("bare", "redis") => {
            let addr = case.redis.as_deref().expect("redis address");
            let mut conn = rt
                .block_on(async {
                    redis::Client::open(format!("redis://{addr}"))?
                        .get_multiplexed_async_connection()
                        .await
                })
                .expect("redis connection");
            let fields = common::redis_fields(&repo);
            let keys: Vec<Vec<u8>> = entity_keys(case.entities, case.stored)
                .into_iter()
                .map(|mut k| {
                    k.extend_from_slice(repo.project.as_bytes());
                    k
                })
                .collect();
            for _ in 0..WARMUP + n {
                let mut pipe = redis::pipe();
                for k in &keys {
                    pipe.cmd("HMGET").arg(k).arg(&fields);
                }
                let replies: Vec<Vec<Option<Vec<u8>>>> =
                    rt.block_on(pipe.query_async(&mut conn)).expect("pipeline");
                std::hint::black_box(replies);
            }
        }
        other => panic!("unknown case {other:?}"),
    }
}

/// Instructions valgrind counted for one child run (its "Collected" line).
fn count(exe: &Path, case: &Case, n: usize) -> u64 {
    // INSTR_PROFILE=DIR keeps each run's profile for callgrind_annotate.
    let out_file = match std::env::var("INSTR_PROFILE") {
        Ok(dir) => format!(
            "{dir}/callgrind.{}-{}-{}of{}-n{n}.out",
            case.path, case.store, case.entities, case.stored
        ),
        _ => "/dev/null".to_owned(),
    };
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--trace-children=no"])
        // The metrics recorder calibrates its clock for a stretch of wall time, which
        // under valgrind is a different number of instructions in every run: left out.
        // (`--toggle-collect` turns collection off at start unless told after it.)
        .args([
            "--toggle-collect=*quanta*Calibration*calibrate*",
            "--collect-atstart=yes",
        ])
        .arg(format!("--callgrind-out-file={out_file}"))
        .arg(exe)
        .env(
            "INSTR_CHILD",
            format!(
                "{} {} {} {}",
                case.path, case.store, case.entities, case.stored
            ),
        )
        .env("INSTR_YAML", &case.yaml)
        .env("INSTR_REDIS", case.redis.clone().unwrap_or_default())
        .env("INSTR_N", n.to_string())
        .env_remove("RUST_LOG")
        .output()
        .expect("run valgrind (is it installed?)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stderr}");
    stderr
        .lines()
        .find_map(|l| l.split("Collected :").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no 'Collected' line in: {stderr}"))
}

fn main() {
    if let Ok(spec) = std::env::var("INSTR_CHILD") {
        let mut parts = spec.split(' ');
        let case = Case {
            path: parts.next().unwrap_or_default().to_owned(),
            store: parts.next().unwrap_or_default().to_owned(),
            entities: parts.next().and_then(|e| e.parse().ok()).unwrap_or(1),
            stored: parts.next().and_then(|e| e.parse().ok()).unwrap_or(1000),
            yaml: std::env::var("INSTR_YAML").expect("INSTR_YAML").into(),
            redis: std::env::var("INSTR_REDIS").ok().filter(|a| !a.is_empty()),
        };
        let n = std::env::var("INSTR_N")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        child(&case, n);
        return;
    }
    // `cargo bench` passes `--bench`; nothing else is read from the command line.
    let requests: usize = std::env::var("INSTR_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let stores = std::env::var("INSTR_CASES").unwrap_or_else(|_| "sqlite,redis".into());
    let exe = std::env::current_exe().expect("own path");
    println!("machine: {}", common::machine());
    println!(
        "instructions per request (callgrind; Tern's process only), {requests} requests per count\n"
    );
    println!(
        "{:<8} {:>9} {:>9} {:>12} {:>12} {:>7}",
        "store", "stored", "entities", "tern", "bare", "ratio"
    );

    let sizes = common::sizes("INSTR_ENTITIES", "1000,100000");
    for (stored, store) in sizes.into_iter().flat_map(|n| {
        ["sqlite", "redis"]
            .into_iter()
            .filter(|s| stores.contains(s))
            .map(move |s| (n, s))
    }) {
        let repo = SyntheticRepo {
            entities: stored,
            ..SyntheticRepo::default()
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let mut redis_server = None;
        let (yaml, redis) = if store == "sqlite" {
            (repo.write(dir.path()).expect("sqlite repo"), None)
        } else {
            let server = RedisServer::start(&[]).expect("redis-server");
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            let yaml = rt
                .block_on(repo.write_redis(dir.path(), &server.addr()))
                .expect("redis repo");
            let addr = server.addr();
            redis_server = Some(server);
            (yaml, Some(addr))
        };
        for entities in [1i64, 100] {
            // 100-entity requests cost ~50x more: fewer of them give the same precision.
            let n = if entities == 1 {
                requests
            } else {
                requests / 10
            }
            .max(1);
            let per_request = |path: &str| {
                let case = Case {
                    path: path.to_owned(),
                    store: store.to_owned(),
                    entities,
                    stored,
                    yaml: yaml.clone(),
                    redis: redis.clone(),
                };
                let base = count(&exe, &case, 0);
                let full = count(&exe, &case, n);
                full.saturating_sub(base) as f64 / n as f64
            };
            let tern = per_request("tern");
            let bare = per_request("bare");
            println!(
                "{store:<8} {stored:>9} {entities:>9} {tern:>12.0} {bare:>12.0} {:>6.2}x",
                tern / bare
            );
        }
        drop(redis_server);
    }
}
