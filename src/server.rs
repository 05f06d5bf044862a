//! The daemon: builds the serving core from config and runs the gRPC and HTTP server.
//!
//! `run` takes bound listeners and a shutdown future, so tests, benches and `main`
//! start the same server. On the main port a request whose content type is
//! `application/grpc*` goes to gRPC and any other to Feast's HTTP API
//! ([`crate::http`]); an optional second port serves the HTTP API alone.
//! Shutdown sequence:
//! 1. the shutdown future resolves (SIGTERM/SIGINT in `main`);
//! 2. the store watcher and the registry reloader are stopped wherever they are (a hung
//!    store or registry must not delay shutdown), and health turns NOT_SERVING, so
//!    probes and health-checking clients stop sending (the `liveness` health service
//!    alone stays SERVING: a draining server must not be restarted);
//! 3. the listener stops accepting, every connection is asked to finish (HTTP/2
//!    GOAWAY) and in-flight RPCs drain, for at most `drain_timeout`, after which the
//!    remaining connections are dropped;
//! 4. `run` returns; dropping the serving core stops the store's reader threads.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;

use crate::auth::Authenticator;
use crate::config::{OnlineStoreConfig, RepoConfig};
use crate::grpc::{
    FEATURE_SERVER_NAME, FeatureService, GrpcFeatureServerServer, LIVENESS_NAME,
    ONLINE_WRITER_NAME, OnlineWriterServer, SERVING_SERVICE_NAME, ServingServiceServer,
};
use crate::http::{HttpApi, Readiness};
use crate::metrics as m;
use crate::registry::{RegistryError, ReloadHandle, Reloader};
use crate::serving::{Clock, Serving};
use crate::store::{
    OnlineStore, RedisSettings, RedisStore, SqliteSettings, SqliteStore, Store, StoreError,
};
use crate::tls::ServerTls;

/// Server knobs (CLI flags).
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Upper bound for one RPC (a client's shorter `grpc-timeout` wins); a slower one
    /// answers DEADLINE_EXCEEDED rather than holding a stream forever.
    pub request_timeout: Duration,
    /// How long in-flight RPCs may take to finish after shutdown starts.
    pub drain_timeout: Duration,
    /// Largest request accepted (bytes); bounds memory per request.
    pub max_request_bytes: usize,
    /// Largest response sent (bytes).
    pub max_response_bytes: usize,
    /// The `feature_store.yaml` served, for the HTTP API's materialize endpoints
    /// (`None`: they answer 501).
    pub config_path: Option<std::path::PathBuf>,
    /// TLS on the main and HTTP ports (`None`: plaintext). The health port, if any,
    /// stays plaintext.
    pub tls: Option<Arc<ServerTls>>,
    /// Who may call (feature_store.yaml's `auth`). Health checks and reflection stay
    /// open.
    pub auth: Authenticator,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
            max_request_bytes: 16 * 1024 * 1024,
            max_response_bytes: 64 * 1024 * 1024,
            config_path: None,
            tls: None,
            auth: Authenticator::None,
        }
    }
}

/// Online store and registry knobs (CLI flags).
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// SQLite reader threads (each owns one read-only connection).
    pub sqlite_readers: usize,
    /// SQLite reads of at most this many keys run on the request's own thread (0: all
    /// go to the reader threads).
    pub sqlite_inline_keys: usize,
    /// Bytes of the SQLite file each read connection memory-maps (0: none).
    pub sqlite_mmap_size: u64,
    /// Upper bound for one request's reads from the online store (SQLite or Redis),
    /// and for connecting to Redis. Well under a second: a feature lookup that takes
    /// longer is better answered with an error the model server can act on.
    pub timeout: Duration,
    /// Upper bound for connecting to a SQL registry or object store and for each of
    /// its reads.
    pub registry_timeout: Duration,
    /// How often the registry file or object is checked for a change (`None`: the
    /// default for its kind).
    pub registry_poll: Option<Duration>,
    /// Multiplexed connections to a single Redis server.
    pub redis_connections: usize,
    /// At start-up, wait (retrying every second) for a loadable registry instead of
    /// exiting.
    pub wait_for_registry: bool,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            sqlite_readers: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(2),
            sqlite_inline_keys: SqliteSettings::INLINE_MAX_KEYS,
            sqlite_mmap_size: SqliteSettings::MMAP_SIZE,
            timeout: Duration::from_millis(250),
            registry_timeout: Duration::from_secs(10),
            registry_poll: None,
            redis_connections: 1,
            wait_for_registry: false,
        }
    }
}

/// Why the daemon cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The registry cannot be loaded.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The online store cannot be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A configuration this build does not serve.
    #[error("{0}")]
    Unsupported(String),
    /// Reflection descriptors could not be registered.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Loads the registry and opens the online store named by `config`. Blocking.
pub async fn open_serving(
    config: &RepoConfig,
    store: &StoreSettings,
    clock: Clock,
) -> Result<(Serving, Reloader), StartupError> {
    let reloader = if store.wait_for_registry {
        Reloader::open_waiting(config, store.registry_timeout, REGISTRY_RETRY).await
    } else {
        Reloader::open(config, store.registry_timeout).await?
    };
    let reloader = match store.registry_poll {
        Some(poll) => reloader.with_poll(poll),
        None => reloader,
    };
    let store = match &config.online_store {
        OnlineStoreConfig::Sqlite { path } => {
            let path = path.clone();
            let settings = SqliteSettings {
                inline_max_keys: store.sqlite_inline_keys,
                mmap_size: store.sqlite_mmap_size,
                ..SqliteSettings::new(store.sqlite_readers, store.timeout)
            };
            // Opening checks the file: blocking work, off the reactor.
            Store::Sqlite(
                tokio::task::spawn_blocking(move || SqliteStore::open(&path, settings))
                    .await
                    .map_err(|e| StartupError::Unsupported(e.to_string()))??,
            )
        }
        OnlineStoreConfig::Redis(redis) => Store::Redis(RedisStore::open(
            redis,
            &config.project,
            RedisSettings {
                timeout: store.timeout,
                connections: store.redis_connections,
            },
        )?),
    };
    Ok((Serving::new(reloader.registry(), store, clock), reloader))
}

/// How often `--wait-for-registry` tries again.
const REGISTRY_RETRY: Duration = Duration::from_secs(1);

/// Forces a registry reload on every SIGHUP, for as long as the process runs.
pub async fn reload_on_sighup(handle: ReloadHandle) {
    #[cfg(unix)]
    {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; registry reloads by timer only");
                return;
            }
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading the registry");
            handle.force();
        }
    }
    #[cfg(not(unix))]
    drop(handle);
}

/// Where the server listens.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC and the HTTP API, told apart by content type.
    pub main: TcpListener,
    /// The HTTP API alone (`--http-addr`), if wanted.
    pub http: Option<TcpListener>,
    /// gRPC health checks alone, always plaintext (`--health-addr`): Kubernetes' gRPC
    /// probes cannot verify a certificate.
    pub health: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(main: TcpListener) -> Self {
        Self {
            main,
            http: None,
            health: None,
        }
    }
}

/// What health reports, to gRPC health clients and to `GET /health`.
#[derive(Clone)]
struct HealthState {
    reporter: tonic_health::server::HealthReporter,
    readiness: Readiness,
}

/// Serves gRPC and HTTP on `listeners` until `shutdown` resolves, then drains (see
/// module docs).
pub async fn run(
    listeners: impl Into<Listeners>,
    serving: Arc<Serving>,
    reloader: Option<Reloader>,
    settings: &ServerSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    let Listeners {
        main: listener,
        http: http_listener,
        health: health_listener,
    } = listeners.into();
    let local = listener
        .local_addr()
        .map_or_else(|e| e.to_string(), |a| a.to_string());
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health = HealthState {
        reporter,
        readiness: Readiness::default(),
    };
    // The registry is loaded before `run` is called; whether we are ready now depends
    // on the online store answering, and is kept up to date by the watcher.
    let up = check_store(&serving, None).await;
    health
        .reporter
        .set_service_status(LIVENESS_NAME, ServingStatus::Serving)
        .await;
    set_all(
        &health,
        if up {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        },
    )
    .await;
    let (stop_watch, stopped) = watch::channel(false);
    let watcher = tokio::spawn(watch_store(
        serving.clone(),
        health.clone(),
        up,
        stopped.clone(),
    ));
    let reloads = reloader.map(|r| tokio::spawn(r.run(stopped)));
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::REFLECTION_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::REFLECTION_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let http_api = HttpApi::new(
        serving.clone(),
        health.readiness.clone(),
        settings.request_timeout,
        settings.max_request_bytes,
        settings.config_path.clone(),
    )
    .router();
    let service = FeatureService::new(serving, settings.request_timeout);
    let serving_service = ServingServiceServer::new(service.clone())
        .max_decoding_message_size(settings.max_request_bytes)
        .max_encoding_message_size(settings.max_response_bytes);
    let feature_server = GrpcFeatureServerServer::new(service.clone())
        .max_decoding_message_size(settings.max_request_bytes)
        .max_encoding_message_size(settings.max_response_bytes);
    let writer = OnlineWriterServer::new(service)
        .max_decoding_message_size(settings.max_request_bytes)
        .max_encoding_message_size(settings.max_response_bytes);

    let health_routes = tonic::service::Routes::new(health_service.clone())
        .prepare()
        .into_axum_router();
    let routes = tonic::service::Routes::new(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(serving_service)
        .add_service(feature_server)
        .add_service(writer)
        .prepare()
        .into_axum_router();

    let reporter = health.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutdown requested: health NOT_SERVING, draining in-flight requests");
        // Stop the health watcher and the reloader wherever they are: a store ping or
        // a registry read that hangs must not delay the drain. The watcher is stopped
        // before health is set, so it cannot turn it back to SERVING.
        let _ = stop_watch.send(true);
        watcher.abort();
        let _ = watcher.await;
        if let Some(reloads) = reloads {
            reloads.abort();
            let _ = reloads.await;
        }
        set_all(&reporter, ServingStatus::NotServing).await;
    };

    // One shutdown for every listener.
    let (stop_accepting, accepting) = watch::channel(false);
    tokio::spawn(async move {
        signal.await;
        let _ = stop_accepting.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let tls = settings.tls.clone();
    if let Some(tls) = &tls {
        tokio::spawn(tls.clone().watch(accepting.clone()));
    }
    let auth = settings.auth.clone();
    if auth.enabled() {
        tokio::spawn(auth.clone().run(accepting.clone()));
    }
    let health_port = health_listener.map(|health_listener| {
        let addr = health_listener
            .local_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string());
        tracing::info!(%addr, "serving gRPC health checks (plaintext)");
        serve_connections(
            health_listener,
            health_routes,
            None,
            stopped(accepting.clone()),
            settings.drain_timeout,
        )
    });
    let main = Authenticated {
        inner: Dispatch {
            grpc: routes,
            http: http_api.clone(),
        },
        auth: auth.clone(),
    };
    let http_api = Authenticated {
        inner: http_api,
        auth,
    };
    let tls_on = tls.is_some();
    tracing::info!(addr = %local, tls = tls_on, "serving gRPC");
    tracing::info!(addr = %local, tls = tls_on, "serving the HTTP API");
    let main = serve_connections(
        listener,
        main,
        tls.clone(),
        stopped(accepting.clone()),
        settings.drain_timeout,
    );
    let main = async move {
        match health_port {
            Some(health) => {
                tokio::join!(main, health);
            }
            None => main.await,
        }
    };
    match http_listener {
        Some(http_listener) => {
            let http_local = http_listener
                .local_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string());
            tracing::info!(addr = %http_local, tls = tls_on, "serving the HTTP API");
            let http = serve_connections(
                http_listener,
                http_api,
                tls,
                stopped(accepting),
                settings.drain_timeout,
            );
            tokio::join!(main, http);
        }
        None => main.await,
    }
    tracing::info!("server stopped");
    Ok(())
}

/// Sends gRPC calls (content type `application/grpc*`) to the gRPC routes and every
/// other request to the HTTP API.
#[derive(Clone)]
struct Dispatch {
    grpc: axum::Router,
    http: axum::Router,
}

impl<B> tower_service::Service<axum::http::Request<B>> for Dispatch
where
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = axum::routing::future::RouteFuture<std::convert::Infallible>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Routers are always ready.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        let grpc = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
        let router = if grpc { &mut self.grpc } else { &mut self.http };
        tower_service::Service::call(router, req)
    }
}

/// Authenticates every call but health checks and reflection before it is routed,
/// and hands the [`Principal`](crate::auth::Principal) on in the request's
/// extensions; refuses the others as UNAUTHENTICATED (gRPC) or 401 (HTTP). The token
/// never reaches a log line or a metric label.
#[derive(Clone)]
struct Authenticated<S> {
    inner: S,
    auth: Authenticator,
}

/// Calls open to everyone: probes and tooling must work without a token.
fn open_to_all(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.v1.ServerReflection/")
        || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
        || path == "/health"
}

/// Refused calls logged, at most a few a second.
static AUTH_LOG: crate::telemetry::LogLimiter = crate::telemetry::LogLimiter::new(1);

/// A call refused as unauthenticated: counted, logged (rate-limited, never the
/// token), answered in the caller's protocol.
fn auth_refusal<B>(
    req: &axum::http::Request<B>,
    e: &crate::auth::AuthError,
) -> axum::response::Response {
    metrics::counter!(m::AUTH_FAILURES, "reason" => e.label()).increment(1);
    if let Some(suppressed) = AUTH_LOG.admit() {
        tracing::info!(path = %crate::error::clip(req.uri().path()), reason = e.label(), error = %e, suppressed, "call refused: not authenticated");
    }
    let grpc = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        crate::grpc::status::auth_status(e)
            .into_http::<axum::body::Body>()
            .map(axum::body::Body::new)
    } else {
        crate::http::auth_refused(e)
    }
}

type Answer = Result<axum::response::Response, std::convert::Infallible>;

impl<S, B> tower_service::Service<axum::http::Request<B>> for Authenticated<S>
where
    S: tower_service::Service<
            axum::http::Request<B>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Either<
        S::Future,
        futures_util::future::Either<
            std::future::Ready<Answer>,
            std::pin::Pin<Box<dyn Future<Output = Answer> + Send>>,
        >,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: axum::http::Request<B>) -> Self::Future {
        use crate::auth::Check;
        use futures_util::future::Either;
        if !self.auth.enabled() || open_to_all(req.uri().path()) {
            return Either::Left(self.inner.call(req));
        }
        let authorization = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        match self.auth.check(authorization) {
            Check::Ready(Ok(principal)) => {
                req.extensions_mut().insert(principal);
                Either::Left(self.inner.call(req))
            }
            Check::Ready(Err(e)) => {
                Either::Right(Either::Left(std::future::ready(Ok(auth_refusal(&req, &e)))))
            }
            Check::Pending(verdict) => {
                // The service polled ready goes with the call; a clone stays.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Either::Right(Either::Right(Box::pin(async move {
                    match verdict.await {
                        Ok(principal) => {
                            req.extensions_mut().insert(principal);
                            inner.call(req).await
                        }
                        Err(e) => Ok(auth_refusal(&req, &e)),
                    }
                })))
            }
        }
    }
}

/// TCP keepalive on accepted connections: finds peers that vanished without a word.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// HTTP/2 pings on idle connections (sidecar connections are long-lived).
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections and serves `routes` on them until `shutdown` resolves; then
/// stops accepting, asks every connection to finish (HTTP/2 GOAWAY: in-flight calls
/// complete, no new ones start) and waits for them at most `drain_timeout`.
///
/// Our own loop rather than tonic's `Server`: tonic's server wraps every call in its
/// own `grpc-timeout` deadline and answers CANCELLED when it fires, before the
/// handler and past every metric. Here the handlers own deadlines (DEADLINE_EXCEEDED,
/// counted), and the HTTP API can share the port later.
async fn serve_connections<S>(
    listener: TcpListener,
    routes: S,
    tls: Option<Arc<ServerTls>>,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
) where
    S: tower_service::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(H2_KEEPALIVE_INTERVAL))
        .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT);
    let service = TowerToHyperService::new(routes);
    let connections = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    if let Some(suppressed) = ACCEPT_LOG.admit() {
                        tracing::warn!(error = %e, suppressed, "cannot accept a connection");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small responses must not wait on delayed ACKs.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
        if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive) {
            tracing::debug!(%peer, error = %e, "cannot set TCP keepalive");
        }
        let Some(tls) = &tls else {
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service.clone())
                .into_owned();
            let conn = connections.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
            continue;
        };
        // The handshake runs in the connection's own task, with the config current
        // now: a slow or silent client never holds up the accept loop.
        let acceptor = tls.acceptor();
        let (builder, service, watcher) = (builder.clone(), service.clone(), connections.watcher());
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => return handshake_failed(peer, &e.to_string()),
                    Err(_) => return handshake_failed(peer, "no handshake within 10 s"),
                };
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = connections.shutdown() => {}
        () = tokio::time::sleep(drain_timeout) => tracing::warn!(
            timeout_s = drain_timeout.as_secs_f64(),
            "drain timeout reached; closing remaining connections"
        ),
    }
}

/// Accept failures logged, at most a few a second.
static ACCEPT_LOG: crate::telemetry::LogLimiter = crate::telemetry::LogLimiter::new(1);
/// Failed TLS handshakes logged, at most a few a second.
static HANDSHAKE_LOG: crate::telemetry::LogLimiter = crate::telemetry::LogLimiter::new(1);
/// Time a client gets to complete its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Counts and logs (rate-limited) a TLS handshake that failed: an untrusted or missing
/// client certificate, plaintext sent to a TLS port, a client that gave up.
fn handshake_failed(peer: std::net::SocketAddr, error: &str) {
    metrics::counter!(m::TLS_HANDSHAKE_FAILURES).increment(1);
    if let Some(suppressed) = HANDSHAKE_LOG.admit() {
        tracing::info!(%peer, %error, suppressed, "TLS handshake failed");
    }
}

/// How often the store is checked while it answers, and while it does not.
const STORE_CHECK_UP: Duration = Duration::from_secs(1);
const STORE_CHECK_DOWN: Duration = Duration::from_millis(250);

async fn set_all(health: &HealthState, status: ServingStatus) {
    health.readiness.set(status == ServingStatus::Serving);
    for name in [
        "",
        SERVING_SERVICE_NAME,
        FEATURE_SERVER_NAME,
        ONLINE_WRITER_NAME,
    ] {
        health.reporter.set_service_status(name, status).await;
    }
}

/// Pings the online store; logs and counts a change from `was_up`.
async fn check_store(serving: &Serving, was_up: Option<bool>) -> bool {
    let store = serving.store();
    let result = store.ping().await;
    let up = result.is_ok();
    metrics::gauge!(m::STORE_UP, "store" => store.kind().as_str()).set(if up { 1.0 } else { 0.0 });
    match (was_up, &result) {
        (Some(true) | None, Err(e)) => {
            tracing::error!(error = %e, "online store not answering: health NOT_SERVING until it does")
        }
        (Some(false), Ok(())) => {
            metrics::counter!(m::STORE_RECONNECTS, "store" => store.kind().as_str()).increment(1);
            tracing::info!("online store answering again: health SERVING");
        }
        _ => {}
    }
    up
}

/// Keeps health in step with the online store until `stop` turns true.
async fn watch_store(
    serving: Arc<Serving>,
    health: HealthState,
    mut up: bool,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let wait = if up { STORE_CHECK_UP } else { STORE_CHECK_DOWN };
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let now_up = check_store(&serving, Some(up)).await;
        if now_up != up {
            set_all(
                &health,
                if now_up {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                },
            )
            .await;
            up = now_up;
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
