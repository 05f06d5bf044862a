//! Feast's file registry: `registry.db` is a serialized `feast.core.Registry` with no
//! header, no compression and no framing.
//!
//! Feast rewrites the file in place (truncate, write, fsync), so a reader can catch it
//! half-written. Defences, in layers: the file is read between two `stat`s and read
//! again if it changed; the reload loop only reads a change once the file has looked
//! the same on two polls in a row; and a decoded registry that lacks the configured
//! project (written late in the file) is refused by `Snapshot::build`.

use std::io::ErrorKind;
use std::path::Path;
use std::time::SystemTime;

use prost::Message;

use super::RegistryError;
use crate::proto::feast::core as pb;

/// Attempts before giving up on a file that keeps changing under us.
const READ_ATTEMPTS: usize = 3;

/// What `stat` says about the file; a change in any part means "look again". The
/// inode catches an atomic rename that keeps size and mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

/// The file's current stamp.
pub fn stamp(path: &Path) -> Result<FileStamp, RegistryError> {
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, e))?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Ok(FileStamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode,
    })
}

/// Reads and decodes a registry file; returns it with the stamp of what was read.
pub fn read(path: &Path) -> Result<(pb::Registry, FileStamp), RegistryError> {
    let (bytes, stamp) = read_stable(path)?;
    Ok((decode(&bytes, path)?, stamp))
}

/// Decodes registry bytes.
pub fn decode(bytes: &[u8], path: &Path) -> Result<pb::Registry, RegistryError> {
    pb::Registry::decode(bytes).map_err(|cause| RegistryError::Decode {
        path: path.to_owned(),
        cause,
    })
}

/// Encodes a registry the way Feast stores it. Map entries come out sorted by key, so
/// the bytes are reproducible.
pub fn encode(registry: &pb::Registry) -> Vec<u8> {
    registry.encode_to_vec()
}

fn io_error(path: &Path, cause: std::io::Error) -> RegistryError {
    if cause.kind() == ErrorKind::NotFound {
        RegistryError::NotFound(path.to_owned())
    } else {
        RegistryError::Io {
            path: path.to_owned(),
            cause,
        }
    }
}

fn read_stable(path: &Path) -> Result<(Vec<u8>, FileStamp), RegistryError> {
    for _ in 0..READ_ATTEMPTS {
        let before = stamp(path)?;
        let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
        let after = stamp(path)?;
        if before == after && after.len == bytes.len() as u64 {
            return Ok((bytes, after));
        }
        tracing::debug!(path = %path.display(), "registry changed while being read; reading again");
    }
    Err(RegistryError::Unstable(path.to_owned()))
}
