//! Feast's Redis online store layout, read in one round trip per request, and written
//! as Feast's materialization writes it.
//!
//! Layout (what Feast 0.67 writes): one hash per entity, keyed by the entity-key bytes
//! followed by the project name, shared by every view and version. A feature's field is
//! the 4-byte little-endian murmur3_32 (seed 0) of `{storage_name}:{feature}`
//! (`driver_stats`, `driver_stats_v1`, ...); `_ts:{storage_name}` holds the event time as
//! a serialized `google.protobuf.Timestamp`; values are serialized `feast.types.Value`s,
//! an empty value being a stored null. Field names are computed once per snapshot
//! (`StorageLayout`).
//!
//! A request's reads go out as one pipeline of HMGETs, one per entity (views of the
//! same entity share its hash, so one HMGET carries all their fields): on a single
//! server over one multiplexed connection; on a cluster as one pipeline per node,
//! grouped with a slot map kept here. On a cluster the pipelines are never split into
//! single commands: when the errors say the slot map is stale (MOVED, ASK, an unknown
//! node), the map is refreshed and those nodes' commands go once more, again as one
//! pipeline per node; any other error (a node down, CLUSTERDOWN) fails the request.
//! Every read is bounded by the store timeout, so an unreachable Redis gives a prompt
//! error rather than a hung request; reconnection is automatic.
//!
//! What the store holds is checked as it is read: a key that is not a hash, a `_ts`
//! field that is not a Timestamp, or a value that is not a `feast.types.Value` is a
//! [`StoreError::DataFault`], never served and never retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use ::redis::{
    Client, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, Pipeline,
    RedisConnectionInfo, ServerError, ServerErrorKind, Value,
};
use arc_swap::ArcSwap;
use prost::Message;
use prost_types::Timestamp;
use tokio::sync::Notify;

use super::{
    Found, OnlineStore, StorageLayout, StoreError, StoreKind, ValueArena, ViewRead, ViewRows,
    key_hex,
};
use crate::config::{KeySerialization, RedisConfig, RedisTls, RedisType};

/// The server script of [`RedisStore::write_batch`] (its arguments are described at
/// its top).
pub const WRITE_SCRIPT: &str = include_str!("redis_write.lua");

/// Keys per write script call on a single server: Redis runs a script without
/// serving anyone else, so a call stays well under a millisecond.
pub const KEYS_PER_SCRIPT: usize = 100;

/// The hash field of `feature` in the view stored as `storage_name`.
pub fn field_name(storage_name: &str, feature: &str) -> [u8; 4] {
    let mut name = Vec::with_capacity(storage_name.len() + 1 + feature.len());
    name.extend_from_slice(storage_name.as_bytes());
    name.push(b':');
    name.extend_from_slice(feature.as_bytes());
    mur3::murmurhash3_x86_32(&name, 0).to_le_bytes()
}

/// Store-level knobs.
#[derive(Debug, Clone, Copy)]
pub struct RedisSettings {
    /// Upper bound for one request's reads (and for connecting).
    pub timeout: Duration,
    /// Multiplexed connections to a single server, used in turn (each pipelines many
    /// requests; more than one helps only when one connection's I/O task saturates).
    pub connections: usize,
}

/// One entity's values of one view, as Feast's materialization hands them to
/// `online_write_batch`.
#[derive(Debug, Clone, Copy)]
pub struct WriteRow<'a> {
    /// Serialized entity key (no project suffix).
    pub entity_key: &'a [u8],
    /// `(feature name, serialized feast.types.Value)`; an empty value is a null.
    pub values: &'a [(&'a str, &'a [u8])],
    /// The row's event time.
    pub event_time: Timestamp,
}

/// What a [`RedisStore::write_batch`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Rows written.
    pub written: usize,
    /// Rows skipped: not newer than what the store (or an earlier row of the batch) holds.
    pub skipped: usize,
}

/// One view version whose fields [`RedisStore::delete_fields`] removes.
#[derive(Debug, Clone, Copy)]
pub struct ViewFields<'a> {
    /// Feast's storage name: `view`, or `view_vN` for version N > 0 with online
    /// versioning on.
    pub storage_name: &'a str,
    /// Every feature of that version.
    pub features: &'a [String],
}

/// What a [`RedisStore::delete_fields`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FieldsDeleted {
    /// Keys the scan returned. SCAN may return a key twice (while Redis rehashes):
    /// such a key is counted twice.
    pub scanned: usize,
    /// Keys that lost at least one field (a key left empty is gone).
    pub touched: usize,
    /// Keys the pattern matched that are not the project's Feast hashes (another
    /// project whose name ends with this one's, or not a hash): left alone.
    pub skipped: usize,
}

/// Handle to a Redis (or Redis Cluster) online store. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("name", &self.inner.name)
            .finish()
    }
}

struct Inner {
    backend: Backend,
    /// Appended to every entity key: Feast's Redis keys end with the project name.
    project: Vec<u8>,
    timeout: Duration,
    /// `redis host:port[,...]` for messages; never holds credentials.
    name: String,
    /// `key_ttl_seconds`: the expiry a write sets on the entity's key.
    key_ttl: Option<u64>,
}

enum Backend {
    /// Multiplexed connections that reconnect by themselves after I/O errors, used in
    /// turn.
    Single(Vec<ConnectionManager>, AtomicUsize),
    Cluster(Cluster),
}

struct Cluster {
    conn: ClusterConnection,
    /// Which node serves which slot, to send one pipeline per node. Refreshed by every
    /// health ping, and by a request whose pipelines say it is stale.
    slots: ArcSwap<SlotMap>,
    /// Set while a request refreshes the map, so that a burst of requests hitting a
    /// moved slot asks the cluster once. Only ever set through [`Refreshing`], which
    /// clears it when dropped: a refresh cancelled by the store timeout releases it.
    refreshing: AtomicBool,
    /// Wakes the requests that waited for that refresh.
    refreshed: Notify,
}

/// Ownership of [`Cluster::refreshing`].
struct Refreshing<'a>(&'a Cluster);

impl<'a> Refreshing<'a> {
    fn take(cluster: &'a Cluster) -> Option<Self> {
        (!cluster.refreshing.swap(true, Ordering::AcqRel)).then_some(Self(cluster))
    }
}

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        self.0.refreshing.store(false, Ordering::Release);
        self.0.refreshed.notify_waiters();
    }
}

/// One command of a pipeline and the key it addresses (for cluster routing).
struct Command {
    key: Vec<u8>,
    cmd: ::redis::Cmd,
}

/// Why the node pipelines of a cluster request failed.
enum Attempt {
    /// The slot map is out of date for the commands in `retry` (the rest answered):
    /// refresh it and send those once more.
    Stale {
        retry: Vec<usize>,
        error: StoreError,
    },
    /// Anything else: give up.
    Failed(StoreError),
}

impl Attempt {
    fn into_error(self) -> StoreError {
        match self {
            Attempt::Stale { error, .. } | Attempt::Failed(error) => error,
        }
    }
}

impl RedisStore {
    /// Prepares connections without waiting for Redis: a daemon starting while Redis is
    /// down still starts (health reports NOT_SERVING until Redis answers). Must run
    /// inside a tokio runtime.
    pub fn open(
        config: &RedisConfig,
        project: &str,
        settings: RedisSettings,
    ) -> Result<Self, StoreError> {
        install_crypto_provider();
        let name = format!("redis {}", config.display_nodes());
        let bad = |detail: String| StoreError::Unavailable {
            store: name.clone(),
            detail,
        };
        let certs = tls_certificates(config.tls.as_ref()).map_err(bad)?;
        let backend = match config.redis_type {
            RedisType::Single => {
                let (host, port) = config
                    .nodes
                    .first()
                    .cloned()
                    .ok_or_else(|| bad("no host:port".into()))?;
                let info = connection_info(config, &host, port).map_err(|e| bad(e.to_string()))?;
                let client = match certs {
                    Some(certs) => Client::build_with_tls(info, certs),
                    None => Client::open(info),
                }
                .map_err(|e| bad(e.to_string()))?;
                let manager = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(settings.timeout))
                    .set_response_timeout(Some(settings.timeout))
                    // Keep retrying quickly: Redis is expected back within seconds.
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500))
                    .set_number_of_retries(8);
                let connections = (0..settings.connections.max(1))
                    .map(|_| {
                        ConnectionManager::new_lazy_with_config(client.clone(), manager.clone())
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bad(e.to_string()))?;
                Backend::Single(connections, AtomicUsize::new(0))
            }
            RedisType::Cluster => {
                let mut nodes = Vec::with_capacity(config.nodes.len());
                for (host, port) in &config.nodes {
                    nodes.push(
                        connection_info(config, host, *port).map_err(|e| bad(e.to_string()))?,
                    );
                }
                let mut builder = ::redis::cluster::ClusterClientBuilder::new(nodes)
                    .connection_timeout(settings.timeout)
                    .response_timeout(settings.timeout)
                    // No resending by the client: a retried pipeline would reach Redis
                    // again for every entity. Retries are decided here, once per request.
                    .retries(0);
                if let Some(certs) = certs {
                    builder = builder.certs(certs);
                }
                let client = builder.build().map_err(|e| bad(e.to_string()))?;
                let conn = client.get_pending_async_connection_with_config(
                    ::redis::cluster::ClusterConfig::new(),
                );
                Backend::Cluster(Cluster {
                    conn,
                    slots: ArcSwap::from_pointee(SlotMap::default()),
                    refreshing: AtomicBool::new(false),
                    refreshed: Notify::new(),
                })
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                backend,
                project: project.as_bytes().to_vec(),
                timeout: settings.timeout,
                name,
                key_ttl: config.key_ttl_seconds,
            }),
        })
    }

    /// `redis host:port` for messages.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Writes one view's rows as Feast 0.67's `online_write_batch` does (its default
    /// path, `skip_dedup` off): a row whose event time is not newer than the stored
    /// `_ts` field (or than an earlier row of the batch for the same entity) is skipped;
    /// the others are written as one HSET of the `_ts` field (seconds and nanos) and
    /// the row's features, followed by an EXPIRE of the key when `key_ttl_seconds` is
    /// set.
    ///
    /// Feast reads every `_ts` in one round trip and writes in a second; here a server
    /// script checks and writes each key in one step (`redis_write.lua`), so the whole
    /// batch is one round trip and no concurrent writer can slip in between the check
    /// and the write. One script call carries up to [`KEYS_PER_SCRIPT`] keys on a single
    /// server (bounding how long it holds Redis from readers) and one key on a cluster
    /// (a script's keys must share a slot); on a cluster the calls go as one pipeline
    /// per node.
    pub async fn write_batch(
        &self,
        layout: &StorageLayout,
        rows: &[WriteRow<'_>],
    ) -> Result<Written, StoreError> {
        let per_call = match self.inner.backend {
            Backend::Single(..) => KEYS_PER_SCRIPT,
            Backend::Cluster(_) => 1,
        };
        let ttl = self.inner.key_ttl.unwrap_or(0).to_string();
        let groups: Vec<&[WriteRow<'_>]> = rows.chunks(per_call).collect();
        // Reused for every key and stamp: `arg` copies its bytes into the command.
        let (mut key, mut stamp) = (Vec::new(), Vec::new());
        let calls = groups
            .iter()
            .map(|group| {
                let mut cmd = ::redis::cmd("EVAL");
                cmd.arg(WRITE_SCRIPT).arg(group.len());
                for row in group.iter() {
                    key.clear();
                    key.extend_from_slice(row.entity_key);
                    key.extend_from_slice(&self.inner.project);
                    cmd.arg(&key[..]);
                }
                cmd.arg(&layout.redis_ts_field).arg(&ttl);
                for row in group.iter() {
                    stamp.clear();
                    // Encoding into a Vec cannot fail (it grows as needed).
                    let _ = row.event_time.encode(&mut stamp);
                    cmd.arg(row.event_time.seconds)
                        .arg(row.event_time.nanos)
                        .arg(&stamp[..])
                        .arg(row.values.len());
                    for &(feature, value) in row.values {
                        let field = layout
                            .feature_index
                            .get(feature)
                            .and_then(|&i| layout.redis_fields.get(i as usize))
                            .copied()
                            // Feast writes whatever features a row has, known to the view or not.
                            .unwrap_or_else(|| field_name(&layout.storage_name, feature));
                        cmd.arg(&field[..]).arg(value);
                    }
                }
                // Routes the call on a cluster (one key per call there).
                let first = group.first().map(|r| self.redis_key(r.entity_key));
                Command {
                    key: first.unwrap_or_default(),
                    cmd,
                }
            })
            .collect();
        let replies = self.send(calls).await?;

        let mut summary = Written::default();
        for (group, reply) in groups.iter().zip(replies) {
            let view = layout.storage_name.as_str();
            let states = match reply {
                Value::Array(states) if states.len() == group.len() => states,
                Value::ServerError(e) => {
                    return Err(self.reply_error(&e, view, group[0].entity_key));
                }
                other => {
                    return Err(self.protocol(format!("the write script answered {other:?}")));
                }
            };
            for (row, state) in group.iter().zip(states) {
                match state {
                    Value::Int(1) => summary.written += 1,
                    Value::Int(0) => summary.skipped += 1,
                    Value::Int(-1) => {
                        return Err(self.fault(
                            view,
                            row.entity_key,
                            format!("_ts:{view} field is not a protobuf Timestamp"),
                        ));
                    }
                    Value::BulkString(text) => {
                        let text = String::from_utf8_lossy(&text);
                        return Err(if text.starts_with("WRONGTYPE") {
                            self.fault(
                                view,
                                row.entity_key,
                                format!("the key is not a hash ({text})"),
                            )
                        } else {
                            self.unavailable_because(text.into_owned())
                        });
                    }
                    other => {
                        return Err(self.protocol(format!("the write script answered {other:?}")));
                    }
                }
            }
        }
        Ok(summary)
    }

    /// Feast's Redis key of an entity: its key bytes, then the project name.
    fn redis_key(&self, entity_key: &[u8]) -> Vec<u8> {
        let mut key = Vec::with_capacity(entity_key.len() + self.inner.project.len());
        key.extend_from_slice(entity_key);
        key.extend_from_slice(&self.inner.project);
        key
    }

    /// Removes the fields of `views` (their features and `_ts:` fields) from every
    /// entity hash of `project`, as deleting those views must: each node (every primary
    /// on a cluster) is walked with `SCAN cursor MATCH *{project} COUNT {batch}`, and
    /// each SCAN reply's keys get one pipeline of HDELs. A hash left empty is deleted by
    /// Redis itself. The glob also matches other projects whose name ends with
    /// `project` (`xproject`): only keys that are a valid `serialization` entity key
    /// followed by exactly `project` are touched.
    ///
    /// Idempotent: a run cut short (crash, timeout) is completed by running it again;
    /// a second run touches nothing. Not atomic: a write of the same views during the
    /// run can survive it, and a slot migrating on a cluster can hide keys from the
    /// scan (run it again). Every round trip is bounded by `timeout`; the store's own
    /// timeout (from [`RedisSettings`]) also bounds each one, so open the store with
    /// one at least as long.
    pub async fn delete_fields(
        &self,
        project: &str,
        serialization: KeySerialization,
        views: &[ViewFields<'_>],
        batch: usize,
        timeout: Duration,
    ) -> Result<FieldsDeleted, StoreError> {
        let mut fields: Vec<Vec<u8>> = Vec::new();
        for view in views {
            for feature in view.features {
                fields.push(field_name(view.storage_name, feature).to_vec());
            }
            fields.push(format!("_ts:{}", view.storage_name).into_bytes());
        }
        let mut summary = FieldsDeleted::default();
        if fields.is_empty() {
            return Ok(summary);
        }
        let mut pattern = b"*".to_vec();
        pattern.extend_from_slice(&glob_escape(project.as_bytes()));
        let count = batch.max(1);
        let bounded = |_: tokio::time::error::Elapsed| StoreError::Timeout {
            store: self.inner.name.clone(),
            after: timeout,
        };

        let nodes: Vec<Option<NodeAddr>> = match &self.inner.backend {
            Backend::Single(..) => vec![None],
            Backend::Cluster(cluster) => {
                let map = tokio::time::timeout(timeout, self.query_slots(cluster))
                    .await
                    .map_err(bounded)??;
                let mut primaries: Vec<NodeAddr> = map.ranges.iter().map(|r| r.2.clone()).collect();
                primaries.sort();
                primaries.dedup();
                primaries.into_iter().map(Some).collect()
            }
        };
        for node in &nodes {
            let mut cursor = 0_u64;
            loop {
                let mut scan = ::redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(count);
                let reply = tokio::time::timeout(timeout, self.scan_node(node.as_ref(), scan))
                    .await
                    .map_err(bounded)??;
                let (next, keys) = scan_reply(reply)
                    .ok_or_else(|| self.protocol("SCAN answered an unexpected shape".into()))?;
                summary.scanned += keys.len();
                let mut hdels = Vec::with_capacity(keys.len());
                for key in keys {
                    if !is_project_key(&key, project.as_bytes(), serialization) {
                        summary.skipped += 1;
                        continue;
                    }
                    let mut cmd = ::redis::cmd("HDEL");
                    cmd.arg(&key);
                    for field in &fields {
                        cmd.arg(field);
                    }
                    hdels.push(Command { key, cmd });
                }
                if !hdels.is_empty() {
                    let replies = tokio::time::timeout(timeout, self.send(hdels))
                        .await
                        .map_err(bounded)??;
                    for reply in replies {
                        match reply {
                            Value::Int(0) => {}
                            Value::Int(_) => summary.touched += 1,
                            // Feast's keys are hashes: this one is someone else's.
                            Value::ServerError(e) if e.code() == "WRONGTYPE" => {
                                summary.skipped += 1;
                            }
                            Value::ServerError(e) => {
                                return Err(self.unavailable_because(match e.details() {
                                    Some(detail) => format!("{} {detail}", e.code()),
                                    None => e.code().to_owned(),
                                }));
                            }
                            other => {
                                return Err(self.protocol(format!("HDEL answered {other:?}")));
                            }
                        }
                    }
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(summary)
    }

    /// One SCAN, to the single server or to one cluster node.
    async fn scan_node(
        &self,
        node: Option<&NodeAddr>,
        scan: ::redis::Cmd,
    ) -> Result<Value, StoreError> {
        let reply = match (&self.inner.backend, node) {
            (Backend::Single(connections, next), _) => {
                scan.query_async::<Value>(&mut pick(connections, next))
                    .await
            }
            (Backend::Cluster(cluster), Some((host, port))) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                cluster.conn.clone().route_command(scan, route).await
            }
            (Backend::Cluster(_), None) => {
                return Err(self.unavailable_because("no cluster node to scan".into()));
            }
        };
        reply.map_err(|e| self.unavailable(&e))
    }

    async fn read_inner(&self, reads: &[ViewRead]) -> Result<Found, StoreError> {
        let Hmgets {
            groups,
            targets,
            commands,
        } = commands(
            reads,
            &self.inner.project,
            matches!(self.inner.backend, Backend::Cluster(_)),
        );
        let replies = self.send(commands).await?;
        let mut out: Vec<ViewRows> = reads
            .iter()
            .map(|r| ViewRows::new(r.keys.len(), r.slots.len()))
            .collect();
        let mut arena = ValueArena::default();
        for (&(g, k), reply) in targets.iter().zip(replies) {
            let group = &groups[g];
            let entity_key = group.first().map_or(&[][..], |&r| reads[r].keys.get(k));
            let fields = match reply {
                Value::Array(fields) => fields,
                Value::ServerError(e) => {
                    let views: Vec<&str> = group
                        .iter()
                        .map(|&r| reads[r].layout.storage_name.as_str())
                        .collect();
                    return Err(self.reply_error(&e, &views.join(", "), entity_key));
                }
                other => return Err(self.protocol(format!("HMGET answered {other:?}"))),
            };
            let wanted: usize = group.iter().map(|&r| reads[r].slots.len() + 1).sum();
            if fields.len() != wanted {
                return Err(self.protocol(format!(
                    "HMGET answered {} fields for {wanted}",
                    fields.len(),
                )));
            }
            // Each read's fields, then its timestamp field, in the group's order.
            let mut fields = fields.as_slice();
            for &r in group {
                let read = &reads[r];
                let layout = &read.layout;
                let fault = |detail: String| self.fault(&layout.storage_name, entity_key, detail);
                let n_slots = read.slots.len();
                let (view, rest) = fields.split_at(n_slots + 1);
                fields = rest;
                let mut found = false;
                for (slot, field) in view[..n_slots].iter().enumerate() {
                    match field {
                        Value::BulkString(v) => {
                            let span = arena.push(v).map_err(|e| {
                                let feature = read
                                    .slots
                                    .get(slot)
                                    .and_then(|&f| layout.features.get(f as usize))
                                    .map_or("?", String::as_str);
                                fault(format!(
                                    "value of feature {feature} is not a serialized feast.types.Value ({e})"
                                ))
                            })?;
                            if let Some(cell) = out[r].values.get_mut(k * n_slots + slot) {
                                *cell = Some(span);
                            }
                            found = true;
                        }
                        Value::Nil => {}
                        other => {
                            return Err(self.protocol(format!("HMGET answered {other:?}")));
                        }
                    }
                }
                match &view[n_slots] {
                    Value::BulkString(raw) => {
                        let ts = event_time(raw).map_err(|e| {
                            fault(format!(
                                "_ts:{} field is not a protobuf Timestamp ({e})",
                                layout.storage_name
                            ))
                        })?;
                        out[r].timestamps[k] = Some(ts);
                    }
                    // Feast writes the two together: an event time cannot be made up.
                    Value::Nil if found => {
                        return Err(fault(format!(
                            "feature fields are stored without their _ts:{} field",
                            layout.storage_name
                        )));
                    }
                    // No field and no timestamp: the entity is not stored for this view.
                    Value::Nil => {}
                    other => return Err(self.protocol(format!("HMGET answered {other:?}"))),
                }
            }
        }
        Ok(arena.finish(out))
    }

    /// Sends `commands` in one pipeline (on a cluster, one per node) and answers their
    /// replies in order. A command's own error reply comes back in its place as a
    /// `Value::ServerError`, so the caller knows which key it concerns.
    async fn send(&self, mut commands: Vec<Command>) -> Result<Vec<Value>, StoreError> {
        let n = commands.len();
        let replies = match &self.inner.backend {
            Backend::Single(connections, next) => {
                let mut pipe = Pipeline::with_capacity(n);
                for c in &mut commands {
                    // Moved, not cloned: the command is not needed again.
                    pipe.add_command(std::mem::replace(&mut c.cmd, ::redis::Cmd::new()));
                }
                pipe.ignore_errors();
                let mut conn = pick(connections, next);
                pipe.query_async::<Vec<Value>>(&mut conn)
                    .await
                    .map_err(|e| self.unavailable(&e))?
            }
            Backend::Cluster(cluster) => self.cluster_send(cluster, &commands).await?,
        };
        if replies.len() != n {
            return Err(self.protocol(format!("{} replies for {n} commands", replies.len())));
        }
        Ok(replies)
    }

    async fn cluster_send(
        &self,
        cluster: &Cluster,
        commands: &[Command],
    ) -> Result<Vec<Value>, StoreError> {
        let map = cluster.slots.load_full();
        let map = if map.is_empty() {
            self.refresh_slots(cluster).await?
        } else {
            map
        };
        let mut replies = vec![Value::Nil; commands.len()];
        let all: Vec<usize> = (0..commands.len()).collect();
        match self
            .node_pipelines(cluster, &map, commands, &all, &mut replies)
            .await
        {
            Ok(()) => {}
            // Only the commands of the nodes that were wrong go again, once.
            Err(Attempt::Stale { retry, .. }) => {
                let map = self.refresh_slots(cluster).await?;
                self.node_pipelines(cluster, &map, commands, &retry, &mut replies)
                    .await
                    .map_err(Attempt::into_error)?;
            }
            Err(Attempt::Failed(e)) => return Err(e),
        }
        Ok(replies)
    }

    /// Sends `commands[members]` as one pipeline per node that `map` says serves their
    /// keys (commands in order within each) and stores each reply in `replies`.
    async fn node_pipelines(
        &self,
        cluster: &Cluster,
        map: &SlotMap,
        commands: &[Command],
        members: &[usize],
        replies: &mut [Value],
    ) -> Result<(), Attempt> {
        let mut groups: Vec<(&NodeAddr, Vec<usize>)> = Vec::new();
        let mut retry = Vec::new();
        let mut stale = None;
        for &i in members {
            let slot = key_slot(&commands[i].key);
            let Some(node) = map.node_for(slot) else {
                retry.push(i);
                stale.get_or_insert_with(|| {
                    self.unavailable_because(format!("no known node serves slot {slot}"))
                });
                continue;
            };
            match groups.iter_mut().find(|(n, _)| *n == node) {
                Some((_, group)) => group.push(i),
                None => groups.push((node, vec![i])),
            }
        }
        let sends = groups.iter().map(|(node, group)| {
            let mut conn = cluster.conn.clone();
            let mut pipe = Pipeline::with_capacity(group.len());
            for &i in group {
                pipe.add_command(commands[i].cmd.clone());
            }
            let route = SingleNodeRoutingInfo::ByAddress {
                host: node.0.clone(),
                port: node.1,
            };
            async move { conn.route_pipeline(pipe, 0, group.len(), route).await }
        });
        let answers = futures_util::future::join_all(sends).await;
        let mut failed = None;
        for ((_, group), answer) in groups.iter().zip(answers) {
            match answer {
                Ok(values) if values.len() == group.len() => {
                    for (&i, v) in group.iter().zip(values) {
                        replies[i] = v;
                    }
                }
                Ok(values) => {
                    failed = Some(self.protocol(format!(
                        "{} replies for {} commands",
                        values.len(),
                        group.len()
                    )));
                }
                Err(e) if map_is_stale(&e) => {
                    retry.extend_from_slice(group);
                    stale.get_or_insert_with(|| self.unavailable(&e));
                }
                Err(e) => failed = Some(self.unavailable(&e)),
            }
        }
        // A node that is down or refusing fails the request: another round would only
        // send the same commands to Redis again.
        match (failed, stale) {
            (Some(error), _) => Err(Attempt::Failed(error)),
            (None, Some(error)) => Err(Attempt::Stale { retry, error }),
            (None, None) => Ok(()),
        }
    }

    /// A fresh slot map for a request. If another request is already asking, waits for
    /// its answer instead of asking too.
    async fn refresh_slots(&self, cluster: &Cluster) -> Result<Arc<SlotMap>, StoreError> {
        let done = cluster.refreshed.notified();
        tokio::pin!(done);
        // Registered before looking at the flag, so a refresh ending in between wakes it.
        done.as_mut().enable();
        match Refreshing::take(cluster) {
            Some(_refreshing) => self.query_slots(cluster).await,
            None => {
                done.await;
                Ok(cluster.slots.load_full())
            }
        }
    }

    /// Asks the cluster for its slot map (CLUSTER SLOTS, to any node) and keeps it.
    async fn query_slots(&self, cluster: &Cluster) -> Result<Arc<SlotMap>, StoreError> {
        let reply = ::redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async::<Value>(&mut cluster.conn.clone())
            .await
            .map_err(|e| self.unavailable(&e))?;
        let map = SlotMap::parse(&reply)
            .ok_or_else(|| self.protocol("CLUSTER SLOTS answered an unexpected shape".into()))?;
        if map.is_empty() {
            return Err(self.unavailable_because("the cluster serves no slots".into()));
        }
        let map = Arc::new(map);
        cluster.slots.store(map.clone());
        Ok(map)
    }

    /// A command's own error reply for `entity_key` of `view`: WRONGTYPE means the key
    /// holds something else than Feast's hash (a data fault); anything else is Redis
    /// refusing to answer (loading, cluster down, ACL).
    fn reply_error(&self, e: &ServerError, view: &str, entity_key: &[u8]) -> StoreError {
        let text = match e.details() {
            Some(detail) => format!("{} {detail}", e.code()),
            None => e.code().to_owned(),
        };
        if e.code() == "WRONGTYPE" {
            return self.fault(view, entity_key, format!("the key is not a hash ({text})"));
        }
        self.unavailable_because(text)
    }

    fn fault(&self, view: &str, entity_key: &[u8], detail: String) -> StoreError {
        StoreError::DataFault {
            store: self.inner.name.clone(),
            view: view.to_owned(),
            key: key_hex(entity_key),
            detail,
        }
    }

    fn unavailable(&self, e: &::redis::RedisError) -> StoreError {
        if e.is_timeout() {
            return StoreError::Timeout {
                store: self.inner.name.clone(),
                after: self.inner.timeout,
            };
        }
        self.unavailable_because(e.to_string())
    }

    fn unavailable_because(&self, detail: String) -> StoreError {
        StoreError::Unavailable {
            store: self.inner.name.clone(),
            detail,
        }
    }

    fn protocol(&self, detail: String) -> StoreError {
        StoreError::Protocol {
            store: self.inner.name.clone(),
            detail,
        }
    }

    fn timeout(&self) -> StoreError {
        StoreError::Timeout {
            store: self.inner.name.clone(),
            after: self.inner.timeout,
        }
    }
}

impl OnlineStore for RedisStore {
    async fn read(&self, reads: Vec<ViewRead>) -> Result<Found, StoreError> {
        tokio::time::timeout(self.inner.timeout, self.read_inner(&reads))
            .await
            .unwrap_or_else(|_| Err(self.timeout()))
    }

    /// Asks Redis every time (never a cached answer): on a cluster, CLUSTER SLOTS to
    /// any node, which also keeps the slot map fresh; it fails when no node answers.
    async fn ping(&self) -> Result<(), StoreError> {
        let check = async {
            match &self.inner.backend {
                Backend::Single(connections, next) => ::redis::cmd("PING")
                    .query_async::<String>(&mut pick(connections, next))
                    .await
                    .map(drop)
                    .map_err(|e| self.unavailable(&e)),
                Backend::Cluster(cluster) => self.query_slots(cluster).await.map(drop),
            }
        };
        tokio::time::timeout(self.inner.timeout, check)
            .await
            .unwrap_or_else(|_| Err(self.timeout()))
    }

    fn kind(&self) -> StoreKind {
        StoreKind::Redis
    }
}

/// Errors that say a node pipeline went to the wrong node: the slot moved (MOVED, ASK),
/// the node was demoted (READONLY), or the client knows no such node any more.
fn map_is_stale(e: &::redis::RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Server(
            ServerErrorKind::Moved | ServerErrorKind::Ask | ServerErrorKind::ReadOnly
        ) | ErrorKind::ClusterConnectionNotFound
    )
}

/// Decodes a `_ts` field: a `google.protobuf.Timestamp` within the range the type
/// allows (years 1 to 9999, nanos below one second).
fn event_time(raw: &[u8]) -> Result<Timestamp, String> {
    const MIN_SECONDS: i64 = -62_135_596_800;
    const MAX_SECONDS: i64 = 253_402_300_799;
    let ts = Timestamp::decode(raw).map_err(|e| e.to_string())?;
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&ts.seconds) || !(0..1_000_000_000).contains(&ts.nanos)
    {
        return Err(format!(
            "seconds {} and nanos {} are out of range",
            ts.seconds, ts.nanos
        ));
    }
    Ok(ts)
}

fn pick(connections: &[ConnectionManager], next: &AtomicUsize) -> ConnectionManager {
    let i = next.fetch_add(1, Ordering::Relaxed) % connections.len().max(1);
    // `open` makes at least one connection.
    connections[i].clone()
}

/// The request's HMGETs. Views of the same entity share its hash in Feast's layout, and
/// their reads share one key batch: such reads form a group, and one HMGET per entity
/// asks for all of the group's fields (each read's features, then its `_ts` field).
/// A request's HMGETs, one per entity key. `keep_keys`: each command keeps its key
/// (a cluster routes by it).
fn commands(reads: &[ViewRead], project: &[u8], keep_keys: bool) -> Hmgets {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (r, read) in reads.iter().enumerate() {
        match groups.iter_mut().find(|g| {
            g.first()
                .is_some_and(|&f| Arc::ptr_eq(&reads[f].keys, &read.keys))
        }) {
            Some(group) => group.push(r),
            None => groups.push(vec![r]),
        }
    }
    let n: usize = groups
        .iter()
        .filter_map(|g| g.first())
        .map(|&r| reads[r].keys.len())
        .sum();
    let mut targets = Vec::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    let mut key = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        let Some(keys) = group.first().map(|&r| &reads[r].keys) else {
            continue;
        };
        // Every command of the group has the same fields: size it once.
        let (fields, field_bytes) = group.iter().fold((0, 0), |(n, bytes), &r| {
            let read = &reads[r];
            (
                n + read.slots.len() + 1,
                bytes + read.slots.len() * 4 + read.layout.redis_ts_field.len(),
            )
        });
        for (k, entity_key) in keys.iter().enumerate() {
            key.clear();
            key.extend_from_slice(entity_key);
            key.extend_from_slice(project);
            let mut cmd = ::redis::Cmd::with_capacity(2 + fields, 5 + key.len() + field_bytes);
            cmd.arg("HMGET").arg(&key);
            for &r in group {
                let read = &reads[r];
                for &slot in read.slots.iter() {
                    if let Some(field) = read.layout.redis_fields.get(slot as usize) {
                        cmd.arg(&field[..]);
                    }
                }
                cmd.arg(&read.layout.redis_ts_field);
            }
            targets.push((g, k));
            out.push(Command {
                key: if keep_keys { key.clone() } else { Vec::new() },
                cmd,
            });
        }
    }
    Hmgets {
        groups,
        targets,
        commands: out,
    }
}

/// A request's HMGETs and where their answers go.
struct Hmgets {
    /// Indexes of the reads sharing one key batch.
    groups: Vec<Vec<usize>>,
    /// Per command: its group, and the entity's position in the group's key batch.
    targets: Vec<(usize, usize)>,
    commands: Vec<Command>,
}

/// `SCAN`'s reply: the next cursor and the keys.
fn scan_reply(reply: Value) -> Option<(u64, Vec<Vec<u8>>)> {
    let Value::Array(mut parts) = reply else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let keys = match parts.pop()? {
        Value::Array(keys) => keys
            .into_iter()
            .map(|k| match k {
                Value::BulkString(k) => Some(k),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?,
        _ => return None,
    };
    let cursor = match parts.pop()? {
        Value::BulkString(c) => std::str::from_utf8(&c).ok()?.parse().ok()?,
        Value::SimpleString(c) => c.parse().ok()?,
        Value::Int(c) => u64::try_from(c).ok()?,
        _ => return None,
    };
    Some((cursor, keys))
}

/// `text` as a Redis glob matching itself only.
fn glob_escape(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for &b in text {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// True when `key` is Feast's Redis key of an entity of `project`: a serialized entity
/// key followed by exactly the project name.
///
/// With v3 (Feast's default) the check is exact: a v3 key carries its count and every
/// length, so no valid key is a prefix of another, and the key of project `xproject`
/// (`E` + `x` + `project`) never reads as a valid key `E` + `x`. v2 names carry no
/// length, so there the check is structural only: a key of a project whose name ends
/// with this one's passes only if its entity-key bytes plus the extra letters happen
/// to read as a v2 key (string values holding key-like bytes).
fn is_project_key(key: &[u8], project: &[u8], serialization: KeySerialization) -> bool {
    let Some(entity_key) = key.strip_suffix(project) else {
        return false;
    };
    match serialization {
        KeySerialization::V3 => v3_key_len(entity_key) == Some(entity_key.len()),
        KeySerialization::V2 => is_v2_key(entity_key),
    }
}

/// The type tag of a join-key name in a serialized key (STRING).
const NAME_TAG: [u8; 4] = 2_u32.to_le_bytes();

fn read_u32(b: &[u8], at: usize) -> Option<usize> {
    let bytes: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(bytes)).ok()
}

/// `tag, len, bytes` at `at`: the position after it.
fn skip_tagged(b: &[u8], at: usize) -> Option<usize> {
    let len = read_u32(b, at + 4)?;
    let end = at.checked_add(8)?.checked_add(len)?;
    (end <= b.len()).then_some(end)
}

/// Length of the v3 entity key `b` starts with: count, then per name `2, len, utf8`,
/// then per value `tag, len, bytes`.
fn v3_key_len(b: &[u8]) -> Option<usize> {
    let count = read_u32(b, 0)?;
    let mut at = 4;
    for _ in 0..count {
        if b.get(at..at + 4)? != NAME_TAG {
            return None;
        }
        at = skip_tagged(b, at)?;
    }
    for _ in 0..count {
        read_u32(b, at)?;
        at = skip_tagged(b, at)?;
    }
    Some(at)
}

/// A v2 entity key: per name `2, utf8` (no length), then as many values `tag, len,
/// bytes` as names. With no name lengths, every place the values could start is tried.
fn is_v2_key(b: &[u8]) -> bool {
    (5..b.len()).any(|start| {
        v2_values(&b[start..]).is_some_and(|n| n > 0 && n <= v2_max_names(&b[..start]))
    })
}

/// How many `tag, len, bytes` values fill `b` exactly.
fn v2_values(b: &[u8]) -> Option<usize> {
    let (mut at, mut n) = (0, 0);
    while at < b.len() {
        read_u32(b, at)?;
        at = skip_tagged(b, at)?;
        n += 1;
    }
    Some(n)
}

/// The most names (`2` then at least one byte) `b` splits into; 0 when it does not
/// start with one. Any count from 1 to that also splits it (merge neighbours).
fn v2_max_names(b: &[u8]) -> usize {
    if !b.starts_with(&NAME_TAG) || b.len() < 5 {
        return 0;
    }
    let (mut names, mut last) = (1, 0);
    // Greedy: the earliest next name leaves the most room for more.
    for at in 5..b.len().saturating_sub(4) {
        if at >= last + 5 && b[at..].starts_with(&NAME_TAG) {
            names += 1;
            last = at;
        }
    }
    names
}

fn connection_info(
    config: &RedisConfig,
    host: &str,
    port: u16,
) -> ::redis::RedisResult<ConnectionInfo> {
    let addr = match &config.tls {
        Some(tls) => ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: !tls.verify,
            tls_params: None,
        },
        None => ConnectionAddr::Tcp(host.to_owned(), port),
    };
    let mut redis = RedisConnectionInfo::default().set_db(config.db);
    if let Some(user) = &config.username {
        redis = redis.set_username(user);
    }
    if let Some(password) = &config.password {
        redis = redis.set_password(password);
    }
    Ok(addr.into_connection_info()?.set_redis_settings(redis))
}

fn tls_certificates(tls: Option<&RedisTls>) -> Result<Option<::redis::TlsCertificates>, String> {
    let Some(tls) = tls else { return Ok(None) };
    if tls.ca_certs.is_none() && tls.client_cert.is_none() {
        return Ok(None);
    }
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
    };
    let root_cert = tls
        .ca_certs
        .as_deref()
        .map(|p| read(p, "ssl_ca_certs"))
        .transpose()?;
    let client_tls = match &tls.client_cert {
        Some((cert, key)) => Some(::redis::ClientTlsConfig {
            client_cert: read(cert, "ssl_certfile")?,
            client_key: read(key, "ssl_keyfile")?,
        }),
        None => None,
    };
    Ok(Some(::redis::TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// rustls needs one process-wide crypto provider; redis does not pick one.
fn install_crypto_provider() {
    // Err means one is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `(host, port)` of a cluster node.
type NodeAddr = (String, u16);

/// Slot ranges and the primary serving each, from `CLUSTER SLOTS`.
#[derive(Debug, Default)]
struct SlotMap {
    /// `(first slot, last slot, primary)`, sorted by first slot.
    ranges: Vec<(u16, u16, NodeAddr)>,
}

impl SlotMap {
    fn parse(reply: &Value) -> Option<Self> {
        let Value::Array(entries) = reply else {
            return None;
        };
        let mut ranges = Vec::with_capacity(entries.len());
        for entry in entries {
            let Value::Array(parts) = entry else {
                return None;
            };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(primary))) =
                (parts.first(), parts.get(1), parts.get(2))
            else {
                return None;
            };
            let host = match primary.first() {
                Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
                Some(Value::SimpleString(h)) => h.clone(),
                _ => return None,
            };
            let Some(Value::Int(port)) = primary.get(1) else {
                return None;
            };
            ranges.push((
                u16::try_from(*start).ok()?,
                u16::try_from(*end).ok()?,
                (host, u16::try_from(*port).ok()?),
            ));
        }
        ranges.sort_by_key(|r| r.0);
        Some(Self { ranges })
    }

    fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    fn node_for(&self, slot: u16) -> Option<&NodeAddr> {
        let i = self
            .ranges
            .partition_point(|r| r.0 <= slot)
            .checked_sub(1)?;
        self.ranges.get(i).filter(|r| slot <= r.1).map(|r| &r.2)
    }
}

/// Redis Cluster's slot of a key: CRC16 (XMODEM) of the key, or of its `{hash tag}`,
/// modulo 16384. Computed over raw bytes: Feast's keys are binary.
fn key_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .map(|close| &rest[..close])
        })
        .filter(|tag| !tag.is_empty())
        .unwrap_or(key);
    crc16_xmodem(tagged) % 16384
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_match_feast() {
        // Vectors from Feast's layout (mmh3, seed 0, little-endian).
        assert_eq!(
            field_name("driver_hourly_stats", "conv_rate"),
            [0x61, 0x60, 0xe3, 0xda]
        );
        assert_eq!(
            field_name("driver_hourly_stats", "acc_rate"),
            [0xfa, 0x5e, 0x58, 0xad]
        );
        assert_eq!(
            field_name("driver_hourly_stats_v1", "conv_rate"),
            [0xf6, 0x64, 0x37, 0xf8]
        );
        assert_eq!(
            u32::from_le_bytes(field_name("driver_stats", "conv_rate")),
            336_622_586
        );
    }

    fn v3_key(id: i64) -> Vec<u8> {
        let mut k = crate::store::key::key_prefix(&["driver_id"], KeySerialization::V3);
        crate::store::key::push_value(&mut k, &crate::store::EntityValue::Int64(id));
        k
    }

    #[test]
    fn project_keys_v3_are_exact() {
        let with = |entity: &[u8], project: &[u8]| [entity, project].concat();
        let k = v3_key(1001);
        assert!(is_project_key(
            &with(&k, b"proj"),
            b"proj",
            KeySerialization::V3
        ));
        // Another project whose name ends with this one's.
        assert!(!is_project_key(
            &with(&k, b"xproj"),
            b"proj",
            KeySerialization::V3
        ));
        assert!(!is_project_key(
            &with(&k, b"proj"),
            b"xproj",
            KeySerialization::V3
        ));
        assert!(!is_project_key(b"proj", b"proj", KeySerialization::V3));
        assert!(!is_project_key(
            b"somethingproj",
            b"proj",
            KeySerialization::V3
        ));
        // Two join keys, a string value that ends like the project, the empty key.
        let mut two =
            crate::store::key::key_prefix(&["customer_id", "driver_id"], KeySerialization::V3);
        crate::store::key::push_value(&mut two, &crate::store::EntityValue::String("xp".into()));
        crate::store::key::push_value(&mut two, &crate::store::EntityValue::Int64(7));
        assert!(is_project_key(
            &with(&two, b"proj"),
            b"proj",
            KeySerialization::V3
        ));
        assert!(!is_project_key(
            &with(&two, b"xproj"),
            b"proj",
            KeySerialization::V3
        ));
        assert!(is_project_key(
            &with(&[0, 0, 0, 0], b"p"),
            b"p",
            KeySerialization::V3
        ));
        // Cut or padded keys.
        assert!(!is_project_key(
            &with(&k[..k.len() - 1], b"p"),
            b"p",
            KeySerialization::V3
        ));
        assert!(!is_project_key(
            &with(&[&k[..], b"\0"].concat(), b"p"),
            b"p",
            KeySerialization::V3
        ));
        // A count far larger than the key.
        assert!(!is_project_key(
            &with(&[255, 255, 255, 255], b"p"),
            b"p",
            KeySerialization::V3
        ));
    }

    #[test]
    fn project_keys_v2() {
        let mut k = crate::store::key::key_prefix(&["driver_id"], KeySerialization::V2);
        crate::store::key::push_value(&mut k, &crate::store::EntityValue::Int64(1001));
        let with = |project: &[u8]| [&k[..], project].concat();
        assert!(is_project_key(
            &with(b"proj"),
            b"proj",
            KeySerialization::V2
        ));
        assert!(!is_project_key(
            &with(b"xproj"),
            b"proj",
            KeySerialization::V2
        ));
        let mut two =
            crate::store::key::key_prefix(&["customer_id", "driver_id"], KeySerialization::V2);
        crate::store::key::push_value(&mut two, &crate::store::EntityValue::String("c1".into()));
        crate::store::key::push_value(&mut two, &crate::store::EntityValue::Int64(7));
        assert!(is_project_key(
            &[&two[..], b"p"].concat(),
            b"p",
            KeySerialization::V2
        ));
        // A v3 key starts with the count, not a name; no values at all is no key. (A
        // cut value can still read as a key: v2 is ambiguous, see is_project_key.)
        assert!(!is_project_key(
            &[&k[..20], b"p"].concat(),
            b"p",
            KeySerialization::V2
        ));
        assert!(!is_project_key(
            &[&v3_key(1)[..], b"p"].concat(),
            b"p",
            KeySerialization::V2
        ));
    }

    #[test]
    fn glob_is_escaped() {
        assert_eq!(glob_escape(b"tern_demo"), b"tern_demo");
        assert_eq!(glob_escape(b"a*b?[c]\\d"), b"a\\*b\\?\\[c\\]\\\\d");
    }

    #[test]
    fn scan_replies() {
        let bulk = |s: &[u8]| Value::BulkString(s.to_vec());
        assert_eq!(
            scan_reply(Value::Array(vec![
                bulk(b"17"),
                Value::Array(vec![bulk(b"a"), bulk(b"\xff")])
            ])),
            Some((17, vec![b"a".to_vec(), b"\xff".to_vec()]))
        );
        assert_eq!(
            scan_reply(Value::Array(vec![bulk(b"0"), Value::Array(vec![])])),
            Some((0, vec![]))
        );
        assert_eq!(
            scan_reply(Value::Array(vec![bulk(b"x"), Value::Array(vec![])])),
            None
        );
        assert_eq!(scan_reply(Value::Array(vec![bulk(b"0")])), None);
        assert_eq!(scan_reply(Value::Nil), None);
    }

    #[test]
    fn slots_match_redis() {
        // Values from Redis' CLUSTER KEYSLOT.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(
            key_slot(b"foo{}{bar}"),
            key_slot(b"foo{}{bar}"),
            "empty tag: whole key"
        );
        assert_eq!(key_slot(b"foo{}{bar}"), crc16_xmodem(b"foo{}{bar}") % 16384);
        assert_eq!(crc16_xmodem(b"123456789"), 0x31c3);
    }

    #[test]
    fn slot_map_lookup() {
        let n = |p| ("127.0.0.1".to_owned(), p);
        let map = SlotMap {
            ranges: vec![(0, 5460, n(1)), (5461, 10922, n(2)), (10923, 16383, n(3))],
        };
        assert_eq!(map.node_for(0), Some(&n(1)));
        assert_eq!(map.node_for(5461), Some(&n(2)));
        assert_eq!(map.node_for(16383), Some(&n(3)));
        let gap = SlotMap {
            ranges: vec![(10, 20, n(1))],
        };
        assert_eq!(gap.node_for(5), None);
        assert_eq!(gap.node_for(21), None);
    }
}
