//! Command-line interface. Every `serve` flag has a `TERN_*` environment equivalent.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::telemetry::LogFormat;

/// Tern: a low-latency online feature server for Feast repositories.
#[derive(Debug, Parser)]
#[command(name = "tern", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "TERN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log level or filter (e.g. `info`, `tern=debug`); RUST_LOG wins when set.
    #[arg(long, global = true, env = "TERN_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve GetOnlineFeatures over gRPC for a Feast feature repo.
    Serve(ServeArgs),
    /// Ask a running server for features and print them as a table.
    Get(GetArgs),
    /// Ask a running server's gRPC health service; exit 0 only when it is SERVING.
    Health(HealthArgs),
    /// Show what `tern apply` would change; exit 1 when the plan breaks a rule.
    Plan(PlanArgs),
    /// Apply definitions to the registry (and create or drop online tables).
    Apply(ApplyArgs),
    /// A feature view's versions: list, show, diff, prune.
    Versions(VersionsArgs),
    /// Write the registry's project as definition files.
    Export(ExportArgs),
    /// Load each view's Parquet source between START and END into the online store.
    Materialize(MaterializeArgs),
    /// Load each view version from where its last materialization ended up to END.
    MaterializeIncremental(MaterializeIncrementalArgs),
}

/// What a materialization covers, shared by both commands.
#[derive(Debug, Args)]
pub struct MaterializeScope {
    /// Feast's feature_store.yaml.
    #[arg(long, env = "TERN_CONFIG", default_value = "feature_store.yaml")]
    pub config: PathBuf,
    /// Only these views (default: every online view).
    #[arg(long, num_args = 1..)]
    pub views: Vec<String>,
    /// Materialize this version (`v2`) of the one view given with --views.
    #[arg(long)]
    pub version: Option<String>,
    /// Only part K of N of the entities (by a hash of the entity key), e.g. `0/4`, so N
    /// processes can share one window. Records no interval.
    #[arg(long)]
    pub shard: Option<String>,
}

/// `tern materialize`.
#[derive(Debug, Args)]
pub struct MaterializeArgs {
    /// Window start (ISO 8601; naive times are UTC), inclusive.
    pub start: String,
    /// Window end, exclusive.
    pub end: String,
    /// Views, version, config.
    #[command(flatten)]
    pub scope: MaterializeScope,
}

/// `tern materialize-incremental`.
#[derive(Debug, Args)]
pub struct MaterializeIncrementalArgs {
    /// Window end, exclusive.
    pub end: String,
    /// Views, version, config.
    #[command(flatten)]
    pub scope: MaterializeScope,
}

/// `--config` and `-f`, shared by plan and apply.
#[derive(Debug, Args)]
pub struct DefinitionArgs {
    /// Feast's feature_store.yaml.
    #[arg(long, env = "TERN_CONFIG", default_value = "feature_store.yaml")]
    pub config: PathBuf,
    /// A definitions file, or a folder of *.yaml files; repeatable.
    #[arg(short = 'f', long = "file", required = true)]
    pub files: Vec<PathBuf>,
    /// Development environment: prevent_destroy is reported, not enforced (as
    /// `environment: development` in feature_store.yaml).
    #[arg(long)]
    pub dev: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// Output format of plan and apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned text, coloured on a terminal.
    Text,
    /// One JSON document.
    Json,
}

/// `tern plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Definitions.
    #[command(flatten)]
    pub defs: DefinitionArgs,
    /// Plan as `apply --no-promote` would.
    #[arg(long)]
    pub no_promote: bool,
}

/// `tern apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Definitions.
    #[command(flatten)]
    pub defs: DefinitionArgs,
    /// Record new versions without activating them (staged publishing).
    #[arg(long)]
    pub no_promote: bool,
}

/// `tern versions`.
#[derive(Debug, Args)]
pub struct VersionsArgs {
    /// Feast's feature_store.yaml.
    #[arg(
        long,
        env = "TERN_CONFIG",
        default_value = "feature_store.yaml",
        global = true
    )]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: VersionsSub,
}

/// `tern versions` subcommands.
#[derive(Debug, Subcommand)]
pub enum VersionsSub {
    /// VERSION, TYPE, CREATED, VERSION_ID as Feast lists them, plus ACTIVE and MATERIALIZED.
    List {
        /// Feature view.
        view: String,
    },
    /// One version's definition, as definition YAML.
    Show {
        /// Feature view.
        view: String,
        /// Version (`v2`, `version2`).
        version: String,
    },
    /// Features added, removed and retyped, and entities, between two versions.
    Diff {
        /// Feature view.
        view: String,
        /// From version.
        from: String,
        /// To version.
        to: String,
    },
    /// Drop old versions (history records and tables); never the active or a staged one.
    Prune {
        /// Feature view.
        view: String,
        /// Newest versions to keep.
        #[arg(long)]
        keep: usize,
        /// Development environment: prevent_destroy not enforced.
        #[arg(long)]
        dev: bool,
    },
}

/// `tern export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Feast's feature_store.yaml.
    #[arg(long, env = "TERN_CONFIG", default_value = "feature_store.yaml")]
    pub config: PathBuf,
    /// Output folder.
    #[arg(short = 'o', long = "output", default_value = ".")]
    pub out: PathBuf,
}

/// `tern serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Feast's feature_store.yaml; relative paths in it resolve against its folder.
    #[arg(long, env = "TERN_CONFIG")]
    pub config: PathBuf,
    /// gRPC listen address. Loopback by default (a sidecar shares the pod's loopback);
    /// use 0.0.0.0:6566 to accept remote clients.
    #[arg(long, env = "TERN_GRPC_ADDR", default_value = "127.0.0.1:6566")]
    pub grpc_addr: SocketAddr,
    /// Also serve Feast's HTTP API alone on this address (it is always served on the
    /// gRPC address too, for requests that are not gRPC).
    #[arg(long, env = "TERN_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, env = "TERN_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Also serve gRPC health checks, always plaintext, on this address: for
    /// Kubernetes gRPC probes, which cannot verify a certificate.
    #[arg(long, env = "TERN_HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,
    /// Serve TLS on --grpc-addr and --http-addr with this certificate chain (PEM, leaf
    /// first). Re-read when it changes or on SIGHUP.
    #[arg(long, env = "TERN_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "TERN_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates that chain to these CA certificates (PEM): mutual
    /// TLS.
    #[arg(long, env = "TERN_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Upper bound for one RPC, in milliseconds.
    #[arg(long, env = "TERN_REQUEST_TIMEOUT_MS", default_value_t = 5000)]
    pub request_timeout_ms: u64,
    /// Time in-flight RPCs get to finish on SIGTERM, in seconds.
    #[arg(long, env = "TERN_DRAIN_TIMEOUT_S", default_value_t = 10)]
    pub drain_timeout_s: u64,
    /// Upper bound for one request's online-store reads (SQLite or Redis; also for
    /// connecting to Redis), in milliseconds; a slower read answers DEADLINE_EXCEEDED.
    #[arg(long, env = "TERN_STORE_TIMEOUT_MS", default_value_t = 250)]
    pub store_timeout_ms: u64,
    /// Upper bound for connecting to a SQL registry and for each of its reads, in
    /// milliseconds; a reload that takes longer fails and the last good snapshot
    /// keeps serving.
    #[arg(long, env = "TERN_REGISTRY_TIMEOUT_MS", default_value_t = 10_000)]
    pub registry_timeout_ms: u64,
    /// How often a registry file is checked for a change (default 500 ms), or a
    /// registry in object storage asked for its ETag (default 5000 ms: one HEAD
    /// request each time), in milliseconds.
    #[arg(long, env = "TERN_REGISTRY_POLL_MS", value_parser = clap::value_parser!(u64).range(10..))]
    pub registry_poll_ms: Option<u64>,
    /// Multiplexed connections to a single Redis server (requests are spread over them).
    #[arg(long, env = "TERN_REDIS_CONNECTIONS", default_value_t = 1)]
    pub redis_connections: usize,
    /// If the registry cannot be loaded at start-up, keep retrying every second (logging
    /// why) instead of exiting. The gRPC port opens once it loads.
    #[arg(long, env = "TERN_WAIT_FOR_REGISTRY")]
    pub wait_for_registry: bool,
    /// SQLite reader threads (default: number of CPUs, at least 2).
    #[arg(long, env = "TERN_SQLITE_READERS")]
    pub sqlite_readers: Option<usize>,
    /// SQLite reads of at most this many entity keys run on the request's own thread
    /// instead of a reader thread (no hand-off; never waits on a lock, stopped and
    /// handed over after 250 µs of work). 0 sends every read to the reader threads.
    #[arg(long, env = "TERN_SQLITE_INLINE_KEYS", default_value_t = crate::store::SqliteSettings::INLINE_MAX_KEYS)]
    pub sqlite_inline_keys: usize,
    /// Bytes of the SQLite file each read connection maps into memory (e.g. 1073741824):
    /// pages are then read from the OS's file cache without a system call, which pays
    /// for reads of many keys. 0 (the default) maps nothing. Keep 0 for a database on a
    /// network file system: an I/O error in a mapped page stops the process instead of
    /// failing one read.
    #[arg(long, env = "TERN_SQLITE_MMAP_SIZE", default_value_t = crate::store::SqliteSettings::MMAP_SIZE)]
    pub sqlite_mmap_size: u64,
    /// Largest accepted request, in bytes.
    #[arg(long, env = "TERN_MAX_REQUEST_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_request_bytes: usize,
    /// Requests answered at once; more answer RESOURCE_EXHAUSTED instead of queueing.
    #[arg(long, env = "TERN_MAX_CONCURRENT_REQUESTS", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_concurrent_requests: u64,
    /// Entity rows in one request; a larger one answers RESOURCE_EXHAUSTED.
    #[arg(long, env = "TERN_MAX_ENTITY_ROWS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_entity_rows: u64,
}

/// `tern get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Server address.
    #[arg(long, env = "TERN_ADDR", default_value = "http://127.0.0.1:6566")]
    pub addr: String,
    /// Comma-separated feature refs, e.g. `driver_stats:conv_rate,driver_stats@v1:acc_rate`.
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "feature_service",
        conflicts_with = "feature_service"
    )]
    pub features: Vec<String>,
    /// A feature service instead of refs.
    #[arg(long)]
    pub feature_service: Option<String>,
    /// An entity column: `join_key=value[,value...]`; repeat for more columns. Values
    /// are sent as strings and converted by the server to the join key's type.
    #[arg(long = "entity", required = true)]
    pub entities: Vec<String>,
    /// Name columns `view__feature`.
    #[arg(long)]
    pub full_feature_names: bool,
    /// Also print the feature views and versions read.
    #[arg(long)]
    pub metadata: bool,
    /// Also print event timestamps.
    #[arg(long)]
    pub timestamps: bool,
    /// Which gRPC service to call.
    #[arg(long, value_enum, default_value_t = ServicePath::Serving)]
    pub service: ServicePath,
    /// TLS to the server.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

/// A client's TLS options (`tern get`, `tern health`). Any of them, or an `https://`
/// address, turns TLS on.
#[derive(Debug, Clone, Default, Args)]
pub struct ClientTlsArgs {
    /// Trust the server's certificate only if it chains to these CA certificates (PEM);
    /// without it, the system's trusted CAs.
    #[arg(long, env = "TERN_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for a server that asks for one (mutual TLS).
    #[arg(long = "tls-cert", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long = "tls-key", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The name the server's certificate must carry (default: the host of --addr).
    #[arg(long)]
    pub tls_server_name: Option<String>,
}

impl ClientTlsArgs {
    /// Whether any TLS option was given.
    pub fn any(&self) -> bool {
        self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_server_name.is_some()
    }
}

/// `tern health`: for exec probes and Docker's `HEALTHCHECK`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Server address (`http://` is assumed when no scheme is given).
    #[arg(long, env = "TERN_ADDR", default_value = "http://127.0.0.1:6566")]
    pub addr: String,
    /// The health service to ask: `""` is ready to serve (registry loaded, online store
    /// answering), `liveness` is the process answering at all.
    #[arg(long, default_value = "")]
    pub service: String,
    /// Give up after this many milliseconds (connecting included).
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    /// TLS to the server.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

/// The two services serving GetOnlineFeatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServicePath {
    /// `/feast.serving.ServingService/GetOnlineFeatures`.
    Serving,
    /// `/GrpcFeatureServer/GetOnlineFeatures` (what `feast listen` serves).
    FeatureServer,
}
