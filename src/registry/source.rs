//! Where a registry lives, behind one interface: Feast's registry file (local or in
//! object storage) or its SQL tables.
//!
//! Owns: opening the source `feature_store.yaml` names, the cheap change check, and
//! reading the registry whole into a [`RegistryModel`]. `tern serve`'s reloader and the
//! write-side commands share it (writes come with them). Blocking file work runs off
//! the async reactor.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::RegistryError;
use super::file::{self, FileStamp};
use super::model::RegistryModel;
use super::object::{ObjectSource, ObjectStamp};
use super::sql::{self, SqlSource};
use crate::config::{RegistryLocation, RepoConfig};

/// A registry's storage.
#[derive(Debug)]
pub enum RegistrySource {
    /// `registry.db`: one serialized `feast.core.Registry`.
    File(PathBuf),
    /// Feast's SQL registry tables.
    Sql(SqlSource),
    /// `registry.db` in S3, GCS or Azure Blob Storage.
    Object(ObjectSource),
}

/// What changes when a registry file or object is rewritten: seen without reading it.
#[derive(Debug, Clone, PartialEq)]
pub enum Stamp {
    /// A local file's `stat`.
    File(FileStamp),
    /// An object's ETag and version.
    Object(ObjectStamp),
}

/// What identifies the content of a registry: equal fingerprints, same registry.
#[derive(Debug, Clone, PartialEq)]
pub enum Fingerprint {
    /// A registry file, local or in object storage: Feast rewrites `version_id` and
    /// `last_updated` on every write.
    File {
        /// `version_id`.
        version_id: String,
        /// `last_updated`.
        last_updated: Option<prost_types::Timestamp>,
    },
    /// A SQL registry: row counts and newest timestamps per table.
    Sql(sql::Fingerprint),
}

/// A registry as read from its source.
#[derive(Debug)]
pub struct RegistryRead {
    /// Everything it holds.
    pub model: RegistryModel,
    /// What identifies this content.
    pub fingerprint: Fingerprint,
    /// For a file or object registry, its stamp as it was when read.
    pub stamp: Option<Stamp>,
}

impl RegistrySource {
    /// The source `config` names. Connecting to a SQL registry, and each of its reads,
    /// is bounded by `timeout`; nothing is read yet.
    pub fn open(config: &RepoConfig, timeout: Duration) -> Result<Self, RegistryError> {
        Ok(match &config.registry.location {
            RegistryLocation::File(path) => RegistrySource::File(path.clone()),
            RegistryLocation::Sql(url) => {
                RegistrySource::Sql(SqlSource::from_url(url, &config.repo_dir, timeout)?)
            }
            RegistryLocation::Object(url) => {
                RegistrySource::Object(ObjectSource::from_url(url, timeout)?)
            }
        })
    }

    /// The registry in messages: a file path, or a database URL without credentials.
    pub fn name(&self) -> String {
        match self {
            RegistrySource::File(path) => path.display().to_string(),
            RegistrySource::Sql(s) => s.name().to_owned(),
            RegistrySource::Object(o) => o.name().to_owned(),
        }
    }

    /// The registry file, for a file registry.
    pub fn file(&self) -> Option<&Path> {
        match self {
            RegistrySource::File(path) => Some(path),
            RegistrySource::Sql(_) | RegistrySource::Object(_) => None,
        }
    }

    /// The registry object, for a registry in object storage.
    pub fn object(&self) -> Option<&ObjectSource> {
        match self {
            RegistrySource::Object(o) => Some(o),
            RegistrySource::File(_) | RegistrySource::Sql(_) => None,
        }
    }

    /// The cheap change check, where the source has one that needs no full read: the
    /// SQL fingerprint. A file or object registry answers `None`: its stamp is watched
    /// instead ([`file::stamp`], [`ObjectSource::stamp`]).
    pub async fn fingerprint(
        &mut self,
        project: &str,
    ) -> Result<Option<Fingerprint>, RegistryError> {
        match self {
            RegistrySource::File(_) | RegistrySource::Object(_) => Ok(None),
            RegistrySource::Sql(s) => Ok(Some(Fingerprint::Sql(s.fingerprint(project).await?))),
        }
    }

    /// Reads the whole registry: for a SQL registry, the rows of `project` (a file
    /// holds every project and is read whole).
    pub async fn read(&mut self, project: &str) -> Result<RegistryRead, RegistryError> {
        match self {
            RegistrySource::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    let (proto, stamp) = file::read(&path)?;
                    let fingerprint = Fingerprint::File {
                        version_id: proto.version_id.clone(),
                        last_updated: proto.last_updated,
                    };
                    Ok(RegistryRead {
                        model: RegistryModel::from_file(proto),
                        fingerprint,
                        stamp: Some(Stamp::File(stamp)),
                    })
                })
                .await
                .map_err(|e| RegistryError::Unsupported(format!("registry read task: {e}")))?
            }
            RegistrySource::Sql(s) => {
                let (model, fingerprint) = s.read(project).await?;
                Ok(RegistryRead {
                    model,
                    fingerprint: Fingerprint::Sql(fingerprint),
                    stamp: None,
                })
            }
            RegistrySource::Object(o) => {
                let (proto, stamp) = o.read().await?;
                let fingerprint = Fingerprint::File {
                    version_id: proto.version_id.clone(),
                    last_updated: proto.last_updated,
                };
                let model = tokio::task::spawn_blocking(move || RegistryModel::from_file(proto))
                    .await
                    .map_err(|e| RegistryError::Unsupported(format!("registry index task: {e}")))?;
                Ok(RegistryRead {
                    model,
                    fingerprint,
                    stamp: Some(Stamp::Object(stamp)),
                })
            }
        }
    }
}
