//! GetOnlineFeatures, independent of any transport.
//!
//! Owns: one request from start to finish against one registry snapshot: plan
//! (cached), entity keys, one batched store read, columnar response with statuses.
//! Does not own: gRPC (the `grpc` module converts at the edge), ref syntax (`refs`),
//! storage layouts (`store`).

pub mod entities;
pub mod plan;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prost::Message;
use prost_types::Timestamp;

pub use entities::EntityError;
pub use plan::{Plan, PlanCache, Selection};

use crate::error::Error;
use crate::metrics as m;
use crate::proto::feast::serving::FieldStatus;
use crate::proto::tern::wire::{Column, FeatureVector, GetOnlineFeaturesResponse};
use crate::registry::Registry;
use crate::store::{OnlineStore, Store, ViewRead, ViewRows};
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
    /// Fill `metadata.feature_view_metadata`.
    pub include_metadata: bool,
}

/// The serving core: registry, store and clock.
#[derive(Debug)]
pub struct Serving {
    registry: Arc<Registry>,
    store: Store,
    clock: Clock,
    plans: PlanCache,
    /// Requests being answered (a gauge; also lets tests see a request in flight).
    in_flight: AtomicUsize,
}

/// Counts a request as in flight until dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!(m::IN_FLIGHT).set(n as f64);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let n = self.0.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        metrics::gauge!(m::IN_FLIGHT).set(n as f64);
    }
}

impl Serving {
    /// A serving core over a loaded registry and an open store.
    pub fn new(registry: Arc<Registry>, store: Store, clock: Clock) -> Self {
        Self {
            registry,
            store,
            clock,
            plans: PlanCache::default(),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Requests being answered right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The registry handle.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The online store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Number of cached resolution plans (for tests and diagnostics).
    pub fn cached_plans(&self) -> usize {
        self.plans.len()
    }

    /// Answers one request.
    pub async fn get_online_features(
        &self,
        req: Request<'_>,
    ) -> Result<GetOnlineFeaturesResponse, Error> {
        let _in_flight = InFlight::enter(&self.in_flight);
        // One snapshot for the whole request, even if a reload publishes another.
        let snapshot = self.registry.snapshot();
        let selection = req.selection.ok_or(Error::NoFeatures)?;
        let plan = self
            .plans
            .get(&snapshot, selection, req.full_feature_names)?;
        let rows = EntityRows::new(req.entities)?;

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
                keys: keys[r.key_set].batch.clone(),
            })
            .collect();

        let started = Instant::now();
        let result = self.store.read(reads).await;
        let store = self.store.kind().as_str();
        metrics::histogram!(m::STORE_READ_DURATION, "store" => store)
            .record(started.elapsed().as_secs_f64());
        let found = result.inspect_err(|e| {
            metrics::counter!(m::STORE_ERRORS, "store" => store, "kind" => store_error_kind(e))
                .increment(1);
        })?;
        if found.len() != plan.reads.len() {
            return Err(Error::Internal(format!(
                "the online store answered {} reads out of {}",
                found.len(),
                plan.reads.len()
            )));
        }

        let now = self.clock.now_seconds();
        let mut counts = [0u64; 5];
        let mut entity_names: Vec<&str> = Vec::with_capacity(rows.columns.len());
        let mut results = Vec::with_capacity(rows.columns.len() + plan.columns.len());

        for &(name, values) in &rows.columns {
            let Some(echo) = plan.entity_columns.get(name) else {
                continue;
            };
            // An entity-name column is echoed as its join key, unless that is sent too.
            if echo.output != name && rows.column(&echo.output).is_some() {
                continue;
            }
            entity_names.push(&echo.output);
            results.push(FeatureVector {
                values: values
                    .iter()
                    .map(|v| {
                        let typed = entities::coerced_value(v, echo.value_type);
                        Bytes::from(typed.as_ref().unwrap_or(v).encode_to_vec())
                    })
                    .collect(),
                statuses: vec![FieldStatus::Present as i32; rows.rows],
                event_timestamps: vec![Timestamp::default(); rows.rows],
            });
        }

        for column in &plan.columns {
            let read = &plan.reads[column.read];
            let vector = feature_column(
                &found[column.read],
                &keys[read.key_set].row_to_key,
                read.slots.len(),
                column.slot,
                read.ttl_seconds,
                now,
                &mut counts,
            );
            results.push(vector);
        }

        metrics::counter!(m::ENTITY_ROWS).increment(rows.rows as u64);
        for (status, &n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
            metrics::counter!(m::FEATURE_VALUES, "status" => m::FIELD_STATUS_LABELS[status])
                .increment(n);
        }

        Ok(GetOnlineFeaturesResponse {
            metadata: metadata_bytes(&entity_names, &plan, req.include_metadata),
            results,
            status: false,
        })
    }
}

/// One feature column: per request row, the value, status and event time of its entity.
fn feature_column(
    found: &ViewRows,
    row_to_key: &[u32],
    n_slots: usize,
    slot: usize,
    ttl_seconds: Option<i64>,
    now: i64,
    counts: &mut [u64; 5],
) -> FeatureVector {
    let mut vector = FeatureVector {
        values: Vec::with_capacity(row_to_key.len()),
        statuses: Vec::with_capacity(row_to_key.len()),
        event_timestamps: Vec::with_capacity(row_to_key.len()),
    };
    for &k in row_to_key {
        let k = k as usize;
        let stored = |k: usize| found.values.get(k * n_slots + slot).cloned().flatten();
        let (value, status, ts) = match found
            .timestamps
            .get(k)
            .copied()
            .flatten()
            .map(|ts| (ts, stored(k)))
        {
            None => (Bytes::new(), FieldStatus::NotFound, Timestamp::default()),
            Some((ts, None)) => (Bytes::new(), FieldStatus::NotFound, ts),
            Some((ts, Some(v))) if is_null(&v) => (Bytes::new(), FieldStatus::NullValue, ts),
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
        vector.values.push(value);
        vector.statuses.push(status as i32);
        vector.event_timestamps.push(ts);
    }
    vector
}

/// Encodes `GetOnlineFeaturesResponseMetadata`: the request's entity column names,
/// then the plan's pre-encoded feature names and (when asked) view versions.
fn metadata_bytes(entity_names: &[&str], plan: &Plan, include_views: bool) -> Bytes {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
    let mut names = Vec::with_capacity(
        entity_names.iter().map(|n| n.len() + 2).sum::<usize>() + plan.encoded_feature_names.len(),
    );
    for name in entity_names {
        // FeatureList.val (field 1), written from the borrowed name.
        encode_key(1, WireType::LengthDelimited, &mut names);
        encode_varint(name.len() as u64, &mut names);
        names.extend_from_slice(name.as_bytes());
    }
    names.extend_from_slice(&plan.encoded_feature_names);
    let views: &[u8] = if include_views {
        &plan.encoded_view_metadata
    } else {
        &[]
    };
    let mut out =
        Vec::with_capacity(1 + encoded_len_varint(names.len() as u64) + names.len() + views.len());
    // field 1: feature_names (a FeatureList whose only field is the repeated names)
    encode_key(1, WireType::LengthDelimited, &mut out);
    encode_varint(names.len() as u64, &mut out);
    out.extend_from_slice(&names);
    out.extend_from_slice(views);
    Bytes::from(out)
}

/// A stored null: Feast writes an empty value; `Value{null_val: NULL}` means the same.
fn is_null(v: &[u8]) -> bool {
    v.is_empty() || v == [0x98, 0x01, 0x00]
}

fn store_error_kind(e: &crate::store::StoreError) -> &'static str {
    use crate::store::StoreError as E;
    match e {
        E::MissingTable { .. } => "missing_table",
        E::Busy { .. } => "busy",
        E::Sqlite { .. } => "sqlite",
        E::Overloaded { .. } => "overloaded",
        E::Thread(_) => "thread",
        E::Closed => "closed",
        E::Unavailable { .. } => "unavailable",
        E::Timeout { .. } => "timeout",
        E::Protocol { .. } => "protocol",
        E::DataFault { .. } => "data",
    }
}
