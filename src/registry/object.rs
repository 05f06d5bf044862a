//! Feast's file registry kept in object storage: `s3://`, `gs://` and `az://` paths,
//! holding the same bytes as a local `registry.db`.
//!
//! Owns: the store client for the path's scheme (credentials, region and endpoint
//! from the environment, as each cloud's own tools read them), the cheap change check
//! (the object's ETag and version: a HEAD), whole reads, and conditional writes. An
//! object is replaced atomically by the store, so a reader never sees half a registry
//! and no "stable for one more poll" rule is needed. A write states the version it
//! read (`If-Match`, or create-only when there was none): a concurrent writer makes it
//! fail as a conflict instead of losing an update, and `tern apply` plans again.
//! Every call is bounded by the registry timeout.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, UpdateVersion};

use super::RegistryError;
use super::file;
use crate::proto::feast::core as pb;

/// The URL schemes read from object storage.
pub const SCHEMES: &[&str] = &["s3", "s3a", "gs", "az", "abfs", "abfss"];

/// Feast's own variable for an S3-compatible endpoint (MinIO, Ceph, ...);
/// `AWS_ENDPOINT_URL` works as well.
const FEAST_S3_ENDPOINT: &str = "FEAST_S3_ENDPOINT_URL";

/// Which version of the object was read: changes whenever the object is rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectStamp {
    e_tag: Option<String>,
    version: Option<String>,
}

impl ObjectStamp {
    fn of(meta: &object_store::ObjectMeta) -> Self {
        Self {
            e_tag: meta.e_tag.clone(),
            version: meta.version.clone(),
        }
    }

    fn update_version(&self) -> UpdateVersion {
        UpdateVersion {
            e_tag: self.e_tag.clone(),
            version: self.version.clone(),
        }
    }
}

/// A registry object: its store, its key, and the URL it was named by.
#[derive(Debug)]
pub struct ObjectSource {
    store: Arc<dyn ObjectStore>,
    key: ObjectPath,
    url: String,
    timeout: Duration,
}

impl ObjectSource {
    /// The store for `url` (`s3://bucket/key`, `gs://bucket/key`, `az://container/key`),
    /// configured from the process environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`,
    /// `FEAST_S3_ENDPOINT_URL`), as each cloud's SDK reads it. Nothing is contacted yet.
    pub fn from_url(url: &str, timeout: Duration) -> Result<Self, RegistryError> {
        Self::with_options(url, timeout, std::env::vars())
    }

    /// Like [`from_url`](Self::from_url), with `options` (`NAME`, value) in place of
    /// the process environment.
    pub fn with_options(
        url: &str,
        timeout: Duration,
        options: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, RegistryError> {
        // reqwest is built without a crypto provider of its own: the process uses
        // ring's, as every other TLS client here. Already installed is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let options: Vec<(String, String)> =
            options.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        let option = |name: &str| {
            options
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        // Each cloud's keys, by prefix, as its SDK reads them (`AWS_REGION` → region).
        let keyed = |prefix: &str| {
            options
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect::<Vec<_>>()
        };
        let invalid = |why: String| RegistryError::Object {
            url: url.to_owned(),
            detail: why,
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("not a URL".into()))?;
        let key = rest
            .split_once('/')
            .map(|(_, key)| key)
            .filter(|k| !k.is_empty() && !k.ends_with('/'))
            .ok_or_else(|| {
                invalid(format!(
                    "no object key: write the registry file's full path, e.g. {scheme}://bucket/feast/registry.db"
                ))
            })?;
        let key = ObjectPath::parse(key).map_err(|e| invalid(e.to_string()))?;
        let built: object_store::Result<Arc<dyn ObjectStore>> = match scheme {
            "s3" | "s3a" => {
                let mut builder = object_store::aws::AmazonS3Builder::new();
                for (k, v) in keyed("AWS_") {
                    if let Ok(k) = k.parse() {
                        builder = builder.with_config(k, v);
                    }
                }
                builder = builder.with_url(url.replacen("s3a://", "s3://", 1));
                if let Some(endpoint) = option(FEAST_S3_ENDPOINT) {
                    builder = builder.with_endpoint(endpoint);
                }
                // An endpoint the operator wrote as http:// is meant to be used as is
                // (a local MinIO); object_store refuses plain HTTP unless told.
                let endpoint = option(FEAST_S3_ENDPOINT)
                    .or_else(|| option("AWS_ENDPOINT_URL"))
                    .or_else(|| option("AWS_ENDPOINT"))
                    .unwrap_or_default();
                if endpoint.starts_with("http://") {
                    builder = builder.with_allow_http(true);
                }
                builder.build().map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            }
            "gs" => {
                let mut builder = object_store::gcp::GoogleCloudStorageBuilder::new();
                for (k, v) in keyed("GOOGLE_") {
                    if let Ok(k) = k.parse() {
                        builder = builder.with_config(k, v);
                    }
                }
                if let Some(path) = option("SERVICE_ACCOUNT") {
                    builder = builder.with_service_account_path(path);
                }
                builder
                    .with_url(url)
                    .build()
                    .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            }
            "az" | "abfs" | "abfss" => {
                let mut builder = object_store::azure::MicrosoftAzureBuilder::new();
                for (k, v) in keyed("AZURE_") {
                    if let Ok(k) = k.parse() {
                        builder = builder.with_config(k, v);
                    }
                }
                if let Some(endpoint) = option("IDENTITY_ENDPOINT") {
                    builder = builder.with_msi_endpoint(endpoint);
                }
                builder
                    .with_url(url)
                    .build()
                    .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            }
            other => {
                return Err(invalid(format!(
                    "'{other}://' is not an object store Tern reads (s3://, gs://, az://)"
                )));
            }
        };
        let store = built.map_err(|e| invalid(e.to_string()))?;
        Ok(Self {
            store,
            key,
            url: url.to_owned(),
            timeout,
        })
    }

    /// The URL, for messages (credentials never appear in it).
    pub fn name(&self) -> &str {
        &self.url
    }

    /// The object's current version, without reading it.
    pub async fn stamp(&self) -> Result<ObjectStamp, RegistryError> {
        let meta = self.bounded(self.store.head(&self.key)).await?;
        Ok(ObjectStamp::of(&meta))
    }

    /// Reads and decodes the registry; returns it with the version read.
    pub async fn read(&self) -> Result<(pb::Registry, ObjectStamp), RegistryError> {
        let (bytes, stamp) = self.fetch().await?;
        let path = PathBuf::from(&self.url);
        let proto = tokio::task::spawn_blocking(move || file::decode(&bytes, &path))
            .await
            .map_err(|e| RegistryError::Unsupported(format!("registry decode task: {e}")))??;
        Ok((proto, stamp))
    }

    /// Like [`read`](Self::read) for a writer: a registry that does not exist yet is
    /// `None` (the write creates it).
    pub async fn read_for_update(
        &self,
    ) -> Result<Option<(pb::Registry, ObjectStamp)>, RegistryError> {
        match self.read().await {
            Ok(read) => Ok(Some(read)),
            Err(RegistryError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the object with `bytes` if it is still the version `read` (or, for
    /// `None`, still absent); otherwise fails with [`RegistryError::Conflict`] and
    /// writes nothing.
    pub async fn replace(
        &self,
        bytes: Vec<u8>,
        read: Option<&ObjectStamp>,
    ) -> Result<(), RegistryError> {
        let mode = match read {
            Some(stamp) => PutMode::Update(stamp.update_version()),
            None => PutMode::Create,
        };
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        let put = self
            .store
            .put_opts(&self.key, Bytes::from(bytes).into(), options);
        match tokio::time::timeout(self.timeout, put).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            )) => Err(RegistryError::Conflict {
                source_name: self.url.clone(),
                detail: "another writer replaced the registry object since it was read".into(),
            }),
            Ok(Err(e)) => Err(self.error(e)),
            Err(_) => Err(self.timed_out()),
        }
    }

    async fn fetch(&self) -> Result<(Bytes, ObjectStamp), RegistryError> {
        let fetch = async {
            let got = self.store.get(&self.key).await?;
            let stamp = ObjectStamp::of(&got.meta);
            Ok::<_, object_store::Error>((got.bytes().await?, stamp))
        };
        self.bounded(fetch).await
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = object_store::Result<T>>,
    ) -> Result<T, RegistryError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.error(e)),
            Err(_) => Err(self.timed_out()),
        }
    }

    fn error(&self, e: object_store::Error) -> RegistryError {
        match e {
            object_store::Error::NotFound { .. } => {
                RegistryError::NotFound(PathBuf::from(&self.url))
            }
            other => RegistryError::Object {
                url: self.url.clone(),
                detail: other.to_string(),
            },
        }
    }

    fn timed_out(&self) -> RegistryError {
        RegistryError::Object {
            url: self.url.clone(),
            detail: format!(
                "no answer within {} ms (--registry-timeout-ms)",
                self.timeout.as_millis()
            ),
        }
    }
}

/// Whether a registry path names object storage.
pub fn is_object_url(path: &str) -> bool {
    path.split_once("://")
        .is_some_and(|(scheme, _)| SCHEMES.contains(&scheme))
}
