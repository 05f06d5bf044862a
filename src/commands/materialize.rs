//! `tern materialize START END` and `tern materialize-incremental END`: each view
//! version's Parquet source into the online store, then its interval recorded in the
//! registry under the registry's lock.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::{Error, Outcome, REGISTRY_TIMEOUT};
use crate::config::{OnlineStoreConfig, RepoConfig};
use crate::definitions::VersionPin;
use crate::materialize::{self, Latest, MaterializeError};
use crate::plan::versions as history;
use crate::proto::feast::core as pb;
use crate::registry::RegistrySource;
use crate::registry::model::RegistryModel;
use crate::store::redis::{WriteRow, Written};
use crate::store::{RedisStore, StorageLayout, StoreError, sqlite};
use futures_util::StreamExt;

/// Entities per SQLite transaction and per Redis pipeline.
const CHUNK: usize = 10_000;
/// Redis chunks written concurrently (pipelined on one connection).
const CHUNKS_IN_FLIGHT: usize = 3;
/// Bound on each Redis round trip of a materialization.
const REDIS_TIMEOUT: Duration = Duration::from_secs(60);

/// What `tern materialize` was asked.
#[derive(Debug, Clone, Default)]
pub struct MaterializeOptions {
    /// `feature_store.yaml`.
    pub config: PathBuf,
    /// Window start; `None` for materialize-incremental.
    pub start: Option<String>,
    /// Window end.
    pub end: String,
    /// `--views` (empty: every online view of the project).
    pub views: Vec<String>,
    /// `--version vN`.
    pub version: Option<String>,
    /// `--shard K/N`: only the entities of part K of N.
    pub shard: Option<String>,
}

pub use crate::times::parse_time;

fn bad(message: String) -> Error {
    Error::Materialize(MaterializeError::View(message))
}

/// One view version to materialize.
struct Target {
    view: String,
    version: u32,
    spec: pb::FeatureViewSpec,
    intervals: Vec<pb::MaterializationInterval>,
}

fn targets(
    model: &RegistryModel,
    config: &RepoConfig,
    options: &MaterializeOptions,
) -> Result<Vec<Target>, Error> {
    let project = &config.project;
    let pinned = match &options.version {
        None => None,
        Some(text) => {
            if options.views.len() != 1 {
                return Err(bad(
                    "--version requires --views with exactly one feature view.".to_owned(),
                ));
            }
            if !config.registry.versioning {
                return Err(bad("Version-aware materialization requires 'enable_online_feature_view_versioning: true' under 'registry' in feature_store.yaml.".to_owned()));
            }
            match crate::definitions::parse_version_pin(text).map_err(bad)? {
                VersionPin::Latest => None,
                VersionPin::Pinned(n) => Some(n),
            }
        }
    };
    let views: Vec<&pb::FeatureView> = model
        .feature_views
        .iter()
        .filter(|v| v.project == *project)
        .map(|v| &v.object)
        .collect();
    let mut out = Vec::new();
    let wanted: Vec<String> = if options.views.is_empty() {
        views
            .iter()
            .filter_map(|v| v.spec.as_ref())
            .filter(|s| s.online)
            .map(|s| s.name.clone())
            .collect()
    } else {
        options.views.clone()
    };
    for name in wanted {
        let Some(view) = views
            .iter()
            .find(|v| v.spec.as_ref().is_some_and(|s| s.name == name))
        else {
            return Err(bad(format!(
                "Feature view {name} does not exist in project {project}"
            )));
        };
        let active = crate::plan::active_version_of(view);
        let (version, snap) = match pinned {
            Some(n) if n != active => (n, history::get(model, project, &name, n)?),
            _ => (active, (*view).clone()),
        };
        let spec = snap.spec.unwrap_or_default();
        let intervals = snap
            .meta
            .map(|m| m.materialization_intervals)
            .unwrap_or_default();
        out.push(Target {
            view: name,
            version,
            spec,
            intervals,
        });
    }
    Ok(out)
}

/// Runs one materialization; prints a line per view version.
pub async fn run(
    options: &MaterializeOptions,
    out: &mut (dyn Write + Send),
) -> Result<Outcome, Error> {
    let config = super::load_config(&options.config)?;
    let end_us = parse_time(&options.end).map_err(bad)?;
    let start_us = match &options.start {
        Some(s) => Some(parse_time(s).map_err(bad)?),
        None => None,
    };
    let shard = match &options.shard {
        Some(s) => materialize::Shard::parse(s).map_err(bad)?,
        None => materialize::Shard::ALL,
    };
    let mut source = RegistrySource::open(&config, REGISTRY_TIMEOUT)?;
    let model = source.read(&config.project).await?.model;
    let now_us = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    let mut done: Vec<(String, u32, i64, i64)> = Vec::new();
    for target in targets(&model, &config, options)? {
        let start = match start_us {
            Some(s) => s,
            // Incremental: from this version's own watermark, else the ttl's reach.
            None => target
                .intervals
                .iter()
                .filter_map(|i| i.end_time.as_ref())
                .map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1000)
                .max()
                .unwrap_or_else(|| {
                    let ttl = target.spec.ttl.as_ref().map_or(0, |d| d.seconds);
                    if ttl > 0 { now_us - ttl * 1_000_000 } else { 0 }
                }),
        };
        if start >= end_us {
            let _ = writeln!(
                out,
                "{} v{}: nothing to do (already materialized up to the end)",
                target.view, target.version
            );
            continue;
        }
        let began = Instant::now();
        let spec = target.spec.clone();
        let repo_dir = config.repo_dir.clone();
        let serialization = config.entity_key_serialization;
        let with_text = matches!(config.online_store, OnlineStoreConfig::Sqlite { .. });
        let total = materialize::source_rows(&spec, &repo_dir).map_err(|e| bad(e.to_string()))?;
        let progress = Progress::new(&target.view, target.version, total);
        let bar = progress.clone();
        let latest = tokio::task::spawn_blocking(move || {
            materialize::read_latest(
                &spec,
                &repo_dir,
                serialization,
                (start, end_us),
                shard,
                with_text,
                |n| bar.rows(n),
            )
        })
        .await
        .map_err(|e| bad(e.to_string()))??;
        let stored_version = if config.registry.versioning {
            target.version
        } else {
            0
        };
        let features: Vec<String> = target
            .spec
            .features
            .iter()
            .map(|f| f.name.clone())
            .collect();
        let layout = StorageLayout::new(&config.project, &target.view, stored_version, features);
        let (rows_read, rows_in_window) = (latest.rows_read, latest.rows_in_window);
        progress.writing(latest.rows.len());
        let written = write(&config, &layout, latest, &progress).await?;
        progress.finish(rows_in_window, written);
        let _ = writeln!(
            out,
            "{} v{} [{}, {}): {} rows read, {} in the window, {} entities written to {} in {:.1}s",
            target.view,
            target.version,
            shown(start),
            shown(end_us),
            rows_read,
            rows_in_window,
            written,
            match &config.online_store {
                OnlineStoreConfig::Sqlite { .. } => layout.sqlite_table.clone(),
                OnlineStoreConfig::Redis(_) => format!("Redis ({})", layout.storage_name),
            },
            began.elapsed().as_secs_f64()
        );
        if shard == materialize::Shard::ALL {
            done.push((target.view, target.version, start, end_us));
        }
    }
    if shard != materialize::Shard::ALL {
        let _ = writeln!(
            out,
            "shard {}/{}: no interval recorded (record it with an unsharded run, or by materializing every shard's window again)",
            shard.index, shard.count
        );
    }
    record_intervals(&mut source, &config.project, &done).await?;
    Ok(Outcome::Done)
}

async fn write(
    config: &RepoConfig,
    layout: &StorageLayout,
    latest: Latest,
    progress: &Progress,
) -> Result<usize, Error> {
    match &config.online_store {
        OnlineStoreConfig::Sqlite { path } => {
            let failed = |detail: String| Error::Store {
                store: path.display().to_string(),
                detail,
            };
            let path = path.clone();
            let table = layout.sqlite_table.clone();
            let features = layout.features.clone();
            let progress = progress.clone();
            let mut rows: Vec<(Vec<u8>, materialize::LatestRow)> =
                latest.rows.into_iter().collect();
            // In key order, inserts walk the primary-key index from left to right
            // instead of touching a random page each (about twice as fast on a table
            // larger than the page cache).
            rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            tokio::task::spawn_blocking(move || -> rusqlite::Result<usize> {
                let mut conn = rusqlite::Connection::open(&path)?;
                conn.busy_timeout(REGISTRY_TIMEOUT)?;
                // WAL: `tern serve` keeps reading the last committed state while
                // chunks are written (readers never wait for this writer).
                conn.pragma_update(None, "journal_mode", "WAL")?;
                conn.pragma_update(None, "cache_size", -sqlite::MATERIALIZE_CACHE_KIB)?;
                sqlite::create_table(&conn, &table)?;
                for chunk in rows.chunks(CHUNK) {
                    let items = chunk.iter().flat_map(|(k, r)| {
                        let event_ts = r.event_us.div_euclid(1_000_000);
                        let created_ts = r.created_us.map(|c| c.div_euclid(1_000_000));
                        features
                            .iter()
                            .zip(r.value_bytes().zip(r.value_texts()))
                            .map(move |(f, (value, value_text))| sqlite::MaterializedRow {
                                entity_key: k,
                                feature: f,
                                value,
                                value_text,
                                event_ts,
                                created_ts,
                            })
                    });
                    sqlite::write_materialized(&mut conn, &table, items)?;
                    progress.wrote(chunk.len());
                }
                Ok(rows.len())
            })
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(|e| failed(e.to_string()))
        }
        OnlineStoreConfig::Redis(redis) => {
            let failed = |detail: String| Error::Store {
                store: redis.display_nodes(),
                detail,
            };
            let store = super::open_redis(config, redis, REDIS_TIMEOUT)?;
            let rows: Vec<(&Vec<u8>, &materialize::LatestRow)> = latest.rows.iter().collect();
            let features: Vec<&str> = layout.features.iter().map(String::as_str).collect();
            // A few chunks in flight on the one connection: Tern builds the next
            // pipeline while Redis runs the previous one (each chunk's keys are
            // distinct, so their order does not matter).
            let mut chunks = rows.chunks(CHUNK);
            let mut in_flight = futures_util::stream::FuturesOrdered::new();
            let mut written = 0;
            loop {
                while in_flight.len() < CHUNKS_IN_FLIGHT {
                    let Some(chunk) = chunks.next() else { break };
                    in_flight.push_back(write_redis_chunk(&store, layout, &features, chunk));
                }
                match in_flight.next().await {
                    Some(w) => {
                        let w = w.map_err(|e| failed(e.to_string()))?;
                        written += w.written;
                        progress.wrote(w.written + w.skipped);
                    }
                    None => break,
                }
            }
            Ok(written)
        }
    }
}

async fn write_redis_chunk(
    store: &RedisStore,
    layout: &StorageLayout,
    features: &[&str],
    chunk: &[(&Vec<u8>, &materialize::LatestRow)],
) -> Result<Written, StoreError> {
    // Every row's (feature, value) pairs in one vector, sliced per row.
    let values: Vec<(&str, &[u8])> = chunk
        .iter()
        .flat_map(|(_, r)| features.iter().copied().zip(r.value_bytes()))
        .collect();
    let per_row = features.len().max(1);
    let batch: Vec<WriteRow<'_>> = chunk
        .iter()
        .zip(values.chunks(per_row).chain(std::iter::repeat(&[][..])))
        .map(|((k, r), v)| WriteRow {
            entity_key: k,
            values: v,
            event_time: prost_types::Timestamp {
                seconds: r.event_us.div_euclid(1_000_000),
                nanos: (r.event_us.rem_euclid(1_000_000) * 1000) as i32,
            },
        })
        .collect();
    store.write_batch(layout, &batch).await
}

fn shown(us: i64) -> String {
    history::feast_time(Some(&prost_types::Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: (us.rem_euclid(1_000_000) * 1000) as i32,
    }))
}

fn interval(start_us: i64, end_us: i64) -> pb::MaterializationInterval {
    let ts = |us: i64| prost_types::Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: (us.rem_euclid(1_000_000) * 1000) as i32,
    };
    pb::MaterializationInterval {
        start_time: Some(ts(start_us)),
        end_time: Some(ts(end_us)),
    }
}

/// Records each window: the active version's on the view (where Feast keeps them),
/// another version's on its history record (where Feast does not look).
async fn record_intervals(
    source: &mut RegistrySource,
    project: &str,
    done: &[(String, u32, i64, i64)],
) -> Result<(), Error> {
    use prost::Message;
    if done.is_empty() {
        return Ok(());
    }
    let txn = source.begin(project).await?;
    let mut model = txn.model().clone();
    for (view, version, start, end) in done {
        let Some(stored) = model
            .feature_views
            .iter_mut()
            .find(|v| v.project == project && v.name == *view)
        else {
            continue;
        };
        if crate::plan::active_version_of(&stored.object) == *version {
            let meta = stored.object.meta.get_or_insert_with(Default::default);
            meta.materialization_intervals.push(interval(*start, *end));
            meta.state = pb::FeatureViewState::AvailableOnline as i32;
        } else if let Some(record) = model.version_history.iter_mut().find(|r| {
            r.project_id == project
                && r.feature_view_name == *view
                && r.version_number == *version as i32
        }) && let Ok(mut snap) =
            pb::FeatureView::decode(record.feature_view_proto.as_slice())
        {
            snap.meta
                .get_or_insert_with(Default::default)
                .materialization_intervals
                .push(interval(*start, *end));
            record.feature_view_proto = snap.encode_to_vec();
        }
    }
    txn.commit(model, SystemTime::now()).await?;
    Ok(())
}

/// Plain progress lines (stderr not a terminal): one every this many rows read...
const LINE_EVERY_ROWS: u64 = 1_000_000;
/// ...or after this long, whichever comes first.
const LINE_EVERY: Duration = Duration::from_secs(10);

/// Rows read, then entities written, on a terminal as a progress bar (count, rate,
/// ETA), otherwise as log lines (a log file or a CI job shows that a long run is alive
/// and how far it is), plus a summary line per view version.
#[derive(Clone)]
struct Progress {
    bar: indicatif::ProgressBar,
    /// Rows in the source, from the Parquet footers.
    total_rows: u64,
    started: Instant,
    /// Rows read, kept when the bar moves on to counting entities written.
    rows_read: Arc<AtomicU64>,
    /// When the last plain line was logged, in ms since `started`.
    last_line_ms: Arc<AtomicU64>,
}

impl Progress {
    fn new(view: &str, version: u32, total_rows: u64) -> Self {
        let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let bar = indicatif::ProgressBar::new(total_rows);
            bar.set_style(Self::style("rows read"));
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_prefix(format!("{view} v{version}"));
        Self {
            bar,
            total_rows,
            started: Instant::now(),
            rows_read: Arc::new(AtomicU64::new(0)),
            last_line_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn style(what: &str) -> indicatif::ProgressStyle {
        indicatif::ProgressStyle::with_template(&format!(
            "{{prefix}} [{{wide_bar}}] {{human_pos}}/{{human_len}} {what} ({{rate}}/s, ETA {{eta}})"
        ))
        .map(|style| {
            style.with_key(
                "rate",
                |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{}", indicatif::HumanCount(state.per_sec() as u64));
                },
            )
        })
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    }

    /// Whether a plain line is due (every LINE_EVERY; `crossed` forces one).
    fn line_due(&self, crossed: bool) -> bool {
        let ms = self.started.elapsed().as_millis() as u64;
        let waited = ms.saturating_sub(self.last_line_ms.load(Ordering::Relaxed));
        if crossed || waited >= LINE_EVERY.as_millis() as u64 {
            self.last_line_ms.store(ms, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// (per second, seconds left) after `done` of `total` since `since`.
    fn rate(done: u64, total: u64, since: Duration) -> (u64, u64) {
        let per_s = done as f64 / since.as_secs_f64().max(1e-3);
        let left = total.saturating_sub(done) as f64 / per_s.max(1e-9);
        (per_s as u64, left.min(1e9) as u64)
    }

    fn rows(&self, n: u64) {
        self.bar.inc(n);
        if !self.bar.is_hidden() {
            return;
        }
        let rows = self.bar.position();
        let crossed = rows / LINE_EVERY_ROWS != rows.saturating_sub(n) / LINE_EVERY_ROWS;
        if self.line_due(crossed) {
            let (rows_per_s, eta_s) = Self::rate(rows, self.total_rows, self.started.elapsed());
            tracing::info!(
                view = %self.bar.prefix(),
                rows_read = rows,
                rows_total = self.total_rows,
                rows_per_s,
                eta_s,
                "materializing"
            );
        }
    }

    /// Reading is done; the window's entities are being written.
    fn writing(&self, entities: usize) {
        self.rows_read.store(self.bar.position(), Ordering::Relaxed);
        if self.bar.is_hidden() {
            tracing::info!(
                view = %self.bar.prefix(),
                rows_read = self.bar.position(),
                rows_total = self.total_rows,
                entities,
                "writing"
            );
            self.bar.set_position(0);
        } else {
            self.bar.set_style(Self::style("entities written"));
            self.bar.set_length(entities as u64);
            self.bar.reset();
        }
    }

    /// `n` more entities written (or skipped as not newer).
    fn wrote(&self, n: usize) {
        self.bar.inc(n as u64);
        if self.bar.is_hidden() && self.line_due(false) {
            tracing::info!(view = %self.bar.prefix(), entities_written = self.bar.position(), "writing");
        }
    }

    fn finish(&self, rows_in_window: u64, entities_written: usize) {
        if self.bar.is_hidden() {
            tracing::info!(
                view = %self.bar.prefix(),
                rows_read = self.rows_read.load(Ordering::Relaxed),
                rows_in_window,
                entities_written,
                seconds = (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                "materialized"
            );
        }
        self.bar.finish_and_clear();
    }
}
