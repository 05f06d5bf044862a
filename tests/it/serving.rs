//! GetOnlineFeatures semantics over a synthetic repo (registry + SQLite in Feast's
//! layout, written by the `testing` helpers), through a real server.

use prost::Message;
use tern::proto::feast::serving::FieldStatus;
use tern::proto::feast::types::value::Val;
use tern::serving::Clock;
use tern::testing::{SyntheticRepo, TestServer, synthetic_value};
use tonic::Code;

use crate::support::*;

const T: i64 = 1_736_467_200;
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

async fn start(repo: &SyntheticRepo, clock: Clock) -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = repo.write(dir.path()).unwrap();
    let server = TestServer::start(&yaml, clock).await.unwrap();
    (dir, server)
}

fn small() -> SyntheticRepo {
    SyntheticRepo {
        entities: 5,
        features: 3,
        ..SyntheticRepo::default()
    }
}

#[tokio::test]
async fn both_paths_answer_values_statuses_and_timestamps() {
    let (_dir, server) = start(&small(), Clock::Fixed(T)).await;
    let ch = channel(&server.url()).await;
    for path in BOTH_PATHS {
        let req = refs_request(
            &["bench:f2", "bench:f0"],
            vec![("driver_id", vec![int64(2), int64(99), int64(2)])],
        );
        let r = call(&ch, path, req).await.unwrap();
        assert_eq!(
            names(&r),
            ["driver_id", "f2", "f0"],
            "{path:?}: entity columns first, then request order"
        );
        let (ids, id_status, id_ts) = column(&r, "driver_id");
        assert_eq!(ids, [int64(2), int64(99), int64(2)]);
        assert_eq!(id_status, [FieldStatus::Present; 3]);
        assert_eq!(id_ts, [0, 0, 0]);
        let (values, statuses, ts) = column(&r, "f2");
        assert_eq!(
            values,
            [
                double(synthetic_value(2, 2)),
                Default::default(),
                double(synthetic_value(2, 2))
            ]
        );
        assert_eq!(
            statuses,
            [
                FieldStatus::Present,
                FieldStatus::NotFound,
                FieldStatus::Present
            ]
        );
        assert_eq!(ts, [T, 0, T]);
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn ttl_marks_old_values_outside_max_age_and_keeps_them() {
    let repo = SyntheticRepo {
        ttl_seconds: 3600,
        ..small()
    };
    for (now, expected) in [
        (T + 3600, FieldStatus::Present),
        (T + 3601, FieldStatus::OutsideMaxAge),
    ] {
        let (_dir, server) = start(&repo, Clock::Fixed(now)).await;
        let ch = channel(&server.url()).await;
        let r = call(
            &ch,
            Route::Serving,
            refs_request(&["bench:f1"], vec![("driver_id", vec![int64(3)])]),
        )
        .await
        .unwrap();
        let (values, statuses, ts) = column(&r, "f1");
        assert_eq!(statuses, [expected], "now = T + {}", now - T);
        assert_eq!(
            values,
            [double(synthetic_value(3, 1))],
            "the value is kept either way"
        );
        assert_eq!(ts, [T]);
        server.stop().await.unwrap();
    }
}

#[tokio::test]
async fn stored_nulls_and_absent_features() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = small().write(dir.path()).unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("data/online.db")).unwrap();
    // driver 1: f0 stored null (empty blob, Feast's null); f1 removed (absent row).
    conn.execute(
        "UPDATE synthetic_bench SET value = X'' WHERE feature_name = 'f0' AND entity_key = (SELECT entity_key FROM synthetic_bench WHERE value = ?1)",
        [tern::proto::feast::types::Value { val: Some(Val::DoubleVal(synthetic_value(1, 0))) }.encode_to_vec()],
    )
    .unwrap();
    conn.execute(
        "DELETE FROM synthetic_bench WHERE feature_name = 'f1' AND entity_key = (SELECT entity_key FROM synthetic_bench WHERE feature_name = 'f2' AND value = ?1)",
        [tern::proto::feast::types::Value { val: Some(Val::DoubleVal(synthetic_value(1, 2))) }.encode_to_vec()],
    )
    .unwrap();
    drop(conn);
    let server = TestServer::start(&yaml, Clock::Fixed(T)).await.unwrap();
    let ch = channel(&server.url()).await;
    let r = call(
        &ch,
        Route::Serving,
        refs_request(
            &["bench:f0", "bench:f1", "bench:f2"],
            vec![("driver_id", vec![int64(1)])],
        ),
    )
    .await
    .unwrap();
    let (v0, s0, t0) = column(&r, "f0");
    assert_eq!(
        (v0, s0, t0),
        (
            vec![Default::default()],
            vec![FieldStatus::NullValue],
            vec![T]
        )
    );
    let (v1, s1, t1) = column(&r, "f1");
    assert_eq!(
        (v1, s1, t1),
        (
            vec![Default::default()],
            vec![FieldStatus::NotFound],
            vec![T]
        ),
        "an absent feature of a found entity keeps the entity's timestamp"
    );
    assert_eq!(column(&r, "f2").1, [FieldStatus::Present]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn entity_values_are_coerced_to_the_join_key_type() {
    let (_dir, server) = start(&small(), Clock::Fixed(T)).await;
    let ch = channel(&server.url()).await;
    let req = refs_request(
        &["bench:f0"],
        vec![
            (
                "driver_id",
                vec![string("4"), double(4.0), int32(4), int64(4)],
            ),
            (
                "unrelated",
                vec![string("x"), string("y"), string("z"), string("w")],
            ),
        ],
    );
    let r = call(&ch, Route::Serving, req).await.unwrap();
    assert_eq!(
        names(&r),
        ["driver_id", "f0"],
        "unknown columns are ignored"
    );
    assert_eq!(
        column(&r, "driver_id").0,
        [int64(4), int64(4), int64(4), int64(4)],
        "echoed as the key's type"
    );
    assert_eq!(column(&r, "f0").1, [FieldStatus::Present; 4]);

    // Feast's deprecated spelling: the entity's name instead of its join key.
    let r = call(
        &ch,
        Route::Serving,
        refs_request(&["bench:f0"], vec![("driver", vec![string("5")])]),
    )
    .await
    .unwrap();
    assert_eq!(
        names(&r),
        ["driver_id", "f0"],
        "echoed under the join key's name"
    );
    assert_eq!(column(&r, "driver_id").0, [int64(5)]);
    assert_eq!(column(&r, "f0").0, [double(synthetic_value(5, 0))]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_requests_get_the_right_code_and_a_message_naming_the_culprit() {
    let (_dir, server) = start(&small(), Clock::Fixed(T)).await;
    let ch = channel(&server.url()).await;
    let one = || vec![("driver_id", vec![int64(1)])];
    let cases: Vec<(
        &str,
        tern::proto::tern::wire::GetOnlineFeaturesRequest,
        Code,
        &str,
    )> = vec![
        (
            "unknown view",
            refs_request(&["nope:f0"], one()),
            Code::NotFound,
            "Feature view nope does not exist in project synthetic",
        ),
        (
            "unknown feature",
            refs_request(&["bench:zz"], one()),
            Code::NotFound,
            "Feature zz not found in projection bench",
        ),
        (
            "unknown service",
            service_request("svc", one()),
            Code::NotFound,
            "Feature service svc does not exist in project synthetic",
        ),
        (
            "versioned ref with versioning off",
            refs_request(&["bench@v1:f0"], one()),
            Code::FailedPrecondition,
            "Version-qualified ref 'bench@v1' not supported: online versioning is disabled. Set 'enable_online_feature_view_versioning: true' under 'registry' in feature_store.yaml.",
        ),
        (
            "v0 is versioned too",
            refs_request(&["bench@V00:f0"], one()),
            Code::FailedPrecondition,
            "'bench@v0' not supported",
        ),
        (
            "bad version",
            refs_request(&["bench@vX:f0"], one()),
            Code::InvalidArgument,
            "Invalid version 'vX' in feature reference 'bench@vX:f0'",
        ),
        (
            "missing colon",
            refs_request(&["f0"], one()),
            Code::InvalidArgument,
            "Invalid feature reference 'f0'",
        ),
        (
            "no features",
            refs_request(&[], one()),
            Code::InvalidArgument,
            "No features specified for retrieval",
        ),
        (
            "collision",
            refs_request(&["bench:f0", "bench@latest:f0"], one()),
            Code::InvalidArgument,
            "Duplicate features named f0 found.\nTo resolve this collision, either use the full feature name",
        ),
        (
            "no entities",
            refs_request(&["bench:f0"], vec![]),
            Code::InvalidArgument,
            "no entity columns",
        ),
        (
            "empty column",
            refs_request(&["bench:f0"], vec![("driver_id", vec![])]),
            Code::InvalidArgument,
            "'driver_id' has no values",
        ),
        (
            "ragged",
            refs_request(
                &["bench:f0"],
                vec![
                    ("driver_id", vec![int64(1), int64(2)]),
                    ("x", vec![int64(1)]),
                ],
            ),
            Code::InvalidArgument,
            "'x' has 1 values but 'driver_id' has 2",
        ),
        (
            "missing join key",
            refs_request(&["bench:f0"], vec![("rider_id", vec![int64(1)])]),
            Code::InvalidArgument,
            "missing join key 'driver_id' needed by feature view 'bench': add an entity column 'driver_id' (the request has: rider_id)",
        ),
        (
            "impossible coercion",
            refs_request(
                &["bench:f0"],
                vec![("driver_id", vec![int64(1), string("abc")])],
            ),
            Code::InvalidArgument,
            "entity column 'driver_id' row 1: cannot use string \"abc\" as a INT64 join key value",
        ),
        (
            "fractional id",
            refs_request(&["bench:f0"], vec![("driver_id", vec![double(1.5)])]),
            Code::InvalidArgument,
            "cannot use double 1.5",
        ),
        (
            "null id",
            refs_request(&["bench:f0"], vec![("driver_id", vec![Default::default()])]),
            Code::InvalidArgument,
            "row 0: cannot use an empty value",
        ),
    ];
    for (what, req, code, message) in cases {
        for path in BOTH_PATHS {
            let status = call(&ch, path, req.clone()).await.expect_err(what);
            assert_eq!(
                status.code(),
                code,
                "{what} ({path:?}): {}",
                status.message()
            );
            assert!(
                status.message().contains(message),
                "{what} ({path:?}): {:?} lacks {message:?}",
                status.message()
            );
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn full_feature_names_and_plan_cache() {
    use std::sync::Arc;
    use tern::serving::Selection;

    let (_dir, server) = start(&small(), Clock::Fixed(T)).await;
    let ch = channel(&server.url()).await;
    let refs = ["bench:f0".to_owned(), "bench@latest:f1".to_owned()];
    let mut req = refs_request(
        &["bench:f0", "bench@latest:f1"],
        vec![("driver_id", vec![int64(1)])],
    );
    req.full_feature_names = true;
    for _ in 0..3 {
        let r = call(&ch, Route::Serving, req.clone()).await.unwrap();
        assert_eq!(names(&r), ["driver_id", "bench__f0", "bench__f1"]);
    }
    let plans = server.serving.plans();
    assert_eq!(plans.len(), 1, "one plan for one request shape");

    // The cached plan is the one for this shape, reused, and right.
    let snapshot = server.serving.registry().snapshot();
    let cached = plans.get(&snapshot, Selection::Refs(&refs), true).unwrap();
    assert_eq!(plans.len(), 1, "served from the cache, not built again");
    assert!(Arc::ptr_eq(
        &cached,
        &plans.get(&snapshot, Selection::Refs(&refs), true).unwrap()
    ));
    assert_eq!(cached.feature_names, ["bench__f0", "bench__f1"]);
    assert_eq!(cached.generation(), snapshot.generation);

    // Another shape (short names) is another plan; the first is untouched.
    let short = plans.get(&snapshot, Selection::Refs(&refs), false).unwrap();
    assert!(!Arc::ptr_eq(&cached, &short));
    assert_eq!(short.feature_names, ["f0", "f1"]);
    assert_eq!(plans.len(), 2);

    // A new registry generation: plans are rebuilt against it and the old ones dropped.
    let reload = server.reload.clone().unwrap();
    reload.force();
    let registry = server.serving.registry().clone();
    let newer = eventually(DEADLINE, "a new snapshot", || {
        let snapshot = registry.snapshot();
        async move { (snapshot.generation > 1).then_some(snapshot) }
    })
    .await;
    let rebuilt = plans.get(&newer, Selection::Refs(&refs), true).unwrap();
    assert!(!Arc::ptr_eq(&cached, &rebuilt));
    assert_eq!(rebuilt.generation(), newer.generation);
    assert_eq!(rebuilt.feature_names, cached.feature_names);
    assert_eq!(plans.len(), 1, "plans of the old generation are dropped");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn serving_info_health_and_reflection() {
    use tern::grpc::ServingServiceClient;
    use tern::proto::feast::serving::GetFeastServingInfoRequest;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    let (_dir, server) = start(&small(), Clock::Fixed(T)).await;
    let ch = channel(&server.url()).await;
    let info = ServingServiceClient::new(ch.clone())
        .get_feast_serving_info(GetFeastServingInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(info.version.starts_with("tern-"), "{}", info.version);
    for service in ["", "feast.serving.ServingService", "GrpcFeatureServer"] {
        let status = HealthClient::new(ch.clone())
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            ServingStatus::Serving as i32,
            "health of {service:?}"
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn entity_key_serialization_v2() {
    let repo = SyntheticRepo {
        key_serialization: tern::config::KeySerialization::V2,
        ..small()
    };
    let (_dir, server) = start(&repo, Clock::Fixed(T)).await;
    let ch = channel(&server.url()).await;
    let r = call(
        &ch,
        Route::Serving,
        refs_request(&["bench:f1"], vec![("driver_id", vec![int64(4)])]),
    )
    .await
    .unwrap();
    assert_eq!(column(&r, "f1").0, [double(synthetic_value(4, 1))]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn reflection_lists_feast_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let (_dir, server) = start(&small(), Clock::Fixed(T)).await;
    let ch = channel(&server.url()).await;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(ch)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "feast.serving.ServingService",
        "GrpcFeatureServer",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }
    server.stop().await.unwrap();
}
