//! Registry hot reload: new snapshots swap in atomically while requests run; broken
//! registries never replace a good one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tern::config::KeySerialization;
use tern::proto::feast::core as pb;
use tern::proto::feast::types::value::Val;
use tern::proto::feast::types::{Value, value_type::Enum as ValueType};
use tern::registry::ReloadHandle;
use tern::serving::Clock;
use tern::store::{EntityValue, key, sqlite};
use tern::testing::TestServer;
use tonic::transport::Channel;

use crate::support::*;

const DEADLINE: Duration = Duration::from_secs(20);
const PROJECT: &str = "reload";

/// A registry whose two views `left` and `right` are both active at `version`.
/// Version N of each view is stored in `{project}_{view}_vN` with value N, so a
/// response reveals the generation it was read from.
fn registry(version: i32, version_id: &str) -> pb::Registry {
    let view = |name: &str| pb::FeatureView {
        spec: Some(pb::FeatureViewSpec {
            name: name.into(),
            project: PROJECT.into(),
            entities: vec!["thing".into()],
            features: vec![pb::FeatureSpecV2 {
                name: "f".into(),
                value_type: ValueType::Double as i32,
                ..Default::default()
            }],
            ..Default::default()
        }),
        meta: Some(pb::FeatureViewMeta {
            current_version_number: version,
            ..Default::default()
        }),
    };
    pb::Registry {
        entities: vec![pb::Entity {
            spec: Some(pb::EntitySpecV2 {
                name: "thing".into(),
                project: PROJECT.into(),
                join_key: "thing_id".into(),
                value_type: ValueType::Int64 as i32,
                ..Default::default()
            }),
            meta: None,
        }],
        feature_views: vec![view("left"), view("right")],
        version_id: version_id.into(),
        // Last present field: cutting it off leaves a prefix that decodes cleanly.
        projects: vec![pb::Project {
            spec: Some(pb::ProjectSpec {
                name: PROJECT.into(),
                ..Default::default()
            }),
            meta: None,
        }],
        ..Default::default()
    }
}

/// Online tables for versions 1 and 2 of both views, entity 1.
fn write_online(path: &Path) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    let mut k = key::key_prefix(&["thing_id"], KeySerialization::V3);
    key::push_value(&mut k, &EntityValue::Int64(1));
    for view in ["left", "right"] {
        for version in [1, 2] {
            let table = format!("{PROJECT}_{view}_v{version}");
            sqlite::create_table(&conn, &table).unwrap();
            let value = Value {
                val: Some(Val::DoubleVal(f64::from(version))),
            }
            .encode_to_vec();
            let row = sqlite::WriteRow {
                entity_key: &k,
                feature: "f",
                value: &value,
                event_ts: 100,
                created_ts: None,
            };
            sqlite::write_rows(&mut conn, &table, [row]).unwrap();
        }
    }
}

struct Repo {
    _dir: tempfile::TempDir,
    yaml: PathBuf,
    registry: PathBuf,
}

fn repo(ttl_seconds: u64) -> Repo {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry.db");
    std::fs::write(&registry, registry_bytes(1, "a")).unwrap();
    write_online(&dir.path().join("online.db"));
    let yaml = dir.path().join("feature_store.yaml");
    std::fs::write(
        &yaml,
        format!(
            "project: {PROJECT}\nregistry:\n  path: registry.db\n  cache_ttl_seconds: {ttl_seconds}\n  \
             enable_online_feature_view_versioning: true\nonline_store:\n  type: sqlite\n  path: online.db\n"
        ),
    )
    .unwrap();
    Repo {
        _dir: dir,
        yaml,
        registry,
    }
}

/// A server over `repo`, a channel to it and its reload handle.
async fn serve(repo: &Repo) -> (TestServer, Channel, ReloadHandle) {
    let server = TestServer::start(&repo.yaml, Clock::Fixed(100))
        .await
        .unwrap();
    let ch = channel(&server.url()).await;
    let reload = server.reload.clone().unwrap();
    (server, ch, reload)
}

fn registry_bytes(version: i32, id: &str) -> Vec<u8> {
    registry(version, id).encode_to_vec()
}

/// Replaces the file the way atomic writers do: write aside, then rename over.
fn replace_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// One request reading both views: `(left, right)` values.
async fn read_both(ch: &tonic::transport::Channel) -> Result<(f64, f64), tonic::Status> {
    let mut req = refs_request(&["left:f", "right:f"], vec![("thing_id", vec![int64(1)])]);
    req.full_feature_names = true;
    let r = call(ch, Route::Serving, req).await?;
    let value = |name: &str| match column(&r, name).0.first().and_then(|v| v.val.clone()) {
        Some(Val::DoubleVal(v)) => v,
        other => panic!("{name}: {other:?}"),
    };
    Ok((value("left__f"), value("right__f")))
}

/// Every answer of the client loops: both views' values, or the error.
type Answers = Arc<Mutex<Vec<Result<(f64, f64), String>>>>;

/// Requests in a loop until stopped, recording every answer.
fn client_loop(
    ch: tonic::transport::Channel,
    seen: Answers,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !*stopped.borrow() {
            let r = read_both(&ch)
                .await
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()));
            seen.lock().unwrap().push(r);
            tokio::task::yield_now().await;
        }
    })
}

async fn serves_version(ch: &tonic::transport::Channel, version: f64) {
    eventually(DEADLINE, &format!("version {version} served"), || {
        let ch = ch.clone();
        async move { (read_both(&ch).await.ok() == Some((version, version))).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn swaps_under_load_never_fail_or_mix_snapshots() {
    let repo = repo(0);
    let (server, ch, reload) = serve(&repo).await;
    assert_eq!(read_both(&ch).await.unwrap(), (1.0, 1.0));

    let seen: Answers = Arc::default();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let loops: Vec<_> = (0..3)
        .map(|_| client_loop(ch.clone(), seen.clone(), stopped.clone()))
        .collect();

    for round in 0..3 {
        // Atomic rename (a new inode), then an in-place rewrite (Feast's way).
        replace_atomically(&repo.registry, &registry_bytes(2, &format!("b{round}")));
        serves_version(&ch, 2.0).await;
        std::fs::write(&repo.registry, registry_bytes(1, &format!("a{round}"))).unwrap();
        serves_version(&ch, 1.0).await;
    }
    let _ = stop.send(true);
    for l in loops {
        l.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    let (mut ones, mut twos) = (0, 0);
    for answer in seen.iter() {
        match answer {
            Ok((l, r)) if l == r => {
                if *l == 1.0 {
                    ones += 1
                } else {
                    twos += 1
                }
            }
            Ok((l, r)) => panic!("one request saw two snapshots: left v{l}, right v{r}"),
            Err(e) => panic!("a request failed during a reload: {e}"),
        }
    }
    assert!(
        ones > 0 && twos > 0,
        "both snapshots were served ({ones} / {twos})"
    );
    assert_eq!(reload.swaps(), 6, "every change published once");
    assert_eq!(reload.failures(), 0);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn broken_registries_keep_the_last_good_snapshot() {
    let repo = repo(0);
    let (server, ch, reload) = serve(&repo).await;

    let full = registry_bytes(2, "b");
    let mut no_projects = registry(2, "b");
    no_projects.projects.clear();
    let cut_at_boundary = no_projects.encode_to_vec();
    assert!(
        full.starts_with(&cut_at_boundary),
        "projects is the last field written"
    );
    let cut_mid_field = &full[..full.len() / 2];

    let broken: Vec<(&str, Option<Vec<u8>>)> = vec![
        (
            "garbage",
            Some(b"\xff\xfe not a registry \x00\x01".to_vec()),
        ),
        ("cut in the middle of a field", Some(cut_mid_field.to_vec())),
        (
            "cut at a field boundary (half-written)",
            Some(cut_at_boundary),
        ),
        ("empty", Some(Vec::new())),
        ("deleted", None),
    ];
    for (what, bytes) in broken {
        let failures = reload.failures();
        match bytes {
            Some(b) => std::fs::write(&repo.registry, b).unwrap(),
            None => std::fs::remove_file(&repo.registry).unwrap(),
        }
        eventually(
            DEADLINE,
            &format!("a failed reload of the {what} registry"),
            || async { (reload.failures() > failures).then_some(()) },
        )
        .await;
        assert_eq!(
            read_both(&ch).await.unwrap(),
            (1.0, 1.0),
            "{what}: the last good snapshot keeps serving"
        );
        // A good file again: served.
        replace_atomically(&repo.registry, &full);
        serves_version(&ch, 2.0).await;
        replace_atomically(
            &repo.registry,
            &registry_bytes(1, &format!("back after {what}")),
        );
        serves_version(&ch, 1.0).await;
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn same_content_swaps_nothing_and_force_republishes() {
    let repo = repo(1);
    let (server, _ch, reload) = serve(&repo).await;
    let generation = || server.serving.registry().snapshot().generation;
    assert_eq!(generation(), 1);

    // The 1 s timer reloads; identical content publishes nothing.
    eventually(DEADLINE, "a timer reload", || async {
        (reload.unchanged() >= 2).then_some(())
    })
    .await;
    assert_eq!((generation(), reload.swaps()), (1, 0));

    // A forced reload (SIGHUP) republishes regardless.
    reload.force();
    eventually(DEADLINE, "a forced swap", || async {
        (reload.swaps() == 1).then_some(())
    })
    .await;
    assert_eq!(generation(), 2);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn the_file_watch_alone_notices_a_rewrite() {
    // No timer: only the file watch can notice anything.
    let repo = repo(0);
    let (server, ch, reload) = serve(&repo).await;

    // Rewritten with the same content (same version_id): a new stamp, read once,
    // nothing published.
    replace_atomically(&repo.registry, &registry_bytes(1, "a"));
    eventually(DEADLINE, "the rewrite noticed", || async {
        (reload.unchanged() == 1).then_some(())
    })
    .await;
    assert_eq!(server.serving.registry().snapshot().generation, 1);
    assert_eq!(reload.swaps(), 0);

    // Rewritten in place with new content, as Feast writes: published.
    std::fs::write(&repo.registry, registry_bytes(2, "b")).unwrap();
    serves_version(&ch, 2.0).await;
    assert_eq!(reload.swaps(), 1);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_panicking_reload_is_counted_and_reloading_goes_on() {
    let repo = repo(0);
    let (server, ch, reload) = serve(&repo).await;

    reload.inject_panic();
    reload.force();
    eventually(DEADLINE, "the panicking reload counted", || async {
        (reload.failures() == 1).then_some(())
    })
    .await;
    assert_eq!(read_both(&ch).await.unwrap(), (1.0, 1.0), "still serving");

    // The reload task survived: the next change is picked up as usual.
    replace_atomically(&repo.registry, &registry_bytes(2, "b"));
    serves_version(&ch, 2.0).await;
    assert_eq!((reload.swaps(), reload.failures()), (1, 1));
    server.stop().await.unwrap();
}
