//! Materialization throughput on N entities x 10 features (one Parquet row per
//! entity): `tern materialize` into SQLite and Redis, beside the bare insert rate of the
//! same rows (the same SQLite statement in the same transactions; Redis HSET pipelines
//! of the same keys, fields and values, with no Parquet and no Tern around them) and,
//! when `FEAST_VENV` names a Feast 0.67 virtualenv, `feast materialize` of the same
//! repo in the same run.
//!
//! `cargo bench --bench materialize` (env: MAT_ENTITIES=100000, FEAST_VENV=/path,
//! MAT_STORES=sqlite,redis).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use prost::Message;
use tern::commands::apply::{self, ApplyOptions};
use tern::commands::materialize::{self, MaterializeOptions};
use tern::config::KeySerialization;
use tern::proto::feast::types::Value;
use tern::proto::feast::types::value::Val;
use tern::store::redis as redis_store;
use tern::store::{EntityValue, StorageLayout, key, sqlite};
use tern::testing::RedisServer;

const FEATURES: usize = 10;
const START: &str = "2025-01-01T00:00:00";
const END: &str = "2025-01-02T00:00:00";
const EVENT_US: i64 = 1_735_700_000_000_000;

fn value(entity: i64, f: usize) -> f64 {
    entity as f64 + f as f64 / 100.0
}

fn write_parquet(path: &Path, n: i64) {
    let ts = TimestampMicrosecondArray::from(vec![EVENT_US; n as usize]).with_timezone("UTC");
    let mut columns: Vec<(String, ArrayRef)> = vec![
        (
            "driver_id".into(),
            Arc::new(Int64Array::from_iter_values(0..n)),
        ),
        ("event_timestamp".into(), Arc::new(ts)),
    ];
    for f in 0..FEATURES {
        columns.push((
            format!("f{f}"),
            Arc::new(Float64Array::from_iter_values((0..n).map(|e| value(e, f)))),
        ));
    }
    let batch = RecordBatch::try_from_iter(columns).expect("batch");
    let file = std::fs::File::create(path).expect("create parquet");
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
}

fn repo(dir: &Path, online_store: &str) {
    std::fs::create_dir_all(dir.join("data")).expect("data dir");
    std::fs::write(
        dir.join("feature_store.yaml"),
        format!(
            "project: bench\nprovider: local\nregistry: data/registry.db\nonline_store:\n{online_store}\noffline_store:\n  type: file\nentity_key_serialization_version: 3\n"
        ),
    )
    .expect("yaml");
    let schema: String = (0..FEATURES)
        .map(|f| format!("      - {{name: f{f}, dtype: Float64}}\n"))
        .collect();
    std::fs::write(
        dir.join("defs.yaml"),
        format!(
            "entities:\n  - {{name: driver, join_keys: [driver_id], value_type: INT64}}\nsources:\n  - {{name: src, path: data/stats.parquet, timestamp_field: event_timestamp}}\nfeature_views:\n  - name: stats\n    entities: [driver]\n    source: src\n    ttl: 0\n    schema:\n{schema}"
        ),
    )
    .expect("defs");
}

async fn tern_materialize(dir: &Path) -> f64 {
    let mut out = Vec::new();
    let applied = apply::run(
        &ApplyOptions {
            config: dir.join("feature_store.yaml"),
            files: vec![dir.join("defs.yaml")],
            execute: true,
            ..Default::default()
        },
        &mut out,
    )
    .await;
    assert!(applied.is_ok(), "apply: {applied:?}");
    let t = Instant::now();
    let mut out = Vec::new();
    let r = materialize::run(
        &MaterializeOptions {
            config: dir.join("feature_store.yaml"),
            start: Some(START.into()),
            end: END.into(),
            ..Default::default()
        },
        &mut out,
    )
    .await;
    assert!(r.is_ok(), "materialize: {r:?}");
    t.elapsed().as_secs_f64()
}

/// CPU seconds the Redis server has used so far (user + system).
fn redis_cpu(conn: &mut redis::Connection) -> f64 {
    let info: String = redis::cmd("INFO").arg("cpu").query(conn).expect("info");
    info.lines()
        .filter(|l| l.starts_with("used_cpu_sys:") || l.starts_with("used_cpu_user:"))
        .filter_map(|l| {
            l.split_once(':')
                .and_then(|(_, v)| v.trim().parse::<f64>().ok())
        })
        .sum()
}

/// Time of materialization's read phase alone (no store): the part of `tern
/// materialize` that no bare statement or pipeline pays.
fn read_phase(dir: &Path, with_text: bool) -> f64 {
    let registry = tern::proto::feast::core::Registry::decode(
        std::fs::read(dir.join("data/registry.db"))
            .expect("registry")
            .as_slice(),
    )
    .expect("decode");
    let spec = registry
        .feature_views
        .iter()
        .find_map(|v| v.spec.as_ref().filter(|s| s.name == "stats"))
        .expect("view")
        .clone();
    let window = (
        materialize::parse_time(START).expect("start"),
        materialize::parse_time(END).expect("end"),
    );
    let t = Instant::now();
    let latest = tern::materialize::read_latest(
        &spec,
        dir,
        KeySerialization::V3,
        window,
        tern::materialize::Shard::ALL,
        with_text,
        |_| {},
    )
    .expect("read");
    let secs = t.elapsed().as_secs_f64();
    assert!(!latest.rows.is_empty());
    secs
}

/// The rows Tern writes, built without Parquet: (entity key, per feature value bytes).
fn rows(n: i64) -> Vec<(Vec<u8>, Vec<Vec<u8>>)> {
    (0..n)
        .map(|e| {
            let mut k = key::key_prefix(&["driver_id"], KeySerialization::V3);
            key::push_value(&mut k, &EntityValue::Int64(e));
            let values = (0..FEATURES)
                .map(|f| {
                    Value {
                        val: Some(Val::DoubleVal(value(e, f))),
                    }
                    .encode_to_vec()
                })
                .collect();
            (k, values)
        })
        .collect()
}

fn bare_sqlite(path: &Path, rows: &[(Vec<u8>, Vec<Vec<u8>>)]) -> f64 {
    let mut conn = rusqlite::Connection::open(path).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    // Tern's writer settings: the same page cache, rows in key order.
    conn.pragma_update(None, "cache_size", -sqlite::MATERIALIZE_CACHE_KIB)
        .expect("cache");
    let mut sorted: Vec<&(Vec<u8>, Vec<Vec<u8>>)> = rows.iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    sqlite::create_table(&conn, "bench_stats").expect("table");
    let names: Vec<String> = (0..FEATURES).map(|f| format!("f{f}")).collect();
    let t = Instant::now();
    for chunk in sorted.chunks(10_000) {
        let items = chunk.iter().flat_map(|(k, values)| {
            names
                .iter()
                .zip(values)
                .map(move |(f, v)| sqlite::MaterializedRow {
                    entity_key: k,
                    feature: f,
                    value: v,
                    value_text: None,
                    event_ts: EVENT_US / 1_000_000,
                    created_ts: None,
                })
        });
        sqlite::write_materialized(&mut conn, "bench_stats", items).expect("insert");
    }
    t.elapsed().as_secs_f64()
}

fn bare_redis(addr: &str, rows: &[(Vec<u8>, Vec<Vec<u8>>)]) -> f64 {
    let layout = StorageLayout::new(
        "bench",
        "stats",
        0,
        (0..FEATURES).map(|f| format!("f{f}")).collect(),
    );
    let ts = prost_types::Timestamp {
        seconds: EVENT_US / 1_000_000,
        nanos: 0,
    }
    .encode_to_vec();
    let client = redis::Client::open(format!("redis://{addr}/")).expect("client");
    let mut conn = client.get_connection().expect("connect");
    let t = Instant::now();
    for chunk in rows.chunks(10_000) {
        let mut pipe = redis::pipe();
        for (k, values) in chunk {
            let mut key = k.clone();
            key.extend_from_slice(b"bench");
            let cmd = pipe.cmd("HSET").arg(key);
            for (field, v) in layout.redis_fields.iter().zip(values) {
                cmd.arg(&field[..]).arg(v);
            }
            cmd.arg(&layout.redis_ts_field).arg(&ts).ignore();
        }
        let () = pipe.query(&mut conn).expect("pipeline");
    }
    t.elapsed().as_secs_f64()
}

/// The same rows through Tern's write script (Feast's event-time rule checked on the
/// server), sent as `write_batch` sends them on a single server, with no Parquet and
/// no Tern around them.
fn bare_redis_script(addr: &str, rows: &[(Vec<u8>, Vec<Vec<u8>>)]) -> f64 {
    let layout = StorageLayout::new(
        "bench",
        "stats",
        0,
        (0..FEATURES).map(|f| format!("f{f}")).collect(),
    );
    let ts = prost_types::Timestamp {
        seconds: EVENT_US / 1_000_000,
        nanos: 0,
    };
    let stamp = ts.encode_to_vec();
    let client = redis::Client::open(format!("redis://{addr}/")).expect("client");
    let mut conn = client.get_connection().expect("connect");
    let t = Instant::now();
    for chunk in rows.chunks(10_000) {
        let mut pipe = redis::pipe();
        for group in chunk.chunks(redis_store::KEYS_PER_SCRIPT) {
            let cmd = pipe
                .cmd("EVAL")
                .arg(redis_store::WRITE_SCRIPT)
                .arg(group.len());
            for (k, _) in group {
                let mut key = k.clone();
                key.extend_from_slice(b"bench");
                cmd.arg(key);
            }
            cmd.arg(&layout.redis_ts_field).arg(0);
            for (_, values) in group {
                cmd.arg(ts.seconds)
                    .arg(ts.nanos)
                    .arg(&stamp)
                    .arg(values.len());
                for (field, v) in layout.redis_fields.iter().zip(values) {
                    cmd.arg(&field[..]).arg(v);
                }
            }
            cmd.ignore();
        }
        let () = pipe.query(&mut conn).expect("pipeline");
    }
    t.elapsed().as_secs_f64()
}

fn feast_materialize(venv: &str, dir: &Path) -> Option<f64> {
    let t = Instant::now();
    let status = Command::new(format!("{venv}/bin/feast"))
        .args(["materialize", START, END])
        .current_dir(dir)
        .env("TZ", "UTC")
        .stdout(std::process::Stdio::null())
        .status()
        .ok()?;
    status.success().then(|| t.elapsed().as_secs_f64())
}

fn main() {
    let n: i64 = std::env::var("MAT_ENTITIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let venv = std::env::var("FEAST_VENV").ok();
    let stores = std::env::var("MAT_STORES").unwrap_or_else(|_| "sqlite,redis".into());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let rows_total = (n as f64) * FEATURES as f64;
    println!("machine: {}", common::machine());
    println!(
        "{n} entities x {FEATURES} features ({rows_total} stored rows), one Parquet row per entity\n"
    );
    let report = |what: &str, secs: f64, base: f64| {
        println!(
            "{what:<40} {secs:>8.2} s  {:>10.0} source rows/s  {:>10.0} stored rows/s  {:>5.2}x bare",
            n as f64 / secs,
            rows_total / secs,
            secs / base
        );
    };
    let rows = rows(n);

    if stores.contains("sqlite") {
        sqlite_runs(&rt, n, venv.as_deref(), &rows, &report);
    }
    if stores.contains("redis") {
        redis_runs(&rt, n, venv.as_deref(), &rows, &report);
    }
}

fn sqlite_runs(
    rt: &tokio::runtime::Runtime,
    n: i64,
    venv: Option<&str>,
    rows: &[(Vec<u8>, Vec<Vec<u8>>)],
    report: &dyn Fn(&str, f64, f64),
) {
    let dir = tempfile::tempdir().expect("tempdir");
    repo(dir.path(), "  type: sqlite\n  path: data/online.db");
    write_parquet(&dir.path().join("data/stats.parquet"), n);
    let bare = bare_sqlite(&dir.path().join("bare.db"), rows);
    let tern = rt.block_on(tern_materialize(dir.path()));
    let read = read_phase(dir.path(), true);
    report("SQLite: bare statement", bare, bare);
    report("SQLite: tern materialize", tern, bare);
    println!(
        "  of which reading the Parquet window (newest row per entity, values encoded): {read:.2} s"
    );
    if let Some(venv) = venv {
        // Same table (apply created it), emptied: Feast writes into it.
        rusqlite::Connection::open(dir.path().join("data/online.db"))
            .and_then(|c| c.execute_batch("DELETE FROM bench_stats"))
            .expect("empty the table");
        match feast_materialize(venv, dir.path()) {
            Some(s) => report("SQLite: feast materialize (0.67)", s, bare),
            None => println!("SQLite: feast materialize failed"),
        }
    }
}

fn redis_runs(
    rt: &tokio::runtime::Runtime,
    n: i64,
    venv: Option<&str>,
    rows: &[(Vec<u8>, Vec<Vec<u8>>)],
    report: &dyn Fn(&str, f64, f64),
) {
    let server = RedisServer::start(&[]).expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    repo(
        dir.path(),
        &format!("  type: redis\n  connection_string: \"{}\"", server.addr()),
    );
    write_parquet(&dir.path().join("data/stats.parquet"), n);
    let mut conn = redis::Client::open(format!("redis://{}/", server.addr()))
        .and_then(|c| c.get_connection())
        .expect("connect");
    let cpu0 = redis_cpu(&mut conn);
    let bare = bare_redis(&server.addr(), rows);
    let cpu1 = redis_cpu(&mut conn);
    let () = redis::cmd("FLUSHALL").query(&mut conn).expect("flush");
    let script = bare_redis_script(&server.addr(), rows);
    let cpu2 = redis_cpu(&mut conn);
    let () = redis::cmd("FLUSHALL").query(&mut conn).expect("flush");
    let cpu3 = redis_cpu(&mut conn);
    let tern = rt.block_on(tern_materialize(dir.path()));
    let cpu4 = redis_cpu(&mut conn);
    println!(
        "redis-server CPU: {:.2} s for the bare HSETs, {:.2} s for the bare script, {:.2} s for tern materialize",
        cpu1 - cpu0,
        cpu2 - cpu1,
        cpu4 - cpu3
    );
    let read = read_phase(dir.path(), false);
    report("Redis: bare HSET pipelines", bare, bare);
    report("Redis: bare write-script pipelines", script, bare);
    report("Redis: tern materialize", tern, bare);
    println!(
        "  tern materialize vs the bare write script: {:.2}x",
        tern / script
    );
    println!(
        "  of which reading the Parquet window (newest row per entity, values encoded): {read:.2} s"
    );
    if let Some(venv) = venv {
        let () = redis::cmd("FLUSHALL").query(&mut conn).expect("flush");
        match feast_materialize(venv, dir.path()) {
            Some(s) => report("Redis: feast materialize (0.67)", s, bare),
            None => println!("Redis: feast materialize failed"),
        }
    }
}
