//! Data the online store holds but Feast's layout does not allow: answered DATA_LOSS
//! (not retriable) naming the store, the view and the entity key, never served and
//! never given a made-up timestamp. Real `redis-server` and real SQLite files, damaged
//! by hand after Feast wrote them; requests go through the gRPC server.

use std::path::Path;

use tern::serving::Clock;
use tern::store::key_hex;
use tern::testing::TestServer;
use tonic::Code;

use crate::redis_support::*;
use crate::support::*;

/// Asks for the active `driver_stats` (stored as `driver_stats_v1`) of `ids`.
async fn driver_stats(url: &str, ids: &[i64]) -> Result<(), tonic::Status> {
    let req = refs_request(
        &["driver_stats:conv_rate", "driver_stats:name"],
        vec![("driver_id", ids.iter().map(|i| int64(*i)).collect())],
    );
    call(&channel(url).await, Route::Serving, req)
        .await
        .map(drop)
}

/// A request for driver `id` fails with DATA_LOSS naming `store`, view
/// `driver_stats_v1` and the driver's key; returns the detail after the key.
async fn data_loss(url: &str, id: i64, store: &str) -> String {
    let status = driver_stats(url, &[1003, id]).await.unwrap_err();
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    let prefix = format!(
        "online store {store} holds unreadable data for feature view driver_stats_v1, entity key {}: ",
        key_hex(&driver_key(id))
    );
    status
        .message()
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{:?} does not start with {prefix:?}", status.message()))
        .to_owned()
}

#[tokio::test]
async fn unreadable_redis_data_answers_data_loss() {
    let redis = RedisServer::start(&[]).expect("redis-server starts");
    let mut conn = connect(&redis.addr()).await;
    restore(&mut conn, &load_dump()).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = redis_repo_yaml(dir.path(), &single_store(&redis.addr(), ""), true);
    let server = TestServer::start(&yaml, Clock::Fixed(NOW)).await.unwrap();
    let url = server.url();
    driver_stats(&url, &[1001, 1002, 1004, 1005])
        .await
        .expect("Feast's data reads");
    let redis_key = |id| {
        let mut k = driver_key(id);
        k.extend_from_slice(b"tern_demo");
        k
    };
    let hset = |id: i64, field: Vec<u8>, value: &'static [u8]| {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(redis_key(id)).arg(field).arg(value);
        cmd
    };
    let store = format!("redis {}", redis.addr());

    // 1001's conv_rate: a string_val that is not UTF-8.
    hset(
        1001,
        tern::store::redis::field_name("driver_stats_v1", "conv_rate").to_vec(),
        b"\x12\x02\xc3\x28",
    )
    .query_async::<()>(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        data_loss(&url, 1001, &store).await,
        "value of feature conv_rate is not a serialized feast.types.Value (string field 2 is not UTF-8 at byte 2)"
    );

    // 1002's event time: not a Timestamp (a field 1 with wire type 2, truncated).
    hset(1002, b"_ts:driver_stats_v1".to_vec(), b"\x0a\x05")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let detail = data_loss(&url, 1002, &store).await;
    assert!(
        detail.starts_with("_ts:driver_stats_v1 field is not a protobuf Timestamp ("),
        "{detail}"
    );

    // 1004's event time: no `_ts` field beside its features.
    redis::cmd("HDEL")
        .arg(redis_key(1004))
        .arg("_ts:driver_stats_v1")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        data_loss(&url, 1004, &store).await,
        "feature fields are stored without their _ts:driver_stats_v1 field"
    );

    // 1005's key holds a string, not Feast's hash.
    redis::pipe()
        .del(redis_key(1005))
        .set(redis_key(1005), "not a hash")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let detail = data_loss(&url, 1005, &store).await;
    assert!(
        detail.starts_with("the key is not a hash (WRONGTYPE "),
        "{detail}"
    );

    // The rest of the store still answers.
    driver_stats(&url, &[1003]).await.expect("an intact entity");
    server.stop().await.unwrap();
}

/// Copies the example repo (YAML, registry, SQLite online store) into `dir`.
fn copy_example_repo(dir: &Path) -> std::path::PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/feature_repo");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    for file in ["feature_store.yaml", "data/registry.db", "data/online.db"] {
        std::fs::copy(repo.join(file), dir.join(file)).unwrap();
    }
    dir.join("feature_store.yaml")
}

#[tokio::test]
async fn unreadable_sqlite_data_answers_data_loss() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = copy_example_repo(dir.path());
    let db = dir.path().join("data/online.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    // `assignment` on driver `id`'s rows (of `feature` only, if given).
    let set = |assignment: &str, feature: &str, id: i64| {
        let changed = conn
            .execute(
                &format!(
                    "UPDATE tern_demo_driver_stats_v1 SET {assignment} \
                     WHERE entity_key = ?1 AND (?2 = '' OR feature_name = ?2)"
                ),
                rusqlite::params![driver_key(id), feature],
            )
            .unwrap();
        assert!(changed > 0, "driver {id} is in the fixture");
    };
    let server = TestServer::start(&yaml, Clock::Fixed(NOW)).await.unwrap();
    let url = server.url();
    driver_stats(&url, &[1001, 1002, 1004, 1005])
        .await
        .expect("Feast's data reads");
    let store = format!("sqlite {}", db.display());

    set("value = x'1202c328'", "conv_rate", 1001);
    assert_eq!(
        data_loss(&url, 1001, &store).await,
        "value of feature conv_rate is not a serialized feast.types.Value (string field 2 is not UTF-8 at byte 2)"
    );

    set("value = NULL", "name", 1002);
    assert_eq!(
        data_loss(&url, 1002, &store).await,
        "value of feature name is NULL, not a serialized feast.types.Value"
    );

    // Feast before 0.42 wrote ISO text; today's Feast cannot read it either.
    set("event_ts = '2025-01-10 00:00:00'", "", 1004);
    let detail = data_loss(&url, 1004, &store).await;
    assert!(
        detail.ends_with(" is text (\"2025-01-10 00:00:00\"), not epoch seconds"),
        "{detail}"
    );

    set("event_ts = NULL", "", 1005);
    let detail = data_loss(&url, 1005, &store).await;
    assert!(detail.ends_with(" is NULL, not epoch seconds"), "{detail}");

    driver_stats(&url, &[1003]).await.expect("an intact entity");
    server.stop().await.unwrap();
}
