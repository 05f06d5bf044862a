//! Writing a registry: one read-modify-write at a time, all or nothing.
//!
//! Owns: [`RegistryTxn`], opened with [`RegistrySource::begin`]: it holds the
//! registry's write lock, gives the registry as it is under that lock, and commits a
//! new [`RegistryModel`] atomically. A file registry is locked with an exclusive lock
//! on `<registry>.lock` beside it (Feast takes none: two `feast apply` runs lose one
//! update) and written to a temporary file that is fsynced and renamed over the old
//! one, then the folder fsynced: a crash leaves the old registry or the new one, never
//! a mix, and a reader never sees a half-written file. A registry in object storage
//! has no lock: its commit is a conditional write of the version read, so a concurrent
//! writer turns it into a [`RegistryError::Conflict`] (and `tern apply` plans again)
//! instead of a lost update. A SQL registry is written in one database transaction
//! (`sql::SqlTxn`). Dropping a transaction without commit changes nothing.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::RegistryError;
use super::file;
use super::model::RegistryModel;
use super::object::{ObjectSource, ObjectStamp};
use super::source::RegistrySource;
use super::sql::SqlTxn;

/// An open read-modify-write of a registry. See the module docs.
#[derive(Debug)]
pub struct RegistryTxn<'a> {
    model: RegistryModel,
    inner: Inner<'a>,
}

#[derive(Debug)]
enum Inner<'a> {
    File {
        path: PathBuf,
        /// Held for the transaction's life; closing the file releases the lock.
        _lock: File,
    },
    Sql(Box<SqlTxn<'a>>),
    Object {
        source: &'a ObjectSource,
        /// The version read; `None` when there was no registry yet.
        read: Option<ObjectStamp>,
    },
}

impl RegistrySource {
    /// Takes the registry's write lock (waiting for another writer to finish) and
    /// reads it. A file registry that does not exist yet reads as empty; the commit
    /// creates it.
    pub async fn begin(&mut self, project: &str) -> Result<RegistryTxn<'_>, RegistryError> {
        match self {
            RegistrySource::File(path) => {
                let path = path.clone();
                let at = path.clone();
                let (model, lock) = tokio::task::spawn_blocking(move || lock_and_read(&at))
                    .await
                    .map_err(|e| {
                        RegistryError::Unsupported(format!("registry lock task: {e}"))
                    })??;
                Ok(RegistryTxn {
                    model,
                    inner: Inner::File { path, _lock: lock },
                })
            }
            RegistrySource::Object(source) => {
                let (model, read) = match source.read_for_update().await? {
                    Some((proto, stamp)) => (RegistryModel::from_file(proto), Some(stamp)),
                    None => (RegistryModel::default(), None),
                };
                Ok(RegistryTxn {
                    model,
                    inner: Inner::Object { source, read },
                })
            }
            RegistrySource::Sql(sql) => {
                let txn = sql.begin(project).await?;
                Ok(RegistryTxn {
                    model: txn.model().clone(),
                    inner: Inner::Sql(Box::new(txn)),
                })
            }
        }
    }
}

impl RegistryTxn<'_> {
    /// The registry as it is under the lock.
    pub fn model(&self) -> &RegistryModel {
        &self.model
    }

    /// Writes `new` in place of [`model`](Self::model), atomically, and releases the
    /// lock. A file registry gets a fresh `version_id` and `last_updated = now` (the
    /// reloaders of `tern serve` and Feast compare them).
    pub async fn commit(self, new: RegistryModel, now: SystemTime) -> Result<(), RegistryError> {
        match self.inner {
            Inner::File { path, _lock } => {
                let bytes = file_bytes(new, now);
                tokio::task::spawn_blocking(move || {
                    let written = replace_atomically(&path, &bytes);
                    drop(_lock);
                    written
                })
                .await
                .map_err(|e| RegistryError::Unsupported(format!("registry write task: {e}")))?
            }
            Inner::Object { source, read } => {
                source.replace(file_bytes(new, now), read.as_ref()).await
            }
            Inner::Sql(txn) => txn.commit(&self.model, &new, now).await,
        }
    }
}

/// A registry file's bytes, with the fresh `version_id` and `last_updated = now` that
/// the reloaders of `tern serve` and Feast compare.
fn file_bytes(mut new: RegistryModel, now: SystemTime) -> Vec<u8> {
    new.header.version_id = uuid::Uuid::new_v4().to_string();
    new.header.last_updated = Some(prost_types::Timestamp::from(now));
    if new.header.registry_schema_version.is_empty() {
        new.header.registry_schema_version = "1".to_owned();
    }
    file::encode(&new.to_file())
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    path.with_file_name(name)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |cause| RegistryError::Io {
        path: path.to_owned(),
        cause,
    }
}

fn lock_and_read(path: &Path) -> Result<(RegistryModel, File), RegistryError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let lock_file = lock_path(path);
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_file)
        .map_err(io(&lock_file))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            // Another apply holds it: say so, then wait our turn.
            tracing::info!(lock = %lock_file.display(), "waiting for another write to the registry to finish");
            lock.lock().map_err(io(&lock_file))?;
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_file)(e)),
    }
    let model = match file::read(path) {
        Ok((proto, _)) => RegistryModel::from_file(proto),
        Err(RegistryError::NotFound(_)) => RegistryModel::default(),
        Err(e) => return Err(e),
    };
    Ok((model, lock))
}

/// temp file in the same folder → write → fsync → rename over → fsync the folder.
fn replace_atomically(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(io(path))
}
