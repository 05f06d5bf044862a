//! `RedisStore::delete_fields` (a deleted view's data leaving Redis) on a real
//! `redis-server` and a 3-node cluster: exactly the deleted views' fields of exactly one
//! project go, every other byte stays, empty hashes go, the scan takes many SCAN
//! batches (counted by Redis itself), and a second run changes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use prost::Message;
use prost_types::Timestamp;
use tern::config::{KeySerialization, OnlineStoreConfig};
use tern::proto::feast::types::Value;
use tern::proto::feast::types::value::Val;
use tern::store::redis::{FieldsDeleted, ViewFields, WriteRow, field_name};
use tern::store::{RedisSettings, RedisStore, StorageLayout};

use crate::redis_support::*;

const PROJECT: &str = "proj";
/// Ends with `proj`: the SCAN glob `*proj` matches its keys too.
const SUFFIX_PROJECT: &str = "xproj";
const TIMEOUT: Duration = Duration::from_secs(10);
const BATCH: usize = 50;

/// Every key of every node: key -> (field -> value), or the key's type when it is not
/// a hash.
type Contents = BTreeMap<Vec<u8>, Result<BTreeMap<Vec<u8>, Vec<u8>>, String>>;

fn open(online_store: &str, project: &str) -> RedisStore {
    let dir = tempfile::tempdir().unwrap();
    let yaml = redis_repo_yaml(dir.path(), online_store, true);
    let config = tern::config::load(&yaml, |_| None).unwrap();
    let OnlineStoreConfig::Redis(redis) = &config.online_store else {
        panic!("a Redis store");
    };
    RedisStore::open(
        redis,
        project,
        RedisSettings {
            timeout: TIMEOUT,
            connections: 1,
        },
    )
    .unwrap()
}

fn double(v: f64) -> Vec<u8> {
    Value {
        val: Some(Val::DoubleVal(v)),
    }
    .encode_to_vec()
}

fn names(features: &[&str]) -> Vec<String> {
    features.iter().map(|f| (*f).to_owned()).collect()
}

/// driver_stats v0 and v1 (to delete) and other_view (to keep), on the same entity.
fn layouts(project: &str) -> [StorageLayout; 3] {
    [
        StorageLayout::new(
            project,
            "driver_stats",
            0,
            names(&["conv_rate", "acc_rate"]),
        ),
        StorageLayout::new(
            project,
            "driver_stats",
            1,
            names(&["conv_rate", "acc_rate", "name"]),
        ),
        StorageLayout::new(project, "other_view", 0, names(&["score"])),
    ]
}

/// Drivers `0..n`: every one in driver_stats v0 and v1; the even ones in other_view
/// too, so deleting driver_stats leaves the odd ones' hashes empty.
async fn write(store: &RedisStore, project: &str, n: i64) {
    let keys: Vec<Vec<u8>> = (0..n).map(driver_key).collect();
    let values: Vec<Vec<u8>> = (0..n).map(|i| double(i as f64 / 8.0)).collect();
    for (v, layout) in layouts(project).iter().enumerate() {
        let rows: Vec<Vec<(&str, &[u8])>> = values
            .iter()
            .map(|value| {
                layout
                    .features
                    .iter()
                    .map(|f| (f.as_str(), value.as_slice()))
                    .collect()
            })
            .collect();
        let batch: Vec<WriteRow<'_>> = keys
            .iter()
            .zip(&rows)
            .enumerate()
            .filter(|(i, _)| v < 2 || i % 2 == 0)
            .map(|(i, (key, values))| WriteRow {
                entity_key: key,
                values,
                event_time: Timestamp {
                    seconds: 1_700_000_000 + i as i64,
                    nanos: 0,
                },
            })
            .collect();
        let written = store.write_batch(layout, &batch).await.unwrap();
        assert_eq!(written.written, batch.len());
    }
}

async fn contents(addrs: &[String]) -> Contents {
    let mut out = Contents::new();
    for addr in addrs {
        let mut conn = connect(addr).await;
        let mut cursor = 0_u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .unwrap();
            for key in keys {
                let kind: String = redis::cmd("TYPE")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let value = if kind == "hash" {
                    let fields: BTreeMap<Vec<u8>, Vec<u8>> = redis::cmd("HGETALL")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    Ok(fields)
                } else {
                    Err(kind)
                };
                out.insert(key, value);
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
    out
}

/// The fields of driver_stats (v0 and v1).
fn deleted_fields() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (storage, features) in [
        ("driver_stats", &["conv_rate", "acc_rate"][..]),
        ("driver_stats_v1", &["conv_rate", "acc_rate", "name"][..]),
    ] {
        out.extend(features.iter().map(|f| field_name(storage, f).to_vec()));
        out.push(format!("_ts:{storage}").into_bytes());
    }
    out
}

/// `before` less the deleted fields of `project`'s driver keys, empty hashes dropped.
fn expected(before: &Contents, drivers: i64) -> Contents {
    let ours: Vec<Vec<u8>> = (0..drivers)
        .map(|i| [driver_key(i), PROJECT.as_bytes().to_vec()].concat())
        .collect();
    let gone = deleted_fields();
    let mut out = before.clone();
    for key in &ours {
        let Some(Ok(fields)) = out.get_mut(key) else {
            panic!("driver key of {PROJECT} was written");
        };
        let n = fields.len();
        fields.retain(|f, _| !gone.contains(f));
        assert_eq!(
            n - fields.len(),
            gone.len(),
            "every deleted field was there"
        );
        if fields.is_empty() {
            out.remove(key);
        }
    }
    out
}

async fn delete(store: &RedisStore, project: &str) -> FieldsDeleted {
    let v0 = names(&["conv_rate", "acc_rate"]);
    let v1 = names(&["conv_rate", "acc_rate", "name"]);
    store
        .delete_fields(
            project,
            KeySerialization::V3,
            &[
                ViewFields {
                    storage_name: "driver_stats",
                    features: &v0,
                },
                ViewFields {
                    storage_name: "driver_stats_v1",
                    features: &v1,
                },
            ],
            BATCH,
            TIMEOUT,
        )
        .await
        .unwrap()
}

/// SCAN calls Redis served since the last `CONFIG RESETSTAT`, over `addrs`.
async fn scan_calls(addrs: &[String]) -> u64 {
    let mut calls = 0;
    for addr in addrs {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut connect(addr).await)
            .await
            .unwrap();
        calls += info
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_scan:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse::<u64>().unwrap());
    }
    calls
}

async fn reset_stats(addrs: &[String]) {
    for addr in addrs {
        let () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut connect(addr).await)
            .await
            .unwrap();
    }
}

/// The whole scenario against a server or a cluster reached at `online_store`, whose
/// nodes are `addrs`.
async fn deletes_one_views_fields(online_store: &str, addrs: &[String], drivers: i64) {
    let ours = open(online_store, PROJECT);
    let theirs = open(online_store, SUFFIX_PROJECT);
    write(&ours, PROJECT, drivers).await;
    write(&theirs, SUFFIX_PROJECT, drivers).await;
    // Keys the glob matches that are no Feast hash of the project: a string at a valid
    // entity key of the project, and a hash whose name only ends with the project.
    let odd_string = [driver_key(-1), PROJECT.as_bytes().to_vec()].concat();
    let odd_hash = b"not an entity key proj".to_vec();
    {
        let mut conn = connect(&addrs[0]).await;
        let mut cluster = if addrs.len() > 1 {
            Some(
                redis::cluster::ClusterClient::new(
                    addrs
                        .iter()
                        .map(|a| format!("redis://{a}"))
                        .collect::<Vec<_>>(),
                )
                .unwrap()
                .get_async_connection()
                .await
                .unwrap(),
            )
        } else {
            None
        };
        let mut set = redis::cmd("SET");
        set.arg(&odd_string).arg("x");
        let mut hset = redis::cmd("HSET");
        hset.arg(&odd_hash)
            .arg(&field_name("driver_stats", "conv_rate")[..])
            .arg("x");
        for cmd in [set, hset] {
            match &mut cluster {
                Some(c) => cmd.query_async::<redis::Value>(c).await.unwrap(),
                None => cmd.query_async::<redis::Value>(&mut conn).await.unwrap(),
            };
        }
    }
    let before = contents(addrs).await;
    assert_eq!(before.len(), 2 * drivers as usize + 2);

    reset_stats(addrs).await;
    let done = delete(&ours, PROJECT).await;
    assert_eq!(
        done,
        FieldsDeleted {
            // Every key but nothing of xproj's is touched.
            scanned: 2 * drivers as usize + 2,
            touched: drivers as usize,
            skipped: drivers as usize + 2,
        }
    );
    // Many SCAN batches, per node.
    // COUNT is a hint: ask for half the ideal number of calls.
    let scans = scan_calls(addrs).await as usize;
    assert!(
        scans > addrs.len() && scans >= before.len() / BATCH / 2,
        "{scans} SCAN calls for {} keys",
        before.len()
    );

    let after = contents(addrs).await;
    let want = expected(&before, drivers);
    assert_eq!(after.len(), want.len());
    assert!(
        after == want,
        "the store holds exactly what was not deleted"
    );
    // The odd drivers' hashes held driver_stats only: gone.
    assert!(!after.contains_key(&[driver_key(1), PROJECT.as_bytes().to_vec()].concat()));
    assert!(after.contains_key(&[driver_key(0), PROJECT.as_bytes().to_vec()].concat()));

    // Again: nothing left to do, nothing changes.
    let again = delete(&ours, PROJECT).await;
    assert_eq!(
        again,
        FieldsDeleted {
            scanned: after.len(),
            touched: 0,
            skipped: drivers as usize + 2,
        }
    );
    assert!(contents(addrs).await == after);

    // A glob metacharacter in the project is matched literally: `pr?j` would match
    // every `proj` key.
    let literal = delete(&ours, "pr?j").await;
    assert_eq!(literal, FieldsDeleted::default());
    assert!(contents(addrs).await == after);
}

#[tokio::test]
async fn deletes_exactly_one_views_fields_of_one_project() {
    let redis = RedisServer::start(&[]).expect("redis-server starts");
    deletes_one_views_fields(&single_store(&redis.addr(), ""), &[redis.addr()], 400).await;
}

#[tokio::test]
async fn deletes_on_every_cluster_node() {
    let cluster = RedisCluster::start().await;
    let addrs: Vec<String> = cluster.nodes.iter().map(RedisServer::addr).collect();
    deletes_one_views_fields(&cluster.online_store(), &addrs, 300).await;
}

#[tokio::test]
async fn nothing_to_delete_is_no_round_trip() {
    let redis = RedisServer::start(&[]).expect("redis-server starts");
    let store = open(&single_store(&redis.addr(), ""), PROJECT);
    write(&store, PROJECT, 3).await;
    let before = contents(&[redis.addr()]).await;
    reset_stats(&[redis.addr()]).await;
    let done = store
        .delete_fields(PROJECT, KeySerialization::V3, &[], BATCH, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(done, FieldsDeleted::default());
    assert_eq!(scan_calls(&[redis.addr()]).await, 0);
    assert!(contents(&[redis.addr()]).await == before);
}
