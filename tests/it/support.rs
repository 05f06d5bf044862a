//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tern::proto::feast::serving::get_online_features_request::Kind;
use tern::proto::feast::serving::serving_service_client::ServingServiceClient;
use tern::proto::feast::serving::{
    FeatureList, FieldStatus, GetOnlineFeaturesRequest, GetOnlineFeaturesResponse,
};
use tern::proto::feast::types::value::Val;
use tern::proto::feast::types::{RepeatedValue, Value};
use tern::proto::grpc_feature_server_client::GrpcFeatureServerClient;
use tonic::transport::Channel;

/// Which gRPC path to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Serving,
    FeatureServer,
}

pub const BOTH_PATHS: [Path; 2] = [Path::Serving, Path::FeatureServer];

pub async fn channel(url: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("valid url")
        .connect()
        .await
        .expect("connect")
}

pub async fn call(
    channel: &Channel,
    path: Path,
    req: GetOnlineFeaturesRequest,
) -> Result<GetOnlineFeaturesResponse, tonic::Status> {
    let r = match path {
        Path::Serving => {
            ServingServiceClient::new(channel.clone())
                .get_online_features(req)
                .await
        }
        Path::FeatureServer => {
            GrpcFeatureServerClient::new(channel.clone())
                .get_online_features(req)
                .await
        }
    };
    r.map(tonic::Response::into_inner)
}

pub fn int64(v: i64) -> Value {
    Value {
        val: Some(Val::Int64Val(v)),
    }
}
pub fn int32(v: i32) -> Value {
    Value {
        val: Some(Val::Int32Val(v)),
    }
}
pub fn string(v: &str) -> Value {
    Value {
        val: Some(Val::StringVal(v.to_owned())),
    }
}
pub fn double(v: f64) -> Value {
    Value {
        val: Some(Val::DoubleVal(v)),
    }
}

pub fn refs_request(refs: &[&str], entities: Vec<(&str, Vec<Value>)>) -> GetOnlineFeaturesRequest {
    GetOnlineFeaturesRequest {
        kind: Some(Kind::Features(FeatureList {
            val: refs.iter().map(|s| s.to_string()).collect(),
        })),
        entities: entities
            .into_iter()
            .map(|(k, v)| (k.to_owned(), RepeatedValue { val: v }))
            .collect::<BTreeMap<_, _>>(),
        ..Default::default()
    }
}

pub fn service_request(
    service: &str,
    entities: Vec<(&str, Vec<Value>)>,
) -> GetOnlineFeaturesRequest {
    GetOnlineFeaturesRequest {
        kind: Some(Kind::FeatureService(service.to_owned())),
        ..refs_request(&[], entities)
    }
}

/// Feature names of a response.
pub fn names(r: &GetOnlineFeaturesResponse) -> Vec<String> {
    r.metadata
        .as_ref()
        .and_then(|m| m.feature_names.as_ref())
        .map(|l| l.val.clone())
        .unwrap_or_default()
}

/// Column `name` of a response: (values, statuses, timestamp seconds).
pub fn column(
    r: &GetOnlineFeaturesResponse,
    name: &str,
) -> (Vec<Value>, Vec<FieldStatus>, Vec<i64>) {
    let i = names(r)
        .iter()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", names(r)));
    let c = &r.results[i];
    (
        c.values.clone(),
        c.statuses
            .iter()
            .map(|s| FieldStatus::try_from(*s).expect("known status"))
            .collect(),
        c.event_timestamps.iter().map(|t| t.seconds).collect(),
    )
}

/// Polls `f` until it returns `Some`, failing after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    loop {
        poll.tick().await;
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
    }
}
