//! `tern plan` and `tern apply`: one plan, printed; apply then executes it.
//!
//! Apply holds the registry's write lock from reading the registry to committing the
//! new one, so a concurrent apply waits and then plans against this one's result.
//! Order inside the lock: the plan is checked (a refused or invalid plan changes
//! nothing), online tables are created and dropped (idempotent: `IF NOT EXISTS`,
//! `IF EXISTS`), then the registry is committed atomically. A crash before the commit
//! leaves the old registry, and a re-run redoes the same table work; a running
//! `tern serve` only ever sees the old registry or the new one.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::SystemTime;

use super::{Error, Outcome, REGISTRY_TIMEOUT};
use crate::config::{OnlineStoreConfig, RepoConfig};
use crate::definitions;
use crate::plan::{self, Plan, PlanOptions, TableAction, TableChange, render};
use crate::registry::{RegistryError, RegistrySource};
use crate::store::redis::ViewFields;
use crate::store::sqlite;

/// Bound on each Redis round trip of a command (scans are long; serving's bound is not
/// meant for them).
const REDIS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Keys per SCAN reply when deleting a view's fields.
const REDIS_SCAN_BATCH: usize = 1000;

/// Attempts when a concurrent non-Tern writer takes a version number first.
const CONFLICT_ATTEMPTS: usize = 3;

/// What `tern plan` / `tern apply` were asked.
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// `feature_store.yaml`.
    pub config: PathBuf,
    /// `-f` files or folders.
    pub files: Vec<PathBuf>,
    /// `--no-promote`.
    pub no_promote: bool,
    /// `--dev`: do not enforce prevent_destroy (as `environment: development`).
    pub dev: bool,
    /// `--output json`.
    pub json: bool,
    /// Execute the plan (apply) or only print it (plan).
    pub execute: bool,
}

/// Plans, prints, and (for apply) executes. `Refused` when the plan breaks a rule.
pub async fn run(options: &ApplyOptions, out: &mut (dyn Write + Send)) -> Result<Outcome, Error> {
    let config = super::load_config(&options.config)?;
    let defs = definitions::load(&options.files, &config.repo_dir)?;
    let plan_options = PlanOptions {
        no_promote: options.no_promote,
        enforce: !(options.dev || config.development),
        versioning: config.registry.versioning,
    };
    let mut source = RegistrySource::open(&config, REGISTRY_TIMEOUT)?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let txn = source.begin(&config.project).await?;
        let now = SystemTime::now();
        let plan = plan::plan(txn.model(), &config.project, &defs, plan_options, now)?;
        if !options.execute || plan.refused() || plan.is_empty() {
            print(&plan, options, out, &config)?;
            if plan.refused() {
                if !options.json {
                    let _ = writeln!(out, "Nothing was changed.");
                }
                return Ok(Outcome::Refused);
            }
            return Ok(Outcome::Done);
        }
        let tables: Vec<TableChange> = plan.ensure.iter().chain(&plan.tables).cloned().collect();
        apply_tables(&config, &tables).await?;
        match txn.commit(plan.model.clone(), now).await {
            Ok(()) => {
                print(&plan, options, out, &config)?;
                if !options.json {
                    let _ = writeln!(out, "Applied to {}.", source.name());
                }
                tracing::info!(
                    project = %config.project,
                    changes = plan.objects.len(),
                    tables = plan.tables.len(),
                    "registry applied"
                );
                return Ok(Outcome::Done);
            }
            Err(RegistryError::Conflict { detail, .. }) if attempt < CONFLICT_ATTEMPTS => {
                tracing::warn!(%detail, attempt, "a concurrent writer changed the registry; planning again");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn print(
    plan: &Plan,
    options: &ApplyOptions,
    out: &mut (dyn Write + Send),
    _config: &RepoConfig,
) -> Result<(), Error> {
    let text = if options.json {
        render::json(plan)
    } else {
        render::text(
            plan,
            render::Style::new(
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            ),
        )
    };
    out.write_all(text.as_bytes())
        .and_then(|()| if options.json { writeln!(out) } else { Ok(()) })
        .map_err(|cause| Error::Output {
            path: PathBuf::from("<stdout>"),
            cause,
        })
}

/// Creates and drops online tables. SQLite: tables; Redis has no schema to create,
/// and a drop deletes the view version's fields from every entity hash.
pub async fn apply_tables(config: &RepoConfig, tables: &[TableChange]) -> Result<(), Error> {
    if tables.is_empty() {
        return Ok(());
    }
    match &config.online_store {
        OnlineStoreConfig::Sqlite { path } => {
            let (path, tables) = (path.clone(), tables.to_vec());
            let shown = path.display().to_string();
            let failed = |detail: String| Error::Store {
                store: shown.clone(),
                detail,
            };
            tokio::task::spawn_blocking(move || sqlite_tables(&path, &tables))
                .await
                .map_err(|e| failed(e.to_string()))?
                .map_err(|e| failed(e.to_string()))
        }
        OnlineStoreConfig::Redis(redis) => {
            let drops: Vec<&TableChange> = tables
                .iter()
                .filter(|t| t.action == TableAction::Drop)
                .collect();
            if drops.is_empty() {
                return Ok(());
            }
            let failed = |detail: String| Error::Store {
                store: redis.display_nodes(),
                detail,
            };
            let store = super::open_redis(config, redis, REDIS_TIMEOUT)?;
            let views: Vec<ViewFields<'_>> = drops
                .iter()
                .map(|t| ViewFields {
                    storage_name: &t.storage_name,
                    features: &t.features,
                })
                .collect();
            let deleted = store
                .delete_fields(
                    &config.project,
                    config.entity_key_serialization,
                    &views,
                    REDIS_SCAN_BATCH,
                    REDIS_TIMEOUT,
                )
                .await
                .map_err(|e| failed(e.to_string()))?;
            tracing::info!(
                nodes = %redis.display_nodes(),
                scanned = deleted.scanned,
                touched = deleted.touched,
                "deleted the fields of dropped view versions"
            );
            Ok(())
        }
    }
}

fn sqlite_tables(path: &std::path::Path, tables: &[TableChange]) -> rusqlite::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(REGISTRY_TIMEOUT)?;
    for t in tables {
        match t.action {
            TableAction::Create => sqlite::create_table(&conn, &t.table)?,
            TableAction::Drop => sqlite::drop_table(&conn, &t.table)?,
        }
    }
    Ok(())
}
