//! Logs and the metrics exporter.
//!
//! Owns: the tracing subscriber (text or JSON, level from `--log-level` or
//! `RUST_LOG`), written through a non-blocking writer so that a slow stderr (a full
//! pipe, a stalled log shipper) never blocks a reactor thread; a limiter for log lines
//! that requests can trigger; and the Prometheus endpoint. Metric names live in
//! `metrics`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};
pub use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Lines the log writer buffers; past that, new lines are dropped rather than block
/// the thread that logs.
const LOG_BUFFER_LINES: usize = 64 * 1024;

/// Installs the global tracing subscriber. `RUST_LOG`, when set, wins over `level`.
/// Lines go to stderr from a background thread; keep the returned guard alive until
/// the process ends (dropping it flushes what is buffered).
pub fn init_logging(format: LogFormat, level: &str) -> Result<WorkerGuard, String> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .map_err(|e| format!("invalid log level '{level}': {e}"))?;
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .lossy(true)
        .thread_name("tern-log")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    result.map_err(|e| e.to_string())?;
    Ok(guard)
}

/// Lets a few log lines a second through and counts the ones it holds back, for log
/// lines a request can trigger: an outage must not flood the log.
#[derive(Debug)]
pub struct LogLimiter {
    per_second: u32,
    /// The second `used` counts in (Unix seconds).
    second: AtomicU64,
    used: AtomicU32,
    held_back: AtomicU64,
}

impl LogLimiter {
    /// At most `per_second` lines a second.
    pub const fn new(per_second: u32) -> Self {
        Self {
            per_second,
            second: AtomicU64::new(0),
            used: AtomicU32::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written now, `n` being the lines held back since
    /// the last one written (say so in the line); `None` when it must be skipped.
    pub fn admit(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let second = self.second.load(Ordering::Relaxed);
        if now != second
            && self
                .second
                .compare_exchange(second, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.used.store(0, Ordering::Relaxed);
        }
        if self.used.fetch_add(1, Ordering::Relaxed) < self.per_second {
            Some(self.held_back.swap(0, Ordering::Relaxed))
        } else {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// How often histograms are folded for the exporter.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// Why the metrics endpoint cannot start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The recorder could not be built or installed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {cause}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        cause: std::io::Error,
    },
}

/// Installs the Prometheus recorder and serves it at `http://addr/metrics`; returns
/// the address bound (port 0 picks a free one, which the log line reports). Must run
/// inside a tokio runtime.
pub async fn install_metrics(addr: SocketAddr) -> Result<SocketAddr, MetricsError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|cause| MetricsError::Bind { addr, cause })?;
    let bound = listener
        .local_addr()
        .map_err(|cause| MetricsError::Bind { addr, cause })?;
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            crate::metrics::LATENCY_BUCKETS,
        )?
        .install_recorder()?;
    crate::metrics::describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(METRICS_UPKEEP);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    });
    tracing::info!(addr = %bound, "serving Prometheus metrics at /metrics");
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_admits_a_few_and_counts_the_rest() {
        let limiter = LogLimiter::new(3);
        let admitted: Vec<Option<u64>> = (0..1000).map(|_| limiter.admit()).collect();
        let written = admitted.iter().filter(|a| a.is_some()).count();
        // The loop may straddle a second boundary: at most two seconds' worth.
        assert!((3..=6).contains(&written), "{written}");
        let reported: u64 = admitted.iter().flatten().sum();
        let pending = limiter.held_back.load(Ordering::Relaxed);
        assert_eq!(written as u64 + reported + pending, 1000);
    }
}
