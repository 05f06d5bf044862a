//! The Redis online store, against real `redis-server` processes started here, holding
//! exactly what Feast 0.67's `feast materialize` wrote (`redis_dump.json`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tern::proto::feast::serving::FieldStatus;
use tern::serving::Clock;
use tern::testing::TestServer;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::compat::check_all_cases;
use crate::redis_support::*;
use crate::support::*;

const DEADLINE: Duration = Duration::from_secs(10);

/// A daemon that cannot reach its Redis: health says NOT_SERVING and a request gets a
/// store error, which is returned for the caller's checks on its message.
async fn refused_while_redis_is_unreachable(url: &str) -> tonic::Status {
    assert_eq!(health(url).await, Some(ServingStatus::NotServing as i32));
    let status = call(&channel(url).await, Route::Serving, driver_request(&[1001]))
        .await
        .unwrap_err();
    assert!(
        matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{status:?}"
    );
    status
}

/// Serves the example repo's registry over `online_store`, with online versioning on
/// and off, and checks every Feast case against the SQLite answers.
async fn matches_the_sqlite_answers(online_store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let on_yaml = redis_repo_yaml(&dir.path().join("on").tap_mkdir(), online_store, true);
    let off_yaml = redis_repo_yaml(&dir.path().join("off").tap_mkdir(), online_store, false);
    let on = TestServer::start(&on_yaml, Clock::Fixed(NOW))
        .await
        .unwrap();
    let off = TestServer::start(&off_yaml, Clock::Fixed(NOW))
        .await
        .unwrap();
    check_all_cases(&on.url(), &off.url()).await;
    crate::http_api::check_http_captures(&on, &off).await;
    on.stop().await.unwrap();
    off.stop().await.unwrap();
}

#[tokio::test]
async fn answers_match_the_sqlite_answers_case_for_case() {
    let redis = RedisServer::start(&[]).expect("redis-server starts");
    restore(&mut connect(&redis.addr()).await, &load_dump()).await;
    matches_the_sqlite_answers(&single_store(&redis.addr(), "")).await;
}

#[tokio::test]
async fn cluster_answers_match_the_sqlite_answers() {
    let cluster = RedisCluster::start().await;
    restore(&mut cluster.client().await, &load_dump()).await;
    // The fixture's keys spread over all three nodes, so requests cross slots and nodes.
    matches_the_sqlite_answers(&cluster.online_store()).await;
}

#[tokio::test]
async fn one_round_trip_per_request() {
    let redis = RedisServer::start(&[]).expect("redis-server starts");
    restore(&mut connect(&redis.addr()).await, &load_dump()).await;
    let proxy = CountingProxy::start(redis.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = redis_repo_yaml(
        dir.path(),
        &single_store(&format!("127.0.0.1:{}", proxy.port), ""),
        true,
    );
    let server = TestServer::start(&yaml, Clock::Fixed(NOW)).await.unwrap();
    let ch = channel(&server.url()).await;

    // 100 entity rows, four views over three key sets: two versions of driver_stats
    // (two storage names in the same driver hashes), and two views of other entities.
    let drivers: Vec<_> = (0..100).map(|i| int64(1001 + i)).collect();
    let customers: Vec<_> = (0..100).map(|i| string(&format!("c{}", i + 1))).collect();
    let req = refs_request(
        &[
            "driver_stats@v0:conv_rate",
            "driver_stats@v2:vip_level",
            "customer_profile:tier",
            "driver_customer:trips_together",
        ],
        vec![("driver_id", drivers), ("customer_id", customers)],
    );
    let before = proxy.counts();
    let r = call(&ch, Route::Serving, req).await.unwrap();
    let after = proxy.counts();
    for feature in ["conv_rate", "vip_level"] {
        let (_, statuses, _) = column(&r, feature);
        assert_eq!(statuses.len(), 100);
        assert_eq!(statuses[0], FieldStatus::Present, "driver 1001's {feature}");
    }
    assert_eq!(
        after.1 - before.1,
        300,
        "one HMGET per (entity key set, distinct entity): both driver_stats versions in one"
    );
    assert_eq!(after.0 - before.0, 1, "all 300 HMGETs in one round trip");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_slow_redis_answers_deadline_exceeded_naming_the_store() {
    let redis = RedisServer::start(&[]).expect("redis-server starts");
    restore(&mut connect(&redis.addr()).await, &load_dump()).await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &redis_repo_yaml(dir.path(), &single_store(&redis.addr(), ""), true),
        Clock::Fixed(NOW),
    )
    .await
    .unwrap();
    let ch = channel(&server.url()).await;
    assert!(
        call(&ch, Route::Serving, driver_request(&[1001]))
            .await
            .is_ok()
    );

    // Redis stops answering every client for 3 s (a real pause, not a mock).
    let mut admin = connect(&redis.addr()).await;
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3000)
        .arg("ALL")
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    let status = call(&ch, Route::Serving, driver_request(&[1001]))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::DeadlineExceeded,
        "{}",
        status.message()
    );
    let expected = format!(
        "online store redis {} did not answer within 250 ms",
        redis.addr()
    );
    assert_eq!(status.message(), expected);

    // And it recovers by itself once Redis answers again.
    eventually(DEADLINE, "reads succeed after the pause", || {
        let ch = ch.clone();
        async move {
            call(&ch, Route::Serving, driver_request(&[1001]))
                .await
                .ok()
        }
    })
    .await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn redis_down_at_start_then_back() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &redis_repo_yaml(dir.path(), &single_store(&addr, ""), true),
        Clock::Fixed(NOW),
    )
    .await
    .expect("the daemon starts without Redis");
    let url = server.url();
    let status = refused_while_redis_is_unreachable(&url).await;
    assert!(
        status.message().contains(&format!("redis {addr}")),
        "names the store: {}",
        status.message()
    );

    let redis = RedisServer::start_on(port, &[]).expect("redis-server starts");
    restore(&mut connect(&redis.addr()).await, &load_dump()).await;
    eventually(DEADLINE, "health SERVING", || {
        let url = url.clone();
        async move { (health(&url).await == Some(ServingStatus::Serving as i32)).then_some(()) }
    })
    .await;
    let r = call(
        &channel(&url).await,
        Route::Serving,
        driver_request(&[1001]),
    )
    .await
    .unwrap();
    assert_eq!(column(&r, "vip_level").1, [FieldStatus::Present]);
    server.stop().await.unwrap();
}

/// What one request of the load loop saw.
#[derive(Debug, Clone)]
struct Outcome {
    sent: Instant,
    result: Result<(), (Code, String)>,
}

#[tokio::test]
async fn redis_restart_under_load() {
    let port = free_port();
    let mut redis = RedisServer::start_on(port, &[]).expect("redis-server starts");
    let dump = load_dump();
    restore(&mut connect(&redis.addr()).await, &dump).await;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &redis_repo_yaml(dir.path(), &single_store(&redis.addr(), ""), true),
        Clock::Fixed(NOW),
    )
    .await
    .unwrap();
    let ch = channel(&server.url()).await;

    let log: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let loops: Vec<_> = (0..4)
        .map(|_| {
            let (ch, log, stopped) = (ch.clone(), log.clone(), stopped.clone());
            tokio::spawn(async move {
                while !*stopped.borrow() {
                    let sent = Instant::now();
                    // A generous client deadline: every answer must come from Tern.
                    let mut req = tonic::Request::new(driver_request(&[1001, 1002, 9999]));
                    req.set_timeout(Duration::from_secs(5));
                    let result = call(&ch, Route::Serving, req.into_inner()).await;
                    let result = result
                        .map(drop)
                        .map_err(|s| (s.code(), s.message().to_owned()));
                    log.lock().unwrap().push(Outcome { sent, result });
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let count = |since: Instant, ok: bool| {
        log.lock()
            .unwrap()
            .iter()
            .filter(|o| o.sent >= since && o.result.is_ok() == ok)
            .count()
    };
    let start = Instant::now();
    eventually(DEADLINE, "answers before the restart", || async {
        (count(start, true) >= 50).then_some(())
    })
    .await;

    redis.kill();
    let down = Instant::now();
    eventually(DEADLINE, "errors while Redis is down", || async {
        (count(down, false) >= 20).then_some(())
    })
    .await;

    let redis = RedisServer::start_on(port, &[]).expect("redis-server starts");
    let back = Instant::now();
    restore(&mut connect(&redis.addr()).await, &dump).await;
    eventually(DEADLINE, "answers after Redis returns", || async {
        (count(back, true) >= 20).then_some(())
    })
    .await;
    let _ = stop.send(true);
    for l in loops {
        l.await.unwrap();
    }

    let log = log.lock().unwrap().clone();
    let recovered = log
        .iter()
        .filter(|o| o.sent >= back && o.result.is_ok())
        .map(|o| o.sent.duration_since(back))
        .min()
        .unwrap();
    eprintln!(
        "restart under load: {} requests, {} errors while down, first success {:?} after Redis was back",
        log.len(),
        log.iter().filter(|o| o.result.is_err()).count(),
        recovered
    );
    for o in log.iter() {
        if let Err((code, message)) = &o.result {
            assert!(
                matches!(code, Code::Unavailable | Code::DeadlineExceeded),
                "{code:?}: {message}"
            );
            assert!(
                message.contains(&format!("redis 127.0.0.1:{port}")),
                "answered by Tern, naming the store: {message}"
            );
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn password_protected_redis() {
    const SECRET: &str = "s3cret-Pa55word";
    let redis = RedisServer::start(&["--requirepass", SECRET]).expect("redis-server starts");
    let mut admin = redis::Client::open(format!("redis://:{SECRET}@{}", redis.addr()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    restore(&mut admin, &load_dump()).await;
    let dir = tempfile::tempdir().unwrap();

    let yaml = redis_repo_yaml(
        &dir.path().join("ok").tap_mkdir(),
        &single_store(&redis.addr(), &format!(",password={SECRET}")),
        true,
    );
    let server = TestServer::start(&yaml, Clock::Fixed(NOW)).await.unwrap();
    let r = call(
        &channel(&server.url()).await,
        Route::Serving,
        driver_request(&[1001]),
    )
    .await
    .unwrap();
    assert_eq!(column(&r, "vip_level").0.len(), 1);
    server.stop().await.unwrap();

    // A wrong password: refused, and the password appears nowhere in the answer.
    let yaml = redis_repo_yaml(
        &dir.path().join("bad").tap_mkdir(),
        &single_store(&redis.addr(), ",password=wrong-Secret-999"),
        true,
    );
    let server = TestServer::start(&yaml, Clock::Fixed(NOW)).await.unwrap();
    let status = refused_while_redis_is_unreachable(&server.url()).await;
    assert!(
        !status.message().contains("wrong-Secret-999"),
        "{}",
        status.message()
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn mutual_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs = crate::redis_support::tls::write_test_pki(dir.path());
    let port = free_port();
    let redis = RedisServer::start_on(
        port,
        &[
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            certs.server_cert.to_str().unwrap(),
            "--tls-key-file",
            certs.server_key.to_str().unwrap(),
            "--tls-ca-cert-file",
            certs.ca.to_str().unwrap(),
            "--tls-auth-clients",
            "yes",
        ],
    )
    .expect("redis-server starts");
    let extra = format!(
        ",ssl=true,ssl_ca_certs={},ssl_certfile={},ssl_keyfile={}",
        certs.ca.display(),
        certs.client_cert.display(),
        certs.client_key.display()
    );
    // Load the fixture through Tern's own TLS settings' twin: a TLS admin connection.
    let mut admin = crate::redis_support::tls::admin_connection(&redis.addr(), &certs).await;
    restore(&mut admin, &load_dump()).await;

    let yaml = redis_repo_yaml(dir.path(), &single_store(&redis.addr(), &extra), true);
    let server = TestServer::start(&yaml, Clock::Fixed(NOW)).await.unwrap();
    let r = call(
        &channel(&server.url()).await,
        Route::Serving,
        driver_request(&[1001, 9999]),
    )
    .await
    .unwrap();
    assert_eq!(
        column(&r, "conv_rate").1,
        [FieldStatus::Present, FieldStatus::NotFound]
    );
    server.stop().await.unwrap();
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).expect("mkdir");
        self
    }
}

#[tokio::test]
async fn written_in_feasts_layout_and_read_back() {
    let redis = RedisServer::start(&[]).expect("redis-server starts");
    let repo = tern::testing::SyntheticRepo {
        entities: 20,
        features: 3,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let yaml = repo.write_redis(dir.path(), &redis.addr()).await.unwrap();
    let server = TestServer::start(&yaml, Clock::Fixed(repo.event_ts))
        .await
        .unwrap();
    let r = call(
        &channel(&server.url()).await,
        Route::Serving,
        refs_request(
            &["bench:f2"],
            vec![("driver_id", vec![int64(7), int64(21)])],
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        column(&r, "f2").0,
        [
            double(tern::testing::synthetic_value(7, 2)),
            Default::default()
        ]
    );
    assert_eq!(
        column(&r, "f2").1,
        [FieldStatus::Present, FieldStatus::NotFound]
    );
    assert_eq!(column(&r, "f2").2, [repo.event_ts, 0]);
    // The hash is Feast's: key = entity key + project, murmur3 field names, _ts:{view}.
    let mut conn = connect(&redis.addr()).await;
    let mut key = tern::store::key::key_prefix(&["driver_id"], tern::config::KeySerialization::V3);
    tern::store::key::push_value(&mut key, &tern::store::EntityValue::Int64(7));
    key.extend_from_slice(b"synthetic");
    let fields: Vec<Vec<u8>> = redis::cmd("HKEYS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(fields.len(), 4);
    assert!(fields.contains(&b"_ts:bench".to_vec()));
    assert!(fields.contains(&tern::store::redis::field_name("bench", "f2").to_vec()));
    server.stop().await.unwrap();
}
