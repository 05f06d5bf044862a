//! Feast's HTTP API on the gRPC port: every capture in
//! `tests/fixtures/feast/http_cases.json` (`feast serve` 0.67's status and body for
//! each case of `cases.json`, plus HTTP-only cases, recorded by `generate_http.py`)
//! is replayed against `tern serve` over HTTP/1.1 and compared **byte for byte**.
//!
//! The only differences allowed are the documented ones (docs/compatibility.md), the
//! same as over gRPC (`compat.rs`'s deviations), applied to Feast's body:
//! - cell rules: stored nulls are NULL_VALUE, values past the ttl OUTSIDE_MAX_AGE;
//! - column order: Tern's (checked against the gRPC answer, whose order `compat.rs`
//!   checks); unpinned service projections read the active version; metadata lists
//!   what was read;
//! - statuses: client mistakes are 4xx (Feast: 500), Feast's texts kept where it has
//!   them (its `KeyError` quotes dropped);
//! - a body sent without a JSON content type is read as JSON (FastAPI: 422).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use serde::Deserialize;
use serde_json::value::RawValue;
use tern::serving::Clock;
use tern::testing::TestServer;
use tonic::Code;

use crate::compat::{Deviation, deviation, grpc_request, load_cases};
use crate::support::*;

#[derive(Debug, Deserialize)]
struct Captures {
    cases: Vec<Capture>,
}

#[derive(Debug, Deserialize)]
struct Capture {
    name: String,
    config: String,
    method: String,
    path: String,
    content_type: Option<String>,
    body: Option<String>,
    status: u16,
    response_body: String,
}

/// One HTTP exchange: status, content type, body.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// A plain HTTP/1.1 request (Connection: close), read to the end.
pub async fn http1(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Option<&[u8]>,
) -> HttpAnswer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = content_type {
        head.push_str(&format!("Content-Type: {t}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream
        .write_all(body.unwrap_or_default())
        .await
        .expect("write body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read answer");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_owned());
    HttpAnswer {
        status,
        content_type,
        body: raw[split + 4..].to_vec(),
    }
}

/// Feast's answer body, each value kept as its exact JSON text.
#[derive(Debug, Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    results: Vec<Vector<'a>>,
    metadata: Meta,
}

#[derive(Debug, Clone, Deserialize)]
struct Vector<'a> {
    #[serde(borrow)]
    values: Vec<&'a RawValue>,
    statuses: Vec<String>,
    #[serde(default)]
    event_timestamps: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Meta {
    feature_names: Vec<String>,
    #[serde(default)]
    feature_view_metadata: Vec<ViewMeta>,
}

#[derive(Debug, Clone, Deserialize)]
struct ViewMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: i32,
}

/// Writes an answer as `feast serve` lays it out (compact, keys in its order).
fn write(columns: &[(String, Vector<'_>)], views: &[ViewMeta]) -> String {
    let quote = |s: &str| serde_json::to_string(s).expect("string");
    let mut out = String::from("{\"results\":[");
    for (i, (_, v)) in columns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let values: Vec<&str> = v.values.iter().map(|r| r.get()).collect();
        let statuses: Vec<String> = v.statuses.iter().map(|s| quote(s)).collect();
        out.push_str(&format!(
            "{{\"values\":[{}],\"statuses\":[{}]",
            values.join(","),
            statuses.join(",")
        ));
        if !v.event_timestamps.is_empty() {
            let ts: Vec<String> = v.event_timestamps.iter().map(|s| quote(s)).collect();
            out.push_str(&format!(",\"event_timestamps\":[{}]", ts.join(",")));
        }
        out.push('}');
    }
    let names: Vec<String> = columns.iter().map(|(n, _)| quote(n)).collect();
    out.push_str(&format!(
        "],\"metadata\":{{\"feature_names\":[{}]",
        names.join(",")
    ));
    if !views.is_empty() {
        let views: Vec<String> = views
            .iter()
            .map(|m| {
                let mut parts = Vec::new();
                if !m.name.is_empty() {
                    parts.push(format!("\"name\":{}", quote(&m.name)));
                }
                if m.version != 0 {
                    parts.push(format!("\"version\":{}", m.version));
                }
                format!("{{{}}}", parts.join(","))
            })
            .collect();
        out.push_str(&format!(",\"feature_view_metadata\":[{}]", views.join(",")));
    }
    out.push_str("}}");
    out
}

fn columns<'a>(answer: &Answer<'a>) -> Vec<(String, Vector<'a>)> {
    answer
        .metadata
        .feature_names
        .iter()
        .cloned()
        .zip(answer.results.iter().cloned())
        .collect()
}

fn epoch(rfc3339: &str) -> i64 {
    tern::times::parse_time(rfc3339).expect("a time") / 1_000_000
}

const EPOCH: &str = "1970-01-01T00:00:00Z";

/// Feast's cells turned into Tern's: stored nulls NULL_VALUE, values past the ttl
/// OUTSIDE_MAX_AGE (Feast's HTTP body does not carry the ttl: it comes from the gRPC
/// fixture's vectors, by column name).
fn tern_cells(v: &mut Vector<'_>, ttl: i64, now: i64) {
    for i in 0..v.values.len() {
        if v.statuses[i] != "PRESENT" {
            continue;
        }
        let ts = &v.event_timestamps[i];
        if v.values[i].get() == "null" && ts != EPOCH {
            v.statuses[i] = "NULL_VALUE".into();
        } else if ttl > 0 && ts != EPOCH && now - epoch(ts) > ttl {
            v.statuses[i] = "OUTSIDE_MAX_AGE".into();
        }
    }
}

/// One cell as JSON texts: value, status, event time.
type CellText = (String, String, String);

/// The HTTP status Tern answers for a gRPC code (`src/http/status.rs`).
fn http_status(code: Code) -> u16 {
    match code {
        Code::InvalidArgument | Code::FailedPrecondition => 400,
        Code::NotFound => 404,
        other => panic!("no case expects {other:?}"),
    }
}

/// Feast's exception detail for `class` and `message`, as Feast's server writes it.
fn detail(class: &str, message: &str) -> String {
    let inner = format!(
        "{{\"module\": \"feast.errors\", \"class\": {}, \"message\": {}}}",
        serde_json::to_string(class).expect("json"),
        serde_json::to_string(message).expect("json")
    );
    serde_json::to_string(&inner).expect("json")
}

/// `(class, message)` of an error body in Feast's detail format.
fn class_and_message(body: &str) -> (String, String) {
    let inner: String = serde_json::from_str(body).expect("a JSON string");
    let d: serde_json::Value = serde_json::from_str(&inner).expect("Feast's detail object");
    assert_eq!(d["module"], "feast.errors", "{body}");
    (
        d["class"].as_str().expect("class").to_owned(),
        d["message"].as_str().expect("message").to_owned(),
    )
}

/// Feast's error body and status, as Tern answers them.
fn expected_error(case: &str, feast_status: u16, feast_body: &str) -> (u16, String) {
    let message: Option<String> = serde_json::from_str(feast_body).ok();
    let message = message.unwrap_or_else(|| panic!("{case}: Feast's error body is a JSON string"));
    if message.starts_with("{\"module\": \"feast.errors\"") {
        // Feast's own exceptions: the same body; a collision is a client mistake.
        let status = if message.contains("\"FeatureNameCollisionError\"") {
            400
        } else {
            assert_eq!(feast_status, 404, "{case}");
            404
        };
        return (status, feast_body.to_owned());
    }
    // Bare messages: Tern sends them in Feast's detail format, which Feast's client
    // can raise again.
    let unquoted = message.trim_matches('\'');
    if unquoted.starts_with("Feature ") && unquoted.contains(" not found in projection ") {
        return (404, detail("FeastObjectNotFoundException", unquoted));
    }
    if message.starts_with("Version-qualified ref")
        || message.starts_with("Invalid feature reference")
        || message == "No features specified for retrieval"
    {
        return (400, detail("FeastError", &message));
    }
    panic!("{case}: Feast's error {feast_status} {feast_body} has no expected answer")
}

/// HTTP-only cases where Tern answers differently from Feast on purpose.
enum HttpDeviation {
    /// An error status whose JSON-string body contains this text.
    Error(u16, &'static str),
    /// The same answer as the same body sent with `Content-Type: application/json`.
    SameAsJson,
}

fn http_deviation(case: &str) -> Option<HttpDeviation> {
    Some(match case {
        // Feast: 500 "attribute name must be string, not 'NoneType'".
        "http_null_entity_value" => HttpDeviation::Error(
            400,
            "entity column 'driver_id' row 1: cannot use an empty value (no value set) as a INT64 join key value",
        ),
        // FastAPI reads only a JSON content type; curl -d sends another.
        "http_no_content_type" | "http_text_plain" => HttpDeviation::SameAsJson,
        _ => return None,
    })
}

#[tokio::test]
async fn every_feast_serve_capture_matches_byte_for_byte() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let now = load_cases().reference_time;
    let on = TestServer::start(
        &dir.join("examples/feature_repo/feature_store.yaml"),
        Clock::Fixed(now),
    )
    .await
    .expect("flag-on server");
    let off = TestServer::start(
        &dir.join("tests/fixtures/feast/flag_off/feature_store.yaml"),
        Clock::Fixed(now),
    )
    .await
    .expect("flag-off server");
    check_http_captures(&on, &off).await;
    on.stop().await.expect("stop");
    off.stop().await.expect("stop");
}

/// Replays every `feast serve` capture against `on` (online versioning on) and `off`
/// (off), serving the example repo's data at the fixture's reference time on any store,
/// and compares each answer byte for byte (with the documented differences).
pub(crate) async fn check_http_captures(on: &TestServer, off: &TestServer) {
    let fixture = load_cases();
    let now = fixture.reference_time;
    // ttl per output column name, from the gRPC fixture's vectors.
    let mut ttls: HashMap<String, i64> = HashMap::new();
    for case in &fixture.cases {
        if let Some(r) = &case.response {
            for (name, v) in r.feature_names.iter().zip(&r.results) {
                ttls.insert(name.clone(), v.ttl_seconds);
            }
        }
    }
    let grpc_cases: HashMap<&str, _> = fixture.cases.iter().map(|c| (c.name.as_str(), c)).collect();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(dir.join("tests/fixtures/feast/http_cases.json"))
        .expect("http_cases.json");
    let captures: Captures = serde_json::from_str(&text).expect("captures");
    let channels = [
        ("on", channel(&on.url()).await),
        ("off", channel(&off.url()).await),
    ];

    // Feast's answers for driver_stats' active version, by (column, driver id).
    let mut oracle: HashMap<(String, String), CellText> = HashMap::new();
    for c in captures.cases.iter().filter(|c| {
        ["active_all_features", "active_conv_rate_all_drivers"].contains(&c.name.as_str())
    }) {
        let answer: Answer<'_> = serde_json::from_str(&c.response_body).expect("oracle body");
        let cols = columns(&answer);
        let ids = &cols.iter().find(|(n, _)| n == "driver_id").expect("ids").1;
        for (name, mut v) in cols.iter().cloned() {
            tern_cells(&mut v, ttls[&name], now);
            for (i, id) in ids.values.iter().enumerate() {
                oracle.insert(
                    (name.clone(), id.get().to_owned()),
                    (
                        v.values[i].get().to_owned(),
                        v.statuses[i].clone(),
                        v.event_timestamps[i].clone(),
                    ),
                );
            }
        }
    }

    let mut compared = 0;
    for capture in &captures.cases {
        let name = capture.name.as_str();
        let addr = if capture.config == "on" {
            on.addr
        } else {
            off.addr
        };
        let got = http1(
            addr,
            &capture.method,
            &capture.path,
            capture.content_type.as_deref(),
            capture.body.as_deref().map(str::as_bytes),
        )
        .await;
        let got_body = String::from_utf8(got.body.clone()).expect("UTF-8 body");
        let what = format!("{name}: got {} {got_body}", got.status);
        if capture.path == "/health" {
            assert_eq!((got.status, got.body.len()), (200, 0), "{what}");
            compared += 1;
            continue;
        }
        if capture.method == "GET" || capture.path != "/get-online-features" {
            assert_eq!(got.status, capture.status, "{what}");
            assert_eq!(got_body, capture.response_body, "{what}");
            assert_eq!(
                got.content_type.as_deref(),
                Some("application/json"),
                "{what}"
            );
            compared += 1;
            continue;
        }
        assert_eq!(
            got.content_type.as_deref(),
            Some("application/json"),
            "{what}"
        );

        let grpc_deviation = grpc_cases.get(name).and_then(|_| deviation(name, 1));
        match (http_deviation(name), &grpc_deviation) {
            (Some(HttpDeviation::Error(status, text)), _) => {
                assert_eq!(got.status, status, "{what}");
                let (class, message) = class_and_message(&got_body);
                assert_eq!(class, "FeastError", "{what}");
                assert!(message.contains(text), "{what}: lacks {text:?}");
                compared += 1;
                continue;
            }
            (Some(HttpDeviation::SameAsJson), _) => {
                let json = http1(
                    addr,
                    "POST",
                    &capture.path,
                    Some("application/json"),
                    capture.body.as_deref().map(str::as_bytes),
                )
                .await;
                assert_eq!((got.status, &got.body), (200, &json.body), "{what}");
                compared += 1;
                continue;
            }
            (None, Some(Deviation::Error(code, text))) => {
                assert_eq!(got.status, http_status(*code), "{what}");
                let (class, message) = class_and_message(&got_body);
                assert_eq!(class, "FeastError", "{what}");
                assert!(message.contains(text), "{what}: lacks {text:?}");
                compared += 1;
                continue;
            }
            _ => {}
        }
        if capture.status == 422 {
            assert_eq!(got.status, 422, "{what}");
            let detail = |body: &str| {
                let v: serde_json::Value = serde_json::from_str(body).expect("422 body");
                let d = &v["detail"][0];
                (d["type"].clone(), d["loc"].clone(), d["msg"].clone())
            };
            let (kind, loc, msg) = detail(&capture.response_body);
            let (got_kind, got_loc, got_msg) = detail(&got_body);
            assert_eq!((&got_kind, &got_msg), (&kind, &msg), "{what}");
            if kind != "json_invalid" {
                // Where the JSON breaks is counted differently by the two parsers.
                assert_eq!(got_loc, loc, "{what}");
                assert_eq!(got_body, capture.response_body, "{what}: the whole body");
            }
            compared += 1;
            continue;
        }
        if capture.status != 200 {
            let (status, body) = expected_error(name, capture.status, &capture.response_body);
            assert_eq!(
                (got.status, got_body.as_str()),
                (status, body.as_str()),
                "{what}"
            );
            compared += 1;
            continue;
        }

        // A 200: Feast's columns, in Tern's order, with Tern's cell rules.
        assert_eq!(got.status, 200, "{what}");
        let feast: Answer<'_> = serde_json::from_str(&capture.response_body).expect("Feast body");
        let feast_columns = columns(&feast);
        assert_eq!(
            write(&feast_columns, &feast.metadata.feature_view_metadata),
            capture.response_body,
            "{name}: the test's writer reproduces Feast's layout"
        );
        let mine: Answer<'_> = serde_json::from_str(&got_body).expect("Tern body");
        let order = mine.metadata.feature_names.clone();
        if let Some(case) = grpc_cases.get(name) {
            let ch = &channels
                .iter()
                .find(|(k, _)| *k == capture.config)
                .expect("config")
                .1;
            let grpc = call(ch, Route::Serving, grpc_request(&case.request))
                .await
                .unwrap_or_else(|s| panic!("{name}: gRPC {s:?}"));
            assert_eq!(order, names(&grpc), "{name}: the same column order as gRPC");
        }
        let mut sorted = order.clone();
        sorted.sort();
        let mut feast_sorted = feast.metadata.feature_names.clone();
        feast_sorted.sort();
        assert_eq!(sorted, feast_sorted, "{what}: the same columns");

        let active: &[(&str, &str, &str)] = match &grpc_deviation {
            Some(Deviation::ActiveVersion(c) | Deviation::ActiveVersionAndMetadata(c, _)) => c,
            _ => &[],
        };
        let by_name: HashMap<&str, &Vector<'_>> =
            feast_columns.iter().map(|(n, v)| (n.as_str(), v)).collect();
        let mut raw_cells: Vec<Box<RawValue>> = Vec::new();
        let mut expected: Vec<(String, Vector<'_>)> = Vec::new();
        let mut replaced: Vec<(usize, Vec<CellText>)> = Vec::new();
        for (i, col) in order.iter().enumerate() {
            let mut v = by_name[col.as_str()].clone();
            tern_cells(&mut v, ttls.get(col).copied().unwrap_or(0), now);
            if let Some((_, feature, key_column)) = active.iter().find(|(c, _, _)| c == col) {
                let ids = by_name[key_column];
                let cells = ids
                    .values
                    .iter()
                    .map(|id| {
                        oracle
                            .get(&((*feature).to_owned(), id.get().to_owned()))
                            .unwrap_or_else(|| panic!("{name}: no oracle cell {feature} {id}"))
                            .clone()
                    })
                    .collect();
                replaced.push((i, cells));
            }
            expected.push((col.clone(), v));
        }
        for (_, cells) in &replaced {
            for (value, _, _) in cells {
                raw_cells.push(RawValue::from_string(value.clone()).expect("raw"));
            }
        }
        let mut next_raw = 0;
        for (i, cells) in &replaced {
            let v = &mut expected[*i].1;
            for (row, (_, status, ts)) in cells.iter().enumerate() {
                v.values[row] = &*raw_cells[next_raw];
                next_raw += 1;
                v.statuses[row] = status.clone();
                v.event_timestamps[row] = ts.clone();
            }
        }
        let views: Vec<ViewMeta> = match &grpc_deviation {
            Some(Deviation::Metadata(m) | Deviation::ActiveVersionAndMetadata(_, m)) => m
                .iter()
                .map(|(n, v)| ViewMeta {
                    name: (*n).to_owned(),
                    version: *v,
                })
                .collect(),
            _ => feast.metadata.feature_view_metadata.clone(),
        };
        assert_eq!(got_body, write(&expected, &views), "{name}: byte for byte");
        compared += 1;
    }
    assert_eq!(compared, captures.cases.len());
    assert!(compared >= 100, "the capture holds every case");
}

#[tokio::test]
async fn grpc_and_http_share_the_port_over_http2_too() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let server = TestServer::start(
        &dir.join("examples/feature_repo/feature_store.yaml"),
        Clock::Fixed(1_736_470_800),
    )
    .await
    .expect("server");
    // HTTP/2 with prior knowledge, a JSON body: the HTTP API answers.
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let (mut client, conn) = h2::client::handshake(tcp).await.expect("h2");
    tokio::spawn(conn);
    let request = http::Request::post(format!("http://{}/get-online-features", server.addr))
        .header("content-type", "application/json")
        .body(())
        .expect("request");
    let (answer, mut send) = client.send_request(request, false).expect("send");
    send.send_data(
        bytes::Bytes::from_static(
            br#"{"features":["driver_stats:avg_daily_trips"],"entities":{"driver_id":[1001]}}"#,
        ),
        true,
    )
    .expect("body");
    let answer = answer.await.expect("answer");
    assert_eq!(answer.status(), 200);
    let mut body = answer.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("chunk");
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    assert_eq!(
        String::from_utf8(bytes).expect("utf-8"),
        r#"{"results":[{"values":[1001],"statuses":["PRESENT"],"event_timestamps":["1970-01-01T00:00:00Z"]},{"values":[21],"statuses":["PRESENT"],"event_timestamps":["2025-01-10T00:00:00Z"]}],"metadata":{"feature_names":["driver_id","avg_daily_trips"]}}"#
    );
    // gRPC on the same port still answers.
    let ch = channel(&server.url()).await;
    let grpc = call(
        &ch,
        Route::Serving,
        refs_request(
            &["driver_stats:avg_daily_trips"],
            vec![("driver_id", vec![int64(1001)])],
        ),
    )
    .await
    .expect("gRPC answer");
    assert_eq!(names(&grpc), ["driver_id", "avg_daily_trips"]);
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn http_addr_serves_the_http_api_alone() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = tern::config::load(
        &dir.join("examples/feature_repo/feature_store.yaml"),
        |_| None,
    )
    .expect("config");
    let (serving, _reloader) = tern::server::open_serving(
        &config,
        &tern::server::StoreSettings::default(),
        Clock::Fixed(1_736_470_800),
    )
    .await
    .expect("serving");
    let main = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let http = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (main_addr, http_addr) = (
        main.local_addr().expect("addr"),
        http.local_addr().expect("addr"),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        tern::server::run(
            tern::server::Listeners {
                main,
                http: Some(http),
                health: None,
            },
            std::sync::Arc::new(serving),
            None,
            &tern::server::ServerSettings::default(),
            async {
                let _ = stopped.await;
            },
        )
        .await
    });
    let body = br#"{"features":["driver_stats:avg_daily_trips"],"entities":{"driver_id":[1001]}}"#;
    let on_main = http1(main_addr, "POST", "/get-online-features", None, Some(body)).await;
    let on_http = http1(http_addr, "POST", "/get-online-features", None, Some(body)).await;
    assert_eq!(on_main.status, 200);
    assert_eq!((on_http.status, &on_http.body), (200, &on_main.body));
    assert_eq!(
        http1(http_addr, "GET", "/health", None, None).await.status,
        200
    );
    // The HTTP port is not a gRPC port: a gRPC path there is an unknown HTTP path.
    let grpc_path = http1(
        http_addr,
        "POST",
        "/feast.serving.ServingService/GetOnlineFeatures",
        Some("application/grpc"),
        Some(b""),
    )
    .await;
    assert_eq!(
        (grpc_path.status, grpc_path.body.as_slice()),
        (404, &br#"{"detail":"Not Found"}"#[..])
    );
    let _ = stop.send(());
    task.await.expect("join").expect("server ran");
    // Both ports are closed once `run` returns.
    assert!(tokio::net::TcpStream::connect(http_addr).await.is_err());
    assert!(tokio::net::TcpStream::connect(main_addr).await.is_err());
}

/// Feast's own SDK (`online_store: type: remote`) against `feast serve` and against
/// `tern serve`, recorded by `tests/fixtures/feast/sdk_remote.sh`: the same
/// `to_dict()` for every case but the documented differences, each listed here.
#[test]
fn feast_sdk_reads_through_tern_as_through_feast_serve() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(dir.join("tests/fixtures/feast/sdk_remote.json"))
        .expect("sdk_remote.json");
    let recorded: serde_json::Value = serde_json::from_str(&text).expect("json");
    let cases = recorded["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), load_cases().cases.len(), "every case was run");
    let mut same = 0;
    let mut empty_list_crashes = 0;
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let (feast, tern) = (&case["feast"], &case["tern"]);
        if feast == tern {
            same += 1;
            if feast["error"] == "TypeError" {
                // Feast's client cannot rebuild an empty list from JSON: its bug, the
                // same against both servers (docs/compatibility.md).
                assert_eq!(
                    feast["message"], "Couldn't infer value type from empty value",
                    "{name}"
                );
                empty_list_crashes += 1;
            }
            continue;
        }
        let tern_error = tern["error"].as_str();
        let grpc_deviation = deviation(name, 1);
        if let Some(Deviation::ActiveVersion(_) | Deviation::ActiveVersionAndMetadata(..)) =
            grpc_deviation
        {
            // Unpinned service projections read the active version (Feast: v0).
            let (f, t) = (&feast["to_dict"], &tern["to_dict"]);
            let columns = f.as_object().expect("feast columns");
            assert_eq!(
                columns.len(),
                t.as_object().expect("tern columns").len(),
                "{name}"
            );
            for (column, values) in columns {
                // Only driver_stats' features differ: those read another version.
                if !["conv_rate", "avg_daily_trips", "name"]
                    .iter()
                    .any(|f| column.ends_with(f))
                {
                    assert_eq!(&t[column], values, "{name}: column {column}");
                }
            }
        } else if ["err_bad_version_vX", "err_bad_version_version1"].contains(&name) {
            // Feast: view `driver_stats@vX` not found; Tern: an invalid version.
            assert_eq!(feast["error"], "FeatureViewNotFoundException", "{name}");
            assert_eq!(tern_error, Some("FeastError"), "{name}: {tern}");
        } else if matches!(grpc_deviation, Some(Deviation::Error(..)))
            && feast["to_dict"].is_object()
        {
            // Feast answers something for these; Tern refuses them.
            assert_eq!(tern_error, Some("FeastError"), "{name}: {tern}");
        } else {
            // Feast answered 500, which its client retried until it gave up, losing the
            // message; Tern's 4xx comes back as Feast's exception with the message.
            assert_eq!(feast["error"], "RetryError", "{name}: {feast}");
            assert!(
                matches!(
                    tern_error,
                    Some(
                        "FeastError" | "FeastObjectNotFoundException" | "FeatureNameCollisionError"
                    )
                ),
                "{name}: {tern}"
            );
            assert!(
                !tern["message"].as_str().unwrap_or_default().is_empty(),
                "{name}"
            );
        }
    }
    assert!(same >= 55, "{same} cases the same");
    assert!(
        empty_list_crashes >= 5,
        "the empty-list cases are in the record"
    );
}

#[tokio::test]
async fn http_limits_answer_413_in_feast_error_format() {
    let defaults = tern::testing::TestOptions::default();
    let (_dir, _repo, server) = crate::limits::serve(tern::testing::TestOptions {
        limits: tern::serving::Limits {
            max_entity_rows: 3,
            ..defaults.limits
        },
        server: tern::server::ServerSettings {
            max_request_bytes: 200,
            ..defaults.server
        },
        ..defaults
    })
    .await;
    let body =
        |ids: &str| format!(r#"{{"features":["bench:f0"],"entities":{{"driver_id":[{ids}]}}}}"#);
    let ok = http1(
        server.addr,
        "POST",
        "/get-online-features",
        None,
        Some(body("1,2,3").as_bytes()),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));

    let rows = http1(
        server.addr,
        "POST",
        "/get-online-features",
        None,
        Some(body("1,2,3,4").as_bytes()),
    )
    .await;
    assert_eq!(rows.status, 413);
    let (class, message) = class_and_message(&String::from_utf8(rows.body).expect("utf-8"));
    assert_eq!(class, "FeastError");
    assert!(
        message.contains("limit of 3 (--max-entity-rows)"),
        "{message}"
    );

    let big = body(&vec!["1"; 200].join(","));
    let bytes = http1(
        server.addr,
        "POST",
        "/get-online-features",
        None,
        Some(big.as_bytes()),
    )
    .await;
    assert_eq!(bytes.status, 413);
    assert_eq!(bytes.content_type.as_deref(), Some("application/json"));
    let (_, message) = class_and_message(&String::from_utf8(bytes.body).expect("utf-8"));
    assert!(
        message.contains("larger than 200 bytes (--max-request-bytes)"),
        "{message}"
    );
    server.stop().await.expect("stop");
}

/// One online-store row: hex entity key, feature, hex value, event and created time.
type StoredRow = (String, String, String, i64, Option<i64>);

/// The rows of `from` (a table, and any condition) in the repo copy at `repo`, sorted.
fn online_rows(repo: &std::path::Path, from: &str) -> Vec<StoredRow> {
    let conn = rusqlite::Connection::open(repo.join("data/online.db")).expect("db");
    let mut stmt = conn
        .prepare(&format!(
            "SELECT hex(entity_key), feature_name, hex(value), event_ts, created_ts \
             FROM {from} ORDER BY 1, 2"
        ))
        .expect("select");
    stmt.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .expect("rows")
    .collect::<Result<Vec<StoredRow>, _>>()
    .expect("rows")
}

/// What Feast's `/write-to-online-store` and `/push` answered and left stored
/// (`http_cases.json`, "writes"), against Tern on a copy of the same repo.
#[tokio::test]
async fn http_writes_store_what_feast_serve_stores() {
    #[derive(Debug, Deserialize)]
    struct Writes {
        writes: Vec<Write>,
    }
    #[derive(Debug, Deserialize)]
    struct Write {
        name: String,
        path: String,
        body: String,
        status: u16,
        response_body: String,
        stored: Vec<StoredRow>,
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(dir.join("tests/fixtures/feast/http_cases.json"))
        .expect("http_cases.json");
    let fixture: Writes = serde_json::from_str(&text).expect("writes");
    let copy = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(copy.path().join("data")).expect("data");
    for file in ["feature_store.yaml", "data/registry.db", "data/online.db"] {
        std::fs::copy(
            dir.join("examples/feature_repo").join(file),
            copy.path().join(file),
        )
        .expect("copy");
    }
    let server = TestServer::start(
        &copy.path().join("feature_store.yaml"),
        Clock::Fixed(load_cases().reference_time),
    )
    .await
    .expect("server");
    let stored = || {
        online_rows(
            copy.path(),
            "tern_demo_driver_stats_v1 WHERE hex(entity_key) LIKE '%E903000000000000'",
        )
    };
    let mut after_first = None;
    for w in &fixture.writes {
        let before = stored();
        let got = http1(
            server.addr,
            "POST",
            &w.path,
            Some("application/json"),
            Some(w.body.as_bytes()),
        )
        .await;
        let body = String::from_utf8(got.body).expect("utf-8");
        let what = format!("{}: got {} {body}", w.name, got.status);
        assert_eq!(
            got.content_type.as_deref(),
            Some("application/json"),
            "{what}"
        );
        match w.name.as_str() {
            "write_driver_stats" => {
                assert_eq!(
                    (got.status, body.as_str()),
                    (w.status, w.response_body.as_str()),
                    "{what}"
                );
                assert_eq!(stored(), w.stored, "{what}: the bytes Feast stored");
                after_first = Some(stored());
            }
            // Deliberate difference: an older event never replaces a newer one (Feast's
            // SQLite store overwrites).
            "write_older_event" => {
                assert_eq!(
                    (got.status, body.as_str()),
                    (w.status, w.response_body.as_str()),
                    "{what}"
                );
                assert_eq!(Some(stored()), after_first, "{what}: the newer event kept");
                assert_ne!(stored(), w.stored, "{what}: Feast overwrote");
            }
            // Feast's status and class; Tern's message names the project.
            "write_unknown_view" => {
                assert_eq!(got.status, w.status, "{what}");
                let (class, message) = class_and_message(&body);
                assert_eq!(class, class_and_message(&w.response_body).0, "{what}");
                assert_eq!(
                    message,
                    "Feature view nope does not exist in project tern_demo"
                );
                assert_eq!(stored(), before, "{what}: nothing written");
            }
            // Feast: 500 "could not convert string to float: 'fast'".
            "write_bad_value" => {
                assert_eq!(got.status, 400, "{what}");
                let (class, message) = class_and_message(&body);
                assert_eq!(class, "FeastError");
                assert!(
                    message.contains("conv_rate") && message.contains("\"fast\""),
                    "{what}"
                );
                assert_eq!(stored(), before, "{what}: nothing written");
            }
            "push_unknown_source" => {
                assert_eq!(
                    (got.status, body.as_str()),
                    (w.status, w.response_body.as_str()),
                    "{what}"
                );
                assert_eq!(stored(), before, "{what}: nothing written");
            }
            other => panic!("a write case this test does not know: {other}"),
        }
    }
    // What was written is what the HTTP API reads back.
    let read = http1(
        server.addr,
        "POST",
        "/get-online-features",
        None,
        Some(br#"{"features":["driver_stats:conv_rate","driver_stats:ratings","driver_stats:name"],"entities":{"driver_id":[1001]}}"#),
    )
    .await;
    assert_eq!(
        String::from_utf8(read.body).expect("utf-8"),
        r#"{"results":[{"values":[1001],"statuses":["PRESENT"],"event_timestamps":["1970-01-01T00:00:00Z"]},{"values":[0.5],"statuses":["PRESENT"],"event_timestamps":["2025-01-11T00:00:00Z"]},{"values":[[1.5,2.5]],"statuses":["PRESENT"],"event_timestamps":["2025-01-11T00:00:00Z"]},{"values":["zed"],"statuses":["PRESENT"],"event_timestamps":["2025-01-11T00:00:00Z"]}],"metadata":{"feature_names":["driver_id","conv_rate","ratings","name"]}}"#
    );
    server.stop().await.expect("stop");
}

/// `/materialize` runs `tern materialize` in the server: emptied online rows come back
/// as Feast's materialization wrote them; the incremental endpoint and refusals answer
/// as Feast's.
#[tokio::test]
async fn http_materialize_restores_what_feast_materialized() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let copy = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(copy.path().join("data")).expect("data");
    for file in std::fs::read_dir(dir.join("examples/feature_repo/data")).expect("data dir") {
        let file = file.expect("entry").path();
        std::fs::copy(
            &file,
            copy.path()
                .join("data")
                .join(file.file_name().expect("name")),
        )
        .expect("copy");
    }
    std::fs::copy(
        dir.join("examples/feature_repo/feature_store.yaml"),
        copy.path().join("feature_store.yaml"),
    )
    .expect("copy yaml");
    let rows = || online_rows(copy.path(), "tern_demo_zone_stats");
    let feast_wrote = rows();
    assert!(!feast_wrote.is_empty());
    rusqlite::Connection::open(copy.path().join("data/online.db"))
        .expect("db")
        .execute("DELETE FROM tern_demo_zone_stats", [])
        .expect("delete");
    let server = TestServer::start(
        &copy.path().join("feature_store.yaml"),
        Clock::Fixed(load_cases().reference_time),
    )
    .await
    .expect("server");
    let post = |path: &'static str, body: &'static str| {
        http1(server.addr, "POST", path, None, Some(body.as_bytes()))
    };

    let missing = post("/materialize", r#"{"feature_views":["zone_stats"]}"#).await;
    assert_eq!(missing.status, 400);
    let (_, message) = class_and_message(&String::from_utf8(missing.body).expect("utf-8"));
    assert_eq!(
        message,
        "start_ts and end_ts are required when disable_event_timestamp is False"
    );
    let unknown = post(
        "/materialize",
        r#"{"start_ts":"2025-01-01T00:00:00","end_ts":"2025-01-10T12:00:00","feature_views":["nope"]}"#,
    )
    .await;
    assert_eq!(unknown.status, 400);
    assert!(
        rows().is_empty(),
        "a refused materialization writes nothing"
    );

    let done = post(
        "/materialize",
        r#"{"start_ts":"2025-01-01T00:00:00","end_ts":"2025-01-10T12:00:00","feature_views":["zone_stats"]}"#,
    )
    .await;
    assert_eq!((done.status, done.body.as_slice()), (200, &b"null"[..]));
    assert_eq!(
        rows(),
        feast_wrote,
        "the rows Feast's materialization wrote"
    );

    // From the watermark just recorded to the same end: nothing left to do.
    let incremental = post(
        "/materialize-incremental",
        r#"{"end_ts":"2025-01-10T12:00:00","feature_views":["zone_stats"]}"#,
    )
    .await;
    assert_eq!(
        (incremental.status, incremental.body.as_slice()),
        (200, &b"null"[..])
    );
    // In the background: 202 at once, with Feast's body; the rows come back.
    rusqlite::Connection::open(copy.path().join("data/online.db"))
        .expect("db")
        .execute("DELETE FROM tern_demo_zone_stats", [])
        .expect("delete");
    let queued = http1(
        server.addr,
        "POST",
        "/materialize?async=true",
        None,
        Some(br#"{"start_ts":"2025-01-01T00:00:00","end_ts":"2025-01-10T12:00:00","feature_views":["zone_stats"]}"#),
    )
    .await;
    assert_eq!(
        (
            queued.status,
            String::from_utf8(queued.body).expect("utf-8").as_str()
        ),
        (
            202,
            r#"{"status":"accepted","feature_views":["zone_stats"]}"#
        )
    );
    let restored = eventually(
        std::time::Duration::from_secs(60),
        "background materialization",
        || {
            let rows = rows();
            let done = rows == feast_wrote;
            async move { done.then_some(rows) }
        },
    )
    .await;
    assert_eq!(restored, feast_wrote);
    server.stop().await.expect("stop");
}
