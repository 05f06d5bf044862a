//! Logs and the metrics exporter.
//!
//! Owns: the tracing subscriber (text or JSON, level from `--log-level` or
//! `RUST_LOG`) and the Prometheus HTTP exporter. Metric names live in `metrics`.

use std::io::IsTerminal;
use std::net::SocketAddr;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};
use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Installs the global tracing subscriber. `RUST_LOG`, when set, wins over `level`.
pub fn init_logging(format: LogFormat, level: &str) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .map_err(|e| format!("invalid log level '{level}': {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    result.map_err(|e| e.to_string())
}

/// Serves Prometheus metrics at `http://addr/metrics` and registers descriptions.
/// Must run inside a tokio runtime.
pub fn install_metrics(addr: SocketAddr) -> Result<(), BuildError> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            crate::metrics::LATENCY_BUCKETS,
        )?
        .install()?;
    crate::metrics::describe();
    tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    Ok(())
}
