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

/// The write script's own reading of stored event times: negative and extreme
/// seconds compare exactly, a batch longer than one script call still compares rows of
/// one entity across calls, a key that is not a hash or a `_ts` that is not a
/// Timestamp is a data fault, and a view wider than one Lua `unpack` is written whole.
#[tokio::test]
async fn the_write_script_compares_every_valid_time_and_reports_faults() {
    use tern::store::StoreError;
    use tern::store::redis::KEYS_PER_SCRIPT;

    let redis = RedisServer::start(&[]).expect("redis-server starts");
    let store = open_redis_store(&single_store(&redis.addr(), ""));
    let layout = Arc::new(StorageLayout::new("tern_demo", "v", 0, vec!["f".into()]));
    let values: &'static [Vec<u8>] = Vec::leak((0..10).map(int64_value).collect());
    let pairs: &'static [[(&str, &[u8]); 1]] =
        Vec::leak(values.iter().map(|v| [("f", v.as_slice())]).collect());
    let ts = |seconds, nanos| Timestamp { seconds, nanos };
    let row = |key: &'static [u8], value: usize, event_time| WriteRow {
        entity_key: key,
        values: &pairs[value],
        event_time,
    };
    let write = |rows: Vec<WriteRow<'static>>| {
        let (store, layout) = (store.clone(), layout.clone());
        async move { store.write_batch(&layout, &rows).await }
    };
    let summary = |written, skipped| Written { written, skipped };

    // Before 1970 (a ten-byte varint on the wire) and at the ends of the range.
    let min = -62_135_596_800;
    let max = 253_402_300_799;
    for (first, then, want) in [
        (ts(-100, 5), ts(-101, 0), (1, 0)),
        (ts(-100, 5), ts(-100, 5), (1, 0)),
        (ts(-100, 5), ts(-100, 6), (1, 1)),
        (ts(-100, 5), ts(-99, 0), (1, 1)),
        (ts(min, 0), ts(min, 1), (1, 1)),
        (ts(max, 999_999_999), ts(max, 999_999_998), (1, 0)),
        (ts(1_700_000_000, 0), ts(-1, 999_999_999), (1, 0)),
    ] {
        let key: &'static [u8] = Vec::leak(format!("k{first:?}{then:?}").into_bytes());
        write(vec![row(key, 1, first)]).await.unwrap();
        let w = write(vec![row(key, 2, then)]).await.unwrap();
        assert_eq!(
            (w.written, w.skipped),
            (want.1, 1 - want.1),
            "{first:?} then {then:?}"
        );
        let kept = if want.1 == 1 { (2, then) } else { (1, first) };
        assert_eq!(
            stored(&redis.addr(), key).await,
            kept,
            "{first:?} then {then:?}"
        );
    }

    // One entity at both ends of a batch longer than one script call.
    let mut rows = vec![row(b"span", 5, ts(500, 0))];
    rows.extend((0..KEYS_PER_SCRIPT + 10).map(|_| row(b"other", 3, ts(10, 0))));
    rows.push(row(b"span", 6, ts(400, 0)));
    assert_eq!(write(rows).await.unwrap(), summary(2, KEYS_PER_SCRIPT + 10));
    assert_eq!(stored(&redis.addr(), b"span").await, (5, ts(500, 0)));

    // Faults: a `_ts` that is not a Timestamp, a key that is not a hash.
    let mut conn = connect(&redis.addr()).await;
    redis::cmd("HSET")
        .arg(b"badtstern_demo")
        .arg("_ts:v")
        .arg(b"\x0a\x05")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    redis::cmd("SET")
        .arg(b"stringtern_demo")
        .arg("x")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    for (key, want) in [
        (&b"badts"[..], "_ts:v field is not a protobuf Timestamp"),
        (&b"string"[..], "the key is not a hash (WRONGTYPE"),
    ] {
        match write(vec![row(key, 1, ts(100, 0))]).await {
            Err(StoreError::DataFault { view, detail, .. }) => {
                assert_eq!(view, "v");
                assert!(detail.starts_with(want), "{detail}");
            }
            other => panic!("{key:?}: a data fault, got {other:?}"),
        }
    }
    let bad: Vec<u8> = redis::cmd("HGET")
        .arg(b"badtstern_demo")
        .arg("_ts:v")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(bad, b"\x0a\x05", "nothing written over the fault");

    // A view of 1,500 features: more than one HSET's worth of Lua arguments.
    let wide: Vec<String> = (0..1500).map(|i| format!("f{i}")).collect();
    let layout = StorageLayout::new("tern_demo", "wide", 0, wide.clone());
    let value = int64_value(7);
    let values: Vec<(&str, &[u8])> = wide
        .iter()
        .map(|f| (f.as_str(), value.as_slice()))
        .collect();
    let rows = [WriteRow {
        entity_key: b"w",
        values: &values,
        event_time: ts(100, 0),
    }];
    assert_eq!(
        store.write_batch(&layout, &rows).await.unwrap(),
        summary(1, 0)
    );
    let fields: i64 = redis::cmd("HLEN")
        .arg(b"wtern_demo")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(fields, 1501, "1,500 features and the _ts field");
}
