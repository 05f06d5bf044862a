//! The ghz load-test kit (`deploy/ghz/`): every shipped config, and configs freshly written
//! by `make_config.py`, must be configs ghz can run against Tern.
//!
//! ghz is not run here (a Go binary); what it would do with a config is:
//! - resolve `call` over server reflection: FileContainingSymbol of the call with `/` read as
//!   `.`, then its imports by file name, then `package.Service.Method` split at the last dot;
//! - read each `data` element (an object, or each element of an array, sent in turn) as the
//!   method's request message in the proto3 JSON mapping, and send it on the method's path.
//!
//! The tests do the same with the descriptors Tern serves, then check the answers: every row
//! and feature asked for comes back, with status PRESENT (the kit's entity ids are the ones
//! whose every feature is stored and non-null, at a clock within the example data's ttl).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, MethodDescriptor};
use serde_json::Value as Json;
use tern::proto::feast::serving::get_online_features_request::Kind;
use tern::proto::feast::serving::{
    FieldStatus, GetOnlineFeaturesRequest, GetOnlineFeaturesResponse,
};
use tern::proto::feast::types::Value;
use tern::proto::feast::types::value::Val;
use tern::serving::Clock;
use tern::testing::{SyntheticRepo, TestServer, synthetic_value};
use tonic::transport::Channel;

use crate::support::channel;

/// 2025-01-10T01:00:00Z: an hour after the example's newest rows, within driver_stats' 1-day ttl.
const NOW: i64 = 1_736_470_800;

/// Every key of ghz's config file (the JSON names of `runner.Config` in ghz's
/// runner/config.go); a key outside this list would be silently ignored by ghz.
const GHZ_KEYS: &[&str] = &[
    "proto",
    "protoset",
    "call",
    "cacert",
    "cert",
    "key",
    "skipTLS",
    "skipFirst",
    "cname",
    "authority",
    "insecure",
    "total",
    "async",
    "concurrency",
    "concurrency-schedule",
    "concurrency-start",
    "concurrency-end",
    "concurrency-step",
    "concurrency-step-duration",
    "concurrency-max-duration",
    "connections",
    "rps",
    "duration",
    "duration-stop",
    "max-duration",
    "timeout",
    "data",
    "data-file",
    "binary-file",
    "metadata",
    "metadata-file",
    "stream-interval",
    "output",
    "format",
    "connect-timeout",
    "keepalive",
    "cpus",
    "import-paths",
    "name",
    "tags",
    "reflect-metadata",
    "debug",
    "host",
    "enable-compression",
    "load-schedule",
    "load-start",
    "load-end",
    "load-step",
    "load-step-duration",
    "load-max-duration",
];

fn kit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/ghz")
}

/// The shipped configs, `deploy/ghz/*.json`, sorted.
fn shipped_configs() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(kit_dir())
        .expect("deploy/ghz exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    out.sort();
    out
}

/// Runs `python3 deploy/ghz/make_config.py ARGS -o OUT` and returns OUT's text.
fn make_config(args: &[&str], out: &Path) -> String {
    let script = kit_dir().join("make_config.py");
    let output = Command::new("python3")
        .arg(&script)
        .args(args)
        .arg("-o")
        .arg(out)
        .output()
        .expect("run python3 deploy/ghz/make_config.py");
    assert!(
        output.status.success(),
        "make_config.py {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read_to_string(out).expect("make_config.py wrote its output")
}

/// Tern's descriptors, as served by gRPC reflection.
fn served_pool() -> DescriptorPool {
    DescriptorPool::decode(tern::proto::REFLECTION_DESCRIPTOR_SET).expect("descriptor set decodes")
}

/// ghz's `call` split as ghz splits it (protodesc.parseServiceMethod): an optional leading
/// dot, then `package.Service/Method` or `package.Service.Method`.
fn service_and_method(call: &str) -> Option<(&str, &str)> {
    let call = call.strip_prefix('.').unwrap_or(call);
    match call.matches('/').count() {
        0 => call.rsplit_once('.'),
        1 => call.split_once('/'),
        _ => None,
    }
}

fn method(pool: &DescriptorPool, call: &str) -> MethodDescriptor {
    let (service, name) = service_and_method(call)
        .unwrap_or_else(|| panic!("call {call:?} is not package.Service.Method"));
    let service = pool
        .get_service_by_name(service)
        .unwrap_or_else(|| panic!("call {call:?}: no service {service:?} in Tern's descriptors"));
    let method = service
        .methods()
        .find(|m| m.name() == name)
        .unwrap_or_else(|| {
            panic!(
                "call {call:?}: {} has no method {name:?}",
                service.full_name()
            )
        });
    assert!(
        !method.is_client_streaming() && !method.is_server_streaming(),
        "{call}: unary"
    );
    method
}

/// The HTTP/2 path a client sends the method on: `/{package.Service}/{Method}`.
fn route(method: &MethodDescriptor) -> String {
    format!("/{}/{}", method.parent_service().full_name(), method.name())
}

/// One ghz config, checked as ghz would read it.
#[derive(Debug)]
struct GhzConfig {
    file: String,
    json: serde_json::Map<String, Json>,
    call: String,
    /// `data`'s elements, in the order ghz sends them.
    data: Vec<Json>,
}

impl GhzConfig {
    fn parse(file: &str, text: &str) -> Self {
        let json: Json =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{file}: not JSON: {e}"));
        let Json::Object(json) = json else {
            panic!("{file}: a config is a JSON object");
        };
        for key in json.keys() {
            assert!(
                GHZ_KEYS.contains(&key.as_str()),
                "{file}: {key:?} is not a ghz config key"
            );
        }
        let call = json
            .get("call")
            .and_then(Json::as_str)
            .unwrap_or_else(|| panic!("{file}: no call"))
            .to_owned();
        let host = json.get("host").and_then(Json::as_str).unwrap_or_default();
        assert!(
            host.parse::<std::net::SocketAddr>().is_ok(),
            "{file}: host {host:?} is not host:port"
        );
        // Tern serves plaintext unless given TLS; ghz defaults to TLS.
        assert_eq!(json.get("insecure"), Some(&Json::Bool(true)), "{file}");
        assert!(
            json.contains_key("duration") || json.contains_key("total"),
            "{file}: says how long to run"
        );
        if let Some(duration) = json.get("duration") {
            let d = duration.as_str().unwrap_or_default();
            assert!(
                d.strip_suffix('s')
                    .or_else(|| d.strip_suffix('m'))
                    .is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n > 0)),
                "{file}: duration {d:?} is a Go duration like 30s"
            );
        }
        let count = |key: &str| json.get(key).and_then(Json::as_u64);
        assert!(count("rps").is_some_and(|r| r > 0), "{file}: rps");
        let (concurrency, connections) = (count("concurrency"), count("connections"));
        assert!(
            concurrency.is_some_and(|c| connections.is_some_and(|n| n >= 1 && c >= n)),
            "{file}: concurrency {concurrency:?} spread over {connections:?} connections"
        );
        let data = match json.get("data") {
            Some(Json::Object(one)) => vec![Json::Object(one.clone())],
            Some(Json::Array(many)) => {
                assert!(!many.is_empty(), "{file}: an empty data array");
                for d in many {
                    assert!(d.is_object(), "{file}: data elements are objects");
                }
                many.clone()
            }
            other => panic!("{file}: data must be an object or an array, not {other:?}"),
        };
        Self {
            file: file.to_owned(),
            json,
            call,
            data,
        }
    }

    /// Each data element read as `method`'s request in the proto3 JSON mapping (unknown
    /// fields refused), encoded, and decoded as Tern's generated request type.
    fn requests(&self, method: &MethodDescriptor) -> Vec<GetOnlineFeaturesRequest> {
        let input = method.input();
        assert_eq!(
            input.full_name(),
            "feast.serving.GetOnlineFeaturesRequest",
            "{}",
            self.file
        );
        let options = DeserializeOptions::new().deny_unknown_fields(true);
        self.data
            .iter()
            .enumerate()
            .map(|(i, element)| {
                let text = element.to_string();
                let mut de = serde_json::Deserializer::from_str(&text);
                let message =
                    DynamicMessage::deserialize_with_options(input.clone(), &mut de, &options)
                        .unwrap_or_else(|e| {
                            panic!("{} data[{i}]: not a {}: {e}", self.file, input.full_name())
                        });
                de.end().expect("one JSON value");
                GetOnlineFeaturesRequest::decode(message.encode_to_vec().as_slice())
                    .unwrap_or_else(|e| panic!("{} data[{i}]: decode: {e}", self.file))
            })
            .collect()
    }
}

/// The request's feature refs (it names no feature service).
fn refs(req: &GetOnlineFeaturesRequest) -> &[String] {
    match &req.kind {
        Some(Kind::Features(list)) => &list.val,
        other => panic!("the kit asks for feature refs, not {other:?}"),
    }
}

/// Rows in a request: every entity column has the same length.
fn rows(req: &GetOnlineFeaturesRequest) -> usize {
    let lengths: BTreeSet<usize> = req.entities.values().map(|c| c.val.len()).collect();
    assert_eq!(
        lengths.len(),
        1,
        "entity columns of one length: {lengths:?}"
    );
    lengths.into_iter().next().unwrap_or_default()
}

/// Sends `req` on `path` as a gRPC client would and decodes Feast's response type.
async fn send(
    ch: &Channel,
    path: &str,
    req: GetOnlineFeaturesRequest,
) -> Result<GetOnlineFeaturesResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec =
        tonic_prost::ProstCodec::<GetOnlineFeaturesRequest, GetOnlineFeaturesResponse>::default();
    grpc.unary(
        tonic::Request::new(req),
        path.parse().expect("a valid gRPC path"),
        codec,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// The value a feature (by ref) must hold in a row.
type Expected<'a> = &'a dyn Fn(&str, usize) -> Value;

/// The answer holds the request's entity columns, as sent, then one column per feature asked
/// for, each with one PRESENT value per row; `value(feature ref, row)`, when given, is the
/// value each feature must hold.
fn check_answer(
    what: &str,
    req: &GetOnlineFeaturesRequest,
    resp: &GetOnlineFeaturesResponse,
    value: Option<Expected<'_>>,
) {
    let n = rows(req);
    let features = refs(req);
    let names = resp
        .metadata
        .as_ref()
        .and_then(|m| m.feature_names.as_ref())
        .map(|f| f.val.clone())
        .unwrap_or_default();
    let keys = req.entities.len();
    assert_eq!(
        names.len(),
        keys + features.len(),
        "{what}: columns {names:?}"
    );
    assert_eq!(
        resp.results.len(),
        names.len(),
        "{what}: one vector per column"
    );
    for (name, vector) in names.iter().zip(&resp.results) {
        assert_eq!(vector.values.len(), n, "{what}: {name}: one value per row");
        assert_eq!(
            vector.statuses.len(),
            n,
            "{what}: {name}: one status per row"
        );
        for (row, status) in vector.statuses.iter().enumerate() {
            assert_eq!(
                *status,
                FieldStatus::Present as i32,
                "{what}: {name} row {row}: status {:?}",
                FieldStatus::try_from(*status)
            );
        }
    }
    for (name, vector) in names.iter().zip(&resp.results).take(keys) {
        let sent = req
            .entities
            .get(name)
            .unwrap_or_else(|| panic!("{what}: entity column {name} was not sent"));
        assert_eq!(vector.values, sent.val, "{what}: {name} echoes the request");
    }
    for ((name, vector), feature) in names.iter().zip(&resp.results).skip(keys).zip(features) {
        let short = feature.rsplit(':').next().unwrap_or(feature);
        assert_eq!(name, short, "{what}: columns in the order asked");
        for (row, v) in vector.values.iter().enumerate() {
            assert!(v.val.is_some(), "{what}: {feature} row {row}: a value");
            if let Some(expected) = value {
                assert_eq!(*v, expected(feature, row), "{what}: {feature} row {row}");
            }
        }
    }
}

/// Resolves `call` the way ghz does over reflection (grpc.reflection.v1, which ghz's
/// client tries first): FileContainingSymbol with `/` as `.`, then each import by file
/// name; returns the method from the pool those answers build.
async fn resolve_over_reflection(ch: &Channel, call: &str) -> MethodDescriptor {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let mut client = ServerReflectionClient::new(ch.clone());
    let mut ask = async |request: MessageRequest| -> Vec<prost_types::FileDescriptorProto> {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
        let mut answers = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("reflection answers")
            .into_inner();
        let answer = answers
            .message()
            .await
            .expect("reflection stream")
            .expect("one answer");
        match answer.message_response {
            Some(MessageResponse::FileDescriptorResponse(files)) => files
                .file_descriptor_proto
                .iter()
                .map(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).expect("a file"))
                .collect(),
            other => panic!("{call}: reflection answered {other:?}"),
        }
    };
    let symbol = call.strip_prefix('.').unwrap_or(call).replace('/', ".");
    let mut files = ask(MessageRequest::FileContainingSymbol(symbol)).await;
    let mut seen: BTreeSet<String> = files.iter().map(|f| f.name().to_owned()).collect();
    let mut i = 0;
    while i < files.len() {
        for dependency in files[i].dependency.clone() {
            if seen.insert(dependency.clone()) {
                files.extend(ask(MessageRequest::FileByFilename(dependency)).await);
            }
        }
        i += 1;
    }
    let mut pool = DescriptorPool::new();
    pool.add_file_descriptor_protos(files)
        .unwrap_or_else(|e| panic!("{call}: reflection's files build a pool: {e}"));
    method(&pool, call)
}

/// Checks `configs` statically, then against `server`: reflection resolves each call to the
/// same method, and every request is answered in full.
async fn run_against(server: &TestServer, configs: &[GhzConfig]) -> usize {
    let pool = served_pool();
    let ch = channel(&server.url()).await;
    let mut sent = 0;
    for config in configs {
        let method = method(&pool, &config.call);
        let over_reflection = resolve_over_reflection(&ch, &config.call).await;
        assert_eq!(
            over_reflection.full_name(),
            method.full_name(),
            "{}",
            config.file
        );
        assert_eq!(
            over_reflection.input().full_name(),
            method.input().full_name(),
            "{}",
            config.file
        );
        // What ghz builds from reflection's descriptors is what Tern's own descriptors build.
        assert_eq!(
            config.requests(&over_reflection),
            config.requests(&method),
            "{}",
            config.file
        );
        let path = route(&method);
        for (i, req) in config.requests(&method).into_iter().enumerate() {
            let what = format!("{} data[{i}] on {path}", config.file);
            let resp = send(&ch, &path, req.clone())
                .await
                .unwrap_or_else(|e| panic!("{what}: {e:?}"));
            check_answer(&what, &req, &resp, None);
            sent += 1;
        }
    }
    sent
}

fn example_server_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/feature_repo/feature_store.yaml")
}

/// The shipped configs are exactly what `make_config.py` writes with the options recorded in
/// each one's `tags.made_by`: the generator and the files cannot drift apart.
#[test]
fn shipped_configs_are_what_make_config_writes() {
    let configs = shipped_configs();
    let names: Vec<String> = configs
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "w100_feature_server.json",
            "w100_serving.json",
            "w1_feature_server.json",
            "w1_serving.json"
        ]
    );
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, name) in configs.iter().zip(&names) {
        let text = std::fs::read_to_string(path).expect("read config");
        let config = GhzConfig::parse(name, &text);
        let made_by = config
            .json
            .get("tags")
            .and_then(|t| t.get("made_by"))
            .and_then(Json::as_str)
            .unwrap_or_else(|| panic!("{name}: tags.made_by"));
        let args: Vec<&str> = made_by
            .strip_prefix("make_config.py ")
            .unwrap_or_else(|| panic!("{name}: made_by {made_by:?}"))
            .split_whitespace()
            .collect();
        assert!(
            args.iter().all(|a| !a.contains(['\'', '"'])),
            "{name}: plain words"
        );
        let again = make_config(&args, &dir.path().join(name));
        assert_eq!(
            again, text,
            "{name}: regenerated by make_config.py {made_by}"
        );
    }
}

/// W1 is benches/load.rs's example-repo request (driver 1001, customer c1, driver_stats' 6
/// features and 4 of customer_profile's); W100 asks for 100 rows; one config per gRPC path.
#[test]
fn shipped_configs_are_w1_and_w100_on_both_paths() {
    let pool = served_pool();
    let mut paths = BTreeSet::new();
    for path in shipped_configs() {
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let config = GhzConfig::parse(&name, &std::fs::read_to_string(&path).expect("read"));
        let method = method(&pool, &config.call);
        let route = route(&method);
        assert!(
            name.ends_with("_serving.json")
                == (route == "/feast.serving.ServingService/GetOnlineFeatures"),
            "{name}: {route}"
        );
        paths.insert(route);
        let rows_wanted = if name.starts_with("w100_") { 100 } else { 1 };
        for req in config.requests(&method) {
            assert_eq!(rows(&req), rows_wanted, "{name}");
            assert_eq!(refs(&req).len(), 10, "{name}");
            assert_eq!(
                req.entities.keys().collect::<Vec<_>>(),
                ["customer_id", "driver_id"],
                "{name}"
            );
            if rows_wanted == 1 {
                assert_eq!(
                    refs(&req),
                    [
                        "driver_stats:conv_rate",
                        "driver_stats:acc_rate",
                        "driver_stats:avg_daily_trips",
                        "driver_stats:name",
                        "driver_stats:active",
                        "driver_stats:ratings",
                        "customer_profile:tier",
                        "customer_profile:lifetime_value",
                        "customer_profile:age",
                        "customer_profile:tags",
                    ],
                    "{name}: benches/load.rs's W1 features"
                );
                assert_eq!(
                    req.entities["driver_id"].val,
                    [Value {
                        val: Some(Val::Int64Val(1001))
                    }],
                    "{name}"
                );
                assert_eq!(
                    req.entities["customer_id"].val,
                    [Value {
                        val: Some(Val::StringVal("c1".into()))
                    }],
                    "{name}"
                );
            }
        }
    }
    assert_eq!(
        paths.into_iter().collect::<Vec<_>>(),
        [
            "/GrpcFeatureServer/GetOnlineFeatures",
            "/feast.serving.ServingService/GetOnlineFeatures"
        ]
    );
}

/// A config whose data does not fit the request message is refused (the check above is not
/// vacuous): an unknown field, and a value of the wrong JSON type.
#[test]
fn data_that_is_not_a_request_is_refused() {
    let pool = served_pool();
    let method = method(&pool, "feast.serving.ServingService.GetOnlineFeatures");
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    for bad in [
        r#"{"features": {"val": ["driver_stats:conv_rate"]}, "entity": {}}"#,
        r#"{"features": {"val": ["driver_stats:conv_rate"]}, "entities": {"driver_id": {"val": [{"int64Val": "x"}]}}}"#,
        r#"{"features": ["driver_stats:conv_rate"]}"#,
    ] {
        let mut de = serde_json::Deserializer::from_str(bad);
        assert!(
            DynamicMessage::deserialize_with_options(method.input(), &mut de, &options).is_err(),
            "{bad}"
        );
    }
    assert_eq!(
        service_and_method("GetOnlineFeatures"),
        None,
        "a call without a service"
    );
    assert_eq!(
        service_and_method(".GrpcFeatureServer/GetOnlineFeatures"),
        Some(("GrpcFeatureServer", "GetOnlineFeatures"))
    );
}

/// Every shipped config, and configs `make_config.py` writes now (its defaults, and other
/// options on the other path), answered in full by the example repo over both paths.
#[tokio::test]
async fn ghz_configs_answer_on_the_example_repo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut configs: Vec<GhzConfig> = shipped_configs()
        .iter()
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            GhzConfig::parse(&name, &std::fs::read_to_string(p).expect("read"))
        })
        .collect();
    let defaults = make_config(&[], &dir.path().join("defaults.json"));
    configs.push(GhzConfig::parse("make_config.py (defaults)", &defaults));
    let args = [
        "--path",
        "feature-server",
        "--rows",
        "37",
        "--requests",
        "3",
        "--seed",
        "9",
        "--host",
        "10.1.2.3:7000",
        "--rps",
        "250",
        "--duration",
        "2m",
        "--concurrency",
        "64",
        "--connections",
        "8",
    ];
    let generated = make_config(&args, &dir.path().join("generated.json"));
    let generated = GhzConfig::parse("make_config.py (options)", &generated);
    // The options land in ghz's keys.
    let j = &generated.json;
    assert_eq!(j["call"], "GrpcFeatureServer.GetOnlineFeatures");
    assert_eq!(j["host"], "10.1.2.3:7000");
    assert_eq!(j["rps"], 250);
    assert_eq!(j["duration"], "2m");
    assert_eq!(j["concurrency"], 64);
    assert_eq!(j["connections"], 8);
    assert_eq!(generated.data.len(), 3);
    // Seeded: the same options write the same file; another seed, other rows.
    assert_eq!(
        make_config(&args, &dir.path().join("again.json")),
        std::fs::read_to_string(dir.path().join("generated.json")).expect("read")
    );
    let mut reseeded = args;
    reseeded[7] = "10";
    assert_ne!(
        make_config(&reseeded, &dir.path().join("reseeded.json")),
        std::fs::read_to_string(dir.path().join("generated.json")).expect("read")
    );
    let pool = served_pool();
    for req in generated.requests(&method(&pool, &generated.call)) {
        assert_eq!(rows(&req), 37);
    }
    configs.push(generated);

    let server = TestServer::start(&example_server_config(), Clock::Fixed(NOW))
        .await
        .expect("example server");
    let sent = run_against(&server, &configs).await;
    // 1 + 4 requests per path in the shipped configs, 1 default, 3 generated.
    assert_eq!(sent, 2 * (1 + 4) + 1 + 3);
    server.stop().await.expect("stop");
}

/// `--preset synthetic` writes benches/load.rs's request shape (view `bench`, f0..f9, INT64
/// `driver_id`), answered with the values the synthetic repo stores.
#[tokio::test]
async fn synthetic_preset_answers_on_the_synthetic_repo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = SyntheticRepo::default();
    let yaml = repo.write(dir.path()).expect("write synthetic repo");
    let range = format!("driver_id=int64:1-{}", repo.entities);
    let text = make_config(
        &[
            "--preset",
            "synthetic",
            "--entity",
            &range,
            "--rows",
            "100",
            "--requests",
            "2",
        ],
        &dir.path().join("synthetic.json"),
    );
    let config = GhzConfig::parse("make_config.py --preset synthetic", &text);
    let pool = served_pool();
    let requests = config.requests(&method(&pool, &config.call));
    assert_eq!(requests.len(), 2);
    for req in &requests {
        assert_eq!(refs(req), repo.refs());
        assert_eq!(rows(req), 100);
    }
    // Each row's expected values come from its driver id, in request order.
    let server = TestServer::start(&yaml, Clock::Fixed(repo.event_ts))
        .await
        .expect("synthetic server");
    let ch = channel(&server.url()).await;
    let path = route(&method(&pool, &config.call));
    for (i, req) in requests.into_iter().enumerate() {
        let ids: Vec<i64> = req.entities["driver_id"]
            .val
            .iter()
            .map(|v| match v.val {
                Some(Val::Int64Val(id)) => id,
                ref other => panic!("an INT64 driver id, not {other:?}"),
            })
            .collect();
        assert!(
            ids.iter().all(|id| (1..=repo.entities).contains(id)),
            "{ids:?}"
        );
        let value = |feature: &str, row: usize| -> Value {
            let f: usize = feature
                .strip_prefix("bench:f")
                .and_then(|n| n.parse().ok())
                .expect("bench:fN");
            Value {
                val: Some(Val::DoubleVal(synthetic_value(ids[row], f))),
            }
        };
        let resp = send(&ch, &path, req.clone())
            .await
            .unwrap_or_else(|e| panic!("data[{i}]: {e:?}"));
        check_answer(&format!("synthetic data[{i}]"), &req, &resp, Some(&value));
    }
    assert_eq!(run_against(&server, &[config]).await, 2);
    server.stop().await.expect("stop");
}
