//! Redis Cluster faults, on a real 3-node cluster of local `redis-server` processes
//! holding what Feast 0.67 wrote: every node killed and brought back, slot-map refreshes
//! cut off by the store timeout, and a failing request counted by Redis itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tern::proto::feast::serving::FieldStatus;
use tern::serving::Clock;
use tern::store::{KeyBatch, OnlineStore, StorageLayout, ViewRead};
use tern::testing::TestServer;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::redis_support::*;
use crate::support::*;

const DEADLINE: Duration = Duration::from_secs(20);
/// The fixture's event time of drivers 1001 and 1003.
const T0: i64 = 1_736_467_200;

/// A cluster holding Feast's dump, and a server over it.
async fn serve_cluster() -> (RedisCluster, tempfile::TempDir, TestServer) {
    let cluster = RedisCluster::start().await;
    restore(&mut cluster.client().await, &load_dump()).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = redis_repo_yaml(dir.path(), &cluster.online_store(), true);
    let server = TestServer::start(&yaml, Clock::Fixed(NOW)).await.unwrap();
    (cluster, dir, server)
}

async fn wait_for_health(url: &str, status: ServingStatus) {
    eventually(DEADLINE, &format!("health {status:?}"), || async move {
        (health(url).await == Some(status as i32)).then_some(())
    })
    .await;
}

/// A failed request: UNAVAILABLE or DEADLINE_EXCEEDED, naming the cluster.
fn assert_store_error(status: &tonic::Status, cluster: &RedisCluster) {
    assert!(
        matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{status:?}"
    );
    let store = format!("redis {}", cluster.connection_string());
    assert!(
        status.message().contains(&store),
        "names {store}: {}",
        status.message()
    );
}

#[tokio::test]
async fn every_node_killed_then_back() {
    let (mut cluster, _dir, server) = serve_cluster().await;
    let url = server.url();
    let ch = channel(&url).await;
    wait_for_health(&url, ServingStatus::Serving).await;
    let r = call(&ch, Route::Serving, driver_request(&[1001, 1003]))
        .await
        .unwrap();
    assert_eq!(
        column(&r, "conv_rate").1,
        [FieldStatus::Present, FieldStatus::Present]
    );

    for node in &mut cluster.nodes {
        node.kill();
    }
    wait_for_health(&url, ServingStatus::NotServing).await;
    let status = call(&ch, Route::Serving, driver_request(&[1001, 1003]))
        .await
        .unwrap_err();
    assert_store_error(&status, &cluster);

    for node in &mut cluster.nodes {
        node.restart().expect("the node starts again on its port");
    }
    cluster.wait_for_state(&[0, 1, 2], "ok").await;
    // The nodes keep no data; Feast's dump is written again.
    restore(&mut cluster.client().await, &load_dump()).await;
    wait_for_health(&url, ServingStatus::Serving).await;
    let r = eventually(DEADLINE, "requests answered again", || {
        let ch = ch.clone();
        async move {
            call(&ch, Route::Serving, driver_request(&[1001, 1003]))
                .await
                .ok()
        }
    })
    .await;
    assert_eq!(column(&r, "conv_rate").2, [T0, T0]);
    server.stop().await.unwrap();
}

/// The active driver_stats' conv_rate of driver 1001.
fn conv_rate_of_1001() -> ViewRead {
    let mut keys = KeyBatch::default();
    keys.push(&driver_key(1001));
    ViewRead::new(
        Arc::new(StorageLayout::new(
            "tern_demo",
            "driver_stats",
            1,
            vec!["conv_rate".into()],
        )),
        Arc::from(vec![0u32]),
        Arc::new(keys),
    )
}

#[tokio::test]
async fn a_cancelled_slot_map_refresh_does_not_make_health_lie() {
    let mut cluster = RedisCluster::start().await;
    restore(&mut cluster.client().await, &load_dump()).await;
    // A fresh store: it has no slot map yet, so its first read must ask for one.
    let store = open_redis_store(&cluster.online_store());

    // Every node stops answering for a while: a ping and a read (refreshing the slot
    // map) are both cut off in the middle by their timeouts.
    for node in &cluster.nodes {
        redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(1500)
            .arg("ALL")
            .query_async::<()>(&mut connect(&node.addr()).await)
            .await
            .unwrap();
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(50), store.ping())
            .await
            .is_err(),
        "the ping is cancelled while it waits"
    );
    let err = store.read(vec![conv_rate_of_1001()]).await.unwrap_err();
    assert!(
        matches!(err, tern::store::StoreError::Timeout { .. }),
        "{err}"
    );

    // Once the nodes answer again, so does the store, with the fixture's data.
    eventually(DEADLINE, "pings answered after the pause", || async {
        store.ping().await.ok()
    })
    .await;
    let rows = eventually(DEADLINE, "reads answered after the pause", || async {
        store.read(vec![conv_rate_of_1001()]).await.ok()
    })
    .await;
    assert_eq!(rows.views[0].timestamps[0].map(|t| t.seconds), Some(T0));

    // And when no node answers, the ping says so (a stuck refresh made it answer Ok
    // without asking anyone).
    for node in &mut cluster.nodes {
        node.kill();
    }
    let err = eventually(DEADLINE, "pings fail with every node down", || async {
        store.ping().await.err()
    })
    .await;
    assert!(err.to_string().contains(store.name()), "{err}");
    let err = store.read(vec![conv_rate_of_1001()]).await.unwrap_err();
    assert!(err.to_string().contains(store.name()), "{err}");
}

/// `INFO commandstats` of `node`: HMGETs it received (run or rejected).
async fn hmgets(node: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connect(&node.addr()).await)
        .await
        .unwrap();
    let Some(line) = info.lines().find(|l| l.starts_with("cmdstat_hmget:")) else {
        return 0;
    };
    line.split([':', ','])
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "calls" || *k == "rejected_calls")
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .sum()
}

/// Which node (index) serves each of `keys`, as the cluster itself says.
async fn owners(cluster: &RedisCluster, keys: &[Vec<u8>]) -> Vec<usize> {
    let mut conn = connect(&cluster.nodes[0].addr()).await;
    let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut ranges = Vec::new();
    for range in slots {
        let redis::Value::Array(parts) = range else {
            panic!("CLUSTER SLOTS entry");
        };
        let (redis::Value::Int(from), redis::Value::Int(to), redis::Value::Array(primary)) =
            (&parts[0], &parts[1], &parts[2])
        else {
            panic!("CLUSTER SLOTS entry");
        };
        let redis::Value::Int(port) = primary[1] else {
            panic!("CLUSTER SLOTS port");
        };
        let node = cluster
            .nodes
            .iter()
            .position(|n| i64::from(n.port) == port)
            .unwrap();
        ranges.push((*from, *to, node));
    }
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let (_, _, node) = ranges
            .iter()
            .find(|(from, to, _)| (*from..=*to).contains(&slot))
            .unwrap();
        out.push(*node);
    }
    out
}

#[tokio::test]
async fn a_failing_request_sends_each_hmget_once() {
    let (mut cluster, _dir, server) = serve_cluster().await;
    let ch = channel(&server.url()).await;
    let ids: Vec<i64> = (1001..1101).collect();
    let request = || {
        refs_request(
            &["driver_stats:conv_rate"],
            vec![("driver_id", ids.iter().map(|i| int64(*i)).collect())],
        )
    };
    call(&ch, Route::Serving, request())
        .await
        .expect("the whole cluster answers");
    let keys: Vec<Vec<u8>> = ids
        .iter()
        .map(|&id| {
            let mut k = driver_key(id);
            k.extend_from_slice(b"tern_demo");
            k
        })
        .collect();
    let mut expected: HashMap<usize, u64> = HashMap::new();
    for node in owners(&cluster, &keys).await {
        *expected.entry(node).or_default() += 1;
    }
    assert_eq!(expected.len(), 3, "the keys spread over every node");

    // One node dies; the other two answer CLUSTERDOWN to every key command.
    cluster.nodes[2].kill();
    cluster.wait_for_state(&[0, 1], "fail").await;
    for node in &cluster.nodes[..2] {
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async::<()>(&mut connect(&node.addr()).await)
            .await
            .unwrap();
    }
    let status = call(&ch, Route::Serving, request()).await.unwrap_err();
    assert_store_error(&status, &cluster);
    // Redis' own count: each live node got its keys' HMGETs once, in one pipeline,
    // not once more per entity.
    for n in 0..2 {
        assert_eq!(
            hmgets(&cluster.nodes[n]).await,
            expected[&n],
            "HMGETs received by node {n}"
        );
    }
    server.stop().await.unwrap();
}
