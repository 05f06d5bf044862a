//! The gRPC edge: Feast's two serving services, wired to `serving`.
//!
//! Owns: request/response conversion at the edge, per-RPC metrics and logs. Both
//! `/feast.serving.ServingService/GetOnlineFeatures` (Feast's Go server, Java
//! clients) and `/GrpcFeatureServer/GetOnlineFeatures` (`feast listen`) run the same
//! handler. Handlers only convert and delegate.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Code, Request, Response, Status};

use crate::error::code_label;
use crate::metrics as m;
use crate::proto::feast::serving::{GetFeastServingInfoRequest, GetFeastServingInfoResponse};
use crate::proto::tern::wire::{self, get_online_features_request::Kind};
use crate::proto::{
    PushRequest, PushResponse, WriteToOnlineStoreRequest, WriteToOnlineStoreResponse,
};
use crate::serving::{Request as ServingRequest, Selection, Serving};

#[allow(missing_docs, unreachable_pub, clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/feast.serving.ServingService.rs"));
    include!(concat!(env!("OUT_DIR"), "/.GrpcFeatureServer.rs"));
}

pub use generated::grpc_feature_server_server::{GrpcFeatureServer, GrpcFeatureServerServer};
pub use generated::serving_service_server::{ServingService, ServingServiceServer};

/// Full gRPC service names, as health checks and reflection know them.
pub const SERVING_SERVICE_NAME: &str = "feast.serving.ServingService";
/// `feast listen`'s package-less service.
pub const FEATURE_SERVER_NAME: &str = "GrpcFeatureServer";

/// Version string GetFeastServingInfo answers with.
pub const SERVING_INFO_VERSION: &str = concat!("tern-", env!("CARGO_PKG_VERSION"));

/// Implements both services over one serving core.
#[derive(Debug, Clone)]
pub struct FeatureService {
    serving: Arc<Serving>,
}

impl FeatureService {
    /// Handlers over `serving`.
    pub fn new(serving: Arc<Serving>) -> Self {
        Self { serving }
    }

    async fn get_online_features(
        &self,
        service: &'static str,
        request: Request<wire::GetOnlineFeaturesRequest>,
    ) -> Result<Response<wire::GetOnlineFeaturesResponse>, Status> {
        let started = Instant::now();
        let req = request.get_ref();
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
            })
            .await;
        let code = match &result {
            Ok(_) => Code::Ok,
            Err(e) => e.code(),
        };
        record(service, "GetOnlineFeatures", code, started);
        match result {
            Ok(response) => Ok(Response::new(response)),
            Err(err) => {
                match code {
                    Code::Internal | Code::Unavailable | Code::ResourceExhausted => {
                        tracing::warn!(service, code = code_label(code), error = %err, "GetOnlineFeatures failed")
                    }
                    _ => {
                        tracing::debug!(service, code = code_label(code), error = %err, "GetOnlineFeatures refused")
                    }
                }
                Err(err.into())
            }
        }
    }
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
        request: Request<wire::GetOnlineFeaturesRequest>,
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
        request: Request<wire::GetOnlineFeaturesRequest>,
    ) -> Result<Response<wire::GetOnlineFeaturesResponse>, Status> {
        FeatureService::get_online_features(self, FEATURE_SERVER_NAME, request).await
    }
}
