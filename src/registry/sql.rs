//! Feast's SQL registry (`registry_type: sql`), on PostgreSQL or SQLite.
//!
//! Feast stores one serialized proto per object, in one table per kind (`entities`,
//! `feature_views`, ...), keyed by name and `project_id`, with `last_updated_timestamp`
//! epoch seconds; versions live in `feature_view_version_history`. Tern reads the
//! configured project's rows into a `feast.core.Registry` (with the history in field 18,
//! which Feast's own `proto()` leaves empty) and builds the usual snapshot from it.
//!
//! Change detection is a fingerprint: per table, the row count and the newest
//! `last_updated_timestamp` (the history's newest version number). Feast's
//! `projects.last_updated_timestamp` does not move on object applies, so it is not
//! enough on its own. The snapshot is rebuilt only when the fingerprint changes.
//!
//! PostgreSQL connections take libpq's `sslmode` and `sslrootcert` (see `pg_tls`).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use prost::Message;

use super::RegistryError;
use crate::proto::feast::core as pb;

mod pg_tls;

/// `(table, proto column)` of every object kind Tern serves from.
const OBJECT_TABLES: [(&str, &str); 7] = [
    ("projects", "project_proto"),
    ("entities", "entity_proto"),
    ("feature_views", "feature_view_proto"),
    ("stream_feature_views", "feature_view_proto"),
    ("on_demand_feature_views", "feature_view_proto"),
    ("label_views", "feature_view_proto"),
    ("feature_services", "feature_service_proto"),
];
const HISTORY_TABLE: &str = "feature_view_version_history";

/// Row counts and newest timestamps per table: equal fingerprints, same registry.
pub type Fingerprint = Vec<(&'static str, i64, i64)>;

/// A SQL registry database.
#[derive(Debug)]
pub struct SqlSource {
    backend: Backend,
    /// The database as shown in messages: no user, no password.
    name: String,
}

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

/// One history row, as read.
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

impl SqlSource {
    /// Understands the URLs Feast's SQL registry takes: `postgresql://`,
    /// `postgresql+psycopg://` (and `postgres://`), `sqlite:///relative/path` (against
    /// the YAML's folder) and `sqlite:////absolute/path`.
    pub fn from_url(url: &str, repo_dir: &Path) -> Result<Self, RegistryError> {
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

    /// The cheap change check.
    pub async fn fingerprint(&mut self, project: &str) -> Result<Fingerprint, RegistryError> {
        let mut queries: Vec<(&'static str, String)> = OBJECT_TABLES
            .iter()
            .map(|(table, _)| {
                (
                    *table,
                    format!("SELECT count(*), CAST(coalesce(max(last_updated_timestamp), 0) AS BIGINT) FROM {table} WHERE project_id = $1"),
                )
            })
            .collect();
        queries.push((
            HISTORY_TABLE,
            format!("SELECT count(*), CAST(coalesce(max(version_number), -1) AS BIGINT) FROM {HISTORY_TABLE} WHERE project_id = $1"),
        ));
        let name = self.name.clone();
        match &mut self.backend {
            Backend::Postgres {
                config,
                tls,
                client,
            } => {
                let c = connected(config, tls, client, &name).await?;
                let mut out = Vec::with_capacity(queries.len());
                for (table, sql) in &queries {
                    match c.query_opt(sql.as_str(), &[&project]).await {
                        Ok(Some(row)) => {
                            out.push((*table, row.get::<_, i64>(0), row.get::<_, i64>(1)))
                        }
                        Ok(None) => out.push((*table, 0, 0)),
                        Err(e) if pg_missing_table(&e) => out.push((*table, 0, 0)),
                        Err(e) => {
                            *client = None;
                            return Err(sql_error(&name, e));
                        }
                    }
                }
                Ok(out)
            }
            Backend::Sqlite { path } => {
                let (path, project) = (path.clone(), project.to_owned());
                blocking(&name, move || {
                    let conn = open_sqlite(&path)?;
                    let mut out = Vec::with_capacity(queries.len());
                    for (table, sql) in &queries {
                        match conn.query_row(sql, [&project], |r| {
                            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                        }) {
                            Ok((n, newest)) => out.push((*table, n, newest)),
                            Err(e) if sqlite_missing_table(&e) => out.push((*table, 0, 0)),
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                    Ok(out)
                })
                .await
            }
        }
    }

    /// Reads the project's objects and version history into a registry message.
    pub async fn read(&mut self, project: &str) -> Result<pb::Registry, RegistryError> {
        let name = self.name.clone();
        let (objects, history) = match &mut self.backend {
            Backend::Postgres {
                config,
                tls,
                client,
            } => {
                let c = connected(config, tls, client, &name).await?;
                let result = read_postgres(c, project).await;
                if result.is_err() {
                    *client = None;
                }
                result.map_err(|e| sql_error(&name, e))?
            }
            Backend::Sqlite { path } => {
                let (path, project) = (path.clone(), project.to_owned());
                blocking(&name, move || read_sqlite(&path, &project)).await?
            }
        };
        assemble(&name, project, objects, history)
    }
}

/// `(table, proto bytes)` rows, in table order.
type ObjectRows = Vec<(&'static str, Vec<u8>)>;

async fn read_postgres(
    c: &tokio_postgres::Client,
    project: &str,
) -> Result<(ObjectRows, Vec<HistoryRow>), tokio_postgres::Error> {
    let mut objects = Vec::new();
    for (table, column) in OBJECT_TABLES {
        let sql = format!("SELECT {column} FROM {table} WHERE project_id = $1");
        match c.query(sql.as_str(), &[&project]).await {
            Ok(rows) => objects.extend(rows.iter().map(|r| (table, r.get::<_, Vec<u8>>(0)))),
            Err(e) if pg_missing_table(&e) => {}
            Err(e) => return Err(e),
        }
    }
    let sql = format!(
        "SELECT feature_view_name, project_id, version_number, feature_view_type, feature_view_proto, \
         created_timestamp, description, version_id FROM {HISTORY_TABLE} WHERE project_id = $1"
    );
    let history = match c.query(sql.as_str(), &[&project]).await {
        Ok(rows) => rows
            .iter()
            .map(|r| HistoryRow {
                name: r.get(0),
                project: r.get(1),
                version: r.get(2),
                kind: r.get(3),
                proto: r.get(4),
                created: r.get(5),
                description: r.get(6),
                version_id: r.get(7),
            })
            .collect(),
        Err(e) if pg_missing_table(&e) => Vec::new(),
        Err(e) => return Err(e),
    };
    Ok((objects, history))
}

fn read_sqlite(path: &Path, project: &str) -> Result<(ObjectRows, Vec<HistoryRow>), String> {
    let conn = open_sqlite(path)?;
    let mut objects = Vec::new();
    for (table, column) in OBJECT_TABLES {
        let sql = format!("SELECT {column} FROM {table} WHERE project_id = $1");
        let mut stmt = match conn.prepare(&sql) {
            Ok(s) => s,
            Err(e) if sqlite_missing_table(&e) => continue,
            Err(e) => return Err(e.to_string()),
        };
        let rows = stmt
            .query_map([project], |r| r.get::<_, Vec<u8>>(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| e.to_string())?;
        objects.extend(rows.into_iter().map(|b| (table, b)));
    }
    let sql = format!(
        "SELECT feature_view_name, project_id, version_number, feature_view_type, feature_view_proto, \
         created_timestamp, description, version_id FROM {HISTORY_TABLE} WHERE project_id = $1"
    );
    let history = match conn.prepare(&sql) {
        Ok(mut stmt) => stmt
            .query_map([project], |r| {
                Ok(HistoryRow {
                    name: r.get(0)?,
                    project: r.get(1)?,
                    version: r.get(2)?,
                    kind: r.get(3)?,
                    proto: r.get(4)?,
                    created: r.get(5)?,
                    description: r.get(6)?,
                    version_id: r.get(7)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| e.to_string())?,
        Err(e) if sqlite_missing_table(&e) => Vec::new(),
        Err(e) => return Err(e.to_string()),
    };
    Ok((objects, history))
}

/// Builds the registry message. Like Feast's `SqlRegistry.proto()`, every object's
/// `spec.project` is set to the row's project.
fn assemble(
    name: &str,
    project: &str,
    objects: ObjectRows,
    history: Vec<HistoryRow>,
) -> Result<pb::Registry, RegistryError> {
    let bad = |table: &str, e: prost::DecodeError| RegistryError::Sql {
        source_name: name.to_owned(),
        detail: format!("a row of {table} is not a valid Feast proto: {e}"),
    };
    let mut r = pb::Registry::default();
    // Decode a row, give it the row's project (as Feast's proto() does), keep it.
    macro_rules! keep {
        ($list:expr, $ty:ty, $table:expr, $bytes:expr) => {{
            let mut object = <$ty>::decode($bytes).map_err(|e| bad($table, e))?;
            if let Some(spec) = object.spec.as_mut() {
                spec.project = project.to_owned();
            }
            $list.push(object);
        }};
    }
    for (table, bytes) in objects {
        let b = bytes.as_slice();
        match table {
            "projects" => r
                .projects
                .push(pb::Project::decode(b).map_err(|e| bad(table, e))?),
            "entities" => keep!(r.entities, pb::Entity, table, b),
            "feature_views" => keep!(r.feature_views, pb::FeatureView, table, b),
            "stream_feature_views" => {
                keep!(r.stream_feature_views, pb::StreamFeatureView, table, b)
            }
            "on_demand_feature_views" => {
                keep!(r.on_demand_feature_views, pb::OnDemandFeatureView, table, b)
            }
            "label_views" => keep!(r.label_views, pb::LabelView, table, b),
            "feature_services" => keep!(r.feature_services, pb::FeatureService, table, b),
            _ => {}
        }
    }
    let records = history
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
    r.feature_view_version_history = Some(pb::FeatureViewVersionHistory { records });
    Ok(r)
}

async fn connected<'a>(
    config: &tokio_postgres::Config,
    tls: &PgTls,
    client: &'a mut Option<tokio_postgres::Client>,
    name: &str,
) -> Result<&'a tokio_postgres::Client, RegistryError> {
    if client
        .as_ref()
        .is_some_and(tokio_postgres::Client::is_closed)
    {
        *client = None;
    }
    if client.is_none() {
        let (c, connection) = config
            .connect(tls.0.clone())
            .await
            .map_err(|e| sql_error(name, e))?;
        tokio::spawn(async move {
            // Ends when the client is dropped or the server goes away; the next reload
            // notices a closed client and reconnects.
            let _ = connection.await;
        });
        *client = Some(c);
    }
    client.as_ref().ok_or_else(|| RegistryError::Sql {
        source_name: name.to_owned(),
        detail: "no connection".into(),
    })
}

fn open_sqlite(path: &Path) -> Result<rusqlite::Connection, String> {
    rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| e.to_string())
}

/// Runs SQLite work off the async reactor.
async fn blocking<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, RegistryError> {
    let sql = |detail: String| RegistryError::Sql {
        source_name: name.to_owned(),
        detail,
    };
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| sql(e.to_string()))?
        .map_err(sql)
}

fn pg_missing_table(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
}

fn sqlite_missing_table(e: &rusqlite::Error) -> bool {
    e.to_string().contains("no such table")
}

fn sql_error(name: &str, e: tokio_postgres::Error) -> RegistryError {
    // tokio-postgres errors carry no password; the source of a DbError has the detail.
    let detail = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            // The causes say why (a refused connection, a certificate problem).
            let mut detail = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                detail.push_str(&format!(": {c}"));
                cause = c.source();
            }
            detail
        }
    };
    RegistryError::Sql {
        source_name: name.to_owned(),
        detail,
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

    #[test]
    fn urls() {
        let pg = SqlSource::from_url(
            "postgresql+psycopg://feast:pw@db.example:6543/registry",
            Path::new("/repo"),
        )
        .unwrap();
        assert_eq!(pg.name(), "postgresql://db.example:6543/registry");
        let rel = SqlSource::from_url("sqlite:///data/registry.db", Path::new("/repo")).unwrap();
        assert_eq!(rel.name(), "sqlite:/repo/data/registry.db");
        let abs =
            SqlSource::from_url("sqlite:////var/feast/registry.db", Path::new("/repo")).unwrap();
        assert_eq!(abs.name(), "sqlite:/var/feast/registry.db");
        let err = SqlSource::from_url("mysql://u:secret@h/db", Path::new("/repo"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("'mysql'") && !err.contains("secret"), "{err}");
        let err = SqlSource::from_url("not a url", Path::new("/"))
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
            SqlSource::from_url(url, Path::new("/repo"))
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
