//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use tern::proto::feast::serving::{FeatureList, FieldStatus, GetOnlineFeaturesResponse};
use tern::proto::feast::types::value::Val;
use tern::proto::feast::types::{RepeatedValue, Value};
use tern::proto::tern::wire::get_online_features_request::Kind;
use tern::proto::tern::wire::{Column, GetOnlineFeaturesRequest};
use tonic::transport::Channel;

/// Which gRPC path to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Serving,
    FeatureServer,
}

pub const BOTH_PATHS: [Route; 2] = [Route::Serving, Route::FeatureServer];

impl Route {
    /// The gRPC path of GetOnlineFeatures on this service.
    pub fn path(self) -> &'static str {
        match self {
            Route::Serving => "/feast.serving.ServingService/GetOnlineFeatures",
            Route::FeatureServer => "/GrpcFeatureServer/GetOnlineFeatures",
        }
    }
}

pub async fn channel(url: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("valid url")
        .connect()
        .await
        .expect("connect")
}

/// Sends a GetOnlineFeatures request. The request is built as repeated entries
/// (the same bytes as Feast's `map` field) so entity columns go out in the order
/// given, as a Python or Go client's map would send them; the answer is decoded
/// with Feast's response type.
pub async fn call(
    channel: &Channel,
    path: Route,
    req: GetOnlineFeaturesRequest,
) -> Result<GetOnlineFeaturesResponse, tonic::Status> {
    let route = path.path();
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec =
        tonic_prost::ProstCodec::<GetOnlineFeaturesRequest, GetOnlineFeaturesResponse>::default();
    grpc.unary(
        tonic::Request::new(req),
        route.parse().expect("route"),
        codec,
    )
    .await
    .map(tonic::Response::into_inner)
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

/// Driver 1001's `conv_rate`: the smallest request the example repo answers.
pub fn conv_rate_request() -> GetOnlineFeaturesRequest {
    refs_request(
        &["driver_stats:conv_rate"],
        vec![("driver_id", vec![int64(1001)])],
    )
}

pub fn refs_request(refs: &[&str], entities: Vec<(&str, Vec<Value>)>) -> GetOnlineFeaturesRequest {
    GetOnlineFeaturesRequest {
        kind: Some(Kind::Features(FeatureList {
            val: refs.iter().map(|s| s.to_string()).collect(),
        })),
        entities: entities
            .into_iter()
            .map(|(k, v)| Column {
                key: k.to_owned(),
                value: Some(RepeatedValue { val: v }),
            })
            .collect(),
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

/// Sends one GetOnlineFeatures call with the header `grpc-timeout: timeout` over a bare
/// HTTP/2 connection, so that no client-side deadline races the server's (a tonic
/// client enforces the header itself); returns `(grpc-status, grpc-message)`.
pub async fn call_with_grpc_timeout(
    addr: std::net::SocketAddr,
    path: Route,
    req: &GetOnlineFeaturesRequest,
    timeout: &str,
) -> (i32, String) {
    use prost::Message;
    let route = path.path();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("h2 ready");
    let request = http::Request::post(format!("http://{addr}{route}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(())
        .expect("request");
    let (response, mut send) = client.send_request(request, false).expect("send");
    let message = req.encode_to_vec();
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&message);
    send.send_data(framed.into(), true).expect("send body");
    let (head, mut body) = response.await.expect("response").into_parts();
    let status = |headers: &http::HeaderMap| -> Option<(i32, String)> {
        let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
        let message = headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .map(|m| {
                percent_encoding::percent_decode_str(m)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        Some((code, message))
    };
    // A trailers-only answer carries the status in its headers.
    if let Some(answer) = status(&head.headers) {
        return answer;
    }
    while let Some(chunk) = body.data().await {
        chunk.expect("body");
    }
    let trailers = body
        .trailers()
        .await
        .expect("trailers")
        .expect("grpc trailers");
    status(&trailers).expect("grpc-status")
}
