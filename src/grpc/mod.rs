//! The gRPC edge: Feast's two serving services, wired to `serving`.
//!
//! Owns: request/response conversion at the edge, deadlines from `grpc-timeout`,
//! per-RPC metrics and logs. Both `/feast.serving.ServingService/GetOnlineFeatures`
//! (Feast's Go server, Java clients) and `/GrpcFeatureServer/GetOnlineFeatures`
//! (`feast listen`) run the same handler. Handlers only convert and delegate; error
//! codes come from [`status`], the one mapping.

pub mod codec;
pub mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost_types::Timestamp;
use tonic::{Code, Request, Response, Status};

use crate::metrics as m;
use crate::proto::feast::serving::{
    FieldStatus, GetFeastServingInfoRequest, GetFeastServingInfoResponse,
};
use crate::proto::tern::wire::{self, FeatureVector, get_online_features_request::Kind};
use crate::proto::{
    PushRequest, PushResponse, WriteToOnlineStoreRequest, WriteToOnlineStoreResponse,
};
use crate::serving::{OnlineFeatures, Request as ServingRequest, Selection, Serving};
use crate::telemetry::LogLimiter;
use codec::Decoded;
pub use status::code_label;

#[allow(missing_docs, unreachable_pub, clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/feast.serving.ServingService.rs"));
    include!(concat!(env!("OUT_DIR"), "/.GrpcFeatureServer.rs"));
}

#[allow(missing_docs, unreachable_pub, clippy::all)]
mod client {
    include!(concat!(
        env!("OUT_DIR"),
        "/client/feast.serving.ServingService.rs"
    ));
}

pub use client::serving_service_client::ServingServiceClient;
pub use generated::grpc_feature_server_server::{GrpcFeatureServer, GrpcFeatureServerServer};
pub use generated::serving_service_server::{ServingService, ServingServiceServer};

/// Full gRPC service names, as health checks and reflection know them.
pub const SERVING_SERVICE_NAME: &str = "feast.serving.ServingService";
/// `feast listen`'s package-less service.
pub const FEATURE_SERVER_NAME: &str = "GrpcFeatureServer";

/// Version string GetFeastServingInfo answers with.
pub const SERVING_INFO_VERSION: &str = concat!("tern-", env!("CARGO_PKG_VERSION"));

/// Failures worth a warning, at most this many log lines a second (the rest counted):
/// an outage at 10,000 req/s must not become 10,000 log lines a second.
static FAILURE_LOG: LogLimiter = LogLimiter::new(5);

/// Implements both services over one serving core.
#[derive(Debug, Clone)]
pub struct FeatureService {
    serving: Arc<Serving>,
    /// Upper bound for one call; a client's shorter `grpc-timeout` wins.
    request_timeout: Duration,
}

impl FeatureService {
    /// Handlers over `serving`; no call runs longer than `request_timeout`.
    pub fn new(serving: Arc<Serving>, request_timeout: Duration) -> Self {
        Self {
            serving,
            request_timeout,
        }
    }

    async fn get_online_features(
        &self,
        service: &'static str,
        request: Request<Decoded<wire::GetOnlineFeaturesRequest>>,
    ) -> Result<Response<wire::GetOnlineFeaturesResponse>, Status> {
        let started = Instant::now();
        let deadline = client_timeout(request.metadata())
            .map_or(self.request_timeout, |t| t.min(self.request_timeout));
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
            })
            .await;
        match result {
            Ok(answer) => {
                record(service, "GetOnlineFeatures", Code::Ok, started);
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

/// Feast's response message from the domain answer. Stored value bytes pass through
/// untouched; the metadata is assembled from bytes the plan encoded once.
pub fn encode_response(answer: OnlineFeatures) -> wire::GetOnlineFeaturesResponse {
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
    let mut results = Vec::with_capacity(entities.len() + features.len());
    for column in entities {
        results.push(FeatureVector {
            values: column.values,
            statuses: vec![FieldStatus::Present as i32; rows],
            event_timestamps: vec![Timestamp::default(); rows],
        });
    }
    for column in features {
        results.push(FeatureVector {
            values: column.values,
            // Same size and layout: collected in place, no new allocation.
            statuses: column.statuses.into_iter().map(|s| s as i32).collect(),
            event_timestamps: column.event_timestamps,
        });
    }
    wire::GetOnlineFeaturesResponse {
        metadata,
        results,
        status: false,
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
    let labels = [
        ("service", service),
        ("method", method),
        ("code", code_label(code)),
    ];
    metrics::counter!(m::GRPC_REQUESTS, &labels).increment(1);
    metrics::histogram!(m::GRPC_DURATION, &labels).record(started.elapsed().as_secs_f64());
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
    ) -> Result<Response<wire::GetOnlineFeaturesResponse>, Status> {
        FeatureService::get_online_features(self, SERVING_SERVICE_NAME, request).await
    }
}

#[tonic::async_trait]
impl GrpcFeatureServer for FeatureService {
    async fn push(&self, _request: Request<PushRequest>) -> Result<Response<PushResponse>, Status> {
        record(
            FEATURE_SERVER_NAME,
            "Push",
            Code::Unimplemented,
            Instant::now(),
        );
        Err(Status::unimplemented(
            "Push is not served by this version of Tern; write features with `feast materialize` or Feast's push API",
        ))
    }

    async fn write_to_online_store(
        &self,
        _request: Request<WriteToOnlineStoreRequest>,
    ) -> Result<Response<WriteToOnlineStoreResponse>, Status> {
        record(
            FEATURE_SERVER_NAME,
            "WriteToOnlineStore",
            Code::Unimplemented,
            Instant::now(),
        );
        Err(Status::unimplemented(
            "WriteToOnlineStore is not served by this version of Tern; write features with `feast materialize`",
        ))
    }

    async fn get_online_features(
        &self,
        request: Request<Decoded<wire::GetOnlineFeaturesRequest>>,
    ) -> Result<Response<wire::GetOnlineFeaturesResponse>, Status> {
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
