//! Feast's protobuf messages on the wire, with requests that fail to decode handed
//! to the handler instead of answered by tonic.
//!
//! tonic-prost's codec answers a request that does not decode (a string field that
//! is not UTF-8, a truncated message) with INTERNAL "failed to decode Protobuf
//! message", before any handler runs and past every metric. Such a request is the
//! client's mistake: this codec decodes into [`Decoded`], and the handler answers
//! INVALID_ARGUMENT naming the message and the field, counted like any other answer.

use std::marker::PhantomData;

use bytes::Buf;
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// A request message, or why its bytes are not one.
#[derive(Debug)]
pub struct Decoded<T>(pub Result<T, prost::DecodeError>);

impl<T> Decoded<T> {
    /// The message, or the INVALID_ARGUMENT status that describes the bad bytes.
    pub fn into_message(self) -> Result<T, Status> {
        self.0.map_err(|e| {
            let name = std::any::type_name::<T>()
                .rsplit("::")
                .next()
                .unwrap_or("message");
            Status::invalid_argument(crate::error::cap_message(format!(
                "the request is not a valid {name}: {e}"
            )))
        })
    }
}

/// Encodes responses as tonic-prost does; decodes requests into [`Decoded`].
#[derive(Debug)]
pub struct LenientCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LenientCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for LenientCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = Decoded<U>;
    type Encoder = ProstEncoder<T>;
    type Decoder = LenientDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        LenientDecoder(PhantomData)
    }
}

/// See [`LenientCodec`].
#[derive(Debug)]
pub struct LenientDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for LenientDecoder<U> {
    type Item = Decoded<U>;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        let decoded = U::decode(&mut *buf);
        // A failed decode stops part-way: drop the rest of this message's bytes.
        let rest = buf.remaining();
        buf.advance(rest);
        Ok(Some(Decoded(decoded)))
    }
}
