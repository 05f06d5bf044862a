//! Generated protobuf types: Feast's packages (`feast.types`, `feast.serving`,
//! `feast.core`), the package-less `GrpcFeatureServer` messages, and Tern's
//! server-side `tern.wire` shapes. Written in `proto/`, compiled by `build.rs`.
#![allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]

include!(concat!(env!("OUT_DIR"), "/proto.rs"));

/// Encoded `FileDescriptorSet` of Feast's packages, served by gRPC reflection.
pub const REFLECTION_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/reflection.bin"));
