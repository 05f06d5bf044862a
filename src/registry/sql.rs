//! Feast's SQL registry (`registry_type: sql`), on PostgreSQL or SQLite.
//!
//! Feast stores one serialized proto per object, in one table per kind (`entities`,
//! `feature_views`, ...), keyed by name and `project_id`, with `last_updated_timestamp`
//! epoch seconds (and `user_metadata`, `materialized_intervals` on view tables);
//! versions live in `feature_view_version_history`, per-project settings in
//! `feast_metadata`. Tern reads every table of the configured project, every column,
//! into a [`RegistryModel`], with each object's project taken from `project_id` (Feast's
//! materialization leaves `spec.project` empty) and nothing rewritten.
//!
//! Every read runs in one read-only transaction (REPEATABLE READ on PostgreSQL, one
//! read transaction on SQLite), with the change fingerprint taken inside it: a
//! concurrent `feast apply` can never produce a registry that mixes two states. Each
//! read, and connecting, is bounded by the registry timeout; a NULL or wrongly typed
//! column is an error naming the table and the column.
//!
//! Change detection is the fingerprint: per table, the row count and the newest
//! `last_updated_timestamp` (the history's newest version number). Feast's
//! `projects.last_updated_timestamp` does not move on object applies, so it is not
//! enough on its own.
//!
//! PostgreSQL connections take libpq's `sslmode` and `sslrootcert` (see `pg_tls`).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prost::Message;
use tokio_postgres::GenericClient;

use super::RegistryError;
use super::model::{MetadataRow, Opaque, RegistryModel, RowColumns, Stored};
use crate::proto::feast::core as pb;

mod pg_tls;
mod schema;
mod write;

pub use write::SqlTxn;

/// A SQL registry database.
#[derive(Debug)]
pub struct SqlSource {
    backend: Backend,
    /// The database as shown in messages: no user, no password.
    name: String,
    /// Bound on connecting and on each read.
    timeout: Duration,
    /// How long a write waits for another writer's lock, and how often one did.
    write_lock: Arc<WriteLock>,
}

/// A source's write-lock wait and count, shared so that a wait can be watched.
#[derive(Debug)]
pub struct WriteLock {
    wait_ms: AtomicU64,
    waits: AtomicU64,
}

impl WriteLock {
    fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            wait_ms: AtomicU64::new(millis(timeout.max(MIN_LOCK_WAIT))),
            waits: AtomicU64::new(0),
        })
    }

    /// How long a write waits for another writer's lock.
    pub fn wait(&self) -> Duration {
        Duration::from_millis(self.wait_ms.load(Ordering::Relaxed))
    }

    /// Writes on this source that found the lock taken and waited for it.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    fn waited(&self) {
        self.waits.fetch_add(1, Ordering::Relaxed);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The shortest wait for another writer: waiting for another apply is normal.
const MIN_LOCK_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug)]
enum Backend {
    Postgres {
        config: Box<tokio_postgres::Config>,
        tls: PgTls,
        /// Kept between reloads; dropped after an error so the next reload reconnects.
        client: Option<tokio_postgres::Client>,
    },
    Sqlite {
        path: PathBuf,
    },
}

/// The connector for the URL's `sslmode`.
#[derive(Clone)]
struct PgTls(tokio_postgres_rustls::MakeRustlsConnect);

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgTls")
    }
}

/// The URL's TLS settings, which tokio-postgres does not parse.
struct TlsOptions {
    mode: pg_tls::SslMode,
    root_cert: Option<PathBuf>,
}

/// Takes `sslmode` and `sslrootcert` out of a PostgreSQL URL's query (the rest is left
/// to tokio-postgres). `sslrootcert` resolves against the YAML's folder, like every
/// other path in `feature_store.yaml`.
fn split_tls_options(rest: &str, repo_dir: &Path) -> Result<(String, TlsOptions), String> {
    let mut tls = TlsOptions {
        mode: pg_tls::SslMode::Prefer,
        root_cert: None,
    };
    let Some((base, query)) = rest.split_once('?') else {
        return Ok((rest.to_owned(), tls));
    };
    let decoded = |v: &str| {
        percent_encoding::percent_decode_str(v)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => tls.mode = pg_tls::SslMode::parse(&decoded(value))?,
            "sslrootcert" => tls.root_cert = Some(repo_dir.join(decoded(value))),
            "sslcert" | "sslkey" | "sslpassword" => {
                return Err(format!(
                    "{key}: client certificates are not supported; authenticate with a password"
                ));
            }
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, tls))
}

/// What an object table holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Project,
    Entity,
    DataSource,
    FeatureView,
    StreamFeatureView,
    OnDemandFeatureView,
    LabelView,
    FeatureService,
    SavedDataset,
    ValidationReference,
    Permission,
    Infra,
}

/// One object table of Feast's SQL registry and its columns.
#[derive(Debug)]
struct Table {
    name: &'static str,
    /// The object's name (`project_name` for `projects`).
    name_column: &'static str,
    proto_column: &'static str,
    kind: Kind,
    /// Has `user_metadata` (view tables).
    user_metadata: bool,
    /// Has `materialized_intervals` (`feature_views`).
    intervals: bool,
}

const fn table(
    name: &'static str,
    name_column: &'static str,
    proto_column: &'static str,
    kind: Kind,
) -> Table {
    Table {
        name,
        name_column,
        proto_column,
        kind,
        user_metadata: false,
        intervals: false,
    }
}

const fn view_table(name: &'static str, kind: Kind, intervals: bool) -> Table {
    Table {
        name,
        name_column: "feature_view_name",
        proto_column: "feature_view_proto",
        kind,
        user_metadata: true,
        intervals,
    }
}

/// Every object table Feast 0.67 writes, in the order they are read.
const TABLES: [Table; 12] = [
    table("projects", "project_name", "project_proto", Kind::Project),
    table("entities", "entity_name", "entity_proto", Kind::Entity),
    table(
        "data_sources",
        "data_source_name",
        "data_source_proto",
        Kind::DataSource,
    ),
    view_table("feature_views", Kind::FeatureView, true),
    view_table("stream_feature_views", Kind::StreamFeatureView, false),
    view_table("on_demand_feature_views", Kind::OnDemandFeatureView, false),
    view_table("label_views", Kind::LabelView, false),
    table(
        "feature_services",
        "feature_service_name",
        "feature_service_proto",
        Kind::FeatureService,
    ),
    table(
        "saved_datasets",
        "saved_dataset_name",
        "saved_dataset_proto",
        Kind::SavedDataset,
    ),
    table(
        "validation_references",
        "validation_reference_name",
        "validation_reference_proto",
        Kind::ValidationReference,
    ),
    table(
        "permissions",
        "permission_name",
        "permission_proto",
        Kind::Permission,
    ),
    table("managed_infra", "infra_name", "infra_proto", Kind::Infra),
];
const HISTORY_TABLE: &str = "feature_view_version_history";
const METADATA_TABLE: &str = "feast_metadata";

impl Table {
    fn select(&self) -> String {
        let mut columns = format!(
            "{}, project_id, last_updated_timestamp, {}",
            self.name_column, self.proto_column
        );
        if self.user_metadata {
            columns.push_str(", user_metadata");
        }
        if self.intervals {
            columns.push_str(", materialized_intervals");
        }
        format!(
            "SELECT {columns} FROM {} WHERE project_id = $1 ORDER BY {}",
            self.name, self.name_column
        )
    }

    fn fingerprint(&self) -> String {
        format!(
            "SELECT count(*), CAST(coalesce(max(last_updated_timestamp), 0) AS BIGINT) FROM {} WHERE project_id = $1",
            self.name
        )
    }
}

const HISTORY_SELECT: &str = "SELECT feature_view_name, project_id, version_number, feature_view_type, \
     feature_view_proto, created_timestamp, description, version_id \
     FROM feature_view_version_history WHERE project_id = $1 ORDER BY feature_view_name, version_number";
const HISTORY_FINGERPRINT: &str = "SELECT count(*), CAST(coalesce(max(version_number), -1) AS BIGINT) \
     FROM feature_view_version_history WHERE project_id = $1";
const METADATA_FINGERPRINT: &str = "SELECT count(*), CAST(coalesce(max(last_updated_timestamp), 0) AS BIGINT) \
     FROM feast_metadata WHERE project_id = $1";
const METADATA_SELECT: &str = "SELECT project_id, metadata_key, metadata_value, last_updated_timestamp \
     FROM feast_metadata WHERE project_id = $1 ORDER BY metadata_key";

/// Row counts and newest timestamps per table: equal fingerprints, same registry.
pub type Fingerprint = Vec<(&'static str, i64, i64)>;

/// One object row, as read.
#[derive(Debug)]
struct ObjectRow {
    table: usize,
    name: String,
    project: String,
    columns: RowColumns,
    proto: Vec<u8>,
}

/// One history row, as read.
#[derive(Debug)]
struct HistoryRow {
    name: String,
    project: String,
    version: i32,
    kind: String,
    proto: Vec<u8>,
    created: i64,
    description: Option<String>,
    version_id: String,
}

/// What one transaction read: the fingerprint, and the rows when asked for.
#[derive(Debug, Default)]
struct Image {
    fingerprint: Fingerprint,
    objects: Vec<ObjectRow>,
    history: Vec<HistoryRow>,
    metadata: Vec<MetadataRow>,
}

/// Why a read failed, before the source's name is attached.
#[derive(Debug)]
enum Failure {
    /// The database failed (connection, query).
    Db(String),
    /// A value of the wrong type, or NULL where Feast never writes one.
    Column {
        table: &'static str,
        column: &'static str,
        row: Option<String>,
        problem: String,
    },
}

impl Failure {
    fn into_error(self, source_name: &str) -> RegistryError {
        match self {
            Failure::Db(detail) => RegistryError::Sql {
                source_name: source_name.to_owned(),
                detail,
            },
            Failure::Column {
                table,
                column,
                row,
                problem,
            } => RegistryError::SqlColumn {
                source_name: source_name.to_owned(),
                table,
                column,
                row,
                problem,
            },
        }
    }
}

/// A row's values, whichever database it came from.
trait RowAccess {
    fn text(&self, i: usize) -> Result<String, String>;
    fn int(&self, i: usize) -> Result<i64, String>;
    fn int32(&self, i: usize) -> Result<i32, String>;
    fn blob(&self, i: usize) -> Result<Vec<u8>, String>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, String>;
    fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, String>;
}

/// Implements [`RowAccess`] over a database's own typed getter.
macro_rules! row_access {
    ($row:ty, $get:ident, $problem:ident) => {
        impl RowAccess for $row {
            fn text(&self, i: usize) -> Result<String, String> {
                self.$get(i).map_err(|e| $problem(&e))
            }
            fn int(&self, i: usize) -> Result<i64, String> {
                self.$get(i).map_err(|e| $problem(&e))
            }
            fn int32(&self, i: usize) -> Result<i32, String> {
                self.$get(i).map_err(|e| $problem(&e))
            }
            fn blob(&self, i: usize) -> Result<Vec<u8>, String> {
                self.$get(i).map_err(|e| $problem(&e))
            }
            fn opt_text(&self, i: usize) -> Result<Option<String>, String> {
                self.$get(i).map_err(|e| $problem(&e))
            }
            fn opt_blob(&self, i: usize) -> Result<Option<Vec<u8>>, String> {
                self.$get(i).map_err(|e| $problem(&e))
            }
        }
    };
}
row_access!(tokio_postgres::Row, try_get, pg_column_problem);
row_access!(rusqlite::Row<'_>, get, sqlite_column_problem);

/// tokio-postgres says "error deserializing column 3: ..."; the caller names the column.
fn pg_column_problem(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) if cause.is::<tokio_postgres::types::WasNull>() => {
            "NULL where a value is required".to_owned()
        }
        Some(cause) => cause.to_string(),
        None => e.to_string(),
    }
}

fn sqlite_column_problem(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::InvalidColumnType(_, _, rusqlite::types::Type::Null) => {
            "NULL where a value is required".to_owned()
        }
        rusqlite::Error::InvalidColumnType(_, _, found) => {
            format!("holds a value of type {found}")
        }
        other => other.to_string(),
    }
}

/// A column's value as read, or a failure naming the table, the column and the row.
fn column<T>(
    table: &'static str,
    column: &'static str,
    row_name: Option<&str>,
    value: Result<T, String>,
) -> Result<T, Failure> {
    value.map_err(|problem| Failure::Column {
        table,
        column,
        row: row_name.map(str::to_owned),
        problem,
    })
}

fn object_row(t: usize, row: &impl RowAccess) -> Result<ObjectRow, Failure> {
    let table = &TABLES[t];
    let name = column(table.name, table.name_column, None, row.text(0))?;
    let named = Some(name.as_str());
    let project = column(table.name, "project_id", named, row.text(1))?;
    let last_updated = column(table.name, "last_updated_timestamp", named, row.int(2))?;
    let proto = column(table.name, table.proto_column, named, row.blob(3))?;
    // The optional columns follow in `select`'s order.
    let user_metadata = if table.user_metadata {
        column(table.name, "user_metadata", named, row.opt_blob(4))?
    } else {
        None
    };
    let materialized_intervals = if table.intervals {
        let i = 4 + usize::from(table.user_metadata);
        column(table.name, "materialized_intervals", named, row.opt_blob(i))?
    } else {
        None
    };
    Ok(ObjectRow {
        table: t,
        name,
        project,
        columns: RowColumns {
            last_updated,
            user_metadata,
            materialized_intervals,
        },
        proto,
    })
}

fn history_row(row: &impl RowAccess) -> Result<HistoryRow, Failure> {
    let name = column(HISTORY_TABLE, "feature_view_name", None, row.text(0))?;
    let named = Some(name.as_str());
    Ok(HistoryRow {
        project: column(HISTORY_TABLE, "project_id", named, row.text(1))?,
        version: column(HISTORY_TABLE, "version_number", named, row.int32(2))?,
        kind: column(HISTORY_TABLE, "feature_view_type", named, row.text(3))?,
        proto: column(HISTORY_TABLE, "feature_view_proto", named, row.blob(4))?,
        created: column(HISTORY_TABLE, "created_timestamp", named, row.int(5))?,
        description: column(HISTORY_TABLE, "description", named, row.opt_text(6))?,
        version_id: column(HISTORY_TABLE, "version_id", named, row.text(7))?,
        name,
    })
}

fn metadata_row(row: &impl RowAccess) -> Result<MetadataRow, Failure> {
    Ok(MetadataRow {
        project: column(METADATA_TABLE, "project_id", None, row.text(0))?,
        key: column(METADATA_TABLE, "metadata_key", None, row.text(1))?,
        value: column(METADATA_TABLE, "metadata_value", None, row.text(2))?,
        last_updated: column(METADATA_TABLE, "last_updated_timestamp", None, row.int(3))?,
    })
}

/// The fingerprint queries, in order: object tables, the history, the metadata.
fn fingerprint_queries() -> Vec<(&'static str, String)> {
    let mut q: Vec<(&'static str, String)> =
        TABLES.iter().map(|t| (t.name, t.fingerprint())).collect();
    q.push((HISTORY_TABLE, HISTORY_FINGERPRINT.to_owned()));
    q.push((METADATA_TABLE, METADATA_FINGERPRINT.to_owned()));
    q
}

impl SqlSource {
    /// Understands the URLs Feast's SQL registry takes: `postgresql://`,
    /// `postgresql+psycopg://` (and `postgres://`), `sqlite:///relative/path` (against
    /// the YAML's folder) and `sqlite:////absolute/path`. Connecting, and every read,
    /// is bounded by `timeout`.
    pub fn from_url(url: &str, repo_dir: &Path, timeout: Duration) -> Result<Self, RegistryError> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            RegistryError::Unsupported(format!(
                "registry.path: '{}' is not a database URL",
                redact(url)
            ))
        })?;
        let driver = scheme.split('+').next().unwrap_or(scheme);
        match driver {
            "postgresql" | "postgres" => {
                let bad = |e: String| {
                    RegistryError::Unsupported(format!("registry.path: {}: {e}", redact(url)))
                };
                let (rest, tls) = split_tls_options(rest, repo_dir).map_err(bad)?;
                let mut config = tokio_postgres::Config::from_str(&format!("postgresql://{rest}"))
                    .map_err(|e| bad(e.to_string()))?;
                config.ssl_mode(tls.mode.negotiation());
                if config.get_connect_timeout().is_none() {
                    config.connect_timeout(timeout);
                }
                let connector =
                    pg_tls::connector(tls.mode, tls.root_cert.as_deref()).map_err(bad)?;
                let name = postgres_name(&config);
                Ok(Self {
                    backend: Backend::Postgres {
                        config: Box::new(config),
                        tls: PgTls(connector),
                        client: None,
                    },
                    name,
                    timeout,
                    write_lock: WriteLock::new(timeout),
                })
            }
            "sqlite" => {
                // sqlite:///relative (three slashes) or sqlite:////absolute (four).
                let path = rest.strip_prefix('/').unwrap_or(rest);
                let path = if Path::new(path).is_absolute() {
                    PathBuf::from(path)
                } else {
                    repo_dir.join(path)
                };
                Ok(Self {
                    name: format!("sqlite:{}", path.display()),
                    backend: Backend::Sqlite { path },
                    timeout,
                    write_lock: WriteLock::new(timeout),
                })
            }
            other => Err(RegistryError::Unsupported(format!(
                "registry.path: '{other}' SQL registries are not supported: Tern reads PostgreSQL and SQLite"
            ))),
        }
    }

    /// The database, for messages (no credentials).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long [`begin`](Self::begin) waits for another writer's lock (the registry
    /// timeout, and at least a minute, unless set here).
    pub fn set_lock_wait(&mut self, wait: Duration) {
        self.write_lock
            .wait_ms
            .store(millis(wait), Ordering::Relaxed);
    }

    /// The write lock's wait and count (shared: it can be watched while a write
    /// waits).
    pub fn write_lock(&self) -> Arc<WriteLock> {
        self.write_lock.clone()
    }

    /// The cheap change check: counts and newest timestamps, in one transaction.
    pub async fn fingerprint(&mut self, project: &str) -> Result<Fingerprint, RegistryError> {
        Ok(self.load(project, false).await?.fingerprint)
    }

    /// Reads the project's rows, every table and column, and the fingerprint of
    /// exactly what was read, in one transaction.
    pub async fn read(
        &mut self,
        project: &str,
    ) -> Result<(RegistryModel, Fingerprint), RegistryError> {
        let image = self.load(project, true).await?;
        let fingerprint = image.fingerprint.clone();
        Ok((assemble(&self.name, image)?, fingerprint))
    }

    async fn load(&mut self, project: &str, objects: bool) -> Result<Image, RegistryError> {
        let (name, timeout) = (self.name.clone(), self.timeout);
        let timed_out = || RegistryError::SqlTimeout {
            source_name: name.clone(),
            after: timeout,
        };
        match &mut self.backend {
            Backend::Postgres {
                config,
                tls,
                client,
            } => {
                let attempt = async {
                    let c = connected(config, tls, client, &name).await?;
                    pg_load(c, project, objects)
                        .await
                        .map_err(|f| f.into_error(&name))
                };
                let result = tokio::time::timeout(timeout, attempt)
                    .await
                    .unwrap_or_else(|_| Err(timed_out()));
                if result.is_err() {
                    // A connection that failed or timed out mid-query is not reused.
                    *client = None;
                }
                result
            }
            Backend::Sqlite { path } => {
                let (path, project) = (path.clone(), project.to_owned());
                let (tx, rx) = tokio::sync::oneshot::channel();
                let task = tokio::task::spawn_blocking(move || {
                    let conn = open_sqlite(&path, timeout)?;
                    // Lets the caller interrupt a read that outlives the timeout.
                    let _ = tx.send(conn.get_interrupt_handle());
                    sqlite_load(&conn, &project, objects)
                });
                // One deadline for opening and reading: opening can hang too (a file on
                // a stalled network mount).
                let deadline = tokio::time::Instant::now() + timeout;
                let interrupt = match tokio::time::timeout_at(deadline, rx).await {
                    Ok(handle) => handle.ok(),
                    Err(_) => return Err(timed_out()),
                };
                match tokio::time::timeout_at(deadline, task).await {
                    Ok(joined) => joined
                        .map_err(|e| Failure::Db(e.to_string()))
                        .and_then(|r| r)
                        .map_err(|f| f.into_error(&name)),
                    Err(_) => {
                        if let Some(handle) = interrupt {
                            handle.interrupt();
                        }
                        Err(timed_out())
                    }
                }
            }
        }
    }
}

/// Tables present in the database (a missing table is read as empty; Feast creates
/// newer tables such as `label_views` lazily).
async fn pg_tables(c: &impl GenericClient) -> Result<Vec<String>, Failure> {
    let rows = c
        .query(
            "SELECT tablename::text FROM pg_catalog.pg_tables WHERE schemaname = ANY (current_schemas(false))",
            &[],
        )
        .await
        .map_err(|e| Failure::Db(pg_detail(&e)))?;
    rows.iter()
        .map(|r| {
            r.try_get::<_, String>(0)
                .map_err(|e| Failure::Db(e.to_string()))
        })
        .collect()
}

async fn pg_load(
    client: &mut tokio_postgres::Client,
    project: &str,
    objects: bool,
) -> Result<Image, Failure> {
    let db = |e: tokio_postgres::Error| Failure::Db(pg_detail(&e));
    let txn = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(db)?;
    let image = pg_read(&txn, project, objects).await?;
    txn.commit().await.map_err(db)?;
    Ok(image)
}

/// Reads the project on `c`, inside a transaction the caller opened and closes.
async fn pg_read(
    c: &(impl GenericClient + Sync),
    project: &str,
    objects: bool,
) -> Result<Image, Failure> {
    let db = |e: tokio_postgres::Error| Failure::Db(pg_detail(&e));
    let present = pg_tables(c).await?;
    let exists = |t: &str| present.iter().any(|p| p == t);
    let mut image = Image::default();
    for (table, sql) in fingerprint_queries() {
        if !exists(table) {
            image.fingerprint.push((table, 0, 0));
            continue;
        }
        let row = c.query_one(sql.as_str(), &[&project]).await.map_err(db)?;
        let count = column(table, "count(*)", None, row.int(0))?;
        let newest = column(table, "max(last_updated_timestamp)", None, row.int(1))?;
        image.fingerprint.push((table, count, newest));
    }
    if objects {
        for (t, table) in TABLES.iter().enumerate() {
            if !exists(table.name) {
                continue;
            }
            for row in c
                .query(table.select().as_str(), &[&project])
                .await
                .map_err(db)?
            {
                image.objects.push(object_row(t, &row)?);
            }
        }
        if exists(HISTORY_TABLE) {
            for row in c.query(HISTORY_SELECT, &[&project]).await.map_err(db)? {
                image.history.push(history_row(&row)?);
            }
        }
        if exists(METADATA_TABLE) {
            for row in c.query(METADATA_SELECT, &[&project]).await.map_err(db)? {
                image.metadata.push(metadata_row(&row)?);
            }
        }
    }
    Ok(image)
}

fn sqlite_load(
    conn: &rusqlite::Connection,
    project: &str,
    objects: bool,
) -> Result<Image, Failure> {
    let db = |e: rusqlite::Error| Failure::Db(e.to_string());
    // One read transaction: every SELECT below sees the same database state.
    let txn = conn.unchecked_transaction().map_err(db)?;
    let image = sqlite_read(&txn, project, objects)?;
    txn.finish().map_err(db)?;
    Ok(image)
}

fn sqlite_tables(conn: &rusqlite::Connection) -> Result<Vec<String>, Failure> {
    conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(|e| Failure::Db(e.to_string()))
}

/// Reads the project on `conn`, inside a transaction the caller opened and closes.
fn sqlite_read(
    conn: &rusqlite::Connection,
    project: &str,
    objects: bool,
) -> Result<Image, Failure> {
    let db = |e: rusqlite::Error| Failure::Db(e.to_string());
    let present = sqlite_tables(conn)?;
    let exists = |t: &str| present.iter().any(|p| p == t);
    let mut image = Image::default();
    for (table, sql) in fingerprint_queries() {
        if !exists(table) {
            image.fingerprint.push((table, 0, 0));
            continue;
        }
        let (count, newest) = conn
            .query_row(&sql, [project], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(db)?;
        image.fingerprint.push((table, count, newest));
    }
    if objects {
        for (t, table) in TABLES.iter().enumerate() {
            if !exists(table.name) {
                continue;
            }
            let mut stmt = conn.prepare(&table.select()).map_err(db)?;
            let mut rows = stmt.query([project]).map_err(db)?;
            while let Some(row) = rows.next().map_err(db)? {
                image.objects.push(object_row(t, row)?);
            }
        }
        if exists(HISTORY_TABLE) {
            let mut stmt = conn.prepare(HISTORY_SELECT).map_err(db)?;
            let mut rows = stmt.query([project]).map_err(db)?;
            while let Some(row) = rows.next().map_err(db)? {
                image.history.push(history_row(row)?);
            }
        }
        if exists(METADATA_TABLE) {
            let mut stmt = conn.prepare(METADATA_SELECT).map_err(db)?;
            let mut rows = stmt.query([project]).map_err(db)?;
            while let Some(row) = rows.next().map_err(db)? {
                image.metadata.push(metadata_row(row)?);
            }
        }
    }
    Ok(image)
}

/// The registry model of what was read. Objects keep their stored protos untouched;
/// their project is the row's `project_id`.
fn assemble(name: &str, image: Image) -> Result<RegistryModel, RegistryError> {
    fn decode<T: Message + Default>(name: &str, row: &ObjectRow) -> Result<T, RegistryError> {
        T::decode(row.proto.as_slice()).map_err(|e| RegistryError::Sql {
            source_name: name.to_owned(),
            detail: format!(
                "the {} row '{}' of table {} is not a valid Feast proto: {e}",
                TABLES[row.table].proto_column, row.name, TABLES[row.table].name
            ),
        })
    }
    fn stored<T>(row: &ObjectRow, object: T) -> Stored<T> {
        Stored {
            project: row.project.clone(),
            name: row.name.clone(),
            row: Some(row.columns.clone()),
            object,
        }
    }
    let mut m = RegistryModel::default();
    for row in &image.objects {
        match TABLES[row.table].kind {
            Kind::Project => m.projects.push(stored(row, decode(name, row)?)),
            Kind::Entity => m.entities.push(stored(row, decode(name, row)?)),
            Kind::DataSource => m.data_sources.push(stored(row, decode(name, row)?)),
            Kind::FeatureView => m.feature_views.push(stored(row, decode(name, row)?)),
            Kind::StreamFeatureView => m.stream_feature_views.push(stored(row, decode(name, row)?)),
            Kind::OnDemandFeatureView => m
                .on_demand_feature_views
                .push(stored(row, decode(name, row)?)),
            Kind::LabelView => m.label_views.push(stored(row, decode(name, row)?)),
            Kind::FeatureService => m.feature_services.push(stored(row, decode(name, row)?)),
            Kind::SavedDataset => m
                .saved_datasets
                .push(stored::<Opaque>(row, row.proto.clone())),
            Kind::ValidationReference => m
                .validation_references
                .push(stored::<Opaque>(row, row.proto.clone())),
            Kind::Permission => m.permissions.push(stored::<Opaque>(row, row.proto.clone())),
            Kind::Infra => m.infra.push(stored::<Opaque>(row, row.proto.clone())),
        }
    }
    m.version_history = image
        .history
        .into_iter()
        .map(|h| pb::FeatureViewVersionRecord {
            feature_view_name: h.name,
            project_id: h.project,
            version_number: h.version,
            feature_view_type: h.kind,
            feature_view_proto: h.proto,
            created_timestamp: Some(prost_types::Timestamp {
                seconds: h.created,
                nanos: 0,
            }),
            description: h.description.unwrap_or_default(),
            version_id: h.version_id,
        })
        .collect();
    m.header.history_present = true;
    m.metadata = image.metadata;
    Ok(m)
}

async fn connected<'a>(
    config: &tokio_postgres::Config,
    tls: &PgTls,
    client: &'a mut Option<tokio_postgres::Client>,
    name: &str,
) -> Result<&'a mut tokio_postgres::Client, RegistryError> {
    if client
        .as_ref()
        .is_some_and(tokio_postgres::Client::is_closed)
    {
        *client = None;
    }
    if client.is_none() {
        *client = Some(pg_connect(config, tls, name).await?);
    }
    client.as_mut().ok_or_else(|| RegistryError::Sql {
        source_name: name.to_owned(),
        detail: "no connection".into(),
    })
}

/// A new connection, its I/O driven by a task of its own that ends when the client is
/// dropped or the server goes away (the server then ends the session, rolling back
/// what it left open).
async fn pg_connect(
    config: &tokio_postgres::Config,
    tls: &PgTls,
    name: &str,
) -> Result<tokio_postgres::Client, RegistryError> {
    let (client, connection) = config
        .connect(tls.0.clone())
        .await
        .map_err(|e| sql_error(name, e))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn open_sqlite(path: &Path, timeout: Duration) -> Result<rusqlite::Connection, Failure> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Failure::Db(e.to_string()))?;
    // A writer's lock is waited on for at most the registry timeout.
    conn.busy_timeout(timeout)
        .map_err(|e| Failure::Db(e.to_string()))?;
    Ok(conn)
}

fn sql_error(name: &str, e: tokio_postgres::Error) -> RegistryError {
    RegistryError::Sql {
        source_name: name.to_owned(),
        detail: pg_detail(&e),
    }
}

/// A PostgreSQL error as a line: the server's code and message, or the chain of causes
/// (a refused connection, a certificate problem). tokio-postgres errors carry no
/// password.
fn pg_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => crate::error::chain(e),
    }
}

fn postgres_name(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgresql://{host}:{port}/{}",
        config.get_dbname().unwrap_or("")
    )
}

/// A URL for messages: the password (between `:` and `@` in the authority) removed.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            format!("{}://<credentials>@{}", &url[..s], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn urls() {
        let pg = SqlSource::from_url(
            "postgresql+psycopg://feast:pw@db.example:6543/registry",
            Path::new("/repo"),
            T,
        )
        .unwrap();
        assert_eq!(pg.name(), "postgresql://db.example:6543/registry");
        let rel = SqlSource::from_url("sqlite:///data/registry.db", Path::new("/repo"), T).unwrap();
        assert_eq!(rel.name(), "sqlite:/repo/data/registry.db");
        let abs =
            SqlSource::from_url("sqlite:////var/feast/registry.db", Path::new("/repo"), T).unwrap();
        assert_eq!(abs.name(), "sqlite:/var/feast/registry.db");
        let err = SqlSource::from_url("mysql://u:secret@h/db", Path::new("/repo"), T)
            .unwrap_err()
            .to_string();
        assert!(err.contains("'mysql'") && !err.contains("secret"), "{err}");
        let err = SqlSource::from_url("not a url", Path::new("/"), T)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a database URL"), "{err}");
        assert_eq!(
            redact("postgresql://u:secret@h/db"),
            "postgresql://<credentials>@h/db"
        );
    }

    #[test]
    fn tls_options_are_taken_out_of_the_url() {
        let (rest, tls) = split_tls_options(
            "u@h/db?connect_timeout=5&sslmode=verify-ca&sslrootcert=certs%2Fca.pem",
            Path::new("/repo"),
        )
        .unwrap();
        assert_eq!(rest, "u@h/db?connect_timeout=5");
        assert_eq!(tls.mode, pg_tls::SslMode::VerifyCa);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/repo/certs/ca.pem")));
        // libpq's default.
        let (rest, tls) = split_tls_options("u@h/db", Path::new("/")).unwrap();
        assert_eq!(
            (rest.as_str(), tls.mode),
            ("u@h/db", pg_tls::SslMode::Prefer)
        );

        let err = |url: &str| {
            SqlSource::from_url(url, Path::new("/repo"), T)
                .unwrap_err()
                .to_string()
        };
        let e = err("postgresql://u:secret@h/db?sslmode=verify-full");
        assert!(
            e.contains("needs sslrootcert") && !e.contains("secret"),
            "{e}"
        );
        let e = err("postgresql://u@h/db?sslmode=on");
        assert!(e.contains("sslmode=on is not a libpq sslmode"), "{e}");
        let e = err("postgresql://u@h/db?sslmode=require&sslrootcert=/nonexistent/ca.pem");
        assert!(e.contains("sslrootcert /nonexistent/ca.pem"), "{e}");
        let e = err("postgresql://u@h/db?sslcert=c.pem&sslkey=k.pem");
        assert!(e.contains("client certificates are not supported"), "{e}");
    }
}
