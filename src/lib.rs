//! Tern: a low-latency online feature server, wire-compatible with Feast 0.67.
//!
//! Layout (one request flows top to bottom):
//! - [`cli`], [`telemetry`]: flags, logs, metrics exporter; `main.rs` only wires them.
//! - [`server`]: builds the serving core from config, runs gRPC with health,
//!   reflection and a bounded drain on shutdown.
//! - [`grpc`]: the edge. Feast's `ServingService` and `GrpcFeatureServer`, thin
//!   handlers that convert and call [`serving`]; the one error-kind → code mapping.
//! - [`serving`]: GetOnlineFeatures without a transport: limits and deadline, cached
//!   resolution plans, entity keys, one batched store read, and the answer as a domain
//!   result ([`serving::OnlineFeatures`]) that each edge encodes.
//! - [`refs`]: `view@vN:feature` syntax. [`registry`]: Feast's registry, read whole from
//!   a file or SQL ([`registry::RegistryModel`]) and indexed into an immutable
//!   [`registry::Snapshot`] published through `ArcSwap`.
//! - [`store`]: online stores in Feast's byte layouts (SQLite, Redis).
//! - [`config`]: Feast's `feature_store.yaml`. [`error`]: the transport-free kinds of
//!   failure every core error reports (each edge maps them once: `grpc::status`).
//!   [`metrics`]: metric names. [`proto`]: generated protobuf messages (no gRPC).
//! - [`client`]: `tern get`.

pub mod auth;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod definitions;
pub mod error;
pub mod grpc;
pub mod http;
pub mod materialize;
pub mod metrics;
pub mod permissions;
pub mod plan;
pub mod proto;
pub mod refs;
pub mod registry;
pub mod server;
pub mod serving;
pub mod store;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod times;
pub mod tls;
pub mod writes;
