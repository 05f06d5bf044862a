//! Feast's file registry: `registry.db` is a serialized `feast.core.Registry` with no
//! header, no compression and no framing.
//!
//! Feast rewrites the file in place (truncate, write, fsync), so a reader can catch it
//! half-written. The file is read between two `stat`s and read again if it changed;
//! emptiness and a missing project are caught by `Snapshot::build`.

use std::io::ErrorKind;
use std::path::Path;
use std::time::SystemTime;

use prost::Message;

use super::RegistryError;
use crate::proto::feast::core as pb;

/// Attempts before giving up on a file that keeps changing under us.
const READ_ATTEMPTS: usize = 3;

/// Reads and decodes a registry file.
pub fn read(path: &Path) -> Result<pb::Registry, RegistryError> {
    decode(&read_stable(path)?, path)
}

/// Decodes registry bytes.
pub fn decode(bytes: &[u8], path: &Path) -> Result<pb::Registry, RegistryError> {
    pb::Registry::decode(bytes).map_err(|source| RegistryError::Decode {
        path: path.to_owned(),
        cause: source,
    })
}

/// Encodes a registry the way Feast stores it. Map entries come out sorted by key, so
/// the bytes are reproducible.
pub fn encode(registry: &pb::Registry) -> Vec<u8> {
    registry.encode_to_vec()
}

fn read_stable(path: &Path) -> Result<Vec<u8>, RegistryError> {
    let io = |source: std::io::Error| {
        if source.kind() == ErrorKind::NotFound {
            RegistryError::NotFound(path.to_owned())
        } else {
            RegistryError::Io {
                path: path.to_owned(),
                cause: source,
            }
        }
    };
    let mut last = Vec::new();
    for _ in 0..READ_ATTEMPTS {
        let before = stamp(path).map_err(io)?;
        last = std::fs::read(path).map_err(io)?;
        let after = stamp(path).map_err(io)?;
        if before == after && after.0 == last.len() as u64 {
            return Ok(last);
        }
        tracing::debug!(path = %path.display(), "registry changed while being read; reading again");
    }
    // Still changing: hand back the last read; decoding and validation decide.
    Ok(last)
}

fn stamp(path: &Path) -> std::io::Result<(u64, Option<SystemTime>)> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.len(), meta.modified().ok()))
}
