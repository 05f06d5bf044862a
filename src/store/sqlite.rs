//! Feast's SQLite online store layout, read (and written) as Feast does.
//!
//! One table per view version, `{project}_{view}[_vN]`, one row per (entity, feature):
//! `entity_key BLOB` (the key bytes, no project suffix), `feature_name TEXT`,
//! `value BLOB` (a serialized `feast.types.Value`; an empty blob is a stored null),
//! `event_ts` integer epoch seconds.
//!
//! Small reads (a few keys: the usual one-entity lookup) run on the calling thread,
//! on one of a few connections kept for that: a read of pages SQLite or the OS already
//! caches takes microseconds, less than the two thread wake-ups a hand-off costs. Such a
//! read never waits: it has no busy handler (a writer's lock makes it fail at once)
//! and a short work budget; when either stops it, or no inline connection is free, the
//! read goes to the pool below (BENCHMARKS.md has the measurements behind this).
//!
//! Every other read runs on a small pool of dedicated threads, each owning one
//! read-only connection: large or waiting SQLite calls must stay off the tokio reactor,
//! and a connection per thread keeps its prepared statements warm (the per-table SELECT
//! is prepared once per connection, then reused). Requests reach the pool through a
//! bounded queue; when it is full the read fails fast (RESOURCE_EXHAUSTED) instead
//! of queueing without bound.
//!
//! Every read carries a deadline (the store timeout): the caller stops waiting there
//! (DEADLINE_EXCEEDED), a reader skips a job whose caller has given up, and a job that
//! is still running at its deadline is stopped (SQLite's busy and progress handlers
//! give up), so a reader thread is never held by a request nobody waits for.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use prost_types::Timestamp;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::oneshot;

use super::{
    EntityWrite, Found, OnlineStore, StorageLayout, StoreError, StoreKind, ValueArena, ViewRead,
    ViewRows, Written, key_hex,
};

/// Reads waiting for a connection before new ones are refused.
const QUEUE_CAPACITY: usize = 4096;
/// Prepared statements kept per connection: one per table read.
const STATEMENT_CACHE: usize = 512;
/// SQLite virtual-machine steps between two deadline checks of a running query: a
/// clock read every few microseconds of work, invisible next to the query itself.
const PROGRESS_STEPS: i32 = 1000;
/// Longest single pause while waiting for a writer's lock.
const LOCK_POLL_MAX: Duration = Duration::from_millis(10);
/// How a SQLite store runs its reads.
#[derive(Debug, Clone, Copy)]
pub struct SqliteSettings {
    /// Reader threads, one read-only connection each.
    pub readers: usize,
    /// Reads of at most this many keys (all views together) run on the calling thread;
    /// 0 sends every read to the reader threads.
    pub inline_max_keys: usize,
    /// Connections kept for inline reads: as many as threads that call `read` at once
    /// (the runtime's workers). A read finding none free goes to the pool.
    pub inline_connections: usize,
    /// Work an inline read may do on the caller's thread before it is stopped and
    /// handed to the pool: bounds how long one read holds a runtime worker.
    pub inline_budget: Duration,
    /// Upper bound for one read, from its call to its answer.
    pub timeout: Duration,
    /// Bytes of the database file each read connection maps into memory
    /// (`PRAGMA mmap_size`); 0 reads every page with a system call.
    pub mmap_size: u64,
}

impl SqliteSettings {
    /// Reads of up to this many keys run inline by default (see the module docs).
    pub const INLINE_MAX_KEYS: usize = 8;
    /// The default inline work budget.
    pub const INLINE_BUDGET: Duration = Duration::from_micros(250);
    /// The default memory map: none. Mapping the file saves the `pread` and the copy
    /// per page, which pays on large reads (100 keys: 5-12% less CPU) but not on
    /// single-key reads at moderate load, which it made slower (first touches of
    /// pages fault; BENCHMARKS.md). `--sqlite-mmap-size` turns it on.
    pub const MMAP_SIZE: u64 = 0;

    /// `readers` reader threads and `timeout`, inline reads as by default.
    pub fn new(readers: usize, timeout: Duration) -> Self {
        Self {
            readers,
            inline_max_keys: Self::INLINE_MAX_KEYS,
            inline_connections: std::thread::available_parallelism().map_or(2, |n| n.get()),
            inline_budget: Self::INLINE_BUDGET,
            timeout,
            mmap_size: Self::MMAP_SIZE,
        }
    }
}

/// The SELECT for one table. `rarray(?1)` binds the whole key batch as one parameter,
/// so the statement text (and its cached plan) does not depend on the batch size.
/// Driving the join from the array makes SQLite seek the table's key index once per
/// key with no temporary index (faster than `IN rarray(?1)`), and the array's rowid is
/// the key's 1-based position in the batch, so rows need no key lookup at all.
pub(crate) fn select_statement(table: &str) -> String {
    format!(
        "SELECT k.rowid, t.feature_name, t.value, t.event_ts FROM rarray(?1) AS k JOIN {} AS t ON t.entity_key = k.value",
        quote_identifier(table)
    )
}

/// The SELECT for one key (the usual single-entity request): a plain index seek, with
/// none of `rarray`'s virtual-table work. The same columns as [`select_statement`],
/// with the key's position fixed at 1.
pub(crate) fn point_select_statement(table: &str) -> String {
    format!(
        "SELECT 1, feature_name, value, event_ts FROM {} WHERE entity_key = ?1",
        quote_identifier(table)
    )
}

/// Double-quotes an identifier, doubling embedded quotes (as Feast does).
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Handle to the reader pool. Cheap to clone; the threads stop when the last clone
/// is dropped.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Arc<Db>,
    jobs: Sender<Job>,
    /// Idle connections for inline reads (taken for one synchronous read, never across
    /// an await).
    inline: std::sync::Mutex<Vec<Connection>>,
    inline_max_keys: usize,
    inline_budget: Duration,
    /// `tern_sqlite_reads_total` by path: inline, handed over, pool.
    counted: [metrics::Counter; 3],
    /// The one read-write connection, opened by the first online write. SQLite allows
    /// one writer at a time anyway; a mutex (taken only on blocking threads) queues
    /// writes in this process instead of making them spin on the file lock.
    writer: Arc<std::sync::Mutex<Option<Connection>>>,
}

/// What the readers and their errors need to know about the database.
#[derive(Debug)]
struct Db {
    path: PathBuf,
    /// `PRAGMA mmap_size` of every read connection.
    mmap_size: u64,
    /// `sqlite {path}`, for messages.
    name: String,
    /// Upper bound for one read, from enqueueing to answer.
    timeout: Duration,
    /// Jobs a reader dropped unrun because their caller had given up.
    skipped: AtomicU64,
    /// Reads answered inline.
    inline_reads: AtomicU64,
    /// Inline reads stopped (a writer's lock, or over budget) and handed to the pool.
    inline_declined: AtomicU64,
}

impl Db {
    /// When a read started now must be answered.
    fn deadline(&self) -> Instant {
        let now = Instant::now();
        // A timeout too large to add is no bound at all; a day stands in for it.
        now.checked_add(self.timeout)
            .unwrap_or(now + Duration::from_secs(86_400))
    }

    fn timeout_error(&self) -> StoreError {
        StoreError::Timeout {
            store: self.name.clone(),
            after: self.timeout,
        }
    }
}

struct Job {
    reads: Vec<ViewRead>,
    /// When the caller stops waiting.
    deadline: Instant,
    reply: oneshot::Sender<Result<Found, StoreError>>,
}

impl SqliteStore {
    /// Opens the read-only connections to `path` (the reader threads' and the inline
    /// ones) and starts the reader threads. Every read is answered within the timeout
    /// (or fails with [`StoreError::Timeout`]). Blocking: call it at start-up (or from
    /// `spawn_blocking`).
    pub fn open(path: &Path, settings: SqliteSettings) -> Result<Self, StoreError> {
        let db = Arc::new(Db {
            path: path.to_owned(),
            mmap_size: settings.mmap_size,
            name: format!("sqlite {}", path.display()),
            timeout: settings.timeout,
            skipped: AtomicU64::new(0),
            inline_reads: AtomicU64::new(0),
            inline_declined: AtomicU64::new(0),
        });
        let inline_connections = if settings.inline_max_keys == 0 {
            0
        } else {
            settings.inline_connections
        };
        let inline = (0..inline_connections)
            .map(|_| {
                let conn = open_reader(&db)?;
                // Never wait on the caller's thread: a locked database goes to the pool.
                conn.busy_handler(None)
                    .map_err(|cause| StoreError::Sqlite {
                        path: db.path.clone(),
                        cause,
                    })?;
                Ok(conn)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let (tx, rx) = crossbeam_channel::bounded::<Job>(QUEUE_CAPACITY);
        for i in 0..settings.readers.max(1) {
            let conn = open_reader(&db)?;
            let rx = rx.clone();
            let db = db.clone();
            std::thread::Builder::new()
                .name(format!("tern-sqlite-{i}"))
                .spawn(move || worker(conn, &db, rx))
                .map_err(StoreError::Thread)?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                jobs: tx,
                inline: std::sync::Mutex::new(inline),
                inline_max_keys: settings.inline_max_keys,
                inline_budget: settings.inline_budget,
                // Registered once, with whatever recorder is installed (`tern serve`
                // installs it first): a read then only adds to an atomic.
                counted: ["inline", "handed_over", "pool"]
                    .map(|path| metrics::counter!(crate::metrics::SQLITE_READS, "path" => path)),
                writer: Arc::default(),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.db.path
    }

    /// Writes online rows of one view version (creating its table if missing): a row
    /// older than what the store holds for its entity is skipped, every other row
    /// replaces the entity's values. One transaction per call: all rows or none.
    /// Runs on a blocking thread within the store timeout.
    pub async fn write(
        &self,
        layout: Arc<StorageLayout>,
        rows: Vec<EntityWrite>,
    ) -> Result<Written, StoreError> {
        let db = self.inner.db.clone();
        let writer = self.inner.writer.clone();
        let deadline = db.deadline();
        let job = tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave a half transaction behind
            // (SQLite rolls back an unfinished one), so the connection stays usable.
            let mut guard = writer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            with_deadline(deadline, || {
                if guard.is_none() {
                    *guard = Some(open_writer(&db)?);
                }
                let conn = guard.as_mut().ok_or(StoreError::Closed)?;
                write_if_newer(conn, &layout, &rows)
                    .map_err(|e| classify_error(&db, &layout.sqlite_table, e))
            })
        });
        match tokio::time::timeout_at(deadline.into(), job).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StoreError::Closed),
            Err(_) => Err(self.inner.db.timeout_error()),
        }
    }

    /// Reads dropped unrun because their caller had given up (deadline passed or
    /// request cancelled) by the time a reader was free: for tests and diagnostics.
    pub fn reads_skipped(&self) -> u64 {
        self.inner.db.skipped.load(Ordering::Relaxed)
    }

    /// Reads answered on the calling thread.
    pub fn reads_inline(&self) -> u64 {
        self.inner.db.inline_reads.load(Ordering::Relaxed)
    }

    /// Inline reads that were stopped and handed to the reader threads.
    pub fn inline_declined(&self) -> u64 {
        self.inner.db.inline_declined.load(Ordering::Relaxed)
    }

    /// Runs a small read on the calling thread, or returns `None` to send it to the
    /// pool: too many keys, no inline connection free, a writer's lock, or more work
    /// than the inline budget.
    fn read_inline(&self, reads: &[ViewRead]) -> Option<Result<Found, StoreError>> {
        let inner = &*self.inner;
        let [inline, handed_over, pool] = &inner.counted;
        let keys: usize = reads.iter().map(|r| r.keys.len()).sum();
        if keys == 0 {
            // A ping: it must prove a reader thread answers.
            return None;
        }
        let idle = (keys <= inner.inline_max_keys)
            .then(|| inner.inline.lock().ok()?.pop())
            .flatten();
        let Some(conn) = idle else {
            pool.increment(1);
            return None;
        };
        let db = &*inner.db;
        let deadline = db.deadline();
        let stop = Instant::now()
            .checked_add(inner.inline_budget)
            .map_or(deadline, |budget| budget.min(deadline));
        let result = with_deadline(stop, || read_views(&conn, db, reads));
        if let Ok(mut idle) = inner.inline.lock() {
            idle.push(conn);
        }
        match result {
            Err(StoreError::Timeout { .. } | StoreError::Busy { .. }) => {
                db.inline_declined.fetch_add(1, Ordering::Relaxed);
                handed_over.increment(1);
                None
            }
            answer => {
                db.inline_reads.fetch_add(1, Ordering::Relaxed);
                inline.increment(1);
                Some(answer)
            }
        }
    }
}

impl OnlineStore for SqliteStore {
    async fn read(&self, reads: Vec<ViewRead>) -> Result<Found, StoreError> {
        if let Some(answer) = self.read_inline(&reads) {
            return answer;
        }
        let deadline = self.inner.db.deadline();
        let (reply, answer) = oneshot::channel();
        self.inner
            .jobs
            .try_send(Job {
                reads,
                deadline,
                reply,
            })
            .map_err(|e| match e {
                TrySendError::Full(_) => StoreError::Overloaded {
                    queued: QUEUE_CAPACITY,
                },
                TrySendError::Disconnected(_) => StoreError::Closed,
            })?;
        // Dropping `answer` here (timeout or a cancelled request) closes the reply
        // channel, which tells the readers to skip the job.
        match tokio::time::timeout_at(deadline.into(), answer).await {
            Ok(result) => result.map_err(|_| StoreError::Closed)?,
            Err(_) => Err(self.inner.db.timeout_error()),
        }
    }

    /// A read of nothing through the pool: proves a reader thread answers in time.
    async fn ping(&self) -> Result<(), StoreError> {
        self.read(Vec::new()).await.map(drop)
    }

    fn kind(&self) -> StoreKind {
        StoreKind::Sqlite
    }
}

thread_local! {
    /// Deadline of the job this thread runs. SQLite calls the busy and progress handlers
    /// on the thread stepping the statement, so a reader's handlers see its own job's.
    static JOB_DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Runs `f` with `deadline` as this thread's job deadline.
fn with_deadline<T>(deadline: Instant, f: impl FnOnce() -> T) -> T {
    JOB_DEADLINE.with(|d| d.set(Some(deadline)));
    let out = f();
    JOB_DEADLINE.with(|d| d.set(None));
    out
}

/// Progress handler: `true` interrupts the running statement.
fn past_deadline() -> bool {
    JOB_DEADLINE.with(|d| d.get().is_some_and(|d| Instant::now() >= d))
}

/// Busy handler: wait for a writer's lock (e.g. `feast materialize` committing) until
/// the job's deadline, never past it; without a deadline, do not wait.
#[expect(
    clippy::disallowed_methods,
    reason = "SQLite calls this on a reader thread, never on the reactor"
)]
fn wait_for_lock(attempt: i32) -> bool {
    let Some(deadline) = JOB_DEADLINE.with(Cell::get) else {
        return false;
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return false;
    }
    let backoff = Duration::from_millis(1 << attempt.clamp(0, 4));
    std::thread::sleep(backoff.min(LOCK_POLL_MAX).min(left));
    true
}

fn open_reader(db: &Db) -> Result<Connection, StoreError> {
    let path = db.path.as_path();
    let err = |source| StoreError::Sqlite {
        path: path.to_owned(),
        cause: source,
    };
    // Read-only: Tern never writes on the serving path, and a missing file must be an
    // error rather than a new empty database.
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    conn.busy_handler(Some(wait_for_lock)).map_err(err)?;
    conn.progress_handler(PROGRESS_STEPS, Some(past_deadline))
        .map_err(err)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    rusqlite::vtab::array::load_module(&conn).map_err(err)?;
    // SQLite caps the map at its compile-time maximum and answers the size it took.
    let mmap = i64::try_from(db.mmap_size).unwrap_or(i64::MAX);
    conn.prepare(&format!("PRAGMA mmap_size = {mmap}"))
        .and_then(|mut set| set.query([])?.next().map(|_| ()))
        .map_err(err)?;
    // Fail at start-up, not on the first request, if the file is not a database.
    with_deadline(db.deadline(), || {
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
    })
    .map_err(err)?;
    Ok(conn)
}

/// The read-write connection for online writes. It never creates the file: a missing
/// database is a configuration error, as for reads.
fn open_writer(db: &Db) -> Result<Connection, StoreError> {
    let err = |source| StoreError::Sqlite {
        path: db.path.clone(),
        cause: source,
    };
    let conn = Connection::open_with_flags(
        &db.path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    conn.busy_handler(Some(wait_for_lock)).map_err(err)?;
    conn.progress_handler(PROGRESS_STEPS, Some(past_deadline))
        .map_err(err)?;
    Ok(conn)
}

/// The write transaction: per row, the entity's newest stored `event_ts` decides
/// (stored times are whole seconds, so an equal second overwrites: a correction
/// within the same second must not be lost); rows of one call are applied in order.
fn write_if_newer(
    conn: &mut Connection,
    layout: &StorageLayout,
    rows: &[EntityWrite],
) -> rusqlite::Result<Written> {
    let table = quote_identifier(&layout.sqlite_table);
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    create_table(&tx, &layout.sqlite_table)?;
    let mut summary = Written::default();
    {
        let mut newest = tx.prepare(&format!(
            "SELECT max(event_ts) FROM {table} WHERE entity_key = ?1"
        ))?;
        let mut upsert = tx.prepare(&format!(
            "INSERT INTO {table} (entity_key, feature_name, value, value_text, event_ts, created_ts) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(entity_key, feature_name) DO UPDATE SET \
             value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts, \
             created_ts = excluded.created_ts"
        ))?;
        for row in rows {
            let event = row.event_time.seconds;
            let stored = newest.query_row([&row.entity_key], |r| {
                Ok(match r.get_ref(0)? {
                    ValueRef::Integer(i) => Some(i),
                    // Feast's own rows are integers; anything else cannot be compared.
                    #[expect(clippy::cast_possible_truncation, reason = "floor of seconds")]
                    ValueRef::Real(f) => Some(f.floor() as i64),
                    _ => None,
                })
            })?;
            if stored.is_some_and(|s| s > event) {
                summary.skipped += 1;
                continue;
            }
            let created = row.created_time.map(|t| t.seconds);
            for ((feature, value), text) in layout.features.iter().zip(&row.values).zip(&row.texts)
            {
                upsert.execute(rusqlite::params![
                    row.entity_key,
                    feature,
                    value,
                    text,
                    event,
                    created
                ])?;
            }
            summary.written += 1;
        }
    }
    tx.commit()?;
    Ok(summary)
}

fn worker(conn: Connection, db: &Db, jobs: Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        // Nobody waits for this answer any more: running it would only delay the
        // jobs behind it.
        if job.reply.is_closed() || Instant::now() >= job.deadline {
            db.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let result = with_deadline(job.deadline, || read_views(&conn, db, &job.reads));
        // The caller may have gone (cancelled request); nothing to do then.
        let _ = job.reply.send(result);
    }
}

/// Runs one SELECT per view and gathers the rows. Value blobs are checked and copied
/// once into a shared buffer, and handed out as slices of it.
fn read_views(conn: &Connection, db: &Db, reads: &[ViewRead]) -> Result<Found, StoreError> {
    let classify = |table: &str, source: rusqlite::Error| classify_error(db, table, source);
    let mut arena = ValueArena::default();
    let mut results = Vec::with_capacity(reads.len());

    for read in reads {
        let layout = &read.layout;
        let table = layout.sqlite_table.as_str();
        let n_slots = read.slots.len();
        let mut rows = ViewRows::new(read.keys.len(), n_slots);
        let slots = SlotLookup::new(read);
        let fault = |k: usize, detail: String| StoreError::DataFault {
            store: db.name.clone(),
            view: layout.storage_name.clone(),
            key: key_hex(read.keys.get(k)),
            detail,
        };

        let one = read.keys.len() == 1;
        let mut stmt = conn
            .prepare_cached(if one {
                &layout.sqlite_point_select
            } else {
                &layout.sqlite_select
            })
            .map_err(|e| classify(table, e))?;
        let mut cursor = if one {
            stmt.query([read.keys.get(0)])
        } else {
            let ids: Rc<Vec<rusqlite::types::Value>> = Rc::new(
                read.keys
                    .iter()
                    .map(|k| rusqlite::types::Value::Blob(k.to_vec()))
                    .collect(),
            );
            stmt.query([ids])
        }
        .map_err(|e| classify(table, e))?;
        while let Some(row) = cursor.next().map_err(|e| classify(table, e))? {
            let (Ok(ValueRef::Integer(position)), Ok(ValueRef::Text(feature))) =
                (row.get_ref(0), row.get_ref(1))
            else {
                continue;
            };
            // rarray's rowid: the key's 1-based position in the batch (1 for one key).
            let Some(k) = usize::try_from(position - 1)
                .ok()
                .filter(|k| *k < rows.timestamps.len())
            else {
                continue;
            };
            let ts = event_time(row.get_ref(3).unwrap_or(ValueRef::Null)).map_err(|what| {
                fault(
                    k,
                    format!(
                        "event_ts of feature {} {what}",
                        String::from_utf8_lossy(feature)
                    ),
                )
            })?;
            let entity_ts = &mut rows.timestamps[k];
            // Feast keeps one time per entity; take the newest row's.
            if entity_ts
                .as_ref()
                .is_none_or(|t| (t.seconds, t.nanos) < (ts.seconds, ts.nanos))
            {
                *entity_ts = Some(ts);
            }
            if let Some(slot) = slots.slot(feature) {
                let name = || String::from_utf8_lossy(feature);
                let value = match row.get_ref(2) {
                    Ok(ValueRef::Blob(v)) => v,
                    Ok(other) => {
                        return Err(fault(
                            k,
                            format!(
                                "value of feature {} is {}, not a serialized feast.types.Value",
                                name(),
                                sql_type(other)
                            ),
                        ));
                    }
                    Err(e) => return Err(classify(table, e)),
                };
                let span = arena.push(value).map_err(|e| {
                    fault(
                        k,
                        format!(
                            "value of feature {} is not a serialized feast.types.Value ({e})",
                            name()
                        ),
                    )
                })?;
                if let Some(cell) = rows.values.get_mut(k * n_slots + slot) {
                    *cell = Some(span);
                }
            }
        }
        results.push(rows);
    }

    Ok(arena.finish(results))
}

/// Maps a stored feature name to its slot in a read, by bytes (no UTF-8 check, no
/// hashing, nothing allocated per request). An entity's rows come in `feature_name`
/// order (the table's key index), and the plan orders the wanted names the same way
/// (`ViewRead::by_name`), so the next one is tried first: one comparison per row when a
/// request reads every feature of a view, a binary search otherwise.
struct SlotLookup<'a> {
    /// (name, slot), by name.
    wanted: &'a [(Box<[u8]>, u32)],
    /// Where the next row's name is expected in `wanted`.
    next: Cell<usize>,
}

impl<'a> SlotLookup<'a> {
    fn new(read: &'a ViewRead) -> Self {
        Self {
            wanted: &read.by_name,
            next: Cell::new(0),
        }
    }

    fn slot(&self, feature: &[u8]) -> Option<usize> {
        let guess = self.next.get();
        let at = match self.wanted.get(guess) {
            Some((name, _)) if **name == *feature => guess,
            _ => self
                .wanted
                .binary_search_by(|(name, _)| (**name).cmp(feature))
                .ok()?,
        };
        // After the last name, the next entity's first.
        self.next.set(if at + 1 == self.wanted.len() {
            0
        } else {
            at + 1
        });
        self.wanted.get(at).map(|(_, slot)| *slot as usize)
    }
}

/// `event_ts` as Feast writes it: integer epoch seconds; real seconds are accepted.
/// Anything else cannot be placed in time: the error says what it is.
fn event_time(v: ValueRef<'_>) -> Result<Timestamp, String> {
    match v {
        ValueRef::Integer(s) => Ok(Timestamp {
            seconds: s,
            nanos: 0,
        }),
        ValueRef::Real(f) if f.is_finite() && f.abs() < 1e17 => {
            let seconds = f.floor();
            Ok(Timestamp {
                seconds: seconds as i64,
                nanos: ((f - seconds) * 1e9) as i32,
            })
        }
        ValueRef::Real(f) => Err(format!("is {f}, not epoch seconds")),
        // Feast before 0.42 wrote ISO text; Feast 0.67's own reader cannot use it either.
        ValueRef::Text(t) => Err(format!(
            "is text ({:?}), not epoch seconds",
            String::from_utf8_lossy(&t[..t.len().min(40)])
        )),
        other => Err(format!("is {}, not epoch seconds", sql_type(other))),
    }
}

/// SQLite's name for the storage class of `v`.
fn sql_type(v: ValueRef<'_>) -> &'static str {
    match v {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "an INTEGER",
        ValueRef::Real(_) => "a REAL",
        ValueRef::Text(_) => "TEXT",
        ValueRef::Blob(_) => "a BLOB",
    }
}

fn classify_error(db: &Db, table: &str, source: rusqlite::Error) -> StoreError {
    let path = &db.path;
    let code = source.sqlite_error_code();
    // The job's deadline stopped it (progress handler, or the busy handler giving up).
    if code == Some(ErrorCode::OperationInterrupted)
        || (matches!(
            code,
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
        ) && past_deadline())
    {
        return db.timeout_error();
    }
    if matches!(
        code,
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    ) {
        return StoreError::Busy {
            path: path.to_owned(),
            cause: source,
        };
    }
    if source.to_string().contains("no such table") {
        return StoreError::MissingTable {
            table: table.to_owned(),
            path: path.to_owned(),
        };
    }
    StoreError::Sqlite {
        path: path.to_owned(),
        cause: source,
    }
}

/// One row as Feast writes it.
#[derive(Debug, Clone, Copy)]
pub struct WriteRow<'a> {
    /// Serialized entity key (no project suffix).
    pub entity_key: &'a [u8],
    /// Feature name.
    pub feature: &'a str,
    /// Serialized `feast.types.Value`; empty for null.
    pub value: &'a [u8],
    /// Event time, epoch seconds.
    pub event_ts: i64,
    /// Write time, epoch seconds.
    pub created_ts: Option<i64>,
}

/// Creates a view table with Feast's DDL (and its `_ek` index) if it is missing.
pub fn create_table(conn: &Connection, table: &str) -> rusqlite::Result<()> {
    let t = quote_identifier(table);
    let index = quote_identifier(&format!("{table}_ek"));
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {t} (entity_key BLOB, feature_name TEXT, value BLOB, \
         value_text TEXT, vector_value BLOB, event_ts timestamp, created_ts timestamp, \
         PRIMARY KEY(entity_key, feature_name));\n\
         CREATE INDEX IF NOT EXISTS {index} ON {t} (entity_key);"
    ))
}

/// One materialized row, with the `value_text` Feast's materialization fills.
#[derive(Debug, Clone, Copy)]
pub struct MaterializedRow<'a> {
    /// Serialized entity key (no project suffix).
    pub entity_key: &'a [u8],
    /// Feature name.
    pub feature: &'a str,
    /// Serialized `feast.types.Value`; empty for null.
    pub value: &'a [u8],
    /// `str()` of a scalar value, as Feast writes it; NULL for lists, bytes, times, nulls.
    pub value_text: Option<&'a str>,
    /// Event time, epoch seconds.
    pub event_ts: i64,
    /// Created time, epoch seconds.
    pub created_ts: Option<i64>,
}

/// Page cache of a materialization's writer connection, in KiB (SQLite's default is
/// 2 MiB): the index pages a run touches stay cached instead of being read again per
/// chunk. A bound, not an allocation: a small table uses what it needs.
pub const MATERIALIZE_CACHE_KIB: i64 = 64 * 1024;

/// Upserts materialized rows in one transaction (Feast's materialization replaces
/// whatever the row held).
pub fn write_materialized<'a>(
    conn: &mut Connection,
    table: &str,
    rows: impl IntoIterator<Item = MaterializedRow<'a>>,
) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    let mut n = 0;
    {
        let mut stmt = tx.prepare(&format!(
            "INSERT INTO {} (entity_key, feature_name, value, value_text, event_ts, created_ts) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(entity_key, feature_name) DO UPDATE SET \
             value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts, \
             created_ts = excluded.created_ts",
            quote_identifier(table)
        ))?;
        for row in rows {
            stmt.execute(rusqlite::params![
                row.entity_key,
                row.feature,
                row.value,
                row.value_text,
                row.event_ts,
                row.created_ts
            ])?;
            n += 1;
        }
    }
    tx.commit()?;
    Ok(n)
}

/// Drops a view table (and its index) if it exists.
pub fn drop_table(conn: &Connection, table: &str) -> rusqlite::Result<()> {
    conn.execute_batch(&format!("DROP TABLE IF EXISTS {}", quote_identifier(table)))
}

/// Upserts rows with Feast's semantics (last write wins, no event-time check), in one
/// transaction. `value_text` is left NULL: Feast fills it for its own vector search,
/// and reads never use it.
pub fn write_rows<'a>(
    conn: &mut Connection,
    table: &str,
    rows: impl IntoIterator<Item = WriteRow<'a>>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare(&format!(
            "INSERT INTO {} (entity_key, feature_name, value, event_ts, created_ts) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, \
             event_ts = excluded.event_ts, created_ts = excluded.created_ts",
            quote_identifier(table)
        ))?;
        for row in rows {
            stmt.execute(rusqlite::params![
                row.entity_key,
                row.feature,
                row.value,
                row.event_ts,
                row.created_ts
            ])?;
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{KeyBatch, StorageLayout};
    use prost::Message;

    fn test_db(path: &Path) -> Db {
        Db {
            path: path.to_owned(),
            mmap_size: SqliteSettings::MMAP_SIZE,
            name: format!("sqlite {}", path.display()),
            timeout: Duration::from_secs(1),
            skipped: AtomicU64::new(0),
            inline_reads: AtomicU64::new(0),
            inline_declined: AtomicU64::new(0),
        }
    }

    /// A table `p_v` holding `features` features `f0..` of key `k1` (value: the
    /// feature's index as int32), and a read of all of them.
    fn wide_view(path: &Path, features: usize) -> ViewRead {
        let mut conn = Connection::open(path).unwrap();
        create_table(&conn, "p_v").unwrap();
        let names: Vec<String> = (0..features).map(|f| format!("f{f}")).collect();
        let values: Vec<Vec<u8>> = (0..features)
            .map(|f| {
                crate::proto::feast::types::Value {
                    val: Some(crate::proto::feast::types::value::Val::Int32Val(f as i32)),
                }
                .encode_to_vec()
            })
            .collect();
        write_rows(
            &mut conn,
            "p_v",
            names.iter().zip(&values).map(|(f, v)| WriteRow {
                entity_key: b"k1",
                feature: f,
                value: v,
                event_ts: 100,
                created_ts: None,
            }),
        )
        .unwrap();
        let mut batch = KeyBatch::default();
        batch.push(b"k1");
        ViewRead::new(
            Arc::new(StorageLayout::new("p", "v", 0, names)),
            (0..features as u32).collect(),
            Arc::new(batch),
        )
    }

    #[test]
    fn read_connections_map_the_file_as_configured() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.db");
        wide_view(&path, 1);
        let mmap_of = |mmap_size| {
            let conn = open_reader(&Db {
                mmap_size,
                ..test_db(&path)
            })
            .unwrap();
            conn.query_row("PRAGMA mmap_size", [], |r| r.get::<_, i64>(0))
                .unwrap()
        };
        assert_eq!(mmap_of(0), 0);
        assert_eq!(mmap_of(1 << 20), 1 << 20);
        assert_eq!(mmap_of(SqliteSettings::MMAP_SIZE), 0, "off by default");
    }

    #[tokio::test]
    async fn a_mapped_read_sees_a_later_write_from_another_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.db");
        let read = wide_view(&path, 3);
        let store =
            SqliteStore::open(&path, SqliteSettings::new(1, Duration::from_secs(5))).unwrap();
        let before = store.read(vec![read.clone()]).await.unwrap();
        let new_value = crate::proto::feast::types::Value {
            val: Some(crate::proto::feast::types::value::Val::Int32Val(-7)),
        }
        .encode_to_vec();
        Connection::open(&path)
            .unwrap()
            .execute(
                "UPDATE p_v SET value = ?1 WHERE feature_name = 'f1'",
                [&new_value],
            )
            .unwrap();
        let after = store.read(vec![read]).await.unwrap();
        assert_ne!(before.values_of(0)[1], after.values_of(0)[1]);
        assert_eq!(after.values_of(0)[1], Some(&new_value[..]));
        assert_eq!(before.values_of(0)[0], after.values_of(0)[0]);
        assert!(store.reads_inline() >= 2);
    }

    #[tokio::test]
    async fn small_reads_run_inline_and_larger_ones_on_the_readers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.db");
        let read = wide_view(&path, 3);
        let store = SqliteStore::open(
            &path,
            SqliteSettings {
                inline_max_keys: 1,
                ..SqliteSettings::new(1, Duration::from_secs(5))
            },
        )
        .unwrap();

        let inline = store.read(vec![read.clone()]).await.unwrap();
        assert_eq!((store.reads_inline(), store.inline_declined()), (1, 0));
        // Two keys (the same view twice) are over the limit: the pool answers.
        let pooled = store.read(vec![read.clone(), read]).await.unwrap();
        assert_eq!((store.reads_inline(), store.inline_declined()), (1, 0));
        assert_eq!(inline.values_of(0), pooled.values_of(0));
        assert_eq!(pooled.values_of(0), pooled.values_of(1));
        assert_eq!(inline.values_of(0).iter().flatten().count(), 3);
        // A ping reads nothing: it always proves a reader thread answers.
        store.ping().await.unwrap();
        assert_eq!(store.reads_inline(), 1);
    }

    #[tokio::test]
    async fn an_inline_read_never_waits_for_a_writer_it_goes_to_the_readers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.db");
        let read = wide_view(&path, 3);
        let store =
            SqliteStore::open(&path, SqliteSettings::new(1, Duration::from_millis(100))).unwrap();
        let mut writer = Connection::open(&path).unwrap();
        let lock = writer
            .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
            .unwrap();
        // Inline, the lock fails the read at once (no busy handler); the reader thread
        // then waits for the lock until the store timeout. A read that stayed inline
        // would have answered Busy.
        let err = store.read(vec![read.clone()]).await.unwrap_err();
        assert!(matches!(err, StoreError::Timeout { .. }), "{err}");
        assert_eq!((store.reads_inline(), store.inline_declined()), (0, 1));
        lock.commit().unwrap();
        assert!(store.read(vec![read]).await.is_ok());
        assert_eq!((store.reads_inline(), store.inline_declined()), (1, 1));
    }

    #[tokio::test]
    async fn an_inline_read_over_its_budget_is_finished_by_the_readers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.db");
        // 3,000 rows: many times the progress handler's step interval.
        let read = wide_view(&path, 3000);
        let store = SqliteStore::open(
            &path,
            SqliteSettings {
                inline_budget: Duration::ZERO,
                ..SqliteSettings::new(1, Duration::from_secs(5))
            },
        )
        .unwrap();
        let found = store.read(vec![read]).await.unwrap();
        assert_eq!((store.reads_inline(), store.inline_declined()), (0, 1));
        let values: Vec<&[u8]> = found.values_of(0).into_iter().flatten().collect();
        assert_eq!(values.len(), 3000);
        assert_eq!(
            crate::proto::feast::types::Value::decode(values[2999]).unwrap(),
            crate::proto::feast::types::Value {
                val: Some(crate::proto::feast::types::value::Val::Int32Val(2999)),
            }
        );
    }

    /// A read of features `a` and `b` of table `p_v` for `keys`.
    fn read_of(keys: &[&[u8]]) -> ViewRead {
        let mut batch = KeyBatch::default();
        for k in keys {
            batch.push(k);
        }
        ViewRead::new(
            Arc::new(StorageLayout::new(
                "p",
                "v",
                0,
                vec!["a".into(), "b".into()],
            )),
            Arc::from(vec![0u32, 1]),
            Arc::new(batch),
        )
    }

    #[test]
    fn unreadable_rows_are_data_faults_naming_view_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.db");
        let conn = Connection::open(&path).unwrap();
        create_table(&conn, "p_v").unwrap();
        conn.execute_batch(
            "INSERT INTO p_v (entity_key, feature_name, value, event_ts) VALUES \
             (x'01', 'a', x'2007', 100), \
             (x'02', 'a', x'1202c328', 100), \
             (x'03', 'a', NULL, 100), \
             (x'04', 'b', x'2007', '2025-01-10 00:00:00'), \
             (x'05', 'b', x'2007', NULL), \
             (x'06', 'zz', x'ffff', 100);",
        )
        .unwrap();
        drop(conn);
        let db = test_db(&path);
        let conn = open_reader(&db).unwrap();
        let fault = |key: &[u8]| match read_views(&conn, &db, &[read_of(&[b"\x01", key])]) {
            Err(StoreError::DataFault {
                store,
                view,
                key,
                detail,
            }) => {
                assert_eq!(store, format!("sqlite {}", path.display()));
                assert_eq!(view, "v");
                format!("{key}: {detail}")
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            fault(b"\x02"),
            "02: value of feature a is not a serialized feast.types.Value (string field 2 is not UTF-8 at byte 2)"
        );
        assert_eq!(
            fault(b"\x03"),
            "03: value of feature a is NULL, not a serialized feast.types.Value"
        );
        assert_eq!(
            fault(b"\x04"),
            "04: event_ts of feature b is text (\"2025-01-10 00:00:00\"), not epoch seconds"
        );
        assert_eq!(
            fault(b"\x05"),
            "05: event_ts of feature b is NULL, not epoch seconds"
        );
        // A feature not asked for is not read; its row still dates the entity.
        let rows = read_views(&conn, &db, &[read_of(&[b"\x06"])]).unwrap();
        assert_eq!(rows.views[0].timestamps[0].map(|t| t.seconds), Some(100));
    }

    #[test]
    fn a_query_running_past_its_deadline_is_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.db");
        create_table(&Connection::open(&path).unwrap(), "p_v").unwrap();
        let db = test_db(&path);
        let conn = open_reader(&db).unwrap();
        // Minutes of work, stopped by the progress handler at the deadline.
        let result = with_deadline(Instant::now() + Duration::from_millis(50), || {
            conn.query_row(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) \
                 SELECT count(*) FROM c",
                [],
                |r| r.get::<_, i64>(0),
            )
        });
        let err = result.unwrap_err();
        assert!(
            matches!(classify_error(&db, "p_v", err), StoreError::Timeout { .. }),
            "interrupted, and reported as the store timeout"
        );
    }

    #[tokio::test]
    async fn ping_is_bounded_and_an_abandoned_job_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.db");
        let mut writer = Connection::open(&path).unwrap();
        create_table(&writer, "p_v").unwrap();
        let store =
            SqliteStore::open(&path, SqliteSettings::new(1, Duration::from_millis(100))).unwrap();

        // The only reader waits on a writer's lock for a job of its own with a far deadline.
        let lock = writer
            .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
            .unwrap();
        let (reply, stuck) = oneshot::channel();
        store
            .inner
            .jobs
            .send(Job {
                reads: vec![read_of(&[b"k"])],
                deadline: Instant::now() + Duration::from_secs(30),
                reply,
            })
            .unwrap();

        let err = store.ping().await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Timeout { store, .. } if *store == format!("sqlite {}", path.display())),
            "{err}"
        );
        assert_eq!(store.reads_skipped(), 0, "not picked up yet");

        lock.commit().unwrap();
        assert!(stuck.await.unwrap().is_ok(), "the long job finishes");
        // The reader then finds the ping's job, whose caller is gone, and drops it.
        let pong = store.ping();
        pong.await.unwrap();
        assert_eq!(store.reads_skipped(), 1);
    }

    #[test]
    fn select_uses_the_primary_key_index() {
        let conn = Connection::open_in_memory().unwrap();
        rusqlite::vtab::array::load_module(&conn).unwrap();
        create_table(&conn, "p_v").unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", select_statement("p_v")))
            .unwrap()
            .query_map([Rc::new(Vec::<rusqlite::types::Value>::new())], |r| {
                r.get::<_, String>(3)
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let text = plan.join(" | ");
        assert!(
            text.contains("USING INDEX") || text.contains("USING PRIMARY KEY"),
            "{text}"
        );
        assert!(!text.contains("SCAN p_v"), "full table scan: {text}");

        let plan: Vec<String> = conn
            .prepare(&format!(
                "EXPLAIN QUERY PLAN {}",
                point_select_statement("p_v")
            ))
            .unwrap()
            .query_map([&b"k"[..]], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let text = plan.join(" | ");
        assert!(text.starts_with("SEARCH p_v USING"), "{text}");
    }

    #[test]
    fn reads_rows_nulls_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.db");
        let mut conn = Connection::open(&path).unwrap();
        create_table(&conn, "p_v").unwrap();
        write_rows(
            &mut conn,
            "p_v",
            [
                WriteRow {
                    entity_key: b"k1",
                    feature: "a",
                    value: b"\x20\x07",
                    event_ts: 100,
                    created_ts: None,
                },
                WriteRow {
                    entity_key: b"k1",
                    feature: "b",
                    value: b"",
                    event_ts: 101,
                    created_ts: None,
                },
                WriteRow {
                    entity_key: b"k2",
                    feature: "b",
                    value: b"\x20\x08",
                    event_ts: 50,
                    created_ts: Some(51),
                },
                WriteRow {
                    entity_key: b"k2",
                    feature: "zz",
                    value: b"\x20\x09",
                    event_ts: 50,
                    created_ts: None,
                },
            ],
        )
        .unwrap();
        drop(conn);

        let layout = Arc::new(StorageLayout::new(
            "p",
            "v",
            0,
            vec!["a".into(), "b".into()],
        ));
        let mut keys = KeyBatch::default();
        for k in [&b"k2"[..], b"k1", b"missing"] {
            keys.push(k);
        }
        let read = ViewRead::new(layout.clone(), Arc::from(vec![1u32, 0]), Arc::new(keys));
        let db = test_db(&path);
        let conn = open_reader(&db).unwrap();
        let found = read_views(&conn, &db, &[read]).unwrap();
        // One key alone takes the point statement: the same answer for it.
        for (k, key) in [(0, &b"k2"[..]), (1, b"k1"), (2, b"missing")] {
            let mut one = KeyBatch::default();
            one.push(key);
            let alone = read_views(
                &conn,
                &db,
                &[ViewRead::new(
                    layout.clone(),
                    Arc::from(vec![1u32, 0]),
                    Arc::new(one),
                )],
            )
            .unwrap();
            assert_eq!(alone.views[0].timestamps, [found.views[0].timestamps[k]]);
            assert_eq!(alone.values_of(0), found.values_of(0)[k * 2..k * 2 + 2]);
        }
        let rows = &found.views[0];
        let ts = |s| {
            Some(Timestamp {
                seconds: s,
                nanos: 0,
            })
        };
        assert_eq!(rows.timestamps, vec![ts(50), ts(101), None]);
        // slots are [b, a]
        assert_eq!(
            found.values_of(0),
            [
                Some(&b"\x20\x08"[..]),
                None,
                Some(b""),
                Some(b"\x20\x07"),
                None,
                None
            ]
        );
    }

    #[test]
    fn slot_lookup_by_name() {
        let read = |features: &[String], slots: &[u32]| {
            let layout = Arc::new(StorageLayout::new("p", "v", 0, features.to_vec()));
            ViewRead::new(layout, slots.into(), Arc::new(KeyBatch::default()))
        };
        let names: Vec<String> = vec!["x".into(), "y".into(), "z".into()];
        let r = read(&names, &[2, 0]);
        let slots = SlotLookup::new(&r);
        assert_eq!(
            (slots.slot(b"z"), slots.slot(b"x"), slots.slot(b"y")),
            (Some(0), Some(1), None)
        );
        let many: Vec<String> = (0..40).map(|i| format!("f{i}")).collect();
        let r = read(&many, &(0..40).rev().collect::<Vec<u32>>());
        let slots = SlotLookup::new(&r);
        assert_eq!(
            (slots.slot(b"f39"), slots.slot(b"f0"), slots.slot(b"f40")),
            (Some(0), Some(39), None)
        );
        // Rows in name order, twice (two entities), some not wanted: every wanted one
        // is found whatever the guess.
        let r = read(&many, &[3, 1, 30]);
        let slots = SlotLookup::new(&r);
        for _ in 0..2 {
            let found: Vec<Option<usize>> = ["f1", "f2", "f3", "f30", "f4"]
                .iter()
                .map(|f| slots.slot(f.as_bytes()))
                .collect();
            assert_eq!(found, [Some(1), None, Some(0), Some(2), None]);
        }
    }

    #[test]
    fn missing_table_and_missing_file_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.db");
        assert!(matches!(
            SqliteStore::open(&path, SqliteSettings::new(1, Duration::from_secs(1))),
            Err(StoreError::Sqlite { .. })
        ));
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let db = test_db(&path);
        let conn = open_reader(&db).unwrap();
        let layout = Arc::new(StorageLayout::new("p", "v", 3, vec!["a".into()]));
        let read = ViewRead::new(layout, Arc::from(vec![0u32]), Arc::new(KeyBatch::default()));
        let err = read_views(&conn, &db, &[read]).unwrap_err();
        assert!(
            matches!(&err, StoreError::MissingTable { table, .. } if table == "p_v_v3"),
            "{err}"
        );
    }
}
