//! Feast's HTTP JSON API (`feast serve` 0.67), from the same serving core as gRPC.
//!
//! Owns: the routes, the request body limit and deadline, the mapping from core errors
//! to HTTP statuses and Feast's error bodies (`status.rs`), and the HTTP metrics. Reads
//! go through the serving core, writes through the same writer as gRPC, and
//! materializations run `tern materialize`'s code on a thread of their own.
//! Bodies are Feast's byte for byte (`response.rs`, `json.rs`) except where
//! `docs/compatibility.md` says otherwise.
//! Does not own: which requests reach it (`server.rs` sends it everything on the gRPC
//! port whose content type is not `application/grpc*`).

mod json;
mod request;
mod response;
mod status;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;

use crate::metrics as m;
use crate::serving::{Request as ServingRequest, Selection, Serving};
use crate::telemetry::LogLimiter;
use crate::writes::{Cells, Column as WriteColumn, Target, WriteRequest, Writer};

pub use status::status_for;

/// Server-side failures logged, at most this many lines a second (the rest counted).
static FAILURE_LOG: LogLimiter = LogLimiter::new(5);

const GET_ONLINE_FEATURES: &str = "/get-online-features";
const PUSH: &str = "/push";
const WRITE_TO_ONLINE_STORE: &str = "/write-to-online-store";
const MATERIALIZE: &str = "/materialize";
const MATERIALIZE_INCREMENTAL: &str = "/materialize-incremental";

/// Whether `/health` answers 200: the server's readiness, shared with gRPC health.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Sets whether the server is ready.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    /// Whether the server is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What the HTTP handlers share.
#[derive(Debug)]
pub struct HttpApi {
    serving: Arc<Serving>,
    writer: Writer,
    readiness: Readiness,
    /// Upper bound for one request.
    request_timeout: Duration,
    /// Largest accepted body.
    max_request_bytes: usize,
    /// The `feature_store.yaml` the materialize endpoints run on.
    config_path: Option<std::path::PathBuf>,
    /// Held while a materialization runs: one at a time.
    materializing: Arc<tokio::sync::Mutex<()>>,
    /// `tern_http_requests_total` and the duration of a 200 on `/get-online-features`,
    /// registered once (other outcomes are rare and use the macros).
    served: (metrics::Counter, metrics::Histogram),
}

impl HttpApi {
    /// Handlers over `serving`.
    pub fn new(
        serving: Arc<Serving>,
        readiness: Readiness,
        request_timeout: Duration,
        max_request_bytes: usize,
        config_path: Option<std::path::PathBuf>,
    ) -> Self {
        Self {
            writer: Writer::new(serving.registry().clone(), serving.store().clone()),
            serving,
            readiness,
            request_timeout,
            max_request_bytes,
            config_path,
            materializing: Arc::default(),
            served: handles(GET_ONLINE_FEATURES, StatusCode::OK),
        }
    }

    /// The routes of `feast serve` that Tern answers; everything else is a JSON 404
    /// (or 405 for a known path with another method), as FastAPI answers.
    pub fn router(self) -> Router {
        Router::new()
            .route(GET_ONLINE_FEATURES, post(get_online_features))
            .route("/health", get(health))
            .route(PUSH, post(push))
            .route(WRITE_TO_ONLINE_STORE, post(write_to_online_store))
            .route(MATERIALIZE, post(materialize))
            .route(MATERIALIZE_INCREMENTAL, post(materialize_incremental))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(Arc::new(self))
    }
}

fn handles(path: &'static str, status: StatusCode) -> (metrics::Counter, metrics::Histogram) {
    let code = status.as_str().to_owned();
    (
        metrics::counter!(m::HTTP_REQUESTS, "path" => path, "status" => code.clone()),
        metrics::histogram!(m::HTTP_DURATION, "path" => path, "status" => code),
    )
}

fn record(path: &'static str, status: StatusCode, started: Instant) {
    let (count, duration) = handles(path, status);
    count.increment(1);
    duration.record(started.elapsed().as_secs_f64());
}

/// A JSON body with its status.
/// A request refused before routing because its caller is not authenticated: 401
/// (503 while the provider's keys are unavailable) with FastAPI's `{"detail": ...}`,
/// as Feast's server answers.
pub(crate) fn auth_refused(err: &crate::auth::AuthError) -> Response {
    let status = status_for(err.kind());
    let mut body = b"{\"detail\":".to_vec();
    json::string(&mut body, &crate::error::cap_message(err.to_string()));
    body.push(b'}');
    let mut response = json_response(status, Bytes::from(body));
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

fn json_response(status: StatusCode, body: Bytes) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A refused request: counted, logged at debug, answered with its status and body.
fn refused(
    path: &'static str,
    started: Instant,
    code: StatusCode,
    body: Bytes,
    why: &str,
) -> Response {
    record(path, code, started);
    tracing::debug!(path, status = code.as_u16(), error = why, "request refused");
    json_response(code, body)
}

/// A request whose body does not parse: FastAPI's 422.
fn unprocessable(path: &'static str, started: Instant, problem: &request::Problem) -> Response {
    let why = format!("{}: {}", problem.path(), problem.msg);
    refused(
        path,
        started,
        StatusCode::UNPROCESSABLE_ENTITY,
        status::validation_body(problem),
        &why,
    )
}

/// A failed request: counted; logged as a warning (rate-limited) when the server is at
/// fault, at debug when the client is.
fn failed(
    path: &'static str,
    started: Instant,
    (code, body): (StatusCode, Bytes),
    server_side: bool,
    error: &dyn std::fmt::Display,
) -> Response {
    record(path, code, started);
    if server_side {
        if let Some(suppressed) = FAILURE_LOG.admit() {
            tracing::warn!(path, status = code.as_u16(), error = %error, suppressed, "request failed");
        }
    } else {
        tracing::debug!(path, status = code.as_u16(), error = %error, "request refused");
    }
    json_response(code, body)
}

/// The whole request body, within `--max-request-bytes`; a refusal (413 or 400) as the
/// response.
async fn read_body(
    api: &HttpApi,
    body: Body,
    path: &'static str,
    started: Instant,
) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, api.max_request_bytes)
        .await
        .map_err(|err| {
            let (code, text) = status::body_error(&err, api.max_request_bytes);
            refuse(path, started, code, &text)
        })
}

async fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        Bytes::from_static(br#"{"detail":"Not Found"}"#),
    )
}

async fn method_not_allowed() -> Response {
    json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        Bytes::from_static(br#"{"detail":"Method Not Allowed"}"#),
    )
}

/// 200 with no body while the server is ready (registry loaded, store answering, not
/// shutting down); 503 otherwise. Feast answers the same two.
async fn health(State(api): State<Arc<HttpApi>>) -> StatusCode {
    if api.readiness.get() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn get_online_features(
    State(api): State<Arc<HttpApi>>,
    caller: Caller,
    body: Body,
) -> Response {
    let started = Instant::now();
    let bytes = match read_body(&api, body, GET_ONLINE_FEATURES, started).await {
        Ok(bytes) => bytes,
        Err(refusal) => return refusal,
    };
    let body = match request::parse(&bytes) {
        Ok(body) => body,
        Err(problem) => return unprocessable(GET_ONLINE_FEATURES, started, &problem),
    };
    let selection = match &body.feature_service {
        Some(service) => Some(Selection::Service(service)),
        None => Some(Selection::Refs(&body.features)),
    };
    let result = api
        .serving
        .get_online_features(ServingRequest {
            selection,
            entities: &body.entities.0,
            full_feature_names: body.full_feature_names,
            include_metadata: body.include_feature_view_version_metadata,
            deadline: Some(api.request_timeout),
            caller: caller.as_ref().map(|c| c.0.as_ref()),
        })
        .await;
    let answer = result.map_err(status::ServingFailure).and_then(|answer| {
        response::online_features(&answer)
            .map_err(|bad| status::ServingFailure(crate::serving::Error::Internal(bad.to_string())))
    });
    match answer {
        Ok(json) => {
            let (count, duration) = &api.served;
            count.increment(1);
            duration.record(started.elapsed().as_secs_f64());
            json_response(StatusCode::OK, json)
        }
        Err(failure) => failed(
            GET_ONLINE_FEATURES,
            started,
            failure.response(),
            failure.0.kind().is_server_side(),
            &failure.0,
        ),
    }
}

/// `/write-to-online-store`'s body (Feast's `WriteToFeatureStoreRequest`; its cache and
/// transformation flags do not apply to Tern).
#[derive(Debug, serde::Deserialize)]
struct WriteBody {
    feature_view_name: String,
    df: serde_json::Map<String, serde_json::Value>,
}

/// `/push`'s body (Feast's `PushFeaturesRequest`).
#[derive(Debug, serde::Deserialize)]
struct PushBody {
    push_source_name: String,
    df: serde_json::Map<String, serde_json::Value>,
    #[serde(default = "online")]
    to: String,
}

fn online() -> String {
    "online".to_owned()
}

/// Writes the active version of a view, as Feast's `write_to_online_store`; answers
/// `null`, as Feast does.
/// The authenticated caller, set by the server's authentication when it is on.
type Caller = Option<axum::Extension<Arc<crate::auth::Principal>>>;

async fn write_to_online_store(
    State(api): State<Arc<HttpApi>>,
    caller: Caller,
    body: Body,
) -> Response {
    let started = Instant::now();
    let parsed = match read_json::<WriteBody>(&api, body, WRITE_TO_ONLINE_STORE, started).await {
        Ok(parsed) => parsed,
        Err(refused) => return refused,
    };
    let target = Target::View {
        name: &parsed.feature_view_name,
        version: None,
    };
    let who = caller.as_ref().map(|c| c.0.as_ref());
    let done = write_df(
        &api,
        who,
        target,
        &parsed.df,
        WRITE_TO_ONLINE_STORE,
        started,
    )
    .await;
    done.unwrap_or_else(|| json_response(StatusCode::OK, Bytes::from_static(b"null")))
}

/// Writes every view fed by a push source, as Feast's `push` (online only); answers 200
/// with no body, as Feast does.
async fn push(State(api): State<Arc<HttpApi>>, caller: Caller, body: Body) -> Response {
    let started = Instant::now();
    let parsed = match read_json::<PushBody>(&api, body, PUSH, started).await {
        Ok(parsed) => parsed,
        Err(refused) => return refused,
    };
    if let Err(err) = crate::writes::check_push_mode(&parsed.to) {
        return failed(PUSH, started, status::write_response(&err), false, &err);
    }
    let target = Target::PushSource(&parsed.push_source_name);
    let who = caller.as_ref().map(|c| c.0.as_ref());
    let done = write_df(&api, who, target, &parsed.df, PUSH, started).await;
    done.unwrap_or_else(|| StatusCode::OK.into_response())
}

/// Reads and parses a JSON body; a refusal (413, 400 or 422) as the response.
async fn read_json<T: serde::de::DeserializeOwned>(
    api: &HttpApi,
    body: Body,
    path: &'static str,
    started: Instant,
) -> Result<T, Response> {
    let bytes = read_body(api, body, path, started).await?;
    serde_json::from_slice(&bytes)
        .map_err(|err| unprocessable(path, started, &request::Problem::body(&err)))
}

/// Writes the columns of `df` to `target`; `None` when written, else the refusal.
async fn write_df(
    api: &HttpApi,
    caller: Option<&crate::auth::Principal>,
    target: Target<'_>,
    df: &serde_json::Map<String, serde_json::Value>,
    path: &'static str,
    started: Instant,
) -> Option<Response> {
    let mut columns = Vec::with_capacity(df.len());
    for (name, values) in df {
        let serde_json::Value::Array(values) = values else {
            let problem = request::Problem::not_a_list(name, values);
            return Some(unprocessable(path, started, &problem));
        };
        columns.push(WriteColumn {
            name,
            cells: Cells::Json(values),
        });
    }
    let result = api
        .writer
        .write(&WriteRequest {
            target,
            columns,
            event_times: &[],
            default_event_time: None,
            caller,
        })
        .await;
    match result {
        Ok(summary) => {
            record(path, StatusCode::OK, started);
            tracing::debug!(
                path,
                written = summary.written(),
                skipped = summary.skipped(),
                "write done"
            );
            None
        }
        Err(err) => Some(failed(
            path,
            started,
            status::write_response(&err),
            err.kind().is_server_side(),
            &err,
        )),
    }
}

/// `/materialize`'s body (Feast's `MaterializeRequest`; `full_feature_names` does not
/// apply to the online store).
#[derive(Debug, serde::Deserialize)]
struct MaterializeBody {
    start_ts: Option<String>,
    end_ts: Option<String>,
    feature_views: Option<Vec<String>>,
    #[serde(default)]
    disable_event_timestamp: bool,
    version: Option<String>,
}

/// `/materialize-incremental`'s body.
#[derive(Debug, serde::Deserialize)]
struct IncrementalBody {
    end_ts: String,
    feature_views: Option<Vec<String>>,
    version: Option<String>,
}

/// Materializes a window, as `tern materialize START END`; answers `null` when done.
async fn materialize(
    State(api): State<Arc<HttpApi>>,
    caller: Caller,
    uri: axum::http::Uri,
    body: Body,
) -> Response {
    let started = Instant::now();
    let parsed = match read_json::<MaterializeBody>(&api, body, MATERIALIZE, started).await {
        Ok(parsed) => parsed,
        Err(refused) => return refused,
    };
    let (start, end) = if parsed.disable_event_timestamp {
        let now = crate::serving::Clock::System.now_seconds();
        (
            crate::times::IsoUtc(0).to_string(),
            crate::times::IsoUtc(now).to_string(),
        )
    } else {
        match (parsed.start_ts, parsed.end_ts) {
            (Some(start), Some(end)) => (start, end),
            _ => {
                return refuse(
                    MATERIALIZE,
                    started,
                    StatusCode::BAD_REQUEST,
                    "start_ts and end_ts are required when disable_event_timestamp is False",
                );
            }
        }
    };
    let options = crate::commands::materialize::MaterializeOptions {
        start: Some(start),
        end,
        views: parsed.feature_views.unwrap_or_default(),
        version: parsed.version,
        ..Default::default()
    };
    let who = caller.as_ref().map(|c| c.0.as_ref());
    run_materialization(&api, who, &uri, options, MATERIALIZE, started).await
}

/// Materializes each view from its watermark, as `tern materialize-incremental END`.
async fn materialize_incremental(
    State(api): State<Arc<HttpApi>>,
    caller: Caller,
    uri: axum::http::Uri,
    body: Body,
) -> Response {
    let started = Instant::now();
    let parsed =
        match read_json::<IncrementalBody>(&api, body, MATERIALIZE_INCREMENTAL, started).await {
            Ok(parsed) => parsed,
            Err(refused) => return refused,
        };
    let options = crate::commands::materialize::MaterializeOptions {
        start: None,
        end: parsed.end_ts,
        views: parsed.feature_views.unwrap_or_default(),
        version: parsed.version,
        ..Default::default()
    };
    let who = caller.as_ref().map(|c| c.0.as_ref());
    run_materialization(&api, who, &uri, options, MATERIALIZE_INCREMENTAL, started).await
}

/// A refusal with a message of Tern's own, in Feast's error format.
fn refuse(path: &'static str, started: Instant, code: StatusCode, message: &str) -> Response {
    let body = response::feast_error(status::GENERIC_CLASS, message);
    refused(path, started, code, body, message)
}

/// Runs a materialization on a thread and runtime of its own, never on the serving
/// runtime, one at a time; answers when it is done, or at once with 202 for
/// `?async=true` (Feast's answer: the status and the views).
async fn run_materialization(
    api: &HttpApi,
    caller: Option<&crate::auth::Principal>,
    uri: &axum::http::Uri,
    mut options: crate::commands::materialize::MaterializeOptions,
    path: &'static str,
    started: Instant,
) -> Response {
    let background = uri.query().is_some_and(|q| {
        q.split('&')
            .any(|kv| matches!(kv, "async=true" | "async=True" | "async=1"))
    });
    let Some(config) = api.config_path.clone() else {
        return refuse(
            path,
            started,
            StatusCode::NOT_IMPLEMENTED,
            "this server was started without a feature_store.yaml path; run `tern materialize`",
        );
    };
    options.config = config;
    let views = {
        let snapshot = api.serving.registry().snapshot();
        let views: Vec<String> = if options.views.is_empty() {
            snapshot
                .view_names()
                .into_iter()
                .map(str::to_owned)
                .collect()
        } else {
            options.views.clone()
        };
        // Materializing writes online: WRITE_ONLINE on every view, as Feast checks.
        if let Some(caller) = caller {
            let permissions = snapshot.permissions();
            for name in &views {
                let Some(view) = snapshot.view(name) else {
                    continue;
                };
                let resource = crate::permissions::Resource::view(&view.active);
                let write = crate::permissions::Action::WriteOnline;
                if let Err(denied) = permissions.check(resource, write, caller) {
                    let body = response::feast_error("FeastPermissionError", &denied.0);
                    return refused(path, started, StatusCode::FORBIDDEN, body, &denied.0);
                }
            }
        }
        views
    };
    let Ok(running) = api.materializing.clone().try_lock_owned() else {
        return refuse(
            path,
            started,
            StatusCode::CONFLICT,
            "a materialization is already running in this server; retry when it is done",
        );
    };
    tracing::info!(path, views = ?options.views, start = ?options.start, end = %options.end, "materialization started");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("tern-materialize".into())
        .spawn(move || {
            // Held until the materialization ends, answered or not.
            let running = running;
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|rt| {
                    rt.block_on(async {
                        let mut out = Vec::new();
                        crate::commands::materialize::run(&options, &mut out)
                            .await
                            .map(|_| String::from_utf8_lossy(&out).into_owned())
                            .map_err(|e| e.to_string())
                    })
                });
            if background {
                match &result {
                    Ok(report) => {
                        tracing::info!(path, report = %report.trim_end(), "materialization done")
                    }
                    Err(error) => tracing::warn!(path, %error, "materialization failed"),
                }
            }
            // Released before answering, so a request sent after the answer is not
            // refused as concurrent.
            drop(running);
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        return refuse(
            path,
            started,
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot start a materialization thread: {e}"),
        );
    }
    if background {
        record(path, StatusCode::ACCEPTED, started);
        let mut body = b"{\"status\":\"accepted\",\"feature_views\":[".to_vec();
        for (i, view) in views.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            json::string(&mut body, view);
        }
        body.extend_from_slice(b"]}");
        return json_response(StatusCode::ACCEPTED, Bytes::from(body));
    }
    match rx.await {
        Ok(Ok(report)) => {
            record(path, StatusCode::OK, started);
            tracing::info!(path, report = %report.trim_end(), elapsed_s = started.elapsed().as_secs_f64(), "materialization done");
            json_response(StatusCode::OK, Bytes::from_static(b"null"))
        }
        Ok(Err(message)) => {
            tracing::warn!(path, error = %message, "materialization failed");
            refuse(path, started, StatusCode::BAD_REQUEST, &message)
        }
        Err(_) => refuse(
            path,
            started,
            StatusCode::INTERNAL_SERVER_ERROR,
            "the materialization thread ended without an answer",
        ),
    }
}
