//! The write-side commands: `tern plan`, `apply`, `versions`, `export`.
//!
//! Owns: wiring a command to the shared pieces (config, definitions, the registry
//! source and its write transaction, the planner, the online stores) and printing for
//! a person or for CI. Never on the serving path. Every command prints its result to
//! stdout and returns an [`Outcome`]; failures are typed ([`Error`]).

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{self, ConfigError, RepoConfig};
use crate::definitions::DefinitionErrors;
use crate::plan::PlanError;
use crate::plan::versions::VersionsError;
use crate::registry::RegistryError;

pub mod apply;
pub mod export;
pub mod materialize;
pub mod versions;

/// How long a command waits for the registry (including another apply's lock).
pub const REGISTRY_TIMEOUT: Duration = Duration::from_secs(60);

/// How a command ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done (or nothing to do).
    Done,
    /// Refused by a rule (prevent_destroy), nothing changed: exit status 1.
    Refused,
}

/// Why a command failed; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `feature_store.yaml`.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The definition files.
    #[error(transparent)]
    Definitions(#[from] DefinitionErrors),
    /// The definitions against the registry.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// `tern versions`.
    #[error(transparent)]
    Versions(#[from] VersionsError),
    /// Materialization.
    #[error(transparent)]
    Materialize(#[from] crate::materialize::MaterializeError),
    /// Reading or writing the registry.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The online store.
    #[error("online store {store}: {detail}")]
    Store {
        /// The store (path or nodes).
        store: String,
        /// What failed.
        detail: String,
    },
    /// Writing output files.
    #[error("cannot write {path}: {cause}")]
    Output {
        /// File.
        path: PathBuf,
        /// I/O error.
        cause: std::io::Error,
    },
}

/// Loads `feature_store.yaml`, with `${VAR}` from the environment.
pub fn load_config(path: &std::path::Path) -> Result<RepoConfig, Error> {
    Ok(config::load(path, |k| std::env::var(k).ok())?)
}

/// Runs a write-side command from the command line; `None` for other commands.
pub async fn run(
    command: &crate::cli::Command,
    out: &mut (dyn std::io::Write + Send),
) -> Option<Result<Outcome, Error>> {
    use crate::cli::{Command, OutputFormat, VersionsSub};
    let version = |t: &str| {
        versions::parse_version(t).map_err(|message| {
            Error::Definitions(DefinitionErrors(vec![
                crate::definitions::DefinitionError {
                    origin: Default::default(),
                    field: "version".to_owned(),
                    message,
                },
            ]))
        })
    };
    Some(match command {
        Command::Plan(a) => {
            let options = apply::ApplyOptions {
                config: a.defs.config.clone(),
                files: a.defs.files.clone(),
                no_promote: a.no_promote,
                dev: a.defs.dev,
                json: a.defs.output == OutputFormat::Json,
                execute: false,
            };
            apply::run(&options, out).await
        }
        Command::Apply(a) => {
            let options = apply::ApplyOptions {
                config: a.defs.config.clone(),
                files: a.defs.files.clone(),
                no_promote: a.no_promote,
                dev: a.defs.dev,
                json: a.defs.output == OutputFormat::Json,
                execute: true,
            };
            apply::run(&options, out).await
        }
        Command::Versions(a) => {
            let cmd = match &a.command {
                VersionsSub::List { view } => {
                    Ok(versions::VersionsCommand::List { view: view.clone() })
                }
                VersionsSub::Show { view, version: v } => {
                    version(v).map(|version| versions::VersionsCommand::Show {
                        view: view.clone(),
                        version,
                    })
                }
                VersionsSub::Diff { view, from, to } => version(from).and_then(|a| {
                    version(to).map(|b| versions::VersionsCommand::Diff {
                        view: view.clone(),
                        a,
                        b,
                    })
                }),
                VersionsSub::Prune { view, keep, dev } => Ok(versions::VersionsCommand::Prune {
                    view: view.clone(),
                    keep: *keep,
                    dev: *dev,
                }),
            };
            match cmd {
                Ok(cmd) => versions::run(&a.config, &cmd, out).await,
                Err(e) => Err(e),
            }
        }
        Command::Export(a) => export::run(&a.config, &a.out, out).await,
        Command::Materialize(a) => {
            materialize::run(&materialize_options(&a.scope, Some(&a.start), &a.end), out).await
        }
        Command::MaterializeIncremental(a) => {
            materialize::run(&materialize_options(&a.scope, None, &a.end), out).await
        }
        _ => return None,
    })
}

/// The Redis store of `config` for a command: its own round-trip bound (commands scan
/// and write far more than a request reads).
pub(crate) fn open_redis(
    config: &RepoConfig,
    redis: &crate::config::RedisConfig,
    timeout: Duration,
) -> Result<crate::store::RedisStore, Error> {
    crate::store::RedisStore::open(
        redis,
        &config.project,
        crate::store::RedisSettings {
            timeout,
            connections: 1,
        },
    )
    .map_err(|e| Error::Store {
        store: redis.display_nodes(),
        detail: e.to_string(),
    })
}

fn materialize_options(
    scope: &crate::cli::MaterializeScope,
    start: Option<&String>,
    end: &str,
) -> materialize::MaterializeOptions {
    materialize::MaterializeOptions {
        config: scope.config.clone(),
        start: start.cloned(),
        end: end.to_owned(),
        views: scope.views.clone(),
        version: scope.version.clone(),
        shard: scope.shard.clone(),
    }
}
