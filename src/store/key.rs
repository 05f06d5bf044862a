//! Feast's entity-key byte layout (`serialize_entity_key`), shared by every store.
//!
//! v3 (Feast's default), every integer a little-endian u32:
//! `count`, then per join key `2 (STRING), len, utf8 name`, then per value
//! `type tag, len, bytes`. Several keys are sorted by name; all names come before all
//! values. v2 drops `count` and the name lengths. SQLite uses these bytes as is;
//! Redis appends the project name.

use crate::config::KeySerialization;

/// Value type tags as written into keys (Feast's `ValueType` numbers).
const TAG_BYTES: u32 = 1;
const TAG_STRING: u32 = 2;
const TAG_INT32: u32 = 3;
const TAG_INT64: u32 = 4;
const TAG_UNIX_TIMESTAMP: u32 = 8;

/// An entity value already coerced to its join key's type. Only these types can be
/// part of a Feast entity key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntityValue<'a> {
    /// `string_val`, UTF-8.
    String(std::borrow::Cow<'a, str>),
    /// `bytes_val`, raw.
    Bytes(&'a [u8]),
    /// `int32_val`, 4 bytes.
    Int32(i32),
    /// `int64_val`, 8 bytes.
    Int64(i64),
    /// `unix_timestamp_val` (epoch seconds), 8 bytes.
    UnixTimestamp(i64),
}

/// The part of every key that depends only on the join-key names: computed once per
/// resolution plan, then each row appends its values.
///
/// `sorted_names` must already be in Feast's order (sorted by name).
pub fn key_prefix(sorted_names: &[&str], version: KeySerialization) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + sorted_names.iter().map(|n| 8 + n.len()).sum::<usize>());
    if version == KeySerialization::V3 {
        push_u32(&mut out, len_u32(sorted_names.len()));
    }
    for name in sorted_names {
        push_u32(&mut out, TAG_STRING);
        if version == KeySerialization::V3 {
            push_u32(&mut out, len_u32(name.len()));
        }
        out.extend_from_slice(name.as_bytes());
    }
    out
}

/// Appends one value's `tag, len, bytes`.
pub fn push_value(out: &mut Vec<u8>, value: &EntityValue<'_>) {
    match value {
        EntityValue::String(s) => push_tagged(out, TAG_STRING, s.as_bytes()),
        EntityValue::Bytes(b) => push_tagged(out, TAG_BYTES, b),
        EntityValue::Int32(v) => push_tagged(out, TAG_INT32, &v.to_le_bytes()),
        EntityValue::Int64(v) => push_tagged(out, TAG_INT64, &v.to_le_bytes()),
        EntityValue::UnixTimestamp(v) => push_tagged(out, TAG_UNIX_TIMESTAMP, &v.to_le_bytes()),
    }
}

fn push_tagged(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    push_u32(out, tag);
    push_u32(out, len_u32(bytes.len()));
    out.extend_from_slice(bytes);
}

fn push_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

// Keys and names are far below 4 GiB (gRPC caps the request size); saturate rather
// than wrap if that ever changes.
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A batch of distinct serialized entity keys in one buffer (one allocation for the
/// whole batch instead of one per key).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyBatch {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl KeyBatch {
    /// An empty batch with room for `keys` keys of about `key_len` bytes.
    pub fn with_capacity(keys: usize, key_len: usize) -> Self {
        Self {
            buf: Vec::with_capacity(keys * key_len),
            ends: Vec::with_capacity(keys),
        }
    }

    /// Appends a key and returns its index.
    pub fn push(&mut self, key: &[u8]) -> usize {
        self.buf.extend_from_slice(key);
        self.ends.push(self.buf.len());
        self.ends.len() - 1
    }

    /// Appends a key that `build` writes in place and returns its index; when `build`
    /// fails, the batch is left as it was.
    pub fn push_built<E>(
        &mut self,
        build: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<usize, E> {
        let start = self.buf.len();
        if let Err(e) = build(&mut self.buf) {
            self.buf.truncate(start);
            return Err(e);
        }
        self.ends.push(self.buf.len());
        Ok(self.ends.len() - 1)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when the batch holds no key.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The `i`-th key; empty for an index past the end.
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 {
            0
        } else {
            self.ends.get(i - 1).copied().unwrap_or(0)
        };
        let end = self.ends.get(i).copied().unwrap_or(start);
        self.buf.get(start..end).unwrap_or_default()
    }

    /// Keys in insertion order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::unhex as hex;

    fn encode(names: &[&str], values: &[EntityValue<'_>], v: KeySerialization) -> Vec<u8> {
        let mut k = key_prefix(names, v);
        for value in values {
            push_value(&mut k, value);
        }
        k
    }

    // Vectors from Feast's key_encoding_utils, checked against the real Feast output.
    #[test]
    fn feast_v3_vectors() {
        assert_eq!(
            encode(
                &["driver_id"],
                &[EntityValue::Int64(1001)],
                KeySerialization::V3
            ),
            hex("01000000 02000000 09000000 6472697665725f6964 04000000 08000000 e903000000000000")
        );
        assert_eq!(
            encode(
                &["customer_id", "driver_id"],
                &[EntityValue::String("abc".into()), EntityValue::Int64(1001)],
                KeySerialization::V3
            ),
            hex(
                "02000000 02000000 0b000000 637573746f6d65725f6964 02000000 09000000 6472697665725f6964 \
                 02000000 03000000 616263 04000000 08000000 e903000000000000"
            )
        );
        assert_eq!(
            encode(
                &["__dummy_id"],
                &[EntityValue::String("".into())],
                KeySerialization::V3
            ),
            hex("01000000 02000000 0a000000 5f5f64756d6d795f6964 02000000 00000000")
        );
        assert_eq!(encode(&[], &[], KeySerialization::V3), hex("00000000"));
    }

    #[test]
    fn feast_v2_vector() {
        assert_eq!(
            encode(
                &["driver_id"],
                &[EntityValue::Int64(1001)],
                KeySerialization::V2
            ),
            hex("02000000 6472697665725f6964 04000000 08000000 e903000000000000")
        );
    }

    #[test]
    fn other_value_types() {
        let mut k = Vec::new();
        push_value(&mut k, &EntityValue::Int32(-2));
        push_value(&mut k, &EntityValue::UnixTimestamp(1));
        push_value(&mut k, &EntityValue::Bytes(&[0, 1, 255]));
        assert_eq!(
            k,
            hex(
                "03000000 04000000 feffffff 08000000 08000000 0100000000000000 01000000 03000000 0001ff"
            )
        );
    }

    #[test]
    fn key_batch() {
        let mut b = KeyBatch::default();
        assert!(b.is_empty());
        assert_eq!(b.push(b"ab"), 0);
        assert_eq!(b.push(b""), 1);
        assert_eq!(b.push(b"c"), 2);
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![&b"ab"[..], b"", b"c"]);
        assert_eq!(b.get(7), b"");
    }
}
