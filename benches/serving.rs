//! In-process request path: plan lookup, entity keys, the store read, and response
//! assembly, for 1 entity x 10 features and 100 entities x 10 features, over SQLite and
//! over a real `redis-server` started for the run. Baselines, measured in the same
//! run: for SQLite the same prepared SELECT for the same keys on one connection; for
//! Redis the same HMGET pipeline sent with the redis crate alone. Report the ratios
//! (tern / baseline) in BENCHMARKS.md.

mod common;

use common::{entity_keys, ids};
use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, criterion_group, criterion_main};
use prost::Message;
use tern::proto::feast::types::value::Val;
use tern::proto::feast::types::{RepeatedValue, Value};
use tern::proto::tern::wire::Column;
use tern::registry::Reloader;
use tern::server::{StoreSettings, open_serving};
use tern::serving::{Clock, Request, Selection, Serving};
use tern::store::{SqliteSettings, SqliteStore, Store};
use tern::testing::{RedisServer, SyntheticRepo};

/// `serving.get_online_features` for `entities` drivers x every feature, as "tern".
fn bench_tern(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    serving: &Serving,
    refs: &[String],
    entities: i64,
    stored: i64,
) {
    let columns = vec![Column {
        key: "driver_id".into(),
        value: Some(RepeatedValue {
            val: ids(entities, stored)
                .into_iter()
                .map(|id| Value {
                    val: Some(Val::Int64Val(id)),
                })
                .collect(),
        }),
    }];
    let label = format!("{entities}x10of{stored}");
    group.bench_with_input(BenchmarkId::new("tern", &label), &columns, |b, columns| {
        b.iter(|| {
            let req = Request {
                selection: Some(Selection::Refs(refs)),
                entities: columns,
                full_feature_names: false,
                include_metadata: false,
                deadline: Some(Duration::from_secs(5)),
                caller: None,
            };
            // The core's answer serialized as the gRPC edge sends it.
            black_box(
                tern::grpc::encode_response(
                    rt.block_on(serving.get_online_features(req))
                        .expect("answer"),
                )
                .encode_to_vec(),
            )
        })
    });
}

/// Repo sizes (drivers stored): the small one, and one whose SQLite file is far larger
/// than SQLite's page cache. `SERVING_ENTITIES` overrides.
fn sizes() -> Vec<i64> {
    common::sizes("SERVING_ENTITIES", "1000,100000")
}

fn bench(c: &mut Criterion) {
    for stored in sizes() {
        bench_sqlite(c, stored);
    }
}

fn bench_sqlite(c: &mut Criterion, stored: i64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = SyntheticRepo {
        entities: stored,
        ..SyntheticRepo::default()
    };
    let yaml = repo.write(dir.path()).expect("write repo");
    let config = tern::config::load(&yaml, |_| None).expect("config");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let registry = rt
        .block_on(Reloader::open(&config, std::time::Duration::from_secs(10)))
        .expect("registry")
        .registry();
    let db = dir.path().join("data/online.db");
    let store = Store::Sqlite(
        SqliteStore::open(
            &db,
            SqliteSettings::new(2, StoreSettings::default().timeout),
        )
        .expect("store"),
    );
    let serving = Serving::new(registry, store, Clock::Fixed(repo.event_ts));
    let refs = repo.refs();

    let conn = common::bare_connection(&db);
    let mut group = c.benchmark_group("get_online_features");
    for entities in [1i64, 100] {
        let label = format!("{entities}x10of{stored}");
        bench_tern(&mut group, &rt, &serving, &refs, entities, stored);

        let keys = entity_keys(entities, stored);
        group.bench_with_input(
            BenchmarkId::new("baseline_sqlite_select", &label),
            &keys,
            |b, keys| b.iter(|| black_box(common::bare_select(&conn, keys))),
        );
    }
    group.finish();
}

/// The same requests over Redis, against the bare pipeline of HMGETs they send.
fn bench_redis(c: &mut Criterion) {
    for stored in sizes() {
        bench_redis_of(c, stored);
    }
}

fn bench_redis_of(c: &mut Criterion, stored: i64) {
    let redis = RedisServer::start(&[]).expect("redis-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = SyntheticRepo {
        entities: stored,
        ..SyntheticRepo::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let yaml = rt
        .block_on(repo.write_redis(dir.path(), &redis.addr()))
        .expect("write redis repo");
    let config = tern::config::load(&yaml, |_| None).expect("config");
    let (serving, _reloader) = rt
        .block_on(open_serving(
            &config,
            &StoreSettings::default(),
            Clock::Fixed(repo.event_ts),
        ))
        .expect("serving");
    let refs = repo.refs();
    let mut conn = rt
        .block_on(async {
            redis::Client::open(format!("redis://{}", redis.addr()))?
                .get_multiplexed_async_connection()
                .await
        })
        .expect("redis connection");
    let fields = common::redis_fields(&repo);

    let mut group = c.benchmark_group("get_online_features_redis");
    for entities in [1i64, 100] {
        let label = format!("{entities}x10of{stored}");
        bench_tern(&mut group, &rt, &serving, &refs, entities, stored);
        let keys: Vec<Vec<u8>> = entity_keys(entities, stored)
            .into_iter()
            .map(|mut k| {
                k.extend_from_slice(repo.project.as_bytes());
                k
            })
            .collect();
        group.bench_with_input(
            BenchmarkId::new("baseline_redis_pipeline", &label),
            &keys,
            |b, keys| {
                b.iter(|| {
                    let mut pipe = redis::pipe();
                    for key in keys {
                        pipe.cmd("HMGET").arg(key).arg(&fields);
                    }
                    let replies: Vec<redis::Value> =
                        rt.block_on(pipe.query_async(&mut conn)).expect("pipeline");
                    black_box(replies)
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench, bench_redis);
criterion_main!(benches);
