//! What the server refuses, and how: requests that do not decode, client strings too
//! long to echo, requests over the limits, and requests past their deadline.

use std::time::Duration;

use tern::proto::feast::serving::GetOnlineFeaturesResponse;
use tern::proto::feast::types::RepeatedValue;
use tern::serving::{Clock, Limits};
use tern::testing::{SyntheticRepo, TestOptions, TestServer};
use tonic::Code;

use crate::support::*;

const DEADLINE: Duration = Duration::from_secs(20);

/// A 3-driver repo served with `options`; the folder holds `data/online.db`.
pub async fn serve(options: TestOptions) -> (tempfile::TempDir, SyntheticRepo, TestServer) {
    let (dir, repo, yaml) = crate::daemon::small_repo();
    let server = TestServer::start_with(&yaml, Clock::Fixed(repo.event_ts), options)
        .await
        .unwrap();
    (dir, repo, server)
}

/// GetOnlineFeaturesRequest with its strings as raw bytes, to send what a correct
/// client never would.
mod raw {
    use tern::proto::feast::types::RepeatedValue;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FeatureList {
        #[prost(bytes = "vec", repeated, tag = "1")]
        pub val: Vec<Vec<u8>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Column {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(message, optional, tag = "2")]
        pub value: Option<RepeatedValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        #[prost(message, optional, tag = "2")]
        pub features: Option<FeatureList>,
        #[prost(message, repeated, tag = "3")]
        pub entities: Vec<Column>,
    }
}

async fn call_raw(
    channel: &tonic::transport::Channel,
    path: Route,
    req: raw::Request,
) -> Result<GetOnlineFeaturesResponse, tonic::Status> {
    let route = path.path();
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<raw::Request, GetOnlineFeaturesResponse>::default();
    grpc.unary(tonic::Request::new(req), route.parse().unwrap(), codec)
        .await
        .map(tonic::Response::into_inner)
}

/// Sends a request whose feature ref is not UTF-8; returns the error.
pub async fn call_undecodable(channel: &tonic::transport::Channel, path: Route) -> tonic::Status {
    let req = raw::Request {
        features: Some(raw::FeatureList {
            val: vec![b"bench:f\xff".to_vec()],
        }),
        entities: Vec::new(),
    };
    call_raw(channel, path, req).await.unwrap_err()
}

#[tokio::test]
async fn requests_that_do_not_decode_are_invalid_argument_on_both_paths() {
    let (_dir, _repo, server) = serve(TestOptions::default()).await;
    let ch = channel(&server.url()).await;
    let ids = Some(RepeatedValue {
        val: vec![int64(1)],
    });
    let cases = [
        (
            "a feature ref that is not UTF-8",
            raw::Request {
                features: Some(raw::FeatureList {
                    val: vec![b"bench:f\xff\xfe".to_vec()],
                }),
                entities: vec![raw::Column {
                    key: b"driver_id".to_vec(),
                    value: ids.clone(),
                }],
            },
            "FeatureList.val",
        ),
        (
            "an entity column name that is not UTF-8",
            raw::Request {
                features: Some(raw::FeatureList {
                    val: vec![b"bench:f0".to_vec()],
                }),
                entities: vec![raw::Column {
                    key: b"driver\xc3(id".to_vec(),
                    value: ids.clone(),
                }],
            },
            "Column.key",
        ),
    ];
    for (what, req, field) in cases {
        for path in BOTH_PATHS {
            let status = call_raw(&ch, path, req.clone()).await.unwrap_err();
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{what} ({path:?}): {status:?}"
            );
            let m = status.message();
            assert!(
                m.starts_with("the request is not a valid GetOnlineFeaturesRequest")
                    && m.contains(field)
                    && m.contains("UTF-8"),
                "{what} ({path:?}): {m}"
            );
        }
    }
    // The server is fine afterwards.
    call(
        &ch,
        Route::Serving,
        refs_request(&["bench:f0"], vec![("driver_id", vec![int64(1)])]),
    )
    .await
    .unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn long_client_strings_are_clipped_in_messages() {
    let (_dir, _repo, server) = serve(TestOptions::default()).await;
    let ch = channel(&server.url()).await;
    let long = "x".repeat(10_000);
    let driver = || vec![("driver_id", vec![int64(1)])];
    let many_columns: Vec<(String, Vec<tern::proto::feast::types::Value>)> = (0..50)
        .map(|i| (format!("{long}{i}"), vec![int64(1)]))
        .collect();
    let cases = vec![
        (
            "view",
            refs_request(&[&format!("{long}:f0")], driver()),
            Code::NotFound,
        ),
        (
            "feature",
            refs_request(&[&format!("bench:{long}")], driver()),
            Code::NotFound,
        ),
        (
            "ref",
            refs_request(&[&long], driver()),
            Code::InvalidArgument,
        ),
        (
            "version",
            refs_request(&[&format!("bench@{long}:f0")], driver()),
            Code::InvalidArgument,
        ),
        ("service", service_request(&long, driver()), Code::NotFound),
        (
            "colliding names",
            refs_request(
                &(0..40)
                    .map(|i| format!("bench:f{}", i % 2))
                    .collect::<Vec<_>>()
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
                driver(),
            ),
            Code::InvalidArgument,
        ),
        (
            "many long columns, none the join key",
            refs_request(
                &["bench:f0"],
                many_columns
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone()))
                    .collect(),
            ),
            Code::InvalidArgument,
        ),
        (
            "a long string value",
            refs_request(&["bench:f0"], vec![("driver_id", vec![string(&long)])]),
            Code::InvalidArgument,
        ),
    ];
    for (what, req, code) in cases {
        for path in BOTH_PATHS {
            let status = call(&ch, path, req.clone()).await.unwrap_err();
            assert_eq!(
                status.code(),
                code,
                "{what}: {}",
                &status.message()[..200.min(status.message().len())]
            );
            let m = status.message();
            assert!(
                m.chars().count() <= 1000,
                "{what}: a {}-character message",
                m.chars().count()
            );
            if what != "colliding names" {
                assert!(
                    m.contains("… (1000"),
                    "{what}: the long string is clipped: {m}"
                );
            }
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn limits_answer_resource_exhausted_naming_the_flag() {
    let options = TestOptions {
        limits: Limits {
            max_concurrent_requests: 1,
            max_entity_rows: 3,
        },
        ..TestOptions::default()
    };
    let (dir, _repo, server) = serve(TestOptions {
        store: tern::server::StoreSettings {
            // Long enough for a read to wait on the lock below for the whole test.
            timeout: Duration::from_secs(60),
            ..options.store.clone()
        },
        ..options
    })
    .await;
    let ch = channel(&server.url()).await;
    let ids = |n: i64| vec![("driver_id", (1..=n).map(int64).collect())];

    let status = call(&ch, Route::Serving, refs_request(&["bench:f0"], ids(4)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("4 entity rows")
            && status.message().contains("limit of 3 (--max-entity-rows)"),
        "{}",
        status.message()
    );
    assert!(
        call(&ch, Route::Serving, refs_request(&["bench:f0"], ids(3)))
            .await
            .is_ok()
    );

    // One request held in flight by a writer's lock; a second is refused at once.
    let mut writer = rusqlite::Connection::open(dir.path().join("data/online.db")).unwrap();
    let lock = writer
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .unwrap();
    let first = tokio::spawn({
        let ch = ch.clone();
        async move { call(&ch, Route::Serving, refs_request(&["bench:f0"], ids(1))).await }
    });
    let serving = server.serving.clone();
    eventually(DEADLINE, "a request in flight", || {
        let n = serving.in_flight();
        async move { (n == 1).then_some(()) }
    })
    .await;
    let status = call(
        &ch,
        Route::FeatureServer,
        refs_request(&["bench:f0"], ids(1)),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("(--max-concurrent-requests)"),
        "{}",
        status.message()
    );
    lock.commit().unwrap();
    first.await.unwrap().expect("the first request completes");
    assert!(
        call(&ch, Route::Serving, refs_request(&["bench:f0"], ids(1)))
            .await
            .is_ok()
    );
    assert_eq!(server.serving.in_flight(), 0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_request_past_its_deadline_answers_deadline_exceeded() {
    let defaults = TestOptions::default();
    let (dir, _repo, server) = serve(TestOptions {
        store: tern::server::StoreSettings {
            timeout: Duration::from_secs(60),
            ..defaults.store.clone()
        },
        server: tern::server::ServerSettings {
            request_timeout: Duration::from_millis(300),
            ..defaults.server.clone()
        },
        ..defaults
    })
    .await;
    let ch = channel(&server.url()).await;
    let mut writer = rusqlite::Connection::open(dir.path().join("data/online.db")).unwrap();
    let lock = writer
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .unwrap();
    let req = || refs_request(&["bench:f0"], vec![("driver_id", vec![int64(1)])]);

    // The server's bound.
    let status = call(&ch, Route::Serving, req()).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        status.message(),
        "the request did not complete within its deadline of 300 ms"
    );
    // A client's shorter deadline (grpc-timeout) wins, on both paths.
    for path in BOTH_PATHS {
        let (code, message) = call_with_grpc_timeout(server.addr, path, &req(), "100m").await;
        assert_eq!(
            Code::from_i32(code),
            Code::DeadlineExceeded,
            "{path:?}: {message}"
        );
        assert_eq!(
            message,
            "the request did not complete within its deadline of 100 ms"
        );
    }
    lock.commit().unwrap();
    assert!(call(&ch, Route::Serving, req()).await.is_ok());
    server.stop().await.unwrap();
}
