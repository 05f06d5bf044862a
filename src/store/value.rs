//! Is a stored value a well-formed serialized `feast.types.Value`?
//!
//! Owns: a structural scan of the protobuf wire format against Value's schema
//! (`proto/feast/types/Value.proto`): varints, the wire type of every known field,
//! lengths, UTF-8 of string fields and the payload of every list, map and nested
//! Value. Unknown fields are skipped, as protobuf allows. It allocates nothing and
//! decodes nothing: values are served as the bytes the store holds, this only makes
//! sure a client (or Feast's own reader) will be able to parse them.
//! Does not own: what a value means (type against the registry, nulls).

use std::fmt;

/// Nesting a scan follows before it gives up (protobuf's default recursion limit).
const MAX_DEPTH: u32 = 100;

/// Why bytes are not a serialized `feast.types.Value`, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid {
    /// Byte offset in the value where the problem was found.
    pub offset: usize,
    /// What is wrong there.
    pub problem: Problem,
}

/// What is wrong with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A field runs past the end of its message.
    Truncated,
    /// A varint longer than 10 bytes, or overflowing 64 bits.
    BadVarint,
    /// A tag with field number 0 or beyond protobuf's range.
    BadFieldNumber,
    /// Wire type 6 or 7, or an end-group without its start.
    BadWireType(u8),
    /// A known field sent with another wire type than its declared type uses.
    WrongWireType {
        /// Field number.
        field: u32,
        /// Wire type found.
        found: u8,
    },
    /// A `string` field that is not UTF-8.
    NotUtf8 {
        /// Field number.
        field: u32,
    },
    /// A packed list of fixed-width numbers whose length is not a multiple of the width.
    BadPackedLength {
        /// Field number.
        field: u32,
    },
    /// Messages nested deeper than protobuf's recursion limit.
    TooDeep,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problem {
            Problem::Truncated => f.write_str("truncated field")?,
            Problem::BadVarint => f.write_str("malformed varint")?,
            Problem::BadFieldNumber => f.write_str("invalid field number")?,
            Problem::BadWireType(w) => write!(f, "invalid wire type {w}")?,
            Problem::WrongWireType { field, found } => write!(
                f,
                "field {field} has wire type {found}, not its declared type's"
            )?,
            Problem::NotUtf8 { field } => write!(f, "string field {field} is not UTF-8")?,
            Problem::BadPackedLength { field } => {
                write!(f, "packed field {field} is not a whole number of elements")?
            }
            Problem::TooDeep => write!(f, "nested deeper than {MAX_DEPTH} messages")?,
        }
        write!(f, " at byte {}", self.offset)
    }
}

/// Checks that `bytes` parse as a `feast.types.Value`. Empty bytes (a stored null)
/// are a valid, empty Value.
pub fn check(bytes: &[u8]) -> Result<(), Invalid> {
    if is_one_scalar(bytes) {
        return Ok(());
    }
    Scan { buf: bytes }.message(Message::Value, 0, bytes.len(), 0)
}

/// The shapes nearly every stored value has (a null, or one number, bool or short
/// string and nothing else), recognised in a few instructions: the hot path checks
/// thousands per request. Anything else takes the full scan.
#[inline]
fn is_one_scalar(bytes: &[u8]) -> bool {
    match bytes {
        [] => true,
        // double_val, float_val
        [0x29, rest @ ..] => rest.len() == 8,
        [0x35, rest @ ..] => rest.len() == 4,
        // int32_val, int64_val, bool_val, unix_timestamp_val: one varint of at most
        // 9 bytes ending at the end (a 10th byte has a rule of its own).
        [0x18 | 0x20 | 0x38 | 0x40, rest @ ..] => match rest.split_last() {
            Some((last, body)) => body.len() < 9 && *last < 0x80 && body.iter().all(|b| *b >= 0x80),
            None => false,
        },
        // string_val shorter than 128 bytes.
        [0x12, len, rest @ ..] => {
            usize::from(*len) == rest.len() && std::str::from_utf8(rest).is_ok()
        }
        _ => false,
    }
}

/// The messages of Value.proto, by the shape of their fields.
#[derive(Debug, Clone, Copy)]
enum Message {
    Value,
    /// `BytesList`, `BytesSet`: `repeated bytes val = 1`.
    Bytes,
    /// `StringList`, `StringSet`: `repeated string val = 1`.
    Strings,
    /// Lists and sets of int32, int64 and bool: `repeated <varint> val = 1`.
    Varints,
    /// `DoubleList`, `DoubleSet`.
    Fixed64s,
    /// `FloatList`, `FloatSet`.
    Fixed32s,
    /// `Map`: `map<string, Value> val = 1`.
    Map,
    /// One entry of a `Map`: `string key = 1; Value value = 2`.
    MapEntry,
    /// `MapList`: `repeated Map val = 1`.
    MapList,
    /// `RepeatedValue`: `repeated Value val = 1`.
    Values,
    /// `ScalarMap`: `repeated ScalarMapEntry val = 1`.
    ScalarMap,
    /// `ScalarMapEntry`: `MapKey key = 1; Value value = 2`.
    ScalarMapEntry,
    MapKey,
    ZonedTimestamp,
}

/// How a known field is encoded.
#[derive(Debug, Clone, Copy)]
enum Field {
    Varint,
    Fixed64,
    Fixed32,
    Bytes,
    Str,
    Message(Message),
    /// A repeated scalar, packed (one length-delimited run) or not.
    RepeatedVarint,
    RepeatedFixed64,
    RepeatedFixed32,
}

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const SGROUP: u8 = 3;
const EGROUP: u8 = 4;
const I32: u8 = 5;

impl Message {
    /// The declared encoding of field `number`, `None` for an unknown field.
    fn field(self, number: u32) -> Option<Field> {
        use Field as F;
        use Message as M;
        Some(match (self, number) {
            (M::Value, 1) => F::Bytes,
            (M::Value, 2 | 32 | 36 | 37 | 44) => F::Str,
            (M::Value, 3 | 4 | 7 | 8 | 19) => F::Varint,
            (M::Value, 5) => F::Fixed64,
            (M::Value, 6) => F::Fixed32,
            (M::Value, 11 | 22) => F::Message(M::Bytes),
            (M::Value, 12 | 23 | 33 | 38..=41 | 45 | 46) => F::Message(M::Strings),
            (M::Value, 13 | 14 | 17 | 18 | 24 | 25 | 28 | 29) => F::Message(M::Varints),
            (M::Value, 15 | 26) => F::Message(M::Fixed64s),
            (M::Value, 16 | 27) => F::Message(M::Fixed32s),
            (M::Value, 20 | 34) => F::Message(M::Map),
            (M::Value, 21 | 35) => F::Message(M::MapList),
            (M::Value, 42 | 43) => F::Message(M::Values),
            (M::Value, 47) => F::Message(M::ScalarMap),
            (M::Value, 48) => F::Message(M::ZonedTimestamp),
            (M::Bytes, 1) => F::Bytes,
            (M::Strings, 1) => F::Str,
            (M::Varints, 1) => F::RepeatedVarint,
            (M::Fixed64s, 1) => F::RepeatedFixed64,
            (M::Fixed32s, 1) => F::RepeatedFixed32,
            (M::Map, 1) => F::Message(M::MapEntry),
            (M::MapEntry, 1) => F::Str,
            (M::MapEntry, 2) | (M::Values, 1) => F::Message(M::Value),
            (M::MapList, 1) => F::Message(M::Map),
            (M::ScalarMap, 1) => F::Message(M::ScalarMapEntry),
            (M::ScalarMapEntry, 1) => F::Message(M::MapKey),
            (M::ScalarMapEntry, 2) => F::Message(M::Value),
            (M::MapKey, 1 | 2 | 5 | 6) | (M::ZonedTimestamp, 1) => F::Varint,
            (M::MapKey, 3) => F::Fixed32,
            (M::MapKey, 4) => F::Fixed64,
            (M::MapKey, 7) => F::Bytes,
            (M::MapKey, 8..=10) | (M::ZonedTimestamp, 2) => F::Str,
            _ => return None,
        })
    }
}

/// A scan over one value; positions are offsets into `buf`.
struct Scan<'a> {
    buf: &'a [u8],
}

/// A field's tag: number, wire type, and where it starts.
#[derive(Debug, Clone, Copy)]
struct Tag {
    number: u32,
    wire: u8,
    start: usize,
}

impl Scan<'_> {
    /// Checks the fields of a `message` spanning `pos..end`.
    fn message(
        &self,
        message: Message,
        mut pos: usize,
        end: usize,
        depth: u32,
    ) -> Result<(), Invalid> {
        if depth > MAX_DEPTH {
            return Err(invalid(pos, Problem::TooDeep));
        }
        while pos < end {
            let tag = self.tag(&mut pos, end)?;
            if matches!(tag.wire, EGROUP | 6 | 7) {
                return Err(invalid(tag.start, Problem::BadWireType(tag.wire)));
            }
            match message.field(tag.number) {
                Some(field) => self.known(field, tag, &mut pos, end, depth)?,
                None => self.skip(tag, &mut pos, end, depth)?,
            }
        }
        Ok(())
    }

    /// Checks one known field whose tag ended at `pos`.
    fn known(
        &self,
        field: Field,
        tag: Tag,
        pos: &mut usize,
        end: usize,
        depth: u32,
    ) -> Result<(), Invalid> {
        let Tag {
            number,
            wire,
            start,
        } = tag;
        let expected = match field {
            Field::Varint => VARINT,
            Field::Fixed64 => I64,
            Field::Fixed32 => I32,
            Field::Bytes | Field::Str | Field::Message(_) => LEN,
            // Packed (LEN) or one element per tag.
            Field::RepeatedVarint if wire == VARINT => VARINT,
            Field::RepeatedFixed64 if wire == I64 => I64,
            Field::RepeatedFixed32 if wire == I32 => I32,
            Field::RepeatedVarint | Field::RepeatedFixed64 | Field::RepeatedFixed32 => LEN,
        };
        if wire != expected {
            return Err(invalid(
                start,
                Problem::WrongWireType {
                    field: number,
                    found: wire,
                },
            ));
        }
        match wire {
            VARINT => self.varint(pos, end).map(drop),
            I64 => self.fixed(pos, end, 8),
            I32 => self.fixed(pos, end, 4),
            _ => {
                let (from, to) = self.length_delimited(pos, end)?;
                match field {
                    Field::Str => std::str::from_utf8(&self.buf[from..to])
                        .map(drop)
                        .map_err(|_| invalid(from, Problem::NotUtf8 { field: number })),
                    Field::Message(inner) => self.message(inner, from, to, depth + 1),
                    Field::RepeatedVarint => {
                        let mut at = from;
                        while at < to {
                            self.varint(&mut at, to)?;
                        }
                        Ok(())
                    }
                    Field::RepeatedFixed64 | Field::RepeatedFixed32 => {
                        let width = if matches!(field, Field::RepeatedFixed64) {
                            8
                        } else {
                            4
                        };
                        if (to - from) % width == 0 {
                            Ok(())
                        } else {
                            Err(invalid(from, Problem::BadPackedLength { field: number }))
                        }
                    }
                    Field::Bytes | Field::Varint | Field::Fixed64 | Field::Fixed32 => Ok(()),
                }
            }
        }
    }

    /// Skips an unknown field whose tag ended at `pos`.
    fn skip(&self, tag: Tag, pos: &mut usize, end: usize, depth: u32) -> Result<(), Invalid> {
        match tag.wire {
            VARINT => self.varint(pos, end).map(drop),
            I64 => self.fixed(pos, end, 8),
            I32 => self.fixed(pos, end, 4),
            LEN => self.length_delimited(pos, end).map(drop),
            SGROUP => {
                if depth >= MAX_DEPTH {
                    return Err(invalid(tag.start, Problem::TooDeep));
                }
                loop {
                    if *pos >= end {
                        return Err(invalid(tag.start, Problem::Truncated));
                    }
                    let inner = self.tag(pos, end)?;
                    if inner.wire == EGROUP {
                        return if inner.number == tag.number {
                            Ok(())
                        } else {
                            Err(invalid(inner.start, Problem::BadWireType(EGROUP)))
                        };
                    }
                    self.skip(inner, pos, end, depth + 1)?;
                }
            }
            other => Err(invalid(tag.start, Problem::BadWireType(other))),
        }
    }

    /// Reads a tag.
    fn tag(&self, pos: &mut usize, end: usize) -> Result<Tag, Invalid> {
        let start = *pos;
        let tag = self.varint(pos, end)?;
        let number = u32::try_from(tag >> 3)
            .ok()
            .filter(|n| (1..=0x1fff_ffff).contains(n))
            .ok_or(invalid(start, Problem::BadFieldNumber))?;
        Ok(Tag {
            number,
            // Masked to 3 bits: always fits.
            wire: (tag & 7) as u8,
            start,
        })
    }

    fn varint(&self, pos: &mut usize, end: usize) -> Result<u64, Invalid> {
        let start = *pos;
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&byte) = self.buf.get(*pos).filter(|_| *pos < end) else {
                return Err(invalid(start, Problem::Truncated));
            };
            *pos += 1;
            // The 10th byte holds only the 64th bit.
            if i == 9 && byte > 1 {
                return Err(invalid(start, Problem::BadVarint));
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(invalid(start, Problem::BadVarint))
    }

    fn fixed(&self, pos: &mut usize, end: usize, width: usize) -> Result<(), Invalid> {
        if end - *pos < width {
            return Err(invalid(*pos, Problem::Truncated));
        }
        *pos += width;
        Ok(())
    }

    /// Reads a length prefix; returns the payload's span and moves past it.
    fn length_delimited(&self, pos: &mut usize, end: usize) -> Result<(usize, usize), Invalid> {
        let start = *pos;
        let len = self.varint(pos, end)?;
        let from = *pos;
        match usize::try_from(len) {
            Ok(len) if len <= end - from => {
                *pos = from + len;
                Ok((from, *pos))
            }
            _ => Err(invalid(start, Problem::Truncated)),
        }
    }
}

fn invalid(offset: usize, problem: Problem) -> Invalid {
    Invalid { offset, problem }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::proto::feast::types::value::Val;
    use crate::proto::feast::types::{
        DoubleList, Int64List, Map, RepeatedValue, StringList, Value, ZonedTimestamp,
    };
    use crate::store::unhex as hex;

    fn problem(bytes: &[u8]) -> Problem {
        check(bytes).unwrap_err().problem
    }

    #[test]
    fn every_value_of_the_fixtures_is_valid() {
        let dump: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/feast/redis_dump.json"
            ))
            .unwrap(),
        )
        .unwrap();
        let mut values = 0;
        for key in dump["keys"].as_array().unwrap() {
            for field in key["fields"].as_array().unwrap() {
                if field["field"].as_str().unwrap().starts_with("5f74733a") {
                    continue; // `_ts:` holds a Timestamp
                }
                let v = hex(field["value"].as_str().unwrap());
                assert_eq!(check(&v), Ok(()), "{}", field["value"]);
                values += 1;
            }
        }
        assert!(values > 50, "{values}");

        let conn = rusqlite::Connection::open(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/feature_repo/data/online.db"
        ))
        .unwrap();
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for table in tables {
            let mut stmt = conn
                .prepare(&format!("SELECT value FROM \"{table}\""))
                .unwrap();
            for v in stmt.query_map([], |r| r.get::<_, Vec<u8>>(0)).unwrap() {
                let v = v.unwrap();
                assert_eq!(check(&v), Ok(()), "{table}: {v:02x?}");
            }
        }
    }

    #[test]
    fn every_kind_of_value_is_valid() {
        let v = |val| Value { val: Some(val) }.encode_to_vec();
        let nested = Value {
            val: Some(Val::ListVal(RepeatedValue {
                val: vec![
                    Value {
                        val: Some(Val::StringVal("é".into())),
                    },
                    Value::default(),
                    Value {
                        val: Some(Val::MapVal(Map {
                            val: [(
                                "k".to_owned(),
                                Value {
                                    val: Some(Val::Int64Val(-1)),
                                },
                            )]
                            .into_iter()
                            .collect(),
                        })),
                    },
                ],
            })),
        };
        for bytes in [
            Vec::new(),
            v(Val::Int64Val(i64::MIN)),
            v(Val::Int32Val(-1)),
            v(Val::DoubleVal(0.5)),
            v(Val::FloatVal(0.5)),
            v(Val::BoolVal(true)),
            v(Val::BytesVal(vec![0, 0xff])),
            v(Val::StringListVal(StringList {
                val: vec!["a".into(), String::new()],
            })),
            v(Val::Int64ListVal(Int64List {
                val: vec![-5, 9_007_199_254_740_993],
            })),
            v(Val::DoubleListVal(DoubleList {
                val: vec![1.0, 2.0],
            })),
            v(Val::ZonedTimestampVal(ZonedTimestamp {
                unix_timestamp: 1,
                zone: "Europe/Paris".into(),
            })),
            nested.encode_to_vec(),
            hex("98 01 00"),                            // null_val
            hex("6a 04 0a 02 07 08 6a 00"),             // packed int32 list, then an empty one
            hex("6a 04 08 07 08 08"),                   // unpacked int32 elements
            hex("7a 09 09 00 00 00 00 00 00 f0 3f"),    // one unpacked double
            hex("f8 07 05 29 00 00 00 00 00 00 f0 3f"), // unknown varint field 127, then a double
            hex("a3 06 08 01 a4 06 20 07"),             // unknown group 100, then int64 7
        ] {
            assert_eq!(check(&bytes), Ok(()), "{bytes:02x?}");
        }
    }

    #[test]
    fn truncated_values() {
        let good = Value {
            val: Some(Val::StringVal("alice".into())),
        }
        .encode_to_vec();
        for cut in 1..good.len() {
            assert_eq!(problem(&good[..cut]), Problem::Truncated, "cut at {cut}");
        }
        assert_eq!(
            problem(&hex("29 00 00 00")),
            Problem::Truncated,
            "short double"
        );
        assert_eq!(
            problem(&hex("20")),
            Problem::Truncated,
            "tag without its varint"
        );
        assert_eq!(
            problem(&hex("62 03 0a 05 61")),
            Problem::Truncated,
            "inner string past its list"
        );
    }

    #[test]
    fn bad_varints() {
        assert_eq!(
            problem(&hex("20 ff ff ff ff ff ff ff ff ff ff 01")),
            Problem::BadVarint
        );
        assert_eq!(
            problem(&hex("20 ff ff ff ff ff ff ff ff ff 02")),
            Problem::BadVarint
        );
        assert_eq!(
            problem(&hex("6a 03 0a 01 ff")),
            Problem::Truncated,
            "packed run ends mid-varint"
        );
    }

    #[test]
    fn bad_tags_and_wire_types() {
        assert_eq!(problem(&hex("00 01")), Problem::BadFieldNumber);
        assert_eq!(problem(&hex("0e")), Problem::BadWireType(6));
        assert_eq!(
            problem(&hex("0c")),
            Problem::BadWireType(EGROUP),
            "end group without start"
        );
        // string_val (2) sent as a varint; double_val (5) as fixed32; a list as a varint.
        assert_eq!(
            problem(&hex("10 01")),
            Problem::WrongWireType { field: 2, found: 0 }
        );
        assert_eq!(
            problem(&hex("2d 00 00 00 00")),
            Problem::WrongWireType { field: 5, found: 5 }
        );
        assert_eq!(
            problem(&hex("60 01")),
            Problem::WrongWireType {
                field: 12,
                found: 0
            }
        );
        // A double list packed into 7 bytes.
        assert_eq!(
            problem(&hex("7a 09 0a 07 00 00 00 00 00 00 00")),
            Problem::BadPackedLength { field: 1 }
        );
        // An unclosed group.
        assert_eq!(problem(&hex("a3 06 08 01")), Problem::Truncated);
    }

    #[test]
    fn bad_utf8() {
        assert_eq!(problem(&hex("12 02 c3 28")), Problem::NotUtf8 { field: 2 });
        // Inside a string list, and as a map key.
        assert_eq!(
            problem(&hex("62 03 0a 01 ff")),
            Problem::NotUtf8 { field: 1 }
        );
        assert_eq!(
            problem(&hex("a2 01 05 0a 03 0a 01 ff")),
            Problem::NotUtf8 { field: 1 }
        );
        // bytes_val may hold anything.
        assert_eq!(check(&hex("0a 02 c3 28")), Ok(()));
    }

    #[test]
    fn nesting_is_bounded() {
        let mut v = Value::default();
        for _ in 0..200 {
            v = Value {
                val: Some(Val::ListVal(RepeatedValue { val: vec![v] })),
            };
        }
        assert_eq!(problem(&v.encode_to_vec()), Problem::TooDeep);
    }

    #[test]
    fn the_short_path_agrees_with_the_full_scan() {
        let full = |b: &[u8]| {
            Scan { buf: b }
                .message(Message::Value, 0, b.len(), 0)
                .is_ok()
        };
        for bytes in [
            hex(""),
            hex("29 00 00 00 00 00 00 f0 3f"),
            hex("29 00 00 00 00 00 00 f0"),
            hex("35 00 00 80 3f"),
            hex("35 00 00 80 3f 00"),
            hex("20 01"),
            hex("20 ff 01"),
            hex("20 ff"),
            hex("20"),
            hex("20 ff ff ff ff ff ff ff ff 7f"),
            hex("20 ff ff ff ff ff ff ff ff ff 01"),
            hex("38 01"),
            hex("12 00"),
            hex("12 03 61 62 63"),
            hex("12 02 c3 28"),
            hex("12 03 61 62"),
        ] {
            if is_one_scalar(&bytes) {
                assert!(full(&bytes), "{bytes:02x?}");
            }
            assert_eq!(check(&bytes).is_ok(), full(&bytes), "{bytes:02x?}");
        }
    }

    #[test]
    fn messages_say_what_and_where() {
        let err = check(&hex("12 02 c3 28")).unwrap_err();
        assert_eq!(err.to_string(), "string field 2 is not UTF-8 at byte 2");
    }
}
