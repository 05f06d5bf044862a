//! The gRPC edge: Feast's two serving services, wired to `serving`.
//!
//! Owns: request/response conversion at the edge, deadlines from `grpc-timeout`,
//! per-RPC metrics and logs. Both `/feast.serving.ServingService/GetOnlineFeatures`
//! (Feast's Go server, Java clients) and `/GrpcFeatureServer/GetOnlineFeatures`
//! (`feast listen`) run the same handler. Handlers only convert and delegate; error
//! codes come from [`status`], the one mapping.

pub mod codec;
pub mod response;
pub mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::{Code, Request, Response, Status};

use crate::metrics as m;
use crate::proto::feast::serving::{GetFeastServingInfoRequest, GetFeastServingInfoResponse};
use crate::proto::tern::wire::{self, get_online_features_request::Kind};
use crate::proto::{
    PushRequest, PushResponse, WriteToOnlineStoreRequest, WriteToOnlineStoreResponse,
};
use crate::serving::{OnlineFeatures, Request as ServingRequest, Selection, Serving};
use crate::telemetry::LogLimiter;
use crate::writes::{self, Cells, Column as WriteColumn, Target, WriteError, WriteRequest, Writer};
use codec::Decoded;
pub use status::code_label;

#[allow(missing_docs, unreachable_pub, clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/feast.serving.ServingService.rs"));
    include!(concat!(env!("OUT_DIR"), "/.GrpcFeatureServer.rs"));
    include!(concat!(env!("OUT_DIR"), "/tern.v1.OnlineWriter.rs"));
}

#[allow(missing_docs, unreachable_pub, clippy::all)]
mod client {
    include!(concat!(
        env!("OUT_DIR"),
        "/client/feast.serving.ServingService.rs"
    ));
    include!(concat!(env!("OUT_DIR"), "/client/tern.v1.OnlineWriter.rs"));
}

pub use client::online_writer_client::OnlineWriterClient;
pub use client::serving_service_client::ServingServiceClient;
pub use generated::grpc_feature_server_server::{GrpcFeatureServer, GrpcFeatureServerServer};
pub use generated::online_writer_server::{OnlineWriter, OnlineWriterServer};
pub use generated::serving_service_server::{ServingService, ServingServiceServer};

/// Full gRPC service names, as health checks and reflection know them.
pub const SERVING_SERVICE_NAME: &str = "feast.serving.ServingService";
/// `feast listen`'s package-less service.
pub const FEATURE_SERVER_NAME: &str = "GrpcFeatureServer";
/// Tern's write service.
pub const ONLINE_WRITER_NAME: &str = "tern.v1.OnlineWriter";
/// A health service that is SERVING while the process answers at all, whatever the
/// online store does: for liveness and startup probes, which restart a pod that fails
/// them (a Redis outage should make it unready, never restart it).
pub const LIVENESS_NAME: &str = "liveness";

/// Version string GetFeastServingInfo answers with.
pub const SERVING_INFO_VERSION: &str = concat!("tern-", env!("CARGO_PKG_VERSION"));

/// Failures worth a warning, at most this many log lines a second (the rest counted):
/// an outage at 10,000 req/s must not become 10,000 log lines a second.
static FAILURE_LOG: LogLimiter = LogLimiter::new(5);

/// Implements both services over one serving core.
#[derive(Debug, Clone)]
pub struct FeatureService {
    serving: Arc<Serving>,
    writer: Writer,
    /// Upper bound for one call; a client's shorter `grpc-timeout` wins.
    request_timeout: Duration,
    /// The metric handles of a successful GetOnlineFeatures on each service, registered
    /// once (every other outcome is rare enough to go through the macros).
    served: [(metrics::Counter, metrics::Histogram); 2],
}

/// Handles of `requests_total` and `request_duration_seconds` for one outcome.
fn handles(
    service: &'static str,
    method: &'static str,
    code: Code,
) -> (metrics::Counter, metrics::Histogram) {
    let labels = [
        ("service", service),
        ("method", method),
        ("code", code_label(code)),
    ];
    (
        metrics::counter!(m::GRPC_REQUESTS, &labels),
        metrics::histogram!(m::GRPC_DURATION, &labels),
    )
}

impl FeatureService {
    /// Handlers over `serving`; no call runs longer than `request_timeout`.
    pub fn new(serving: Arc<Serving>, request_timeout: Duration) -> Self {
        Self {
            writer: Writer::new(serving.registry().clone(), serving.store().clone()),
            serving,
            request_timeout,
            served: [SERVING_SERVICE_NAME, FEATURE_SERVER_NAME]
                .map(|service| handles(service, "GetOnlineFeatures", Code::Ok)),
        }
    }

    async fn get_online_features(
        &self,
        service: &'static str,
        request: Request<Decoded<wire::GetOnlineFeaturesRequest>>,
    ) -> Result<Response<response::EncodedResponse>, Status> {
        let started = Instant::now();
        let deadline = client_timeout(request.metadata())
            .map_or(self.request_timeout, |t| t.min(self.request_timeout));
        let caller = caller(&request);
        let req = match request.into_inner().into_message() {
            Ok(req) => req,
            Err(status) => {
                record(service, "GetOnlineFeatures", status.code(), started);
                tracing::debug!(service, error = %status.message(), "GetOnlineFeatures refused");
                return Err(status);
            }
        };
        let selection = match &req.kind {
            Some(Kind::FeatureService(name)) => Some(Selection::Service(name)),
            Some(Kind::Features(list)) => Some(Selection::Refs(&list.val)),
            None => None,
        };
        let result = self
            .serving
            .get_online_features(ServingRequest {
                selection,
                entities: &req.entities,
                full_feature_names: req.full_feature_names,
                include_metadata: req.include_feature_view_version_metadata,
                deadline: Some(deadline),
                caller: caller.as_deref(),
            })
            .await;
        match result {
            Ok(answer) => {
                let (count, duration) = &self.served[usize::from(service == FEATURE_SERVER_NAME)];
                count.increment(1);
                duration.record(started.elapsed().as_secs_f64());
                Ok(Response::new(encode_response(answer)))
            }
            Err(err) => {
                let status = status::status(&err);
                let code = status.code();
                record(service, "GetOnlineFeatures", code, started);
                if err.kind().is_server_side() {
                    if let Some(suppressed) = FAILURE_LOG.admit() {
                        tracing::warn!(service, code = code_label(code), error = %status.message(), suppressed, "GetOnlineFeatures failed");
                    }
                } else {
                    tracing::debug!(service, code = code_label(code), error = %status.message(), "GetOnlineFeatures refused");
                }
                Err(status)
            }
        }
    }
}

/// The client's deadline from the `grpc-timeout` header (`<digits><unit>`, at most 8
/// digits; units H, M, S, m, u, n). A malformed header is ignored: the server's own
/// bound still applies.
fn client_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Feast's response from the domain answer, encoded by tonic straight into its output
/// buffer ([`response::EncodedResponse`]). Stored value bytes pass through untouched;
/// the metadata is assembled from bytes the plan encoded once.
pub fn encode_response(answer: OnlineFeatures) -> response::EncodedResponse {
    let OnlineFeatures {
        plan,
        include_metadata,
        rows,
        entities,
        features,
    } = answer;
    let metadata = metadata_bytes(
        entities.iter().map(|c| &*c.name),
        &plan.encoded_feature_names,
        if include_metadata {
            &plan.encoded_view_metadata
        } else {
            &[]
        },
    );
    response::EncodedResponse {
        metadata,
        rows,
        entities,
        features,
        encoded: None,
        lengths: Default::default(),
    }
}

/// Encodes `GetOnlineFeaturesResponseMetadata`: the entity column names, then the
/// plan's pre-encoded feature names and (when asked) view versions.
fn metadata_bytes<'a>(
    entity_names: impl Iterator<Item = &'a str> + Clone,
    encoded_feature_names: &[u8],
    encoded_views: &[u8],
) -> Bytes {
    use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
    let names_len = entity_names
        .clone()
        .map(|n| 1 + encoded_len_varint(n.len() as u64) + n.len())
        .sum::<usize>()
        + encoded_feature_names.len();
    let mut out = Vec::with_capacity(
        1 + encoded_len_varint(names_len as u64) + names_len + encoded_views.len(),
    );
    // field 1: feature_names (a FeatureList whose only field is the repeated names)
    encode_key(1, WireType::LengthDelimited, &mut out);
    encode_varint(names_len as u64, &mut out);
    for name in entity_names {
        // FeatureList.val (field 1), written from the borrowed name.
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(name.len() as u64, &mut out);
        out.extend_from_slice(name.as_bytes());
    }
    out.extend_from_slice(encoded_feature_names);
    out.extend_from_slice(encoded_views);
    Bytes::from(out)
}

fn record(service: &'static str, method: &'static str, code: Code, started: Instant) {
    let (count, duration) = handles(service, method, code);
    count.increment(1);
    duration.record(started.elapsed().as_secs_f64());
}

/// The authenticated caller, set by the server's authentication when it is on.
fn caller<T>(request: &Request<T>) -> Option<Arc<crate::auth::Principal>> {
    request
        .extensions()
        .get::<Arc<crate::auth::Principal>>()
        .cloned()
}

impl FeatureService {
    /// One row from Feast's `features` (strings) or `typed_features` map.
    async fn write_map(
        &self,
        caller: Option<&crate::auth::Principal>,
        target: Target<'_>,
        features: &std::collections::BTreeMap<String, String>,
        typed: &std::collections::BTreeMap<String, crate::proto::feast::types::Value>,
    ) -> Result<writes::WriteSummary, WriteError> {
        if !features.is_empty() && !typed.is_empty() {
            return Err(WriteError::BothForms);
        }
        let columns = features
            .iter()
            .map(|(name, text)| WriteColumn {
                name,
                cells: Cells::Text(text),
            })
            .chain(typed.iter().map(|(name, value)| WriteColumn {
                name,
                cells: Cells::Typed(std::slice::from_ref(value)),
            }))
            .collect();
        self.writer
            .write(&WriteRequest {
                target,
                columns,
                event_times: &[],
                default_event_time: None,
                caller,
            })
            .await
    }

    /// Records and logs a write's outcome; its status on failure.
    fn finish(
        &self,
        service: &'static str,
        method: &'static str,
        started: Instant,
        result: Result<writes::WriteSummary, WriteError>,
    ) -> Result<writes::WriteSummary, Status> {
        match result {
            Ok(summary) => {
                record(service, method, Code::Ok, started);
                tracing::debug!(
                    service,
                    method,
                    written = summary.written(),
                    skipped = summary.skipped(),
                    "write done"
                );
                Ok(summary)
            }
            Err(err) => {
                let status = status::write_status(&err);
                let code = status.code();
                record(service, method, code, started);
                if matches!(err, WriteError::Store(_)) {
                    if let Some(suppressed) = FAILURE_LOG.admit() {
                        tracing::warn!(service, method, code = code_label(code), error = %status.message(), suppressed, "write failed");
                    }
                } else {
                    tracing::debug!(service, method, code = code_label(code), error = %status.message(), "write refused");
                }
                Err(status)
            }
        }
    }
}

#[tonic::async_trait]
impl OnlineWriter for FeatureService {
    async fn write_features(
        &self,
        request: Request<crate::proto::tern::v1::WriteFeaturesRequest>,
    ) -> Result<Response<crate::proto::tern::v1::WriteFeaturesResponse>, Status> {
        let started = Instant::now();
        let who = caller(&request);
        let req = request.into_inner();
        let columns = req
            .columns
            .iter()
            .map(|c| WriteColumn {
                name: &c.name,
                cells: Cells::Typed(&c.values),
            })
            .collect();
        let result = self
            .writer
            .write(&WriteRequest {
                target: Target::View {
                    name: &req.feature_view,
                    version: req.version,
                },
                columns,
                event_times: &req.event_timestamps,
                default_event_time: Some(self.serving.clock().now_timestamp()),
                caller: who.as_deref(),
            })
            .await;
        self.finish(ONLINE_WRITER_NAME, "WriteFeatures", started, result)
            .map(|summary| {
                Response::new(crate::proto::tern::v1::WriteFeaturesResponse {
                    rows_written: summary.written() as u64,
                    rows_skipped_older: summary.skipped() as u64,
                })
            })
    }
}

#[tonic::async_trait]
impl ServingService for FeatureService {
    async fn get_feast_serving_info(
        &self,
        _request: Request<GetFeastServingInfoRequest>,
    ) -> Result<Response<GetFeastServingInfoResponse>, Status> {
        record(
            SERVING_SERVICE_NAME,
            "GetFeastServingInfo",
            Code::Ok,
            Instant::now(),
        );
        Ok(Response::new(GetFeastServingInfoResponse {
            version: SERVING_INFO_VERSION.to_owned(),
        }))
    }

    async fn get_online_features(
        &self,
        request: Request<Decoded<wire::GetOnlineFeaturesRequest>>,
    ) -> Result<Response<response::EncodedResponse>, Status> {
        FeatureService::get_online_features(self, SERVING_SERVICE_NAME, request).await
    }
}

#[tonic::async_trait]
impl GrpcFeatureServer for FeatureService {
    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushResponse>, Status> {
        let started = Instant::now();
        let who = caller(&request);
        let req = request.into_inner();
        let result = match writes::check_push_mode(&req.to) {
            Ok(()) => {
                self.write_map(
                    who.as_deref(),
                    Target::PushSource(&req.stream_feature_view),
                    &req.features,
                    &req.typed_features,
                )
                .await
            }
            Err(e) => Err(e),
        };
        self.finish(FEATURE_SERVER_NAME, "Push", started, result)
            .map(|_| Response::new(PushResponse { status: true }))
    }

    async fn write_to_online_store(
        &self,
        request: Request<WriteToOnlineStoreRequest>,
    ) -> Result<Response<WriteToOnlineStoreResponse>, Status> {
        let started = Instant::now();
        let who = caller(&request);
        let req = request.into_inner();
        let result = self
            .write_map(
                who.as_deref(),
                Target::View {
                    name: &req.feature_view_name,
                    version: None,
                },
                &req.features,
                &req.typed_features,
            )
            .await;
        self.finish(FEATURE_SERVER_NAME, "WriteToOnlineStore", started, result)
            .map(|_| Response::new(WriteToOnlineStoreResponse { status: true }))
    }

    async fn get_online_features(
        &self,
        request: Request<Decoded<wire::GetOnlineFeaturesRequest>>,
    ) -> Result<Response<response::EncodedResponse>, Status> {
        FeatureService::get_online_features(self, FEATURE_SERVER_NAME, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_header() {
        let parse = |v: &str| {
            let mut m = tonic::metadata::MetadataMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            client_timeout(&m)
        };
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("5000u"), Some(Duration::from_micros(5000)));
        assert_eq!(parse("123456789m"), None, "more than 8 digits");
        assert_eq!(parse("10x"), None);
        assert_eq!(parse("m"), None);
    }
}
