//! A registry in object storage (`registry: s3://bucket/key`), against a local
//! S3-compatible server (moto in server mode, started here; never a cloud): the daemon
//! serves it, reloads on a new object, keeps the last good snapshot on a broken one;
//! writes are conditional, so a concurrent writer is a conflict, not a lost update.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use prost::Message as _;
use tern::proto::feast::core as pb;
use tern::proto::feast::serving::FieldStatus;
use tern::registry::object::ObjectSource;
use tern::registry::{RegistryError, RegistrySource};
use tonic::Code;

use crate::daemon::Daemon;
use crate::redis_support::free_port;
use crate::support::*;

const DEADLINE: Duration = Duration::from_secs(30);
/// The moto release the tests were written against.
const MOTO: &str = "moto[server]==5.2.6";
const BUCKET: &str = "feast-registry";
const KEY: &str = "feast/registry.db";

/// `moto_server` from a venv under `~/.cache/tern` (made on first use; CI makes it
/// beforehand), or from `TERN_MOTO_SERVER`.
fn moto_server() -> PathBuf {
    if let Ok(path) = std::env::var("TERN_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let home = std::env::var("HOME").expect("HOME");
    let venv = Path::new(&home).join(".cache/tern/moto-venv");
    let server = venv.join("bin/moto_server");
    std::fs::create_dir_all(venv.parent().expect("cache dir")).expect("cache dir");
    // Tests run in parallel: one of them installs, the others wait for it.
    let lock = std::fs::File::create(venv.with_extension("lock")).expect("lock file");
    lock.lock().expect("lock");
    if !server.exists() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 -m venv");
        assert!(made.success(), "python3 -m venv {}", venv.display());
        let installed = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", MOTO])
            .status()
            .expect("pip");
        assert!(
            installed.success(),
            "pip install '{MOTO}' failed: the object-registry tests need moto (PyPI)"
        );
    }
    server
}

/// A moto S3 server on a free loopback port, with one bucket; killed on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    async fn start() -> Self {
        let server = moto_server();
        let port = free_port();
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        // Creating the bucket is also the readiness check: retried until it answers.
        let python = server.with_file_name("python");
        let script = format!(
            "import boto3,sys\n\
             s3=boto3.client('s3',endpoint_url='{}',aws_access_key_id='test',aws_secret_access_key='test',region_name='us-east-1')\n\
             s3.create_bucket(Bucket='{BUCKET}')\n",
            moto.endpoint
        );
        eventually(DEADLINE, "moto creates the bucket", || {
            let (python, script) = (python.clone(), script.clone());
            async move {
                let out = tokio::process::Command::new(&python)
                    .args(["-c", &script])
                    .output()
                    .await
                    .expect("python");
                out.status.success().then_some(())
            }
        })
        .await;
        moto
    }

    /// What `tern` reads its S3 settings from, as an operator sets them.
    fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn url(&self) -> String {
        format!("s3://{BUCKET}/{KEY}")
    }

    /// The registry object as Tern's writers see it.
    fn source(&self) -> ObjectSource {
        ObjectSource::with_options(&self.url(), Duration::from_secs(10), self.env())
            .expect("object source")
    }

    /// Replaces the object whatever it holds (what Feast's writer does).
    async fn upload(&self, bytes: Vec<u8>) {
        use object_store::ObjectStoreExt as _;
        // As Tern does: object_store's HTTP client brings no crypto provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_region("us-east-1")
            .build()
            .expect("s3 client");
        store
            .put(&object_store::path::Path::from(KEY), bytes.into())
            .await
            .expect("upload");
    }

    async fn download(&self) -> pb::Registry {
        self.source().read().await.expect("read the registry").0
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn example_registry() -> pb::Registry {
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/feature_repo/data/registry.db"),
    )
    .expect("example registry");
    pb::Registry::decode(bytes.as_slice()).expect("decode")
}

fn without_view(mut registry: pb::Registry, view: &str, version_id: &str) -> pb::Registry {
    registry
        .feature_views
        .retain(|v| v.spec.as_ref().is_none_or(|s| s.name != view));
    registry.version_id = version_id.to_owned();
    registry
}

fn view_names(registry: &pb::Registry) -> Vec<String> {
    let mut names: Vec<String> = registry
        .feature_views
        .iter()
        .filter_map(|v| v.spec.as_ref().map(|s| s.name.clone()))
        .collect();
    names.sort();
    names
}

/// The example repo with its registry at `url` and a copy of its online store.
fn repo_yaml(dir: &Path, url: &str) -> PathBuf {
    let online = dir.join("online.db");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/feature_repo/data/online.db"),
        &online,
    )
    .expect("copy the online store");
    let yaml = dir.join("feature_store.yaml");
    std::fs::write(
        &yaml,
        format!(
            "project: tern_demo\nprovider: local\nregistry:\n  path: {url}\n  cache_ttl_seconds: 0\n  enable_online_feature_view_versioning: true\nonline_store:\n  type: sqlite\n  path: {}\nentity_key_serialization_version: 3\n",
            online.display()
        ),
    )
    .expect("write yaml");
    yaml
}

fn zone_request() -> tern::proto::tern::wire::GetOnlineFeaturesRequest {
    refs_request(&["zone_stats:demand"], vec![("zone_id", vec![int32(1)])])
}

/// The daemon on `registry: s3://…` serves it; a new object is picked up by the
/// ETag poll; a broken object is logged naming the URL and the last good snapshot
/// keeps serving; a good object after it is served again.
#[tokio::test]
async fn s3_registry_serves_reloads_and_keeps_the_last_good() {
    let moto = Moto::start().await;
    let original = example_registry();
    moto.upload(original.encode_to_vec()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = repo_yaml(dir.path(), &moto.url());
    let env = moto.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut daemon = Daemon::spawn_with_env(
        &[
            "serve",
            "--config",
            yaml.to_str().expect("utf-8"),
            "--grpc-addr",
            "127.0.0.1:0",
            "--registry-poll-ms",
            "50",
            "--log-format",
            "json",
        ],
        &env,
    );
    let loaded = daemon.wait_for_log("registry snapshot loaded");
    assert_eq!(loaded["source"], moto.url().as_str(), "{loaded}");
    let serving = daemon.wait_for_log("serving gRPC");
    let url = format!("http://{}", serving["addr"].as_str().expect("addr"));
    let ch = channel(&url).await;
    let zone = call(&ch, Route::Serving, zone_request())
        .await
        .expect("zone_stats is served");
    assert_eq!(zone.results[1].statuses, [FieldStatus::Present as i32]);
    let conv_rate = call(&ch, Route::Serving, conv_rate_request())
        .await
        .expect("driver_stats is served");

    // A new registry object: zone_stats removed.
    moto.upload(without_view(original.clone(), "zone_stats", "tern-test-2").encode_to_vec())
        .await;
    let changed = daemon.wait_for_log("registry snapshot loaded");
    assert_eq!(
        (changed["reason"].as_str(), changed["generation"].as_u64()),
        (Some("changed"), Some(2)),
        "{changed}"
    );
    let gone = call(&ch, Route::Serving, zone_request())
        .await
        .expect_err("zone_stats is gone");
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");

    // A broken object: refused, logged with its URL; generation 2 keeps serving.
    moto.upload(b"this is not a registry".to_vec()).await;
    let failed =
        daemon.wait_for_log("registry reload failed; still serving the last good snapshot");
    let error = failed["error"].as_str().expect("error");
    assert!(error.contains(&moto.url()), "{failed}");
    assert_eq!(failed["generation"].as_u64(), Some(2), "{failed}");
    let still = call(&ch, Route::Serving, conv_rate_request())
        .await
        .expect("the last good snapshot serves");
    assert_eq!(still, conv_rate);

    moto.upload(original.encode_to_vec()).await;
    daemon.wait_for_log("registry loads again");
    let back = call(&ch, Route::Serving, zone_request())
        .await
        .expect("zone_stats is back");
    assert_eq!(back.results[1].statuses, [FieldStatus::Present as i32]);
    drop(ch);
    assert!(daemon.terminate().await.success());
}

/// Writes state the version they read: of two writers that read the same registry,
/// the second to commit gets a conflict and changes nothing; creating a registry
/// that appeared meanwhile is a conflict too.
#[tokio::test]
async fn s3_registry_writes_are_conditional() {
    let moto = Moto::start().await;
    let mut first = RegistrySource::Object(moto.source());
    let mut second = RegistrySource::Object(moto.source());
    let model = |r: pb::Registry| tern::registry::RegistryModel::from_file(r);

    // Both find no registry; the first creates it, the second's create conflicts.
    let a = first.begin("tern_demo").await.expect("begin");
    let b = second.begin("tern_demo").await.expect("begin");
    assert!(a.model().header.version_id.is_empty());
    a.commit(model(example_registry()), std::time::SystemTime::now())
        .await
        .expect("create");
    let refused = b
        .commit(
            model(without_view(example_registry(), "zone_stats", "")),
            std::time::SystemTime::now(),
        )
        .await
        .expect_err("the registry exists now");
    assert!(
        matches!(refused, RegistryError::Conflict { .. }),
        "{refused}"
    );
    assert_eq!(
        view_names(&moto.download().await),
        view_names(&example_registry())
    );

    // Both read version 1; the first replaces it, the second's update conflicts.
    let a = first.begin("tern_demo").await.expect("begin");
    let b = second.begin("tern_demo").await.expect("begin");
    a.commit(
        model(without_view(example_registry(), "zone_stats", "")),
        std::time::SystemTime::now(),
    )
    .await
    .expect("update");
    let refused = b
        .commit(
            model(without_view(example_registry(), "global_stats", "")),
            std::time::SystemTime::now(),
        )
        .await
        .expect_err("the registry changed since it was read");
    assert!(
        refused.to_string().contains(&moto.url()),
        "names the registry: {refused}"
    );
    let stored = moto.download().await;
    assert_eq!(
        view_names(&stored),
        view_names(&without_view(example_registry(), "zone_stats", "")),
        "the first writer's registry, untouched by the refused one"
    );
    assert!(!stored.version_id.is_empty());
}

/// `tern apply` and `tern plan` on an S3 registry, as an operator runs them: the
/// first apply creates the registry object; planning again finds nothing to do.
#[tokio::test]
async fn tern_apply_creates_an_s3_registry() {
    let moto = Moto::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/feature_repo");
    let yaml = repo_yaml(dir.path(), &moto.url());
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(args)
            .args(["--config", yaml.to_str().expect("utf-8")])
            .args(["-f", repo.join("definitions.yaml").to_str().expect("utf-8")])
            .args([
                "-f",
                repo.join("driver_stats.yaml").to_str().expect("utf-8"),
            ])
            .envs(moto.env())
            .current_dir(dir.path())
            .output()
            .expect("run tern")
    };
    let applied = run(&["apply"]);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let out = String::from_utf8_lossy(&applied.stdout);
    assert!(
        out.contains(&format!("Applied to {}.", moto.url())),
        "{out}"
    );
    let stored = moto.download().await;
    assert_eq!(
        view_names(&stored),
        [
            "customer_profile",
            "driver_customer",
            "driver_stats",
            "global_stats",
            "zone_stats"
        ]
    );
    let planned = run(&["plan"]);
    assert!(planned.status.success());
    let plan = String::from_utf8_lossy(&planned.stdout);
    assert!(plan.contains("No changes."), "{plan}");
}
