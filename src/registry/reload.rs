//! Keeping the served snapshot fresh without disturbing requests.
//!
//! The [`Reloader`] owns the registry source and runs as one background task. It
//! reloads every `cache_ttl_seconds` (0: never by timer), on a forced reload (SIGHUP,
//! [`ReloadHandle::force`]), for a file registry as soon as the file has changed and
//! then stayed the same for one more poll, and for a registry in object storage as
//! soon as its ETag or version changes (an object is replaced whole, so one poll
//! suffices). Reading, decoding and indexing run off
//! the async reactor; the result is published with one atomic swap. A registry that
//! does not load (missing, garbage, truncated, half-written, wrong project) is logged
//! with its file and cause, counted, and retried; the last good snapshot keeps serving.
//! A reload that finds the same content (`version_id` and `last_updated` for a file,
//! the table fingerprint for SQL) publishes nothing. A reload that panics is caught,
//! logged and counted as failed like any other; reloading goes on.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt as _;
use tokio::sync::{mpsc, watch};

use super::file::{self, FileStamp};
use super::model::RegistryModel;
use super::source::{Fingerprint, RegistrySource, Stamp};
use super::{Registry, RegistryError, Snapshot, SnapshotSettings};
use crate::config::RepoConfig;
use crate::metrics as m;

/// How often a file registry is `stat`ed for changes.
pub const FILE_POLL: Duration = Duration::from_millis(500);
/// How often a registry object's metadata is asked for (a HEAD request: cheap, but
/// billed per request).
pub const OBJECT_POLL: Duration = Duration::from_secs(5);

/// Counters a caller can read (tests, diagnostics).
#[derive(Debug, Default)]
pub struct ReloadStats {
    swaps: AtomicU64,
    unchanged: AtomicU64,
    failures: AtomicU64,
}

/// A cheap, cloneable handle to a running [`Reloader`].
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    force: mpsc::Sender<()>,
    stats: Arc<ReloadStats>,
    #[cfg(feature = "testing")]
    panic_next: Arc<std::sync::atomic::AtomicBool>,
}

impl ReloadHandle {
    /// Asks for a reload now (re-read, rebuild and publish, even if unchanged).
    pub fn force(&self) {
        // A full queue already holds a pending forced reload.
        let _ = self.force.try_send(());
    }

    /// Snapshots published by reloads (the initial load not counted).
    pub fn swaps(&self) -> u64 {
        self.stats.swaps.load(Ordering::Relaxed)
    }

    /// Reloads that found the same content.
    pub fn unchanged(&self) -> u64 {
        self.stats.unchanged.load(Ordering::Relaxed)
    }

    /// Reload attempts that failed.
    pub fn failures(&self) -> u64 {
        self.stats.failures.load(Ordering::Relaxed)
    }

    /// Makes the next reload attempt panic, as a bug would (tests only).
    #[cfg(feature = "testing")]
    pub fn inject_panic(&self) {
        self.panic_next.store(true, Ordering::SeqCst);
    }
}

/// What identifies the content last published.
#[derive(Debug, Clone, PartialEq)]
struct Loaded {
    fingerprint: Fingerprint,
    /// The file or object as read.
    stamp: Option<Stamp>,
}

/// What a reload did.
#[derive(Debug)]
pub enum Outcome {
    /// A new snapshot was published.
    Swapped(Arc<Snapshot>),
    /// The content was the same; nothing was published.
    Unchanged,
}

/// Loads the registry and keeps it fresh. See the module docs.
pub struct Reloader {
    registry: Arc<Registry>,
    source: RegistrySource,
    name: String,
    settings: SnapshotSettings,
    ttl: Option<Duration>,
    /// How often the file or object is checked for a change.
    poll: Duration,
    loaded: Loaded,
    /// A file stamp seen once, waiting to be seen again before it is read.
    pending: Option<FileStamp>,
    /// The last failure logged, so a failure that repeats every poll is logged once.
    last_error: Option<String>,
    force_tx: mpsc::Sender<()>,
    force_rx: mpsc::Receiver<()>,
    stats: Arc<ReloadStats>,
    #[cfg(feature = "testing")]
    panic_next: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("source", &self.name)
            .finish()
    }
}

impl Reloader {
    /// Loads the registry `config` names. Fails if it cannot be loaded. A SQL
    /// registry's connection and reads are bounded by `timeout`.
    pub async fn open(config: &RepoConfig, timeout: Duration) -> Result<Self, RegistryError> {
        let settings = SnapshotSettings::from_config(config);
        let mut source = RegistrySource::open(config, timeout)?;
        let name = source.name();
        let started = Instant::now();
        let read = source.read(&settings.project).await?;
        let loaded = Loaded {
            fingerprint: read.fingerprint,
            stamp: read.stamp,
        };
        let registry = Arc::new(Registry::new(build(read.model, &settings, &name).await?));
        record_success(&registry.snapshot(), started, &name, "initial");
        let (force_tx, force_rx) = mpsc::channel(1);
        let poll = if source.object().is_some() {
            OBJECT_POLL
        } else {
            FILE_POLL
        };
        Ok(Self {
            registry,
            source,
            name,
            settings,
            ttl: config.registry.cache_ttl,
            poll,
            loaded,
            pending: None,
            last_error: None,
            force_tx,
            force_rx,
            stats: Arc::default(),
            #[cfg(feature = "testing")]
            panic_next: Arc::default(),
        })
    }

    /// Like [`open`](Self::open), but keeps retrying every `retry` until the registry
    /// loads, logging each new failure.
    pub async fn open_waiting(config: &RepoConfig, timeout: Duration, retry: Duration) -> Self {
        let mut last = String::new();
        loop {
            match Self::open(config, timeout).await {
                Ok(r) => return r,
                Err(e) => {
                    let text = e.to_string();
                    if text != last {
                        tracing::error!(error = %text, "registry not loadable yet; waiting for it (--wait-for-registry)");
                        last = text;
                    }
                }
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Checks the registry file or object for a change every `poll` instead of the
    /// default ([`FILE_POLL`], [`OBJECT_POLL`]).
    #[must_use]
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// The published registry.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// A handle to force reloads and read counters.
    pub fn handle(&self) -> ReloadHandle {
        ReloadHandle {
            force: self.force_tx.clone(),
            stats: self.stats.clone(),
            #[cfg(feature = "testing")]
            panic_next: self.panic_next.clone(),
        }
    }

    /// Reloads now. `forced` publishes even unchanged content.
    pub async fn reload(&mut self, forced: bool) -> Result<Outcome, RegistryError> {
        let started = Instant::now();
        // SQL: the fingerprint alone says whether anything changed.
        if !forced
            && let Some(current) = self.source.fingerprint(&self.settings.project).await?
            && current == self.loaded.fingerprint
        {
            return Ok(Outcome::Unchanged);
        }
        let read = self.source.read(&self.settings.project).await?;
        let loaded = Loaded {
            fingerprint: read.fingerprint,
            stamp: read.stamp,
        };
        if !forced && loaded.fingerprint == self.loaded.fingerprint {
            // Touched, or copied over unchanged: remember the new stamp, keep serving.
            self.loaded = loaded;
            return Ok(Outcome::Unchanged);
        }
        let snapshot = self
            .registry
            .publish(build(read.model, &self.settings, &self.name).await?);
        self.loaded = loaded;
        record_success(
            &snapshot,
            started,
            &self.name,
            if forced { "forced" } else { "changed" },
        );
        Ok(Outcome::Swapped(snapshot))
    }

    /// Runs until `stop` turns true. See the module docs for when it reloads.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let file = self.source.file().is_some();
        let object = self.source.object().is_some();
        let mut ttl = self
            .ttl
            .map(|d| tokio::time::interval_at(tokio::time::Instant::now() + d, d));
        let mut poll = tokio::time::interval(self.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                Some(()) = self.force_rx.recv() => self.attempt(true).await,
                () = tick(&mut ttl) => self.attempt(false).await,
                _ = poll.tick(), if file || object => {
                    if file {
                        self.poll_file().await;
                    } else {
                        self.poll_object().await;
                    }
                }
            }
        }
    }

    /// One poll of a file registry: read it once a change has held for a whole poll.
    async fn poll_file(&mut self) {
        let Some(path) = self.source.file() else {
            return;
        };
        let path = path.to_owned();
        let stamp = match tokio::task::spawn_blocking(move || file::stamp(&path)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return self.failed(&e),
            Err(e) => return self.failed(&RegistryError::Unsupported(e.to_string())),
        };
        let current = match &self.loaded.stamp {
            Some(Stamp::File(s)) => Some(*s),
            _ => None,
        };
        if Some(stamp) == current && self.last_error.is_none() {
            self.pending = None;
            return;
        }
        if self.pending == Some(stamp) || (Some(stamp) == current && self.last_error.is_some()) {
            self.pending = None;
            self.attempt(false).await;
        } else {
            self.pending = Some(stamp);
        }
    }

    /// One poll of a registry object: read it as soon as its version changed (or
    /// again, after a failed read).
    async fn poll_object(&mut self) {
        let Some(object) = self.source.object() else {
            return;
        };
        let stamp = match object.stamp().await {
            Ok(s) => Stamp::Object(s),
            Err(e) => return self.failed(&e),
        };
        if self.loaded.stamp.as_ref() != Some(&stamp) || self.last_error.is_some() {
            self.attempt(false).await;
        }
    }

    async fn attempt(&mut self, forced: bool) {
        // A panic in a reload (a bug) must not end reloading silently: it is caught
        // here, counted and logged as a failed reload, and the next one runs as usual.
        let outcome = AssertUnwindSafe(self.reload_checked(forced))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_owned());
                Err(RegistryError::Unsupported(format!(
                    "the reload panicked (a bug in Tern; please report it): {what}"
                )))
            });
        match outcome {
            Ok(Outcome::Swapped(_)) => {
                self.stats.swaps.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(m::REGISTRY_RELOADS, "result" => "swapped").increment(1);
                self.recovered();
            }
            Ok(Outcome::Unchanged) => {
                self.stats.unchanged.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(m::REGISTRY_RELOADS, "result" => "unchanged").increment(1);
                metrics::gauge!(m::REGISTRY_LAST_SUCCESS).set(unix_now());
                tracing::debug!(source = %self.name, "registry unchanged");
                self.recovered();
            }
            Err(e) => self.failed(&e),
        }
    }

    async fn reload_checked(&mut self, forced: bool) -> Result<Outcome, RegistryError> {
        #[cfg(feature = "testing")]
        if self.panic_next.swap(false, Ordering::SeqCst) {
            panic!("injected reload panic");
        }
        self.reload(forced).await
    }

    fn failed(&mut self, e: &RegistryError) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::REGISTRY_RELOADS, "result" => "failed").increment(1);
        let text = e.to_string();
        if self.last_error.as_deref() != Some(&text) {
            tracing::error!(
                source = %self.name,
                error = %text,
                generation = self.registry.snapshot().generation,
                "registry reload failed; still serving the last good snapshot"
            );
            self.last_error = Some(text);
        }
    }

    fn recovered(&mut self) {
        if self.last_error.take().is_some() {
            tracing::info!(source = %self.name, "registry loads again");
        }
    }
}

/// Indexes a registry into a snapshot, off the reactor. Its generation is set when
/// it is published.
async fn build(
    model: RegistryModel,
    settings: &SnapshotSettings,
    name: &str,
) -> Result<Snapshot, RegistryError> {
    let (settings, name) = (settings.clone(), name.to_owned());
    tokio::task::spawn_blocking(move || Snapshot::build(&model, &settings, 0, &name))
        .await
        .map_err(|e| RegistryError::Unsupported(e.to_string()))?
}

/// Waits for the next tick of an optional timer; forever when there is none.
async fn tick(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn record_success(snapshot: &Snapshot, started: Instant, source: &str, why: &'static str) {
    let elapsed = started.elapsed();
    metrics::gauge!(m::REGISTRY_GENERATION).set(snapshot.generation as f64);
    metrics::histogram!(m::REGISTRY_LOAD_SECONDS).record(elapsed.as_secs_f64());
    metrics::gauge!(m::REGISTRY_LAST_SUCCESS).set(unix_now());
    tracing::info!(
        generation = snapshot.generation,
        source = %source,
        reason = why,
        project = %snapshot.settings.project,
        views = snapshot.view_count(),
        services = snapshot.service_count(),
        entities = snapshot.entity_count(),
        permissions = snapshot.permissions().len(),
        load_ms = elapsed.as_secs_f64() * 1e3,
        "registry snapshot loaded"
    );
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
