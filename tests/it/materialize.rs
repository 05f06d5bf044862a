//! `tern materialize` of the example repo's Parquet files gives exactly what the real
//! Feast 0.67 materialized from them: every SQLite row (value, value_text, event and
//! created times) of every version's table, and every Redis key, field and value.
//! Intervals are recorded per version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tern::commands::Outcome;
use tern::commands::materialize::{self, MaterializeOptions};
use tern::commands::versions::{self, VersionsCommand};

use crate::redis_support::{connect, load_dump};

const START: &str = "2025-01-01T00:00:00";
const END: &str = "2025-01-10T12:00:00";

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/feature_repo")
}

/// A copy of the example repo (registry and Parquet files, no online store) whose
/// `online_store` section is `online_store`.
fn repo(dir: &Path, online_store: &str) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for entry in std::fs::read_dir(example().join("data")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.ends_with(".parquet") || name == "registry.db" {
            std::fs::copy(&path, data.join(name)).unwrap();
        }
    }
    let config = dir.join("feature_store.yaml");
    std::fs::write(
        &config,
        format!(
            "project: tern_demo\nregistry:\n  path: data/registry.db\n  enable_online_feature_view_versioning: true\nonline_store:\n{online_store}\nentity_key_serialization_version: 3\n"
        ),
    )
    .unwrap();
    config
}

async fn run(config: &Path, views: &[&str], version: Option<&str>) -> Result<String, String> {
    let options = MaterializeOptions {
        config: config.to_owned(),
        start: Some(START.to_owned()),
        end: END.to_owned(),
        views: views.iter().map(|v| (*v).to_owned()).collect(),
        version: version.map(str::to_owned),
        shard: None,
    };
    let mut out = Vec::new();
    let result = materialize::run(&options, &mut out).await;
    let out = String::from_utf8(out).unwrap();
    match result {
        Ok(Outcome::Done) => Ok(out),
        Ok(other) => Err(format!("{other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// As Feast's fixture script did: every view, then every version of driver_stats.
async fn materialize_like_feast(config: &Path) {
    run(config, &[], None).await.unwrap();
    for v in ["v0", "v1", "v2"] {
        let out = run(config, &["driver_stats"], Some(v)).await.unwrap();
        assert!(
            out.contains(&format!(
                "driver_stats {v} [2025-01-01 00:00:00, 2025-01-10 12:00:00): 6 rows read"
            )),
            "{out}"
        );
    }
}

type Rows = Vec<(Vec<u8>, String, Vec<u8>, Option<String>, i64, Option<i64>)>;

fn sqlite_tables(path: &Path) -> BTreeMap<String, Rows> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    names
        .into_iter()
        .map(|t| {
            let rows = conn
                .prepare(&format!(
                    "SELECT entity_key, feature_name, value, value_text, event_ts, created_ts FROM \"{t}\" ORDER BY 1, 2"
                ))
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
                .unwrap()
                .collect::<Result<Rows, _>>()
                .unwrap();
            (t, rows)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_rows_equal_feasts_for_every_version() {
    let dir = tempfile::tempdir().unwrap();
    let config = repo(dir.path(), "  type: sqlite\n  path: data/online.db");
    materialize_like_feast(&config).await;
    let feast = sqlite_tables(&example().join("data/online.db"));
    let tern = sqlite_tables(&dir.path().join("data/online.db"));
    assert_eq!(
        tern.keys().collect::<Vec<_>>(),
        feast.keys().collect::<Vec<_>>()
    );
    for (table, rows) in &feast {
        assert!(!rows.is_empty(), "{table}");
        assert_eq!(&tern[table], rows, "{table}");
    }

    // Each version's interval is its own: all three listed as materialized.
    let mut out = Vec::new();
    versions::run(
        &config,
        &VersionsCommand::List {
            view: "driver_stats".into(),
        },
        &mut out,
    )
    .await
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    for line in out.lines().skip(1) {
        assert!(
            line.trim_end().ends_with("yes"),
            "not materialized: {line}\n{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_keys_fields_and_values_equal_feasts() {
    let server = tern::testing::RedisServer::start(&[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = repo(
        dir.path(),
        &format!("  type: redis\n  connection_string: \"{}\"", server.addr()),
    );
    materialize_like_feast(&config).await;

    let mut conn = connect(&server.addr()).await;
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut tern: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for k in keys {
        let fields: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .unwrap();
        tern.insert(
            hex(&k),
            fields
                .into_iter()
                .map(|(f, v)| (hex(&f), hex(&v)))
                .collect(),
        );
    }
    let feast: BTreeMap<String, BTreeMap<String, String>> = load_dump()
        .keys
        .into_iter()
        .map(|k| {
            (
                k.key,
                k.fields.into_iter().map(|f| (f.field, f.value)).collect(),
            )
        })
        .collect();
    assert_eq!(tern, feast);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn version_flags_are_checked_as_feast_checks_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = repo(dir.path(), "  type: sqlite\n  path: data/online.db");
    let e = run(&config, &[], Some("v1")).await.unwrap_err();
    assert_eq!(
        e,
        "--version requires --views with exactly one feature view."
    );
    let e = run(&config, &["driver_stats"], Some("v7"))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        "Version v7 of feature view driver_stats does not exist in project tern_demo"
    );
    let e = run(&config, &["driver_stats"], Some("v-1"))
        .await
        .unwrap_err();
    assert!(e.starts_with("Invalid version string 'v-1'."), "{e}");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("versioning: true", "versioning: false");
    std::fs::write(&config, text).unwrap();
    let e = run(&config, &["driver_stats"], Some("v1"))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        "Version-aware materialization requires 'enable_online_feature_view_versioning: true' under 'registry' in feature_store.yaml."
    );
}

#[test]
fn times_parse_as_feast_accepts_them() {
    let t = materialize::parse_time;
    assert_eq!(t("2025-01-10T12:00:00"), Ok(1_736_510_400_000_000));
    assert_eq!(t("2025-01-10 12:00:00"), Ok(1_736_510_400_000_000));
    assert_eq!(t("2025-01-10T12:00:00Z"), Ok(1_736_510_400_000_000));
    assert_eq!(t("2025-01-10T14:00:00+02:00"), Ok(1_736_510_400_000_000));
    assert_eq!(t("2025-01-10"), Ok(1_736_467_200_000_000));
    assert_eq!(t("2025-01-10T12:00:00.5"), Ok(1_736_510_400_500_000));
    assert!(t("yesterday").is_err());
    assert!(t("2025-13-01").is_err());
}

/// materialize-incremental starts each version from its own watermark (Feast keeps one
/// per view, so a new version is never backfilled).
#[tokio::test]
async fn incremental_runs_start_from_each_versions_own_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let config = repo(dir.path(), "  type: sqlite\n  path: data/online.db");
    // Feast's registry holds one watermark, on the view (v1). Tern's run of v0 and v2
    // records theirs on their history records.
    for v in ["v0", "v2"] {
        let options = MaterializeOptions {
            config: config.clone(),
            start: Some("2025-01-05T00:00:00".to_owned()),
            end: "2025-01-09T00:00:00".to_owned(),
            views: vec!["driver_stats".to_owned()],
            version: Some(v.to_owned()),
            shard: None,
        };
        materialize::run(&options, &mut Vec::new()).await.unwrap();
    }
    let incremental = |v: &str| MaterializeOptions {
        config: config.clone(),
        start: None,
        end: "2025-01-11T00:00:00".to_owned(),
        views: vec!["driver_stats".to_owned()],
        version: Some(v.to_owned()),
        shard: None,
    };
    for (v, from) in [
        ("v0", "2025-01-09 00:00:00"),
        ("v1", "2025-01-10 12:00:00"),
        ("v2", "2025-01-09 00:00:00"),
    ] {
        let mut out = Vec::new();
        materialize::run(&incremental(v), &mut out).await.unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains(&format!("driver_stats {v} [{from}, 2025-01-11 00:00:00)")),
            "{v}: {out}"
        );
    }
    // A second incremental run up to the same end has nothing to do.
    let mut out = Vec::new();
    materialize::run(&incremental("v2"), &mut out)
        .await
        .unwrap();
    assert!(String::from_utf8(out).unwrap().contains("nothing to do"));
}

/// `--shard K/N`: the parts are disjoint and together give exactly a full run.
#[tokio::test(flavor = "multi_thread")]
async fn shards_together_equal_a_full_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = repo(dir.path(), "  type: sqlite\n  path: data/online.db");
    let mut entities = 0;
    for k in 0..3 {
        for version in [None, Some("v0"), Some("v2")] {
            let options = MaterializeOptions {
                config: config.clone(),
                start: Some(START.to_owned()),
                end: END.to_owned(),
                views: if version.is_some() {
                    vec!["driver_stats".to_owned()]
                } else {
                    Vec::new()
                },
                version: version.map(str::to_owned),
                shard: Some(format!("{k}/3")),
            };
            let mut out = Vec::new();
            materialize::run(&options, &mut out).await.unwrap();
            let out = String::from_utf8(out).unwrap();
            assert!(
                out.contains(&format!("shard {k}/3: no interval recorded")),
                "{out}"
            );
            if version.is_none() {
                entities += out
                    .lines()
                    .filter(|l| l.starts_with("driver_stats v1"))
                    .map(|l| {
                        l.split(" entities")
                            .next()
                            .unwrap()
                            .rsplit(' ')
                            .next()
                            .unwrap()
                            .parse::<usize>()
                            .unwrap()
                    })
                    .sum::<usize>();
            }
        }
    }
    // Each of the five drivers is in exactly one part.
    assert_eq!(entities, 5);
    let feast = sqlite_tables(&example().join("data/online.db"));
    let tern = sqlite_tables(&dir.path().join("data/online.db"));
    assert_eq!(tern, feast);
    let e = materialize::MaterializeOptions {
        config: config.clone(),
        start: Some(START.to_owned()),
        end: END.to_owned(),
        shard: Some("3/3".to_owned()),
        ..Default::default()
    };
    let err = materialize::run(&e, &mut Vec::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected K/N with 0 <= K < N"), "{err}");
}

/// A Parquet file of `n` drivers (ids from 1,000,000), one row each, with
/// driver_stats v1's columns.
fn big_driver_stats(path: &Path, n: i64) {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, BooleanArray, Float32Array, Float64Array, Float64Builder, Int64Array,
        ListBuilder, StringArray, TimestampMicrosecondArray,
    };
    let ids: Vec<i64> = (0..n).map(|i| 1_000_000 + i).collect();
    let ts = TimestampMicrosecondArray::from(vec![1_736_460_000_000_000; n as usize])
        .with_timezone("UTC");
    let mut ratings = ListBuilder::new(Float64Builder::new());
    for i in 0..n {
        ratings.values().append_value(i as f64);
        ratings.append(true);
    }
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("driver_id", Arc::new(Int64Array::from(ids.clone()))),
        ("event_timestamp", Arc::new(ts.clone())),
        ("created", Arc::new(ts)),
        (
            "conv_rate",
            Arc::new(Float32Array::from_iter_values((0..n).map(|i| i as f32))),
        ),
        (
            "acc_rate",
            Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64))),
        ),
        ("avg_daily_trips", Arc::new(Int64Array::from(ids))),
        (
            "name",
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("d{i}")),
            )),
        ),
        (
            "active",
            Arc::new(BooleanArray::from_iter((0..n).map(|i| Some(i % 2 == 0)))),
        ),
        ("ratings", Arc::new(ratings.finish())),
    ];
    write_parquet(path, columns);
}

/// Writes `columns` as one record batch to a Parquet file at `path`.
fn write_parquet(path: &Path, columns: Vec<(&str, arrow::array::ArrayRef)>) {
    let batch = arrow::array::RecordBatch::try_from_iter(columns).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// `tern serve` keeps answering from the same SQLite file while a materialization
/// writes it: no read fails or waits past its store timeout.
#[tokio::test(flavor = "multi_thread")]
async fn serving_continues_during_a_materialization() {
    use crate::support::*;
    use tern::serving::Clock;

    let dir = tempfile::tempdir().unwrap();
    let config = repo(dir.path(), "  type: sqlite\n  path: data/online.db");
    std::fs::copy(
        example().join("data/online.db"),
        dir.path().join("data/online.db"),
    )
    .unwrap();
    big_driver_stats(&dir.path().join("data/driver_stats_b.parquet"), 50_000);

    let server = tern::testing::TestServer::start(&config, Clock::Fixed(1_736_470_800))
        .await
        .unwrap();
    let ch = channel(&server.url()).await;
    let request = || {
        refs_request(
            &["driver_stats:conv_rate"],
            vec![("driver_id", vec![int64(1_000_001)])],
        )
    };

    let options = MaterializeOptions {
        config: config.clone(),
        start: Some(START.to_owned()),
        end: END.to_owned(),
        views: vec!["driver_stats".to_owned()],
        ..Default::default()
    };
    let job = tokio::spawn(async move {
        let mut out = Vec::new();
        let r = materialize::run(&options, &mut out).await;
        (
            r.map_err(|e| e.to_string()),
            String::from_utf8(out).unwrap(),
        )
    });
    let mut reads = 0;
    while !job.is_finished() {
        let r = call(&ch, Route::Serving, request()).await;
        assert!(r.is_ok(), "a read failed during the materialization: {r:?}");
        reads += 1;
    }
    let (result, out) = job.await.unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(out.contains("50000 entities written"), "{out}");
    assert!(reads > 0);
    // The new rows are served once committed.
    let r = call(&ch, Route::Serving, request()).await.unwrap();
    assert_eq!(
        column(&r, "conv_rate").0,
        [tern::proto::feast::types::Value {
            val: Some(tern::proto::feast::types::value::Val::FloatVal(1.0)),
        }]
    );
    server.stop().await.unwrap();
}

/// `tern materialize --views driver_stats` of this repo, as a child process.
fn materialize_command(config: &Path) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tern"));
    command
        .args([
            "materialize",
            START,
            END,
            "--views",
            "driver_stats",
            "--config",
        ])
        .arg(config)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    command
}

/// Rows committed so far in the SQLite file at `path` (0 before the file or table exists).
fn committed_rows(path: &Path) -> i64 {
    if !path.exists() {
        return 0;
    }
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return 0;
    };
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .unwrap_or_default();
    tables
        .iter()
        .map(|t| {
            conn.query_row(&format!("SELECT count(*) FROM \"{t}\""), [], |r| r.get(0))
                .unwrap_or(0)
        })
        .sum()
}

/// A materialization killed (SIGKILL) while it writes leaves only whole entities (each
/// chunk is one transaction), records no interval, and a re-run of the same window
/// gives exactly the tables of an uninterrupted run.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_materialization_leaves_whole_entities_and_a_rerun_completes_it() {
    use std::os::unix::process::ExitStatusExt;

    const DRIVERS: i64 = 50_000;
    let killed = tempfile::tempdir().unwrap();
    let whole = tempfile::tempdir().unwrap();
    let mut configs = Vec::new();
    for dir in [&killed, &whole] {
        configs.push(repo(dir.path(), "  type: sqlite\n  path: data/online.db"));
    }
    big_driver_stats(&killed.path().join("data/driver_stats_b.parquet"), DRIVERS);
    std::fs::copy(
        killed.path().join("data/driver_stats_b.parquet"),
        whole.path().join("data/driver_stats_b.parquet"),
    )
    .unwrap();
    let online = killed.path().join("data/online.db");

    let mut child = materialize_command(&configs[0]).spawn().unwrap();
    // Kill it as soon as a first chunk is committed (the poll is the sync, the
    // pause only spares the CPU the child needs).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("tern finished ({status}) before a chunk was seen; use a bigger file");
        }
        if committed_rows(&online) > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no row committed");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status}");

    // Every entity present is whole: all of the view's features, one event time.
    let tables = sqlite_tables(&online);
    let table = tables
        .iter()
        .find(|(_, rows)| !rows.is_empty())
        .map(|(t, _)| t.clone())
        .unwrap();
    // Entity key → (feature, (event_ts, created_ts)) per stored row.
    type Stored<'a> = Vec<(&'a str, (i64, Option<i64>))>;
    let mut entities: BTreeMap<&[u8], Stored> = BTreeMap::new();
    for (key, feature, _, _, event_ts, created_ts) in &tables[&table] {
        entities
            .entry(key)
            .or_default()
            .push((feature, (*event_ts, *created_ts)));
    }
    let features = [
        "acc_rate",
        "active",
        "avg_daily_trips",
        "conv_rate",
        "name",
        "ratings",
    ];
    assert!(!entities.is_empty());
    assert!(
        (entities.len() as i64) < DRIVERS,
        "the kill came after the last chunk; use a bigger file"
    );
    for (key, rows) in &entities {
        let names: Vec<&str> = rows.iter().map(|r| r.0).collect();
        assert_eq!(names, features, "{key:?}");
        assert!(rows.iter().all(|r| r.1 == rows[0].1), "{rows:?}");
    }
    eprintln!(
        "killed after {} of {DRIVERS} entities were committed",
        entities.len()
    );

    for config in &configs {
        let status = materialize_command(config).status().unwrap();
        assert!(status.success(), "{status}");
    }
    let rerun = sqlite_tables(&online);
    assert_eq!(rerun, sqlite_tables(&whole.path().join("data/online.db")));
    assert_eq!(rerun[&table].len(), DRIVERS as usize * features.len());
}

/// A Parquet file with driver_stats v1's columns, one row per `(driver, event
/// second, created second, name)`, in that order.
fn driver_stats_rows(path: &Path, rows: &[(i64, i64, i64, &str)]) {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, BooleanArray, Float32Array, Float64Array, Float64Builder, Int64Array,
        ListBuilder, StringArray, TimestampMicrosecondArray,
    };
    let n = rows.len();
    let times = |f: fn(&(i64, i64, i64, &str)) -> i64| {
        TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| f(r) * 1_000_000))
            .with_timezone("UTC")
    };
    let mut ratings = ListBuilder::new(Float64Builder::new());
    for _ in rows {
        ratings.append(true);
    }
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "driver_id",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
        ),
        ("event_timestamp", Arc::new(times(|r| r.1))),
        ("created", Arc::new(times(|r| r.2))),
        ("conv_rate", Arc::new(Float32Array::from(vec![0.5; n]))),
        ("acc_rate", Arc::new(Float64Array::from(vec![0.5; n]))),
        ("avg_daily_trips", Arc::new(Int64Array::from(vec![1; n]))),
        (
            "name",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.3))),
        ),
        ("active", Arc::new(BooleanArray::from(vec![true; n]))),
        ("ratings", Arc::new(ratings.finish())),
    ];
    write_parquet(path, columns);
}

/// Rows of one entity with the same event time: the one created last wins, wherever
/// it is in the file; a later event time wins over a later created time.
#[tokio::test]
async fn event_time_ties_are_broken_by_the_created_column() {
    let dir = tempfile::tempdir().unwrap();
    let config = repo(dir.path(), "  type: sqlite\n  path: data/online.db");
    // 2025-01-09T22:00:00Z, inside the window.
    let t = 1_736_460_000;
    driver_stats_rows(
        &dir.path().join("data/driver_stats_b.parquet"),
        &[
            // Created last, first in the file.
            (1, t, t + 20, "won"),
            (1, t, t + 10, "lost"),
            // Created last, last in the file.
            (2, t, t + 10, "lost"),
            (2, t, t + 20, "won"),
            // The later event wins though created earlier.
            (3, t, t + 20, "lost"),
            (3, t + 1, t + 10, "won"),
        ],
    );
    let out = run(&config, &["driver_stats"], None).await.unwrap();
    assert!(
        out.contains("6 rows read, 6 in the window, 3 entities written"),
        "{out}"
    );

    let conn = rusqlite::Connection::open(dir.path().join("data/online.db")).unwrap();
    let stored: Vec<(String, i64, i64)> = conn
        .prepare(
            "SELECT value_text, event_ts, created_ts FROM tern_demo_driver_stats_v1 \
             WHERE feature_name = 'name' ORDER BY entity_key",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        stored,
        [
            ("won".to_owned(), t, t + 20),
            ("won".to_owned(), t, t + 20),
            ("won".to_owned(), t + 1, t + 10),
        ]
    );
}

/// With stderr not a terminal (a log file, a CI job), progress is plain log lines and
/// each view version ends with a summary line.
#[test]
fn without_a_terminal_each_view_ends_with_a_summary_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = repo(dir.path(), "  type: sqlite\n  path: data/online.db");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .args([
            "--log-format",
            "json",
            "materialize",
            START,
            END,
            "--config",
        ])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stderr)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = lines
        .iter()
        .find(|l| l["message"] == "materialized" && l["view"] == "driver_stats v1")
        .unwrap_or_else(|| panic!("no summary line: {lines:?}"));
    assert_eq!(summary["rows_read"], 6);
    assert_eq!(summary["rows_in_window"], 6);
    assert_eq!(summary["entities_written"], 5);
    assert!(summary["seconds"].is_f64(), "{summary}");
    // Before writing: how far reading got, against the rows the Parquet footers hold.
    let writing = lines
        .iter()
        .find(|l| l["message"] == "writing" && l["view"] == "driver_stats v1")
        .unwrap_or_else(|| panic!("no writing line: {lines:?}"));
    assert_eq!(writing["rows_read"], 6);
    assert_eq!(writing["rows_total"], 6);
    assert_eq!(writing["entities"], 5);
    // One per view version.
    let views = lines.iter().filter(|l| l["message"] == "materialized");
    assert_eq!(views.count(), 5, "{lines:?}");
}

/// README's "Rebuild the example from nothing": `examples/feature_repo/rebuild.sh`, on the
/// example's YAML and Parquet files alone, replays driver_stats' history and materializes
/// every view and version: every online table equals the one Feast 0.67 built, and `tern
/// serve` reads the active and the staged version from it.
#[tokio::test(flavor = "multi_thread")]
async fn the_example_rebuilds_from_its_definitions_and_parquet_files() {
    use crate::support::*;
    use tern::proto::feast::types::{Value, value::Val};
    use tern::serving::Clock;

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::create_dir_all(dir.path().join("history")).unwrap();
    for name in [
        "feature_store.yaml",
        "definitions.yaml",
        "driver_stats.yaml",
        "rebuild.sh",
        "history/driver_stats_v0.yaml",
        "history/driver_stats_v2.yaml",
        "history/pinned_services.yaml",
    ] {
        std::fs::copy(example().join(name), dir.path().join(name)).unwrap();
    }
    for entry in std::fs::read_dir(example().join("data")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "parquet") {
            std::fs::copy(
                &path,
                dir.path().join("data").join(path.file_name().unwrap()),
            )
            .unwrap();
        }
    }
    let out = std::process::Command::new("bash")
        .arg("rebuild.sh")
        .current_dir(dir.path())
        .env("TERN", env!("CARGO_BIN_EXE_tern"))
        .env_remove("RUST_LOG")
        .env_remove("TERN_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "rebuild.sh: {out:?}");

    assert_eq!(
        sqlite_tables(&dir.path().join("data/online.db")),
        sqlite_tables(&example().join("data/online.db"))
    );

    let config = dir.path().join("feature_store.yaml");
    let server = tern::testing::TestServer::start(&config, Clock::Fixed(1_736_470_800))
        .await
        .unwrap();
    let ch = channel(&server.url()).await;
    let r = call(
        &ch,
        Route::Serving,
        refs_request(
            &[
                "driver_stats:conv_rate",
                "driver_stats@v2:vip_level",
                "customer_profile:tier",
            ],
            vec![
                ("driver_id", vec![int64(1001)]),
                ("customer_id", vec![string("c1")]),
            ],
        ),
    )
    .await
    .unwrap();
    let value = |v: Val| vec![Value { val: Some(v) }];
    assert_eq!(column(&r, "conv_rate").0, value(Val::FloatVal(0.21)));
    assert_eq!(column(&r, "vip_level").0, value(Val::Int32Val(3)));
    assert_eq!(column(&r, "tier").0, value(Val::StringVal("gold".into())));
    server.stop().await.unwrap();
}
