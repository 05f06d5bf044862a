//! `GetOnlineFeaturesResponse` written straight from the domain answer into tonic's
//! output buffer: no message tree per request. The bytes are exactly what prost writes
//! for `tern.wire.GetOnlineFeaturesResponse` holding the same answer (tested against
//! it below), which is Feast's `GetOnlineFeaturesResponse` on the wire.

use std::sync::OnceLock;

use bytes::{Buf, BufMut, Bytes};
use prost::DecodeError;
use prost::encoding::{
    DecodeContext, WireType, encode_key, encoded_len_varint, key_len, skip_field,
};
use prost_types::Timestamp;

use crate::proto::feast::serving::FieldStatus;
use crate::serving::{EchoedColumn, FeatureColumns};
use crate::store::Span;

/// One answer, ready to be encoded by tonic (its `prost::Message` implementation only
/// encodes; a server never decodes its own response).
#[derive(Debug, Default)]
pub struct EncodedResponse {
    pub(super) metadata: Bytes,
    pub(super) rows: usize,
    pub(super) entities: Vec<EchoedColumn>,
    pub(super) features: FeatureColumns,
    /// A response encoded beforehand, written as it is (see [`Self::pre_encoded`]).
    pub(super) encoded: Option<Bytes>,
    /// Each vector's body length: prost asks for the length, then encodes, and every
    /// vector's length prefix needs it again.
    pub(super) lengths: OnceLock<Vec<usize>>,
}

/// One `FeatureVector`'s three fields, borrowed.
struct Vector<'a> {
    values: &'a [Span],
    buffer: &'a [u8],
    /// `None`: every row PRESENT (an echoed entity column).
    statuses: Option<&'a [FieldStatus]>,
    /// `None`: every row the zero time (an echoed entity column).
    times: Option<&'a [Timestamp]>,
    rows: usize,
}

/// Writes `value` as a varint with one `put_slice` (tonic's buffer checks its capacity
/// on every put; a 1.7e9-second time is five bytes).
fn put_varint(value: u64, buf: &mut impl BufMut) {
    if value < 0x80 {
        buf.put_u8(value as u8);
        return;
    }
    let mut bytes = [0u8; 10];
    let n = varint_into(value, &mut bytes);
    buf.put_slice(&bytes[..n]);
}

/// `value` as a varint at the start of `out` (at least 10 bytes long); its length.
fn varint_into(mut value: u64, out: &mut [u8]) -> usize {
    let mut n = 0;
    while value >= 0x80 && n < out.len() {
        out[n] = (value as u8 & 0x7f) | 0x80;
        value >>= 7;
        n += 1;
    }
    if let Some(last) = out.get_mut(n) {
        *last = value as u8;
    }
    n + 1
}

/// One `event_timestamps` element (field 3), key and length included, in one write.
fn put_timestamp(ts: &Timestamp, buf: &mut impl BufMut) {
    // Key, length (under 128), then two keys and two varints of at most 10 bytes.
    let mut out = [0u8; 24];
    out[0] = 3 << 3 | WireType::LengthDelimited as u8;
    let mut n = 2;
    if ts.seconds != 0 {
        out[n] = 1 << 3;
        n += 1 + varint_into(ts.seconds as u64, &mut out[n + 1..]);
    }
    if ts.nanos != 0 {
        out[n] = 2 << 3;
        n += 1 + varint_into(i64::from(ts.nanos) as u64, &mut out[n + 1..]);
    }
    out[1] = (n - 2) as u8;
    buf.put_slice(&out[..n]);
}

fn timestamp_body_len(ts: &Timestamp) -> usize {
    let mut n = 0;
    if ts.seconds != 0 {
        n += 1 + encoded_len_varint(ts.seconds as u64);
    }
    if ts.nanos != 0 {
        n += 1 + encoded_len_varint(i64::from(ts.nanos) as u64);
    }
    n
}

impl Vector<'_> {
    /// Every FieldStatus (0 to 4) is a one-byte varint.
    fn statuses_body_len(&self) -> usize {
        self.statuses.map_or(self.rows, <[FieldStatus]>::len)
    }

    fn body_len(&self) -> usize {
        let values: usize = self
            .values
            .iter()
            .map(|v| key_len(1) + encoded_len_varint(v.len() as u64) + v.len())
            .sum();
        let statuses = match self.statuses_body_len() {
            0 => 0,
            n => key_len(2) + encoded_len_varint(n as u64) + n,
        };
        let times: usize = match self.times {
            Some(times) => times
                .iter()
                .map(|t| {
                    let n = timestamp_body_len(t);
                    key_len(3) + encoded_len_varint(n as u64) + n
                })
                .sum(),
            None => self.rows * (key_len(3) + 1),
        };
        values + statuses + times
    }

    /// Writes the vector as field 2 of the response; `body` is its [`Self::body_len`].
    fn encode(&self, body: usize, buf: &mut impl BufMut) {
        encode_key(2, WireType::LengthDelimited, buf);
        put_varint(body as u64, buf);
        for v in self.values {
            let v = v.of(self.buffer);
            let mut head = [0u8; 11];
            head[0] = 1 << 3 | WireType::LengthDelimited as u8;
            let n = 1 + varint_into(v.len() as u64, &mut head[1..]);
            buf.put_slice(&head[..n]);
            buf.put_slice(v);
        }
        let statuses = self.statuses_body_len();
        if statuses > 0 {
            encode_key(2, WireType::LengthDelimited, buf);
            put_varint(statuses as u64, buf);
            match self.statuses {
                Some(s) => s.iter().for_each(|&s| buf.put_u8(s as u8)),
                None => (0..self.rows).for_each(|_| buf.put_u8(FieldStatus::Present as u8)),
            }
        }
        match self.times {
            Some(times) => times.iter().for_each(|t| put_timestamp(t, buf)),
            None => {
                for _ in 0..self.rows {
                    buf.put_slice(&[3 << 3 | WireType::LengthDelimited as u8, 0]);
                }
            }
        }
    }
}

impl EncodedResponse {
    /// A response whose bytes are already a serialized `GetOnlineFeaturesResponse` (a
    /// fixed answer, as the benchmarks' no-op server sends).
    pub fn pre_encoded(bytes: Bytes) -> Self {
        Self {
            encoded: Some(bytes),
            ..Self::default()
        }
    }

    fn body_lengths(&self) -> &[usize] {
        self.lengths
            .get_or_init(|| self.vectors().map(|v| v.body_len()).collect())
    }

    fn vectors(&self) -> impl Iterator<Item = Vector<'_>> {
        let echoed = self.entities.iter().map(|c| Vector {
            values: &c.values,
            buffer: &c.buffer,
            statuses: None,
            times: None,
            rows: self.rows,
        });
        let features = self.features.iter().map(|c| Vector {
            values: c.values,
            buffer: c.buffer,
            statuses: Some(c.statuses),
            times: Some(c.event_timestamps),
            rows: self.rows,
        });
        echoed.chain(features)
    }
}

impl prost::Message for EncodedResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if let Some(bytes) = &self.encoded {
            buf.put_slice(bytes);
            return;
        }
        if !self.metadata.is_empty() {
            encode_key(1, WireType::LengthDelimited, buf);
            put_varint(self.metadata.len() as u64, buf);
            buf.put_slice(&self.metadata);
        }
        for (vector, &body) in self.vectors().zip(self.body_lengths()) {
            vector.encode(body, buf);
        }
        // Field 3 (`status`) is false: proto3 leaves it out.
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        if let Some(bytes) = &self.encoded {
            return bytes.len();
        }
        let metadata = match self.metadata.len() {
            0 => 0,
            n => key_len(1) + encoded_len_varint(n as u64) + n,
        };
        metadata
            + self
                .body_lengths()
                .iter()
                .map(|&n| key_len(2) + encoded_len_varint(n as u64) + n)
                .sum::<usize>()
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {

    use bytes::Bytes;
    use prost::Message;
    use prost_types::Timestamp;

    use super::EncodedResponse;
    use crate::proto::feast::serving::FieldStatus;
    use crate::proto::tern::wire::{FeatureVector, GetOnlineFeaturesResponse};
    use crate::serving::{EchoedColumn, FeatureColumns};

    /// A small deterministic generator (xorshift), so failures repeat.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn value(rng: &mut Rng) -> Bytes {
        // Empty (null or not found), short, and longer than one length byte.
        let len = [0, 3, 9, 200][rng.below(4) as usize];
        Bytes::from((0..len).map(|_| rng.next() as u8).collect::<Vec<u8>>())
    }

    fn time(rng: &mut Rng) -> Timestamp {
        match rng.below(4) {
            0 => Timestamp::default(),
            1 => Timestamp {
                seconds: 1_736_467_200,
                nanos: 0,
            },
            2 => Timestamp {
                seconds: -62_135_596_800,
                nanos: 999_999_999,
            },
            _ => Timestamp {
                seconds: rng.below(1 << 40) as i64,
                nanos: rng.below(1_000_000_000) as i32,
            },
        }
    }

    const STATUSES: [FieldStatus; 5] = [
        FieldStatus::Invalid,
        FieldStatus::Present,
        FieldStatus::NullValue,
        FieldStatus::NotFound,
        FieldStatus::OutsideMaxAge,
    ];

    /// The direct encoder writes exactly what prost writes for the same answer as a
    /// `tern.wire.GetOnlineFeaturesResponse` message tree.
    #[test]
    fn writes_what_prost_writes_for_the_message_tree() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..300 {
            let rows = [0, 1, 2, 7, 130][case % 5];
            let n_entities = rng.below(3) as usize;
            let n_features = rng.below(5) as usize;
            let metadata = if rng.below(2) == 0 {
                Bytes::new()
            } else {
                value(&mut rng)
            };
            let echoed: Vec<Vec<Bytes>> = (0..n_entities)
                .map(|_| (0..rows).map(|_| value(&mut rng)).collect())
                .collect();
            let columns: Vec<(Vec<Bytes>, Vec<FieldStatus>, Vec<Timestamp>)> = (0..n_features)
                .map(|_| {
                    (
                        (0..rows).map(|_| value(&mut rng)).collect(),
                        (0..rows).map(|_| STATUSES[rng.below(5) as usize]).collect(),
                        (0..rows).map(|_| time(&mut rng)).collect(),
                    )
                })
                .collect();

            let tree = GetOnlineFeaturesResponse {
                metadata: metadata.clone(),
                results: echoed
                    .iter()
                    .map(|values| FeatureVector {
                        values: values.clone(),
                        statuses: vec![FieldStatus::Present as i32; rows],
                        event_timestamps: vec![Timestamp::default(); rows],
                    })
                    .chain(columns.iter().map(|(v, s, t)| FeatureVector {
                        values: v.clone(),
                        statuses: s.iter().map(|&s| s as i32).collect(),
                        event_timestamps: t.clone(),
                    }))
                    .collect(),
                status: false,
            };
            let direct = EncodedResponse {
                metadata,
                rows,
                entities: echoed
                    .iter()
                    .enumerate()
                    .map(|(i, values)| EchoedColumn::from_values(&format!("e{i}"), values))
                    .collect(),
                features: FeatureColumns::from_columns(rows, columns),
                encoded: None,
                lengths: Default::default(),
            };
            let want = tree.encode_to_vec();
            assert_eq!(direct.encoded_len(), want.len(), "case {case}: length");
            assert_eq!(direct.encode_to_vec(), want, "case {case}: bytes");
        }
    }

    #[test]
    fn a_pre_encoded_response_is_written_as_it_is() {
        let bytes = Bytes::from_static(b"\x0a\x02ab");
        let r = EncodedResponse::pre_encoded(bytes.clone());
        assert_eq!(r.encoded_len(), 4);
        assert_eq!(r.encode_to_vec(), bytes);
    }
}
