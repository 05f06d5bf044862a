//! Tern's Redis writer against what Feast 0.67 writes: the example repo's data, taken
//! from the SQLite online store Feast materialized, written by Tern into an empty
//! `redis-server` (and a 3-node cluster) must be byte for byte what Feast's own Redis
//! materialization wrote (`redis_dump.json`); plus Feast's event-time rule and
//! `key_ttl_seconds`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use prost::Message;
use prost_types::Timestamp;
use tern::proto::feast::types::Value;
use tern::proto::feast::types::value::Val;
use tern::registry::Reloader;
use tern::store::redis::{WriteRow, Written};
use tern::store::{RedisStore, StorageLayout};

use crate::redis_support::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every view version's storage layout in the example repo's registry, by storage name.
async fn layouts() -> BTreeMap<String, Arc<StorageLayout>> {
    let dir = tempfile::tempdir().unwrap();
    let yaml = redis_repo_yaml(dir.path(), "  type: redis\n", true);
    let config = tern::config::load(&yaml, |_| None).unwrap();
    let snapshot = Reloader::open(&config, std::time::Duration::from_secs(10))
        .await
        .unwrap()
        .registry()
        .snapshot();
    let mut out = BTreeMap::new();
    for name in snapshot.view_names() {
        let view = snapshot.view(name).unwrap();
        for version in std::iter::once(&view.active).chain(view.versions.values()) {
            out.insert(version.layout.storage_name.clone(), version.layout.clone());
        }
    }
    out
}

/// One entity's rows of one SQLite table: (entity key, [(feature, value)], event_ts).
type Entity = (Vec<u8>, Vec<(String, Vec<u8>)>, i64);

/// What Feast's SQLite materialization holds for `storage_name`, per entity.
fn sqlite_entities(db: &Path, storage_name: &str) -> Vec<Entity> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(&format!(
            "SELECT entity_key, feature_name, value, event_ts FROM \"tern_demo_{storage_name}\" \
             ORDER BY entity_key, feature_name"
        ))
        .unwrap();
    let mut out: Vec<Entity> = Vec::new();
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .unwrap();
    for row in rows {
        let (key, feature, value, event_ts) = row.unwrap();
        match out.last_mut() {
            Some((last, values, ts)) if *last == key => {
                assert_eq!(*ts, event_ts, "one event time per entity");
                values.push((feature, value));
            }
            _ => out.push((key, vec![(feature, value)], event_ts)),
        }
    }
    out
}

/// Writes every table of the example repo's `online.db` through `store`.
async fn write_example_repo(store: &RedisStore) {
    let db = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/feature_repo/data/online.db");
    let layouts = layouts().await;
    assert_eq!(layouts.len(), 7, "{:?}", layouts.keys());
    for (storage_name, layout) in &layouts {
        let entities = sqlite_entities(&db, storage_name);
        assert!(!entities.is_empty(), "{storage_name} has rows");
        let values: Vec<Vec<(&str, &[u8])>> = entities
            .iter()
            .map(|(_, v, _)| v.iter().map(|(f, v)| (f.as_str(), v.as_slice())).collect())
            .collect();
        let rows: Vec<WriteRow<'_>> = entities
            .iter()
            .zip(&values)
            .map(|((key, _, ts), values)| WriteRow {
                entity_key: key,
                values,
                event_time: Timestamp {
                    seconds: *ts,
                    nanos: 0,
                },
            })
            .collect();
        let written = store.write_batch(layout, &rows).await.unwrap();
        assert_eq!(
            written,
            Written {
                written: rows.len(),
                skipped: 0
            }
        );
    }
}

/// (key, field, value) in hex, and each key's TTL, as Feast's dump holds them.
type Cells = BTreeSet<(String, String, String)>;

fn feast_cells() -> (Cells, BTreeMap<String, i64>) {
    let dump: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/feast/redis_dump.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut cells = Cells::new();
    let mut ttls = BTreeMap::new();
    for key in dump["keys"].as_array().unwrap() {
        let k = key["key"].as_str().unwrap().to_owned();
        ttls.insert(k.clone(), key["ttl"].as_i64().unwrap());
        for f in key["fields"].as_array().unwrap() {
            cells.insert((
                k.clone(),
                f["field"].as_str().unwrap().to_owned(),
                f["value"].as_str().unwrap().to_owned(),
            ));
        }
    }
    (cells, ttls)
}

/// Every key, field and value (and TTL) the server at `addr` holds.
async fn redis_cells(addr: &str, cells: &mut Cells, ttls: &mut BTreeMap<String, i64>) {
    let mut conn = connect(addr).await;
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    for key in keys {
        let fields: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        for (field, value) in fields {
            cells.insert((hex(&key), hex(&field), hex(&value)));
        }
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        ttls.insert(hex(&key), ttl);
    }
}

fn assert_same_as_feast(cells: &Cells, ttls: &BTreeMap<String, i64>) {
    let (want, want_ttls) = feast_cells();
    let missing: Vec<_> = want.difference(cells).collect();
    let extra: Vec<_> = cells.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "Feast wrote but Tern did not: {missing:#?}\nTern wrote but Feast did not: {extra:#?}"
    );
    assert_eq!(*ttls, want_ttls);
}

#[tokio::test]
async fn writes_the_example_repo_byte_for_byte_as_feast() {
    let redis = RedisServer::start(&[]).expect("redis-server starts");
    let store = open_redis_store(&single_store(&redis.addr(), ""));
    write_example_repo(&store).await;
    let (mut cells, mut ttls) = (Cells::new(), BTreeMap::new());
    redis_cells(&redis.addr(), &mut cells, &mut ttls).await;
    assert_same_as_feast(&cells, &ttls);
}

#[tokio::test]
async fn writes_the_example_repo_into_a_cluster_byte_for_byte_as_feast() {
    let cluster = RedisCluster::start().await;
    let store = open_redis_store(&cluster.online_store());
    write_example_repo(&store).await;
    let (mut cells, mut ttls) = (Cells::new(), BTreeMap::new());
    for node in &cluster.nodes {
        redis_cells(&node.addr(), &mut cells, &mut ttls).await;
    }
    assert_same_as_feast(&cells, &ttls);
}

fn int64_value(v: i64) -> Vec<u8> {
    Value {
        val: Some(Val::Int64Val(v)),
    }
    .encode_to_vec()
}

/// (stored value of feature `f`, stored event time) of entity `key` in view `v`.
async fn stored(addr: &str, key: &[u8]) -> (i64, Timestamp) {
    let mut redis_key = key.to_vec();
    redis_key.extend_from_slice(b"tern_demo");
    let (value, ts): (Vec<u8>, Vec<u8>) = redis::cmd("HMGET")
        .arg(redis_key)
        .arg(&tern::store::redis::field_name("v", "f")[..])
        .arg("_ts:v")
        .query_async(&mut connect(addr).await)
        .await
        .unwrap();
    let Some(Val::Int64Val(value)) = Value::decode(value.as_slice()).unwrap().val else {
        panic!("an int64 value");
    };
    (value, Timestamp::decode(ts.as_slice()).unwrap())
}

#[tokio::test]
async fn newer_event_times_win_older_and_equal_ones_are_skipped() {
    let redis = RedisServer::start(&[]).expect("redis-server starts");
    let store = open_redis_store(&single_store(&redis.addr(), ""));
    let layout = StorageLayout::new("tern_demo", "v", 0, vec!["f".into()]);
    let values: Vec<Vec<u8>> = (0..10).map(int64_value).collect();
    let pairs: Vec<[(&str, &[u8]); 1]> = values.iter().map(|v| [("f", v.as_slice())]).collect();
    let ts = |seconds, nanos| Timestamp { seconds, nanos };
    let row = |key: &'static [u8], value: usize, event_time| WriteRow {
        entity_key: key,
        values: &pairs[value],
        event_time,
    };
    let summary = |written, skipped| Written { written, skipped };

    assert_eq!(
        store
            .write_batch(&layout, &[row(b"k1", 1, ts(100, 0))])
            .await
            .unwrap(),
        summary(1, 0)
    );
    // Older and equal: skipped.
    assert_eq!(
        store
            .write_batch(
                &layout,
                &[row(b"k1", 2, ts(90, 0)), row(b"k1", 3, ts(100, 0))]
            )
            .await
            .unwrap(),
        summary(0, 2)
    );
    assert_eq!(stored(&redis.addr(), b"k1").await, (1, ts(100, 0)));
    // One nanosecond newer: written, nanos kept.
    assert_eq!(
        store
            .write_batch(&layout, &[row(b"k1", 4, ts(100, 1))])
            .await
            .unwrap(),
        summary(1, 0)
    );
    assert_eq!(stored(&redis.addr(), b"k1").await, (4, ts(100, 1)));
    // Within one batch, rows of one entity are compared with each other too; other
    // entities are not affected.
    assert_eq!(
        store
            .write_batch(
                &layout,
                &[
                    row(b"k1", 5, ts(200, 0)),
                    row(b"k1", 6, ts(150, 0)),
                    row(b"k2", 7, ts(150, 0)),
                    row(b"k1", 8, ts(200, 0)),
                    row(b"k1", 9, ts(300, 0)),
                ],
            )
            .await
            .unwrap(),
        summary(3, 2)
    );
    assert_eq!(stored(&redis.addr(), b"k1").await, (9, ts(300, 0)));
    assert_eq!(stored(&redis.addr(), b"k2").await, (7, ts(150, 0)));
}

#[tokio::test]
async fn key_ttl_seconds_sets_an_expiry_on_written_keys() {
    let redis = RedisServer::start(&[]).expect("redis-server starts");
    let store = open_redis_store(&format!(
        "{}  key_ttl_seconds: 3600\n",
        single_store(&redis.addr(), "")
    ));
    let layout = StorageLayout::new("tern_demo", "v", 0, vec!["f".into()]);
    let value = int64_value(1);
    let values = [("f", value.as_slice())];
    let rows = [WriteRow {
        entity_key: b"k1",
        values: &values,
        event_time: Timestamp {
            seconds: 100,
            nanos: 0,
        },
    }];
    store.write_batch(&layout, &rows).await.unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(b"k1tern_demo")
        .query_async(&mut connect(&redis.addr()).await)
        .await
        .unwrap();
    assert!((1..=3600).contains(&ttl), "TTL {ttl}");
}
