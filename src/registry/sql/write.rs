//! Writing a SQL registry: one transaction per apply (see `registry::write`).
//!
//! [`SqlSource::begin`] takes the registry's write lock (per project; every Tern
//! writer takes it), opens the transaction, creates Feast's tables if the database has
//! none, and reads the project inside that transaction. [`SqlTxn::commit`] writes only
//! the rows that differ and commits. Dropping a [`SqlTxn`] rolls back.
//!
//! PostgreSQL: a connection of the write's own. The lock is an advisory lock taken
//! *before* the REPEATABLE READ transaction starts: taken inside it, it would come
//! after the transaction's snapshot, and a writer that waited would read the registry
//! as it was before the writer it waited for. It is a session lock so that it spans
//! the transaction; it is released after COMMIT, or when the connection closes (a
//! dropped or failed write). REPEATABLE READ also turns a concurrent non-Tern write
//! to the same rows into a serialization failure, reported as a conflict to retry.
//! Every statement is bounded by the registry timeout; waiting for the lock, by the
//! source's lock wait.
//!
//! SQLite: `BEGIN IMMEDIATE` (the database's one writer), on a connection that waits
//! for another writer as long as the lock wait; all of it off the async reactor.
//!
//! Row timestamps: a row written gets `last_updated_timestamp = now`, or its old value
//! plus one if that is later, and every commit moves the project's
//! `last_updated_timestamp` metadata row the same way (as Feast does on every apply),
//! so the fingerprint the reloaders compare always moves.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use tokio_postgres::error::SqlState;

use super::schema::{Dialect, SCHEMA};
use super::{
    Backend, HISTORY_TABLE, Image, Kind, METADATA_TABLE, PgTls, SqlSource, TABLES, WriteLock,
    assemble, pg_connect, pg_detail, pg_read, pg_tables, sqlite_read, sqlite_tables,
};
use crate::proto::feast::core as pb;
use crate::registry::RegistryError;
use crate::registry::model::{MetadataRow, RegistryModel, RowColumns, Stored};

/// An open write transaction on a SQL registry. See the module docs.
#[derive(Debug)]
pub struct SqlTxn<'a> {
    source: &'a mut SqlSource,
    project: String,
    model: RegistryModel,
    conn: Conn,
}

#[derive(Debug)]
enum Conn {
    Postgres {
        client: tokio_postgres::Client,
        key: i64,
    },
    Sqlite(SqliteConn),
}

/// Closing the connection rolls back what it left uncommitted; done off the reactor.
#[derive(Debug)]
struct SqliteConn(Option<rusqlite::Connection>);

impl Drop for SqliteConn {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn_blocking(move || drop(conn));
                }
                Err(_) => drop(conn),
            }
        }
    }
}

/// What a write needs from its source.
#[derive(Debug, Clone)]
struct Ctx {
    name: String,
    timeout: Duration,
    lock_wait: Duration,
    lock: Arc<WriteLock>,
}

impl Ctx {
    fn timed_out(&self) -> RegistryError {
        RegistryError::SqlTimeout {
            source_name: self.name.clone(),
            after: self.timeout,
        }
    }

    fn lock_timed_out(&self) -> RegistryError {
        RegistryError::Sql {
            source_name: self.name.clone(),
            detail: format!(
                "another writer held the registry's write lock for more than {:?}; is another apply stuck?",
                self.lock_wait
            ),
        }
    }

    fn failed(&self, detail: impl Into<String>) -> RegistryError {
        RegistryError::Sql {
            source_name: self.name.clone(),
            detail: detail.into(),
        }
    }

    fn waiting(&self, project: &str) {
        self.lock.waited();
        tracing::info!(registry = %self.name, project, "another writer holds the registry's write lock; waiting for it");
    }

    /// `work`, bounded by the registry timeout.
    async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, RegistryError>>,
    ) -> Result<T, RegistryError> {
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or_else(|_| Err(self.timed_out()))
    }
}

/// The advisory lock's key: FNV-1a of "tern-registry" and the project, the same in
/// every build.
fn lock_key(project: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"tern-registry\0".iter().chain(project.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_be_bytes(hash.to_be_bytes())
}

impl SqlSource {
    /// Opens a write transaction on `project`'s rows, takes the registry's write lock
    /// (waiting for another writer) and reads the project. See the module docs.
    pub async fn begin(&mut self, project: &str) -> Result<SqlTxn<'_>, RegistryError> {
        let ctx = Ctx {
            name: self.name.clone(),
            timeout: self.timeout,
            lock_wait: self.write_lock.wait(),
            lock: self.write_lock.clone(),
        };
        let (conn, image) = match &self.backend {
            Backend::Postgres { config, tls, .. } => pg_begin(config, tls, &ctx, project).await?,
            Backend::Sqlite { path } => sqlite_begin(path.clone(), &ctx, project).await?,
        };
        let model = assemble(&self.name, image)?;
        Ok(SqlTxn {
            source: self,
            project: project.to_owned(),
            model,
            conn,
        })
    }
}

impl SqlTxn<'_> {
    /// The project's rows as read under the lock.
    pub fn model(&self) -> &RegistryModel {
        &self.model
    }

    /// Writes the rows that differ between `old` (what [`model`](Self::model) gave)
    /// and `new`, and commits. A row another writer took meanwhile (a version number)
    /// is a [`RegistryError::Conflict`]: nothing is written, and the whole apply can be
    /// retried.
    pub async fn commit(
        self,
        old: &RegistryModel,
        new: &RegistryModel,
        now: SystemTime,
    ) -> Result<(), RegistryError> {
        let ctx = Ctx {
            name: self.source.name.clone(),
            timeout: self.source.timeout,
            lock_wait: self.source.write_lock.wait(),
            lock: self.source.write_lock.clone(),
        };
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let writes = changes(&self.project, old, new, now).map_err(|e| ctx.failed(e))?;
        match self.conn {
            Conn::Postgres { client, key } => pg_commit(&client, key, &writes, &ctx).await,
            Conn::Sqlite(mut conn) => {
                let conn = conn.0.take().ok_or_else(|| ctx.failed("no connection"))?;
                let name = ctx.name.clone();
                tokio::task::spawn_blocking(move || sqlite_commit(conn, &writes, &name))
                    .await
                    .map_err(|e| ctx.failed(format!("registry write task: {e}")))?
            }
        }
    }
}

async fn pg_begin(
    config: &tokio_postgres::Config,
    tls: &PgTls,
    ctx: &Ctx,
    project: &str,
) -> Result<(Conn, Image), RegistryError> {
    let db = |e: tokio_postgres::Error| pg_error(ctx, None, &e);
    let key = lock_key(project);
    let client = ctx
        .bounded(async {
            let client = pg_connect(config, tls, &ctx.name).await?;
            let row = client
                .query_one("SELECT pg_try_advisory_lock($1::bigint)", &[&key])
                .await
                .map_err(db)?;
            let locked: bool = row.try_get(0).map_err(db)?;
            Ok((client, locked))
        })
        .await;
    let (client, locked) = client?;
    if !locked {
        ctx.waiting(project);
        // The server gives up the wait itself: a backend left waiting after the client
        // gave up would take the lock before the next writer.
        let wait = async {
            client
                .batch_execute(&format!("SET lock_timeout = {}", pg_millis(ctx.lock_wait)))
                .await?;
            client
                .execute("SELECT pg_advisory_lock($1::bigint)", &[&key])
                .await?;
            client.batch_execute("RESET lock_timeout").await
        };
        match tokio::time::timeout(ctx.lock_wait.saturating_add(ctx.timeout), wait).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                return Err(ctx.lock_timed_out());
            }
            Ok(Err(e)) => return Err(db(e)),
            Err(_) => return Err(ctx.lock_timed_out()),
        }
    }
    let image = ctx
        .bounded(async {
            // The server bounds each statement too: one whose client gave up (a hung
            // network) would otherwise keep the lock.
            client
                .batch_execute(&format!(
                    "SET statement_timeout = {}; BEGIN ISOLATION LEVEL REPEATABLE READ",
                    pg_millis(ctx.timeout)
                ))
                .await
                .map_err(db)?;
            let present = pg_tables(&client)
                .await
                .map_err(|f| f.into_error(&ctx.name))?;
            for table in SCHEMA
                .iter()
                .filter(|t| !present.iter().any(|p| p == t.name))
            {
                client
                    .batch_execute(&table.ddl(Dialect::Postgres))
                    .await
                    .map_err(db)?;
            }
            pg_read(&client, project, true)
                .await
                .map_err(|f| f.into_error(&ctx.name))
        })
        .await?;
    Ok((Conn::Postgres { client, key }, image))
}

async fn pg_commit(
    client: &tokio_postgres::Client,
    key: i64,
    writes: &[Write],
    ctx: &Ctx,
) -> Result<(), RegistryError> {
    // On any error the caller drops the client: the server rolls back and unlocks.
    for write in writes {
        let (sql, values) = write.statement(Dialect::Postgres);
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            values.iter().map(Value::pg).collect();
        ctx.bounded(async {
            client
                .execute(sql.as_str(), &params)
                .await
                .map_err(|e| pg_error(ctx, Some(write), &e))
        })
        .await?;
    }
    ctx.bounded(async {
        client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| pg_error(ctx, None, &e))
    })
    .await?;
    // Committed; closing the connection would release the lock too, only later.
    let _ = tokio::time::timeout(
        ctx.timeout,
        client.execute("SELECT pg_advisory_unlock($1::bigint)", &[&key]),
    )
    .await;
    Ok(())
}

/// A duration for `lock_timeout`/`statement_timeout`: milliseconds, 1 to `i32::MAX`
/// (0 would mean no bound).
fn pg_millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis())
        .unwrap_or(u32::MAX)
        .clamp(1, i32::MAX.unsigned_abs())
}

/// SQLSTATEs that mean another writer got there first: unique violation,
/// serialization failure, deadlock.
const PG_CONFLICTS: [&str; 3] = ["23505", "40001", "40P01"];

fn pg_error(ctx: &Ctx, write: Option<&Write>, e: &tokio_postgres::Error) -> RegistryError {
    if e.code() == Some(&SqlState::QUERY_CANCELED) {
        // statement_timeout: the server gave up first.
        return ctx.timed_out();
    }
    let what = write
        .map(|w| format!("{}: ", w.describe()))
        .unwrap_or_default();
    let detail = format!("{what}{}", pg_detail(e));
    match e.as_db_error() {
        Some(db) if PG_CONFLICTS.contains(&db.code().code()) => RegistryError::Conflict {
            source_name: ctx.name.clone(),
            detail: format!("{detail} (a concurrent writer changed the registry)"),
        },
        _ => ctx.failed(detail),
    }
}

async fn sqlite_begin(
    path: PathBuf,
    ctx: &Ctx,
    project: &str,
) -> Result<(Conn, Image), RegistryError> {
    let (task_ctx, project) = (ctx.clone(), project.to_owned());
    let task = tokio::task::spawn_blocking(move || {
        let ctx = task_ctx;
        let db = |e: rusqlite::Error| sqlite_error(&ctx.name, None, &e);
        let conn = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
                | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db)?;
        // Try once without waiting, so that a wait can be reported.
        conn.busy_timeout(Duration::ZERO).map_err(db)?;
        match conn.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => conn.busy_timeout(ctx.lock_wait).map_err(db)?,
            Err(e) if is_busy(&e) => {
                ctx.waiting(&project);
                conn.busy_timeout(ctx.lock_wait).map_err(db)?;
                conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| {
                    if is_busy(&e) {
                        ctx.lock_timed_out()
                    } else {
                        db(e)
                    }
                })?;
            }
            Err(e) => return Err(db(e)),
        }
        let present = sqlite_tables(&conn).map_err(|f| f.into_error(&ctx.name))?;
        for table in SCHEMA
            .iter()
            .filter(|t| !present.iter().any(|p| p == t.name))
        {
            conn.execute_batch(&table.ddl(Dialect::Sqlite))
                .map_err(db)?;
        }
        let image = sqlite_read(&conn, &project, true).map_err(|f| f.into_error(&ctx.name))?;
        Ok((conn, image))
    });
    // Opening can hang too (a stalled network mount); a late connection is dropped,
    // which rolls back.
    match tokio::time::timeout(ctx.timeout.saturating_add(ctx.lock_wait), task).await {
        Ok(Ok(Ok((conn, image)))) => Ok((Conn::Sqlite(SqliteConn(Some(conn))), image)),
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(e)) => Err(ctx.failed(format!("registry write task: {e}"))),
        Err(_) => Err(ctx.timed_out()),
    }
}

fn sqlite_commit(
    conn: rusqlite::Connection,
    writes: &[Write],
    name: &str,
) -> Result<(), RegistryError> {
    let written = (|| {
        for write in writes {
            let (sql, values) = write.statement(Dialect::Sqlite);
            conn.execute(&sql, rusqlite::params_from_iter(values.iter()))
                .map_err(|e| sqlite_error(name, Some(write), &e))?;
        }
        conn.execute_batch("COMMIT")
            .map_err(|e| sqlite_error(name, None, &e))
    })();
    if written.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    written
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn sqlite_error(name: &str, write: Option<&Write>, e: &rusqlite::Error) -> RegistryError {
    let what = write
        .map(|w| format!("{}: ", w.describe()))
        .unwrap_or_default();
    let detail = format!("{what}{e}");
    let taken = matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    );
    if taken {
        RegistryError::Conflict {
            source_name: name.to_owned(),
            detail: format!("{detail} (a concurrent writer changed the registry)"),
        }
    } else {
        RegistryError::Sql {
            source_name: name.to_owned(),
            detail,
        }
    }
}

/// A parameter, for either database.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text(String),
    Int(i64),
    Int32(i32),
    Bytes(Vec<u8>),
    OptBytes(Option<Vec<u8>>),
}

impl Value {
    fn pg(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        match self {
            Value::Text(v) => v,
            Value::Int(v) => v,
            Value::Int32(v) => v,
            Value::Bytes(v) => v,
            Value::OptBytes(v) => v,
        }
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Value::Text(v) => v.to_sql(),
            Value::Int(v) => v.to_sql(),
            Value::Int32(v) => v.to_sql(),
            Value::Bytes(v) => v.to_sql(),
            Value::OptBytes(v) => v.to_sql(),
        }
    }
}

/// One row to write.
#[derive(Debug, Clone, PartialEq)]
enum Write {
    /// An object row, inserted or replaced.
    Upsert {
        table: usize,
        project: String,
        name: String,
        last_updated: i64,
        proto: Vec<u8>,
        user_metadata: Option<Vec<u8>>,
        intervals: Option<Vec<u8>>,
    },
    Delete {
        table: usize,
        project: String,
        name: String,
    },
    /// A new version: a plain insert, so a number another writer took is a conflict.
    HistoryInsert(pb::FeatureViewVersionRecord),
    HistoryUpdate(pb::FeatureViewVersionRecord),
    HistoryDelete {
        project: String,
        name: String,
        version: i32,
    },
    MetadataUpsert(MetadataRow),
    MetadataDelete {
        project: String,
        key: String,
    },
}

/// `$n` (PostgreSQL) or `?n` (SQLite: a `$n` there is a name, numbered by first use).
fn p(dialect: Dialect, n: usize) -> String {
    match dialect {
        Dialect::Postgres => format!("${n}"),
        Dialect::Sqlite => format!("?{n}"),
    }
}

const HISTORY_COLUMNS: [&str; 8] = [
    "feature_view_name",
    "project_id",
    "version_number",
    "feature_view_type",
    "feature_view_proto",
    "created_timestamp",
    "description",
    "version_id",
];

fn history_values(r: &pb::FeatureViewVersionRecord) -> Vec<Value> {
    vec![
        Value::Text(r.feature_view_name.clone()),
        Value::Text(r.project_id.clone()),
        Value::Int32(r.version_number),
        Value::Text(r.feature_view_type.clone()),
        Value::Bytes(r.feature_view_proto.clone()),
        // Feast stores epoch seconds.
        Value::Int(r.created_timestamp.map_or(0, |t| t.seconds)),
        Value::Text(r.description.clone()),
        Value::Text(r.version_id.clone()),
    ]
}

impl Write {
    /// The statement and its parameters.
    fn statement(&self, d: Dialect) -> (String, Vec<Value>) {
        let list = |n: usize| (1..=n).map(|i| p(d, i)).collect::<Vec<_>>().join(", ");
        match self {
            Write::Upsert {
                table,
                project,
                name,
                last_updated,
                proto,
                user_metadata,
                intervals,
            } => {
                let t = &TABLES[*table];
                let mut columns = vec![
                    t.name_column,
                    "project_id",
                    "last_updated_timestamp",
                    t.proto_column,
                ];
                let mut values = vec![
                    Value::Text(name.clone()),
                    Value::Text(project.clone()),
                    Value::Int(*last_updated),
                    Value::Bytes(proto.clone()),
                ];
                if t.user_metadata {
                    columns.push("user_metadata");
                    values.push(Value::OptBytes(user_metadata.clone()));
                }
                if t.intervals {
                    columns.push("materialized_intervals");
                    values.push(Value::OptBytes(intervals.clone()));
                }
                // `projects` is keyed by project_id alone.
                let key: &[&str] = if t.kind == Kind::Project {
                    &["project_id"]
                } else {
                    &[t.name_column, "project_id"]
                };
                let set = columns
                    .iter()
                    .filter(|c| !key.contains(c))
                    .map(|c| format!("{c} = EXCLUDED.{c}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {set}",
                    t.name,
                    columns.join(", "),
                    list(columns.len()),
                    key.join(", ")
                );
                (sql, values)
            }
            Write::Delete {
                table,
                project,
                name,
            } => {
                let t = &TABLES[*table];
                let sql = format!(
                    "DELETE FROM {} WHERE {} = {} AND project_id = {}",
                    t.name,
                    t.name_column,
                    p(d, 1),
                    p(d, 2)
                );
                (
                    sql,
                    vec![Value::Text(name.clone()), Value::Text(project.clone())],
                )
            }
            Write::HistoryInsert(r) => {
                let sql = format!(
                    "INSERT INTO {HISTORY_TABLE} ({}) VALUES ({})",
                    HISTORY_COLUMNS.join(", "),
                    list(HISTORY_COLUMNS.len())
                );
                (sql, history_values(r))
            }
            Write::HistoryUpdate(r) => {
                let set = HISTORY_COLUMNS
                    .iter()
                    .enumerate()
                    .skip(3)
                    .map(|(i, c)| format!("{c} = {}", p(d, i + 1)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "UPDATE {HISTORY_TABLE} SET {set} WHERE feature_view_name = {} AND project_id = {} AND version_number = {}",
                    p(d, 1),
                    p(d, 2),
                    p(d, 3)
                );
                (sql, history_values(r))
            }
            Write::HistoryDelete {
                project,
                name,
                version,
            } => {
                let sql = format!(
                    "DELETE FROM {HISTORY_TABLE} WHERE feature_view_name = {} AND project_id = {} AND version_number = {}",
                    p(d, 1),
                    p(d, 2),
                    p(d, 3)
                );
                let values = vec![
                    Value::Text(name.clone()),
                    Value::Text(project.clone()),
                    Value::Int32(*version),
                ];
                (sql, values)
            }
            Write::MetadataUpsert(m) => {
                let sql = format!(
                    "INSERT INTO {METADATA_TABLE} (project_id, metadata_key, metadata_value, last_updated_timestamp) \
                     VALUES ({}) ON CONFLICT (project_id, metadata_key) DO UPDATE SET \
                     metadata_value = EXCLUDED.metadata_value, last_updated_timestamp = EXCLUDED.last_updated_timestamp",
                    list(4)
                );
                let values = vec![
                    Value::Text(m.project.clone()),
                    Value::Text(m.key.clone()),
                    Value::Text(m.value.clone()),
                    Value::Int(m.last_updated),
                ];
                (sql, values)
            }
            Write::MetadataDelete { project, key } => {
                let sql = format!(
                    "DELETE FROM {METADATA_TABLE} WHERE project_id = {} AND metadata_key = {}",
                    p(d, 1),
                    p(d, 2)
                );
                (
                    sql,
                    vec![Value::Text(project.clone()), Value::Text(key.clone())],
                )
            }
        }
    }

    /// The row, for messages.
    fn describe(&self) -> String {
        match self {
            Write::Upsert { table, name, .. } => {
                format!("writing '{name}' to table {}", TABLES[*table].name)
            }
            Write::Delete { table, name, .. } => {
                format!("deleting '{name}' from table {}", TABLES[*table].name)
            }
            Write::HistoryInsert(r) => format!(
                "adding version {} of '{}' to table {HISTORY_TABLE}",
                r.version_number, r.feature_view_name
            ),
            Write::HistoryUpdate(r) => format!(
                "updating version {} of '{}' in table {HISTORY_TABLE}",
                r.version_number, r.feature_view_name
            ),
            Write::HistoryDelete { name, version, .. } => {
                format!("deleting version {version} of '{name}' from table {HISTORY_TABLE}")
            }
            Write::MetadataUpsert(m) => format!("writing '{}' to table {METADATA_TABLE}", m.key),
            Write::MetadataDelete { key, .. } => {
                format!("deleting '{key}' from table {METADATA_TABLE}")
            }
        }
    }
}

/// An object as its table row holds it.
#[derive(Debug)]
struct Flat<'a> {
    project: &'a str,
    name: &'a str,
    row: Option<&'a RowColumns>,
    proto: Vec<u8>,
}

/// The objects of table `kind`, encoded.
fn flat(m: &RegistryModel, kind: Kind) -> Vec<Flat<'_>> {
    fn typed<T: Message>(objects: &[Stored<T>]) -> Vec<Flat<'_>> {
        objects
            .iter()
            .map(|s| Flat {
                project: &s.project,
                name: &s.name,
                row: s.row.as_ref(),
                proto: s.object.encode_to_vec(),
            })
            .collect()
    }
    fn opaque(objects: &[Stored<Vec<u8>>]) -> Vec<Flat<'_>> {
        objects
            .iter()
            .map(|s| Flat {
                project: &s.project,
                name: &s.name,
                row: s.row.as_ref(),
                proto: s.object.clone(),
            })
            .collect()
    }
    match kind {
        Kind::Project => typed(&m.projects),
        Kind::Entity => typed(&m.entities),
        Kind::DataSource => typed(&m.data_sources),
        Kind::FeatureView => typed(&m.feature_views),
        Kind::StreamFeatureView => typed(&m.stream_feature_views),
        Kind::OnDemandFeatureView => typed(&m.on_demand_feature_views),
        Kind::LabelView => typed(&m.label_views),
        Kind::FeatureService => typed(&m.feature_services),
        Kind::SavedDataset => opaque(&m.saved_datasets),
        Kind::ValidationReference => opaque(&m.validation_references),
        Kind::Permission => opaque(&m.permissions),
        Kind::Infra => opaque(&m.infra),
    }
}

const PROJECT_UUID: &str = "project_uuid";
const LAST_UPDATED: &str = "last_updated_timestamp";

/// The rows to write to turn `old` into `new` (both `project`'s), `now` in epoch
/// seconds. An object of another project, or without a name, is refused: `old` was
/// read for `project` alone, so it could never be deleted again.
fn changes(
    project: &str,
    old: &RegistryModel,
    new: &RegistryModel,
    now: i64,
) -> Result<Vec<Write>, String> {
    let mut writes = Vec::new();
    let mut holds_anything = false;
    for (t, table) in TABLES.iter().enumerate() {
        let old_rows = flat(old, table.kind);
        let before: HashMap<(&str, &str), &Flat<'_>> =
            old_rows.iter().map(|f| ((f.project, f.name), f)).collect();
        let after = flat(new, table.kind);
        holds_anything |= !after.is_empty();
        for f in &after {
            if f.project != project || f.name.is_empty() {
                return Err(format!(
                    "cannot write '{}' of project '{}' to table {} in a write to project '{project}'",
                    f.name, f.project, table.name
                ));
            }
            // A row rebuilt without its columns keeps the stored ones, as Feast's
            // update does.
            let (user_metadata, intervals, last_updated) = match before.get(&(f.project, f.name)) {
                Some(o) => {
                    let stored = o.row.cloned().unwrap_or_default();
                    let wanted = f.row.cloned().unwrap_or_else(|| stored.clone());
                    if o.proto == f.proto
                        && wanted.user_metadata == stored.user_metadata
                        && wanted.materialized_intervals == stored.materialized_intervals
                    {
                        continue;
                    }
                    (
                        wanted.user_metadata,
                        wanted.materialized_intervals,
                        now.max(stored.last_updated.saturating_add(1)),
                    )
                }
                None => (
                    f.row.and_then(|r| r.user_metadata.clone()),
                    f.row.and_then(|r| r.materialized_intervals.clone()),
                    now,
                ),
            };
            writes.push(Write::Upsert {
                table: t,
                project: f.project.to_owned(),
                name: f.name.to_owned(),
                last_updated,
                proto: f.proto.clone(),
                user_metadata: if table.user_metadata {
                    user_metadata
                } else {
                    None
                },
                intervals: if table.intervals { intervals } else { None },
            });
        }
        let kept: HashSet<(&str, &str)> = after.iter().map(|f| (f.project, f.name)).collect();
        for gone in old_rows
            .iter()
            .filter(|o| !kept.contains(&(o.project, o.name)))
        {
            writes.push(Write::Delete {
                table: t,
                project: gone.project.to_owned(),
                name: gone.name.to_owned(),
            });
        }
    }

    let history_key = |r: &pb::FeatureViewVersionRecord| {
        (
            r.project_id.clone(),
            r.feature_view_name.clone(),
            r.version_number,
        )
    };
    let before: HashMap<_, _> = old
        .version_history
        .iter()
        .map(|r| (history_key(r), r))
        .collect();
    holds_anything |= !new.version_history.is_empty();
    for r in &new.version_history {
        if r.project_id != project {
            return Err(format!(
                "cannot write version {} of '{}' of project '{}' in a write to project '{project}'",
                r.version_number, r.feature_view_name, r.project_id
            ));
        }
        match before.get(&history_key(r)) {
            Some(o) if *o == r => {}
            Some(_) => writes.push(Write::HistoryUpdate(r.clone())),
            None => writes.push(Write::HistoryInsert(r.clone())),
        }
    }
    let kept: HashSet<_> = new.version_history.iter().map(history_key).collect();
    for gone in old
        .version_history
        .iter()
        .filter(|r| !kept.contains(&history_key(r)))
    {
        writes.push(Write::HistoryDelete {
            project: gone.project_id.clone(),
            name: gone.feature_view_name.clone(),
            version: gone.version_number,
        });
    }

    let mut metadata = new.metadata.clone();
    if let Some(m) = metadata.iter().find(|m| m.project != project) {
        return Err(format!(
            "cannot write metadata '{}' of project '{}' in a write to project '{project}'",
            m.key, m.project
        ));
    }
    // Feast keeps a uuid per project and stamps every apply.
    if holds_anything {
        if !metadata.iter().any(|m| m.key == PROJECT_UUID) {
            let kept = old.metadata.iter().find(|m| m.key == PROJECT_UUID).cloned();
            metadata.push(kept.unwrap_or_else(|| MetadataRow {
                project: project.to_owned(),
                key: PROJECT_UUID.to_owned(),
                value: uuid::Uuid::new_v4().to_string(),
                last_updated: now,
            }));
        }
        let previous = old
            .metadata
            .iter()
            .chain(&new.metadata)
            .filter(|m| m.key == LAST_UPDATED)
            .map(|m| m.last_updated.saturating_add(1))
            .max()
            .unwrap_or(now);
        let stamp = now.max(previous);
        metadata.retain(|m| m.key != LAST_UPDATED);
        metadata.push(MetadataRow {
            project: project.to_owned(),
            key: LAST_UPDATED.to_owned(),
            value: stamp.to_string(),
            last_updated: stamp,
        });
    }
    for m in &metadata {
        if !old.metadata.contains(m) {
            writes.push(Write::MetadataUpsert(m.clone()));
        }
    }
    for m in &old.metadata {
        if !metadata.iter().any(|n| n.key == m.key) {
            writes.push(Write::MetadataDelete {
                project: m.project.clone(),
                key: m.key.clone(),
            });
        }
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::model::Opaque;

    const NOW: i64 = 2_000_000_000;

    fn entity(name: &str, description: &str, last_updated: i64) -> Stored<pb::Entity> {
        Stored {
            project: "p".into(),
            name: name.into(),
            row: Some(RowColumns {
                last_updated,
                ..Default::default()
            }),
            object: pb::Entity {
                spec: Some(pb::EntitySpecV2 {
                    name: name.into(),
                    project: "p".into(),
                    description: description.into(),
                    ..Default::default()
                }),
                meta: None,
            },
        }
    }

    fn metadata(key: &str, value: &str, last_updated: i64) -> MetadataRow {
        MetadataRow {
            project: "p".into(),
            key: key.into(),
            value: value.into(),
            last_updated,
        }
    }

    fn old() -> RegistryModel {
        RegistryModel {
            entities: vec![entity("a", "", 100), entity("b", "", 100)],
            metadata: vec![
                metadata(PROJECT_UUID, "u", 10),
                metadata(LAST_UPDATED, "100", 100),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn only_what_differs_is_written() {
        let old = old();
        let mut new = old.clone();
        new.entities[0].object.spec.as_mut().unwrap().description = "changed".into();
        new.entities.remove(1);
        let mut c = entity("c", "", 0);
        c.row = None;
        new.entities.push(c);
        let writes = changes("p", &old, &new, NOW).unwrap();
        let summary: Vec<String> = writes.iter().map(Write::describe).collect();
        assert_eq!(
            summary,
            [
                "writing 'a' to table entities",
                "writing 'c' to table entities",
                "deleting 'b' from table entities",
                "writing 'last_updated_timestamp' to table feast_metadata",
            ]
        );
        let stamps: Vec<i64> = writes
            .iter()
            .filter_map(|w| match w {
                Write::Upsert { last_updated, .. } => Some(*last_updated),
                _ => None,
            })
            .collect();
        assert_eq!(stamps, [NOW, NOW]);
        assert_eq!(
            writes[3],
            Write::MetadataUpsert(metadata(LAST_UPDATED, "2000000000", NOW))
        );
    }

    #[test]
    fn a_changed_row_always_moves_forward() {
        let old = old();
        let mut new = old.clone();
        new.entities[0].object.spec.as_mut().unwrap().description = "changed".into();
        // The clock says the same second as (or earlier than) the stored rows.
        let writes = changes("p", &old, &new, 100).unwrap();
        assert!(
            matches!(
                writes[0],
                Write::Upsert {
                    last_updated: 101,
                    ..
                }
            ),
            "{writes:?}"
        );
        assert_eq!(
            writes[1],
            Write::MetadataUpsert(metadata(LAST_UPDATED, "101", 101))
        );
    }

    #[test]
    fn a_fresh_project_gets_its_metadata_and_nulls() {
        let mut new = RegistryModel::default();
        let mut view = Stored {
            project: "p".into(),
            name: "v".into(),
            row: None,
            object: pb::FeatureView::default(),
        };
        new.feature_views.push(view.clone());
        let writes = changes("p", &RegistryModel::default(), &new, NOW).unwrap();
        assert!(matches!(
            &writes[0],
            Write::Upsert {
                last_updated: NOW,
                user_metadata: None,
                intervals: None,
                ..
            }
        ));
        let keys: Vec<&str> = writes
            .iter()
            .filter_map(|w| match w {
                Write::MetadataUpsert(m) => Some(m.key.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(keys, [PROJECT_UUID, LAST_UPDATED]);

        view.project = "other".into();
        let new = RegistryModel {
            feature_views: vec![view],
            ..Default::default()
        };
        let e = changes("p", &RegistryModel::default(), &new, NOW).unwrap_err();
        assert!(e.contains("project 'other'"), "{e}");
        let unnamed = RegistryModel {
            saved_datasets: vec![Stored::<Opaque> {
                project: "p".into(),
                name: String::new(),
                row: None,
                object: vec![1],
            }],
            ..Default::default()
        };
        assert!(changes("p", &RegistryModel::default(), &unnamed, NOW).is_err());
    }

    #[test]
    fn row_columns_are_kept_or_written() {
        let mut old = RegistryModel::default();
        old.feature_views.push(Stored {
            project: "p".into(),
            name: "v".into(),
            row: Some(RowColumns {
                last_updated: 5,
                user_metadata: Some(vec![1]),
                materialized_intervals: Some(vec![2]),
            }),
            object: pb::FeatureView::default(),
        });
        // Rebuilt without its row, unchanged: nothing but the stamp.
        let mut new = old.clone();
        new.feature_views[0].row = None;
        let writes = changes("p", &old, &new, NOW).unwrap();
        assert!(
            writes.iter().all(|w| matches!(w, Write::MetadataUpsert(_))),
            "{writes:?}"
        );
        // Only the intervals change: written, stamped, user_metadata kept.
        let mut new = old.clone();
        new.feature_views[0]
            .row
            .as_mut()
            .unwrap()
            .materialized_intervals = Some(vec![3]);
        let writes = changes("p", &old, &new, NOW).unwrap();
        assert!(matches!(
            &writes[0],
            Write::Upsert { last_updated: NOW, user_metadata: Some(u), intervals: Some(i), .. }
                if u == &[1] && i == &[3]
        ));
    }

    #[test]
    fn statements_number_their_parameters_per_database() {
        let r = pb::FeatureViewVersionRecord {
            feature_view_name: "v".into(),
            project_id: "p".into(),
            version_number: 2,
            ..Default::default()
        };
        let (sql, values) = Write::HistoryUpdate(r.clone()).statement(Dialect::Sqlite);
        assert!(
            sql.starts_with("UPDATE feature_view_version_history SET feature_view_type = ?4")
                && sql.ends_with("version_number = ?3"),
            "{sql}"
        );
        assert_eq!(values.len(), 8);
        let (sql, _) = Write::Upsert {
            table: 0,
            project: "p".into(),
            name: "p".into(),
            last_updated: 1,
            proto: vec![],
            user_metadata: None,
            intervals: None,
        }
        .statement(Dialect::Postgres);
        assert_eq!(
            sql,
            "INSERT INTO projects (project_name, project_id, last_updated_timestamp, project_proto) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (project_id) DO UPDATE SET \
             project_name = EXCLUDED.project_name, last_updated_timestamp = EXCLUDED.last_updated_timestamp, \
             project_proto = EXCLUDED.project_proto"
        );
    }

    #[test]
    fn the_lock_key_is_fixed() {
        assert_eq!(lock_key("tern_demo"), lock_key("tern_demo"));
        assert_ne!(lock_key("tern_demo"), lock_key("other"));
    }

    #[test]
    fn the_schema_holds_every_table_tern_reads() {
        for t in &TABLES {
            let def = SCHEMA.iter().find(|d| d.name == t.name).unwrap();
            let ddl = def.ddl(Dialect::Postgres);
            for c in [t.name_column, t.proto_column, "last_updated_timestamp"] {
                assert!(ddl.contains(&format!("\t{c} ")), "{} {c}", t.name);
            }
        }
        assert!(SCHEMA.iter().any(|d| d.name == HISTORY_TABLE));
        assert!(SCHEMA.iter().any(|d| d.name == METADATA_TABLE));
    }
}
