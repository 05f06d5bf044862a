//! GetOnlineFeatures, independent of any transport.
//!
//! Owns: one request from start to finish against one registry snapshot: limits and
//! deadline, plan (cached), entity keys, one batched store read, and the answer as a
//! domain result ([`OnlineFeatures`]): output names, per column the stored value bytes,
//! statuses and event times. Does not own: wire formats (the gRPC edge encodes the
//! result as Feast's protobuf, the HTTP edge as Feast's JSON), ref syntax (`refs`),
//! storage layouts (`store`).

pub mod entities;
pub mod error;
pub mod plan;

use crate::auth::Principal;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prost::Message;
use prost_types::Timestamp;

pub use entities::EntityError;
pub use error::Error;
pub use plan::{Plan, PlanCache, Selection};

use crate::metrics as m;
use crate::proto::feast::serving::FieldStatus;
use crate::proto::tern::wire::Column;
use crate::registry::Registry;
use crate::store::{OnlineStore, Span, Store, ViewRead, ViewRows};
use entities::EntityRows;

/// Wall-clock source for ttl checks. Tests pin it: fixture data is older than its ttl.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// A fixed instant, in epoch seconds.
    Fixed(i64),
}

impl Clock {
    /// Now, in epoch seconds.
    pub fn now_seconds(self) -> i64 {
        match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            Clock::Fixed(s) => s,
        }
    }

    /// Now, as a protobuf timestamp (with nanoseconds from the system clock).
    pub fn now_timestamp(self) -> Timestamp {
        match self {
            Clock::System => SystemTime::now().duration_since(UNIX_EPOCH).map_or_else(
                |_| Timestamp::default(),
                |d| Timestamp {
                    seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                    nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
                },
            ),
            Clock::Fixed(s) => Timestamp {
                seconds: s,
                nanos: 0,
            },
        }
    }
}

/// A GetOnlineFeatures request, borrowed from the decoded message.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Refs or a service; `None` when the request names neither.
    pub selection: Option<Selection<'a>>,
    /// Entity columns in request order.
    pub entities: &'a [Column],
    /// Name columns `view__feature`.
    pub full_feature_names: bool,
    /// Report the view versions read.
    pub include_metadata: bool,
    /// Answer within this long, or fail with [`Error::DeadlineExceeded`].
    pub deadline: Option<Duration>,
    /// The authenticated caller, checked against the registry's permissions; `None`
    /// when authentication is off (nothing is checked, as in Feast).
    pub caller: Option<&'a Principal>,
}

/// Limits on what one request, and all requests together, may ask of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Requests answered at once; more are refused rather than queued without bound.
    pub max_concurrent_requests: usize,
    /// Entity rows in one request.
    pub max_entity_rows: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_concurrent_requests: 1024,
            max_entity_rows: 10_000,
        }
    }
}

/// The answer to one request, before any wire encoding: what every edge writes.
#[derive(Debug)]
pub struct OnlineFeatures {
    /// The plan the answer follows: the feature columns' output names
    /// (`feature_names`) and the view versions read (`metadata`).
    pub plan: Arc<Plan>,
    /// Whether the request asked for the view versions read.
    pub include_metadata: bool,
    /// Number of rows in every column.
    pub rows: usize,
    /// Entity columns echoed back, in request order.
    pub entities: Vec<EchoedColumn>,
    /// Feature columns, in the plan's order.
    pub features: FeatureColumns,
}

/// An entity column as echoed in the answer: values converted to the join key's type.
#[derive(Debug)]
pub struct EchoedColumn {
    /// Output name (the join key, or the request column for an aliased join key).
    pub name: Arc<str>,
    /// Per row, where its serialized `feast.types.Value` is in `buffer`.
    pub values: Vec<Span>,
    /// The values' bytes.
    pub buffer: Bytes,
}

impl EchoedColumn {
    /// A column of already serialized values (tests of the encoders).
    #[cfg(test)]
    pub(crate) fn from_values(name: &str, values: &[Bytes]) -> Self {
        let mut buffer = Vec::new();
        let spans = values.iter().map(|v| Span::push(&mut buffer, v)).collect();
        Self {
            name: name.into(),
            values: spans,
            buffer: buffer.into(),
        }
    }
}

/// Every feature column of an answer in three flat vectors (column `c`, row `r` at
/// `c * rows + r`): three allocations per answer, not three per column. Values are
/// spans of the store's one buffer for the request.
#[derive(Debug, Default)]
pub struct FeatureColumns {
    columns: usize,
    rows: usize,
    values: Vec<Span>,
    statuses: Vec<FieldStatus>,
    event_timestamps: Vec<Timestamp>,
    buffer: Bytes,
}

impl FeatureColumns {
    fn with_capacity(columns: usize, rows: usize, buffer: Bytes) -> Self {
        let cells = columns * rows;
        Self {
            columns: 0,
            rows,
            values: Vec::with_capacity(cells),
            statuses: Vec::with_capacity(cells),
            event_timestamps: Vec::with_capacity(cells),
            buffer,
        }
    }

    /// Columns given whole, for tests of the encoders.
    #[cfg(test)]
    pub(crate) fn from_columns(
        rows: usize,
        columns: Vec<(Vec<Bytes>, Vec<FieldStatus>, Vec<Timestamp>)>,
    ) -> Self {
        let mut buffer = Vec::new();
        let mut out = Self::with_capacity(columns.len(), rows, Bytes::new());
        for (values, statuses, times) in columns {
            out.values
                .extend(values.iter().map(|v| Span::push(&mut buffer, v)));
            out.statuses.extend(statuses);
            out.event_timestamps.extend(times);
            out.columns += 1;
        }
        out.buffer = buffer.into();
        out
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.columns
    }

    /// Whether there is no column.
    pub fn is_empty(&self) -> bool {
        self.columns == 0
    }

    /// The columns, in the plan's order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = FeatureColumn<'_>> + Clone {
        (0..self.columns).map(|c| {
            let cells = c * self.rows..(c + 1) * self.rows;
            FeatureColumn {
                values: self.values.get(cells.clone()).unwrap_or_default(),
                buffer: &self.buffer,
                statuses: self.statuses.get(cells.clone()).unwrap_or_default(),
                event_timestamps: self.event_timestamps.get(cells).unwrap_or_default(),
            }
        })
    }
}

/// One feature column.
#[derive(Debug, Clone, Copy)]
pub struct FeatureColumn<'a> {
    /// Per row, where the serialized `feast.types.Value` is in `buffer`, exactly as
    /// the store holds it; empty when not found or null.
    pub values: &'a [Span],
    /// The values' bytes.
    pub buffer: &'a [u8],
    /// Per row, what the value is.
    pub statuses: &'a [FieldStatus],
    /// Per row, the entity's event time (zero when not found).
    pub event_timestamps: &'a [Timestamp],
}

/// The serving core: registry, store, clock and limits.
#[derive(Debug)]
pub struct Serving {
    registry: Arc<Registry>,
    store: Store,
    clock: Clock,
    limits: Limits,
    plans: PlanCache,
    /// Requests being answered (also lets tests see a request in flight).
    in_flight: AtomicUsize,
    metrics: ServingMetrics,
}

/// The request path's metric handles, registered once per core (with whatever recorder
/// is installed then: `tern serve` installs it first). A request then updates atomics
/// instead of building label sets and looking their keys up.
#[derive(Debug)]
struct ServingMetrics {
    in_flight: metrics::Gauge,
    entity_rows: metrics::Counter,
    /// Per `FieldStatus`, in its numeric order.
    feature_values: [metrics::Counter; 5],
    store_read: metrics::Histogram,
}

impl ServingMetrics {
    fn new(store: &'static str) -> Self {
        Self {
            in_flight: metrics::gauge!(m::IN_FLIGHT),
            entity_rows: metrics::counter!(m::ENTITY_ROWS),
            feature_values: m::FIELD_STATUS_LABELS
                .map(|status| metrics::counter!(m::FEATURE_VALUES, "status" => status)),
            store_read: metrics::histogram!(m::STORE_READ_DURATION, "store" => store),
        }
    }
}

/// Counts a request as in flight until dropped. The gauge moves by increments, so
/// racing threads cannot leave it at a stale value.
struct InFlight<'a>(&'a AtomicUsize, &'a metrics::Gauge);

impl<'a> InFlight<'a> {
    fn enter(
        counter: &'a AtomicUsize,
        gauge: &'a metrics::Gauge,
        limit: usize,
    ) -> Result<Self, Error> {
        if counter.fetch_add(1, Ordering::AcqRel) >= limit {
            counter.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::TooManyRequests { limit });
        }
        gauge.increment(1.0);
        Ok(Self(counter, gauge))
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        self.1.decrement(1.0);
    }
}

impl Serving {
    /// A serving core over a loaded registry and an open store, with default limits.
    pub fn new(registry: Arc<Registry>, store: Store, clock: Clock) -> Self {
        let metrics = ServingMetrics::new(store.kind().as_str());
        Self {
            registry,
            store,
            clock,
            limits: Limits::default(),
            plans: PlanCache::default(),
            in_flight: AtomicUsize::new(0),
            metrics,
        }
    }

    /// The same core with other limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Requests being answered right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The registry handle.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The clock ttl checks (and writes without event times) use.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// The online store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The plan cache (for tests and diagnostics).
    pub fn plans(&self) -> &PlanCache {
        &self.plans
    }

    /// Answers one request: within its deadline, if it has one.
    pub async fn get_online_features(&self, req: Request<'_>) -> Result<OnlineFeatures, Error> {
        let _in_flight = InFlight::enter(
            &self.in_flight,
            &self.metrics.in_flight,
            self.limits.max_concurrent_requests,
        )?;
        match req.deadline {
            None => self.answer(req).await,
            Some(after) => tokio::time::timeout(after, self.answer(req))
                .await
                .unwrap_or(Err(Error::DeadlineExceeded { after })),
        }
    }

    async fn answer(&self, req: Request<'_>) -> Result<OnlineFeatures, Error> {
        // One snapshot for the whole request, even if a reload publishes another.
        let snapshot = self.registry.snapshot();
        let selection = req.selection.ok_or(Error::NoFeatures)?;
        let plan = self
            .plans
            .get(&snapshot, selection, req.full_feature_names)?;
        if let Some(caller) = req.caller {
            for access in &plan.access {
                snapshot.permissions().decide(access, caller)?;
            }
        }
        let rows = EntityRows::new(req.entities)?;
        if rows.rows > self.limits.max_entity_rows {
            return Err(Error::TooManyRows {
                rows: rows.rows,
                limit: self.limits.max_entity_rows,
            });
        }

        let keys = plan
            .key_sets
            .iter()
            .map(|set| entities::encode_keys(&rows, set))
            .collect::<Result<Vec<_>, _>>()?;
        let reads = plan
            .reads
            .iter()
            .map(|r| ViewRead {
                layout: r.layout.clone(),
                slots: r.slots.clone(),
                by_name: r.by_name.clone(),
                keys: keys[r.key_set].batch.clone(),
            })
            .collect();

        let started = Instant::now();
        let result = self.store.read(reads).await;
        self.metrics
            .store_read
            .record(started.elapsed().as_secs_f64());
        let found = result.inspect_err(|e| {
            let store = self.store.kind().as_str();
            metrics::counter!(m::STORE_ERRORS, "store" => store, "kind" => e.label()).increment(1);
        })?;
        if found.views.len() != plan.reads.len() {
            return Err(Error::Internal(format!(
                "the online store answered {} reads out of {}",
                found.views.len(),
                plan.reads.len()
            )));
        }

        let now = self.clock.now_seconds();
        let mut counts = [0u64; 5];
        let mut echoed = Vec::with_capacity(rows.columns.len());
        for &(name, values) in &rows.columns {
            let Some(echo) = plan.entity_columns.get(name) else {
                continue;
            };
            // An entity-name column is echoed as its join key, unless that is sent too.
            if *echo.output != *name && rows.column(&echo.output).is_some() {
                continue;
            }
            // Most entity values serialize in under 16 bytes.
            let mut buffer = Vec::with_capacity(values.len() * 16);
            let spans = values
                .iter()
                .map(|v| {
                    let typed = entities::coerced_value(v, echo.value_type);
                    let start = buffer.len();
                    typed.as_ref().unwrap_or(v).encode_raw(&mut buffer);
                    Span::new(start, buffer.len())
                })
                .collect();
            echoed.push(EchoedColumn {
                name: echo.output.clone(),
                values: spans,
                buffer: buffer.into(),
            });
        }

        let mut features =
            FeatureColumns::with_capacity(plan.columns.len(), rows.rows, found.values.clone());
        for column in &plan.columns {
            let read = &plan.reads[column.read];
            push_feature_column(
                &mut features,
                &found.views[column.read],
                &found.values,
                &keys[read.key_set].row_to_key,
                read.slots.len(),
                column.slot,
                read.ttl_seconds,
                now,
                &mut counts,
            );
        }

        self.metrics.entity_rows.increment(rows.rows as u64);
        for (counter, &n) in self.metrics.feature_values.iter().zip(&counts) {
            if n > 0 {
                counter.increment(n);
            }
        }

        Ok(OnlineFeatures {
            plan,
            include_metadata: req.include_metadata,
            rows: rows.rows,
            entities: echoed,
            features,
        })
    }
}

/// Appends one feature column: per request row, the value, status and event time of
/// its entity.
#[allow(clippy::too_many_arguments)]
fn push_feature_column(
    out: &mut FeatureColumns,
    found: &ViewRows,
    buffer: &[u8],
    row_to_key: &[u32],
    n_slots: usize,
    slot: usize,
    ttl_seconds: Option<i64>,
    now: i64,
    counts: &mut [u64; 5],
) {
    for &k in row_to_key {
        let k = k as usize;
        let stored = |k: usize| found.values.get(k * n_slots + slot).copied().flatten();
        let (value, status, ts) = match found
            .timestamps
            .get(k)
            .copied()
            .flatten()
            .map(|ts| (ts, stored(k)))
        {
            None => (Span::default(), FieldStatus::NotFound, Timestamp::default()),
            Some((ts, None)) => (Span::default(), FieldStatus::NotFound, ts),
            Some((ts, Some(v))) if is_null(v.of(buffer)) => {
                (Span::default(), FieldStatus::NullValue, ts)
            }
            Some((ts, Some(v))) => {
                let stale = ttl_seconds.is_some_and(|ttl| now.saturating_sub(ts.seconds) > ttl);
                let status = if stale {
                    FieldStatus::OutsideMaxAge
                } else {
                    FieldStatus::Present
                };
                (v, status, ts)
            }
        };
        counts[status as usize] += 1;
        out.values.push(value);
        out.statuses.push(status);
        out.event_timestamps.push(ts);
    }
    out.columns += 1;
}

/// A stored null: Feast writes an empty value; `Value{null_val: NULL}` means the same.
fn is_null(v: &[u8]) -> bool {
    v.is_empty() || v == [0x98, 0x01, 0x00]
}
