//! `tern materialize` of a one-million-row Parquet file runs in memory bounded by the
//! distinct entities of the window, not by the file: its peak RSS (the kernel's
//! high-water mark, from `wait4`) is about that of a file a tenth the size over the
//! same entities.
//!
//! A binary of its own: the peak RSS `wait4` reports for a child includes the pages of
//! the process that spawned it (Linux counts the parent's high-water mark at `exec`), so
//! the parent must stay small, which a test binary running other tests beside this one
//! would not.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Float64Builder, Int64Array, ListBuilder,
    RecordBatch, StringArray, TimestampMicrosecondArray,
};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use wait4::Wait4;

const START: &str = "2025-01-01T00:00:00";
const END: &str = "2025-01-10T12:00:00";
/// 2025-01-09T22:00:00Z: every row's event time is this plus its row number in µs.
const BASE_US: i64 = 1_736_460_000_000_000;
const MIB: u64 = 1024 * 1024;

/// Writes `rows` rows of driver_stats v1's columns over `entities` drivers (row i is
/// driver i % entities, each row newer than the one before), in batches so this
/// process stays small. Returns the rows' size as Arrow arrays in memory.
fn driver_stats(path: &Path, entities: i64, rows: i64) -> u64 {
    const BATCH: i64 = 50_000;
    let file = std::fs::File::create(path).unwrap();
    let mut writer: Option<ArrowWriter<std::fs::File>> = None;
    let mut in_memory = 0;
    for first in (0..rows).step_by(BATCH as usize) {
        let range = first..(first + BATCH).min(rows);
        let ts = TimestampMicrosecondArray::from_iter_values(range.clone().map(|i| BASE_US + i))
            .with_timezone("UTC");
        let mut ratings = ListBuilder::new(Float64Builder::new());
        for i in range.clone() {
            ratings.values().append_value(i as f64);
            ratings.append(true);
        }
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "driver_id",
                Arc::new(Int64Array::from_iter_values(
                    range.clone().map(|i| 1_000_000 + i % entities),
                )),
            ),
            ("event_timestamp", Arc::new(ts.clone())),
            ("created", Arc::new(ts)),
            (
                "conv_rate",
                Arc::new(Float32Array::from_iter_values(
                    range.clone().map(|i| i as f32),
                )),
            ),
            (
                "acc_rate",
                Arc::new(Float64Array::from_iter_values(
                    range.clone().map(|i| i as f64),
                )),
            ),
            (
                "avg_daily_trips",
                Arc::new(Int64Array::from_iter_values(range.clone())),
            ),
            (
                "name",
                Arc::new(StringArray::from_iter_values(
                    range.clone().map(|i| format!("driver {i}")),
                )),
            ),
            (
                "active",
                Arc::new(BooleanArray::from_iter(
                    range.clone().map(|i| Some(i % 2 == 0)),
                )),
            ),
            ("ratings", Arc::new(ratings.finish())),
        ];
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        in_memory += batch.get_array_memory_size() as u64;
        let writer = writer.get_or_insert_with(|| {
            // The writer holds a row group until it is full: small ones keep this
            // process small.
            let props = WriterProperties::builder()
                .set_max_row_group_row_count(Some(BATCH as usize))
                .build();
            ArrowWriter::try_new(file.try_clone().unwrap(), batch.schema(), Some(props)).unwrap()
        });
        writer.write(&batch).unwrap();
    }
    writer.unwrap().close().unwrap();
    in_memory
}

/// A repo holding the example's registry and `entities` × `rows_per_entity` rows as
/// driver_stats v1's source; materializes it with the `tern` binary and returns its
/// peak RSS in bytes.
fn peak_rss(entities: i64, rows_per_entity: i64) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/feature_repo/data");
    std::fs::copy(example.join("registry.db"), data.join("registry.db")).unwrap();
    let rows = entities * rows_per_entity;
    let in_memory = driver_stats(&data.join("driver_stats_b.parquet"), entities, rows);
    let config = dir.path().join("feature_store.yaml");
    std::fs::write(
        &config,
        "project: tern_demo\nregistry:\n  path: data/registry.db\n  enable_online_feature_view_versioning: true\nonline_store:\n  type: sqlite\n  path: data/online.db\nentity_key_serialization_version: 3\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["--log-format", "json", "materialize", START, END])
        .args(["--views", "driver_stats", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A few lines each: they fit in the pipes until tern has exited.
    let (mut stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let usage = child.wait4().unwrap();
    let (mut out, mut log) = (String::new(), String::new());
    std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
    std::io::Read::read_to_string(&mut stderr, &mut log).unwrap();
    assert!(usage.status.success(), "{}: {out}", usage.status);
    assert!(
        out.contains(&format!(
            "{rows} rows read, {rows} in the window, {entities} entities written"
        )),
        "{out}"
    );
    // Without a terminal, a progress line at least every million rows.
    let progress: Vec<u64> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["message"] == "materializing")
        .map(|l| l["rows_read"].as_u64().unwrap())
        .collect();
    assert!(
        progress.len() as i64 >= rows / 1_000_000,
        "{progress:?}\n{log}"
    );
    let file = std::fs::metadata(data.join("driver_stats_b.parquet"))
        .unwrap()
        .len();
    eprintln!(
        "{rows} rows ({entities} entities): Parquet {} MiB, {} MiB as Arrow arrays; tern materialize peak RSS {} MiB",
        file / MIB,
        in_memory / MIB,
        usage.rusage.maxrss / MIB
    );
    (usage.rusage.maxrss, in_memory)
}

/// The peak of 1,000,000 rows (10,000 drivers × 100) against that of 100,000 rows over
/// the same drivers: memory may follow the entities, not the rows.
#[test]
fn a_million_rows_materialize_in_memory_bounded_by_the_entities() {
    let (small, _) = peak_rss(10_000, 10);
    let (big, big_in_memory) = peak_rss(10_000, 100);
    let own = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .map(str::to_owned)
        .unwrap_or_default();
    eprintln!("(each includes this test process's own peak, {own})");
    assert!(
        big < small + small / 2,
        "peak RSS grew with the file: {} MiB for 10x the rows of {} MiB",
        big / MIB,
        small / MIB
    );
    assert!(
        big < big_in_memory,
        "peak RSS {} MiB is not below the rows' own size in memory ({} MiB)",
        big / MIB,
        big_in_memory / MIB
    );
}
