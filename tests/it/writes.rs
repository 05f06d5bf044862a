//! Online writes through `tern serve`: Feast's `/GrpcFeatureServer/Push` and
//! `/WriteToOnlineStore` (string and typed maps) and Tern's `tern.v1.OnlineWriter`,
//! checked by reading the values back through GetOnlineFeatures and in the store.

use std::collections::BTreeMap;

use prost::Message;

use tern::proto::feast::core as pb;
use tern::proto::feast::serving::FieldStatus;
use tern::proto::feast::types::value::Val;
use tern::proto::feast::types::{StringList, Value};
use tern::proto::tern::v1::{Column as WriteColumn, WriteFeaturesRequest, WriteFeaturesResponse};
use tern::proto::{
    PushRequest, PushResponse, WriteToOnlineStoreRequest, WriteToOnlineStoreResponse,
};
use tern::serving::Clock;
use tern::testing::{RedisServer, TestServer};
use tonic::Code;
use tonic::transport::Channel;

use crate::apply::{PROJECT, Repo};
use crate::support::*;

/// Features of every kind a pushed string must be parsed as.
const FEATURES: &[(&str, &str)] = &[
    ("conv_rate", "Float64"),
    ("trips", "Int64"),
    ("city", "String"),
    ("vip", "Bool"),
    ("tags", "Array(String)"),
];

/// `driver_stats` (the features above) fed by the push source `driver_push`, declared
/// in the definitions over the view's file source.
fn defs(extra_feature: Option<(&str, &str)>) -> String {
    let mut features = FEATURES.to_vec();
    features.extend(extra_feature);
    let file = "  - {name: driver_src, type: file, path: data/driver_stats.parquet, timestamp_field: event_timestamp}\n";
    let yaml = crate::apply::defs(&features, "", "");
    assert!(yaml.contains(file) && yaml.contains("    source: driver_src\n"));
    yaml.replace(
        file,
        &format!("{file}  - {{name: driver_push, type: push, batch_source: driver_src}}\n"),
    )
    .replace("    source: driver_src\n", "    source: driver_push\n")
}

/// A repo (file registry, and SQLite or the `online_store` YAML given) with
/// `driver_stats` at v1, served.
async fn repo_with_server(online_store: Option<String>) -> (Repo, TestServer, Channel) {
    let repo = match online_store {
        None => Repo::file(),
        Some(store) => Repo::with_store(
            "  path: data/registry.db\n  cache_ttl_seconds: 1\n  enable_online_feature_view_versioning: true",
            &store,
        ),
    };
    repo.apply(&defs(None)).await;
    repo.apply(&defs(Some(("surge", "Float64")))).await; // v1: a schema change
    let server = TestServer::start(&repo.config, Clock::Fixed(1_735_800_000))
        .await
        .unwrap();
    let channel = channel(&server.url()).await;
    (repo, server, channel)
}

async fn unary<Req: Message + 'static, Resp: Message + Default + 'static>(
    channel: &Channel,
    path: &str,
    req: Req,
) -> Result<Resp, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    grpc.unary(tonic::Request::new(req), path.parse().unwrap(), codec)
        .await
        .map(tonic::Response::into_inner)
}

async fn write_to_online_store(
    channel: &Channel,
    view: &str,
    features: &[(&str, &str)],
) -> Result<bool, tonic::Status> {
    let req = WriteToOnlineStoreRequest {
        feature_view_name: view.into(),
        features: strings(features),
        ..Default::default()
    };
    unary::<_, WriteToOnlineStoreResponse>(channel, "/GrpcFeatureServer/WriteToOnlineStore", req)
        .await
        .map(|r| r.status)
}

async fn push(
    channel: &Channel,
    source: &str,
    features: &[(&str, &str)],
) -> Result<bool, tonic::Status> {
    let req = PushRequest {
        stream_feature_view: source.into(),
        features: strings(features),
        to: "online".into(),
        ..Default::default()
    };
    unary::<_, PushResponse>(channel, "/GrpcFeatureServer/Push", req)
        .await
        .map(|r| r.status)
}

async fn write_features(
    channel: &Channel,
    req: WriteFeaturesRequest,
) -> Result<WriteFeaturesResponse, tonic::Status> {
    unary(channel, "/tern.v1.OnlineWriter/WriteFeatures", req).await
}

fn strings(features: &[(&str, &str)]) -> BTreeMap<String, String> {
    features
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Pushed (column, text) cells.
type Row = Vec<(&'static str, String)>;

/// A full row of driver `id` at `ts`, as strings.
fn row(id: &str, conv_rate: &str, ts: &str) -> Row {
    vec![
        ("driver_id", id.to_owned()),
        ("conv_rate", conv_rate.to_owned()),
        ("trips", "7".to_owned()),
        ("city", "Oslo".to_owned()),
        ("vip", "true".to_owned()),
        ("tags", r#"["a", "b"]"#.to_owned()),
        ("surge", "1.5".to_owned()),
        ("event_timestamp", ts.to_owned()),
    ]
}

fn borrowed<'a>(row: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    row.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// `driver_stats[@vN]` features of drivers `ids`: (value, status) per driver.
async fn read(
    channel: &Channel,
    refs: &[&str],
    ids: &[i64],
) -> Vec<Vec<(Option<Val>, FieldStatus)>> {
    let req = refs_request(
        refs,
        vec![("driver_id", ids.iter().map(|i| int64(*i)).collect())],
    );
    let resp = call(channel, Route::FeatureServer, req).await.unwrap();
    resp.results[1..]
        .iter()
        .map(|fv| {
            fv.values
                .iter()
                .zip(&fv.statuses)
                .map(|(v, s)| (v.val.clone(), FieldStatus::try_from(*s).unwrap()))
                .collect()
        })
        .collect()
}

fn count_rows(repo: &Repo, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(repo.online()).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
        r.get(0)
    })
    .unwrap_or(0)
}

/// `type: push` sources: registered as Feast registers a PushSource (and as the view's
/// stream source over its file batch source); re-applying, and exporting then
/// planning, change nothing.
#[tokio::test(flavor = "multi_thread")]
async fn push_sources_are_applied_as_feast_registers_them() {
    let (repo, server, _ch) = repo_with_server(None).await;
    let model = repo.model().await;
    let registered = model
        .data_sources
        .iter()
        .find(|s| s.name == "driver_push")
        .expect("push source registered");
    assert_eq!(
        registered.object.r#type,
        pb::data_source::SourceType::PushSource as i32
    );
    assert_eq!(registered.object.timestamp_field, "event_timestamp");
    assert_eq!(
        registered.object.batch_source.as_ref().unwrap().name,
        "driver_src"
    );
    let spec = crate::apply::view(&model, "driver_stats")
        .spec
        .as_ref()
        .unwrap();
    let stream = spec.stream_source.as_ref().expect("stream source");
    assert_eq!(
        (stream.name.as_str(), stream.r#type),
        (
            "driver_push",
            pb::data_source::SourceType::PushSource as i32
        )
    );
    assert_eq!(spec.batch_source.as_ref().unwrap().name, "driver_src");

    let again = repo.apply(&defs(Some(("surge", "Float64")))).await;
    assert!(again.contains("No changes"), "{again}");

    let out = tempfile::tempdir().unwrap();
    let exported = out.path().join("defs");
    let mut printed = Vec::new();
    tern::commands::export::run(&repo.config, &exported, &mut printed)
        .await
        .unwrap();
    let yaml = std::fs::read_to_string(exported.join("definitions.yaml")).unwrap();
    assert!(
        yaml.contains("type: push") && yaml.contains("source: driver_push"),
        "{yaml}"
    );
    let options = tern::commands::apply::ApplyOptions {
        config: repo.config.clone(),
        files: vec![exported],
        json: true,
        ..Default::default()
    };
    let mut printed = Vec::new();
    tern::commands::apply::run(&options, &mut printed)
        .await
        .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&printed).unwrap();
    assert_eq!(plan["changes"], serde_json::json!([]), "{plan:#}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn string_pushes_are_typed_and_visible_to_the_next_read() {
    let (repo, server, ch) = repo_with_server(None).await;
    let r = row("1001", "0.25", "2025-01-02T00:00:00");
    assert!(
        write_to_online_store(&ch, "driver_stats", &borrowed(&r))
            .await
            .unwrap()
    );
    let r = row("1002", "0.5", "2025-01-02T00:00:00Z");
    assert!(push(&ch, "driver_push", &borrowed(&r)).await.unwrap());

    let refs = [
        "driver_stats:conv_rate",
        "driver_stats:trips",
        "driver_stats:city",
        "driver_stats:vip",
        "driver_stats:tags",
        "driver_stats:surge",
    ];
    let got = read(&ch, &refs, &[1001, 1002]).await;
    let present = |v: Val| (Some(v), FieldStatus::Present);
    assert_eq!(
        got[0],
        vec![present(Val::DoubleVal(0.25)), present(Val::DoubleVal(0.5))]
    );
    assert_eq!(got[1][0], present(Val::Int64Val(7)));
    assert_eq!(got[2][0], present(Val::StringVal("Oslo".into())));
    assert_eq!(got[3][0], present(Val::BoolVal(true)));
    assert_eq!(
        got[4][0],
        present(Val::StringListVal(StringList {
            val: vec!["a".into(), "b".into()]
        }))
    );
    assert_eq!(got[5][1], present(Val::DoubleVal(1.5)));

    // Stored as Feast's materialization stores it: v1 is active, so its own table.
    let conn = rusqlite::Connection::open(repo.online()).unwrap();
    let mut stmt = conn
        .prepare(&format!(
            "SELECT value_text, event_ts FROM {PROJECT}_driver_stats_v1 WHERE feature_name = 'conv_rate' ORDER BY value_text"
        ))
        .unwrap();
    let stored: Vec<(Option<String>, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        stored,
        vec![
            (Some("0.25".to_owned()), 1_735_776_000),
            (Some("0.5".to_owned()), 1_735_776_000)
        ]
    );
    assert_eq!(
        count_rows(&repo, &format!("{PROJECT}_driver_stats")),
        0,
        "v0's table untouched"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn typed_maps_and_tern_columns_write_typed_values() {
    let (repo, server, ch) = repo_with_server(None).await;
    // Feast's typed_features: one row of Values.
    let typed: BTreeMap<String, Value> = [
        ("driver_id", int64(1001)),
        ("conv_rate", double(0.75)),
        ("trips", int32(3)), // widened to INT64
        ("city", string("Rome")),
        ("vip", Value::default()), // a null
        (
            "tags",
            Value {
                val: Some(Val::StringListVal(StringList { val: vec![] })),
            },
        ),
        ("surge", double(2.0)),
        (
            "event_timestamp",
            Value {
                val: Some(Val::UnixTimestampVal(1_735_776_000)),
            },
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let req = WriteToOnlineStoreRequest {
        feature_view_name: "driver_stats".into(),
        typed_features: typed,
        ..Default::default()
    };
    let resp: WriteToOnlineStoreResponse = unary(&ch, "/GrpcFeatureServer/WriteToOnlineStore", req)
        .await
        .unwrap();
    assert!(resp.status);
    let got = read(&ch, &["driver_stats:trips", "driver_stats:vip"], &[1001]).await;
    assert_eq!(got[0][0], (Some(Val::Int64Val(3)), FieldStatus::Present));
    assert_eq!(got[1][0], (None, FieldStatus::NullValue));

    // Tern's columns, two rows, into version v0 (not the active one), no event times:
    // the server's clock at the write.
    let col = |name: &str, values: Vec<Value>| WriteColumn {
        name: name.into(),
        values,
    };
    let req = WriteFeaturesRequest {
        feature_view: "driver_stats".into(),
        version: Some(0),
        columns: vec![
            col("driver_id", vec![int64(1), int64(2)]),
            col("conv_rate", vec![double(0.1), double(0.2)]),
            col("trips", vec![int64(1), int64(2)]),
            col("city", vec![string("a"), string("b")]),
            col("vip", vec![Value::default(), Value::default()]),
            col("tags", vec![Value::default(), Value::default()]),
        ],
        event_timestamps: vec![],
    };
    let resp = write_features(&ch, req).await.unwrap();
    assert_eq!((resp.rows_written, resp.rows_skipped_older), (2, 0));
    let got = read(&ch, &["driver_stats@v0:conv_rate"], &[1, 2]).await;
    assert_eq!(
        got[0],
        vec![
            (Some(Val::DoubleVal(0.1)), FieldStatus::Present),
            (Some(Val::DoubleVal(0.2)), FieldStatus::Present)
        ]
    );
    assert_eq!(count_rows(&repo, &format!("{PROJECT}_driver_stats")), 10);
    server.stop().await.unwrap();
}

/// Every validation rule, on both of Feast's write RPCs (and Tern's where it applies):
/// INVALID_ARGUMENT naming the culprit, and nothing written.
#[tokio::test(flavor = "multi_thread")]
async fn rejected_writes_name_the_culprit_and_write_nothing() {
    let (repo, server, ch) = repo_with_server(None).await;
    let table = format!("{PROJECT}_driver_stats_v1");
    let good = row("1001", "0.25", "2025-01-02T00:00:00");
    let with = |name: &'static str, value: &'static str| {
        let mut r = good.clone();
        match r.iter_mut().find(|(k, _)| *k == name) {
            Some(cell) => cell.1 = value.to_owned(),
            None => r.push((name, value.to_owned())),
        }
        r
    };
    let without = |name: &str| {
        good.iter()
            .filter(|(k, _)| *k != name)
            .cloned()
            .collect::<Vec<_>>()
    };
    let cases: Vec<(&str, Row, &str)> = vec![
        (
            "type mismatch",
            with("conv_rate", "fast"),
            "column 'conv_rate', row 0: expected DOUBLE, got \"fast\"",
        ),
        (
            "bad join key",
            with("driver_id", "abc"),
            "column 'driver_id', row 0: expected a INT64 join key",
        ),
        (
            "unknown feature",
            with("speed", "1"),
            "column 'speed' is not a join key, feature or timestamp column of feature view 'driver_stats'",
        ),
        (
            "missing join key",
            without("driver_id"),
            "needs column 'driver_id' (join key)",
        ),
        (
            "missing feature",
            without("surge"),
            "needs column 'surge' (feature)",
        ),
        (
            "missing event time",
            without("event_timestamp"),
            "needs column 'event_timestamp' (event timestamp)",
        ),
        (
            "bad event time",
            with("event_timestamp", "yesterday"),
            "column 'event_timestamp', row 0: expected a time",
        ),
        (
            "bad list",
            with("tags", "a,b"),
            "column 'tags', row 0: expected STRING_LIST as a JSON array",
        ),
    ];
    for (what, r, expected) in &cases {
        for rpc in ["WriteToOnlineStore", "Push"] {
            let result = if rpc == "Push" {
                push(&ch, "driver_push", &borrowed(r)).await
            } else {
                write_to_online_store(&ch, "driver_stats", &borrowed(r)).await
            };
            let err = result.expect_err(what);
            assert_eq!(err.code(), Code::InvalidArgument, "{rpc} {what}: {err:?}");
            assert!(
                err.message().contains(expected),
                "{rpc} {what}: {}",
                err.message()
            );
        }
    }

    // Unknown targets.
    let err = write_to_online_store(&ch, "nope", &borrowed(&good))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        format!("Feature view nope does not exist in project {PROJECT}")
    );
    let err = push(&ch, "nope", &borrowed(&good)).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "Unable to find push source 'nope'.")
    );

    // Both maps at once: Feast's text.
    let req = WriteToOnlineStoreRequest {
        feature_view_name: "driver_stats".into(),
        features: strings(&borrowed(&good)),
        typed_features: [("driver_id".to_owned(), int64(1))].into_iter().collect(),
        ..Default::default()
    };
    let err =
        unary::<_, WriteToOnlineStoreResponse>(&ch, "/GrpcFeatureServer/WriteToOnlineStore", req)
            .await
            .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::InvalidArgument,
            "Only one of features or typed_features may be set, not both"
        )
    );

    // Push modes: Feast's text for an unknown one; no offline store here.
    for (to, code) in [
        ("", Code::InvalidArgument),
        ("sideways", Code::InvalidArgument),
        ("offline", Code::Unimplemented),
        ("online_and_offline", Code::Unimplemented),
    ] {
        let req = PushRequest {
            stream_feature_view: "driver_push".into(),
            features: strings(&borrowed(&good)),
            to: to.into(),
            ..Default::default()
        };
        let err = unary::<_, PushResponse>(&ch, "/GrpcFeatureServer/Push", req)
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "to={to:?}: {}", err.message());
    }
    let req = PushRequest {
        stream_feature_view: "driver_push".into(),
        features: strings(&borrowed(&good)),
        to: "".into(),
        ..Default::default()
    };
    let err = unary::<_, PushResponse>(&ch, "/GrpcFeatureServer/Push", req)
        .await
        .unwrap_err();
    assert_eq!(
        err.message(),
        " is not a supported push format. Please specify one of these ['online', 'offline', 'online_and_offline']."
    );

    // Tern's API: unknown version, a row count mismatch, a typed mismatch.
    let col = |name: &str, values: Vec<Value>| WriteColumn {
        name: name.into(),
        values,
    };
    let base = WriteFeaturesRequest {
        feature_view: "driver_stats".into(),
        version: None,
        columns: vec![
            col("driver_id", vec![int64(1)]),
            col("conv_rate", vec![double(0.1)]),
            col("trips", vec![int64(1)]),
            col("city", vec![string("a")]),
            col("vip", vec![Value::default()]),
            col("tags", vec![Value::default()]),
            col("surge", vec![double(1.0)]),
        ],
        event_timestamps: vec![],
    };
    let mut bad_version = base.clone();
    bad_version.version = Some(7);
    let mut short = base.clone();
    short.columns[1].values.push(double(0.3));
    let mut typed = base.clone();
    typed.columns[2].values[0] = string("1");
    let mut too_many_times = base.clone();
    too_many_times.event_timestamps = vec![Default::default(); 3];
    for (req, expected) in [
        (
            bad_version,
            "Version v7 of feature view driver_stats does not exist in project lifecycle",
        ),
        (
            short,
            "column 'conv_rate' has 2 values but column 'driver_id' has 1",
        ),
        (
            typed,
            "column 'trips', row 0: expected INT64, got string \"1\"",
        ),
        (too_many_times, "3 event timestamps for 1 rows"),
    ] {
        let err = write_features(&ch, req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().contains(expected), "{}", err.message());
    }

    assert_eq!(
        count_rows(&repo, &table),
        0,
        "nothing written by any rejected request"
    );
    server.stop().await.unwrap();
}

/// Feast's rule on both stores: a write whose event is older than the stored one is
/// skipped; a newer one replaces it.
async fn older_events_never_overwrite_newer(online_store: Option<String>) {
    let (_repo, server, ch) = repo_with_server(online_store).await;
    let write = |conv: f64, ts: i64| WriteFeaturesRequest {
        feature_view: "driver_stats".into(),
        version: None,
        columns: [
            ("driver_id", int64(1001)),
            ("conv_rate", double(conv)),
            ("trips", int64(1)),
            ("city", string("x")),
            ("vip", Value::default()),
            ("tags", Value::default()),
            ("surge", double(1.0)),
        ]
        .into_iter()
        .map(|(n, v)| WriteColumn {
            name: n.into(),
            values: vec![v],
        })
        .collect(),
        event_timestamps: vec![prost_types::Timestamp {
            seconds: ts,
            nanos: 0,
        }],
    };
    let r = write_features(&ch, write(0.5, 1_735_776_000))
        .await
        .unwrap();
    assert_eq!((r.rows_written, r.rows_skipped_older), (1, 0));
    let r = write_features(&ch, write(0.1, 1_735_775_000))
        .await
        .unwrap();
    assert_eq!(
        (r.rows_written, r.rows_skipped_older),
        (0, 1),
        "older write skipped"
    );
    // The string path too.
    let older = row("1001", "0.2", "2025-01-01T00:00:00");
    assert!(push(&ch, "driver_push", &borrowed(&older)).await.unwrap());
    let got = read(&ch, &["driver_stats:conv_rate"], &[1001]).await;
    assert_eq!(got[0][0].0, Some(Val::DoubleVal(0.5)));
    let r = write_features(&ch, write(0.9, 1_735_777_000))
        .await
        .unwrap();
    assert_eq!((r.rows_written, r.rows_skipped_older), (1, 0));
    let got = read(&ch, &["driver_stats:conv_rate"], &[1001]).await;
    assert_eq!(got[0][0].0, Some(Val::DoubleVal(0.9)));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn older_events_never_overwrite_newer_in_sqlite() {
    older_events_never_overwrite_newer(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn older_events_never_overwrite_newer_in_redis() {
    let redis = RedisServer::start(&[]).unwrap();
    older_events_never_overwrite_newer(Some(format!(
        "  type: redis\n  connection_string: {}",
        redis.addr()
    )))
    .await;
}

/// On a cluster each round trip is one pipeline per node: entities hashed to every
/// node are written and read back.
#[tokio::test(flavor = "multi_thread")]
async fn writes_reach_every_node_of_a_redis_cluster() {
    let cluster = crate::redis_support::RedisCluster::start().await;
    let (_repo, server, ch) = repo_with_server(Some(cluster.online_store())).await;
    let ids: Vec<i64> = (1..=50).collect();
    let col = |name: &str, values: Vec<Value>| WriteColumn {
        name: name.into(),
        values,
    };
    let n = ids.len();
    let req = WriteFeaturesRequest {
        feature_view: "driver_stats".into(),
        version: None,
        columns: vec![
            col("driver_id", ids.iter().map(|i| int64(*i)).collect()),
            col(
                "conv_rate",
                ids.iter().map(|i| double(*i as f64 / 100.0)).collect(),
            ),
            col("trips", vec![int64(1); n]),
            col("city", vec![string("x"); n]),
            col("vip", vec![Value::default(); n]),
            col("tags", vec![Value::default(); n]),
            col("surge", vec![double(1.0); n]),
        ],
        event_timestamps: vec![prost_types::Timestamp {
            seconds: 1_735_776_000,
            nanos: 0,
        }],
    };
    let r = write_features(&ch, req).await.unwrap();
    assert_eq!(r.rows_written, 50);
    let got = read(&ch, &["driver_stats:conv_rate"], &ids).await;
    let expected: Vec<_> = ids
        .iter()
        .map(|i| {
            (
                Some(Val::DoubleVal(*i as f64 / 100.0)),
                FieldStatus::Present,
            )
        })
        .collect();
    assert_eq!(got[0], expected);
    // The keys really are spread: every node holds some.
    let mut per_node = Vec::new();
    for node in &cluster.nodes {
        let mut conn = crate::redis_support::connect(&node.addr()).await;
        let keys: i64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
        per_node.push(keys);
    }
    assert!(
        per_node.iter().filter(|k| **k > 0).count() >= 2,
        "{per_node:?}"
    );
    server.stop().await.unwrap();
}

/// Feast's HTTP `/push` on the same port: a `df` of JSON columns through the push
/// source, read back over HTTP; `to: offline` is refused as on gRPC.
#[tokio::test]
async fn http_push_writes_through_the_push_source() {
    let (_repo, server, _ch) = repo_with_server(None).await;
    let pushed = crate::http_api::http1(
        server.addr,
        "POST",
        "/push",
        Some("application/json"),
        Some(
            br#"{"push_source_name": "driver_push", "df": {"driver_id": [7, 8], "conv_rate": [0.5, 1],
                 "trips": [3, 4], "city": ["x", null], "vip": [true, false], "tags": [["a", "b"], []],
                 "surge": [1.5, 2.5], "event_timestamp": ["2025-01-02T00:00:00", "2025-01-02T00:00:00"]},
                 "to": "online"}"#,
        ),
    )
    .await;
    assert_eq!((pushed.status, pushed.body.len()), (200, 0), "{pushed:?}");
    let read = crate::http_api::http1(
        server.addr,
        "POST",
        "/get-online-features",
        None,
        Some(br#"{"features": ["driver_stats:conv_rate", "driver_stats:city", "driver_stats:tags"], "entities": {"driver_id": [7, 8]}}"#),
    )
    .await;
    let body = String::from_utf8(read.body).unwrap();
    assert!(
        body.contains(r#"{"values":[0.5,1.0],"statuses":["PRESENT","PRESENT"]"#)
            && body.contains(r#"{"values":["x",null],"statuses":["PRESENT","NULL_VALUE"]"#)
            && body.contains(r#"{"values":[["a","b"],[]],"statuses":["PRESENT","PRESENT"]"#),
        "{body}"
    );
    let offline = crate::http_api::http1(
        server.addr,
        "POST",
        "/push",
        None,
        Some(br#"{"push_source_name": "driver_push", "df": {"driver_id": [7]}, "to": "offline"}"#),
    )
    .await;
    assert_eq!(offline.status, 501, "{offline:?}");
    server.stop().await.unwrap();
}
