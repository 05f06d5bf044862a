//! Metric names and label values, in one place.
//!
//! Owns: every metric's name, description and label set. Label values come from closed
//! sets (methods, gRPC codes, store kinds, field statuses), never from request data,
//! so cardinality stays bounded whatever clients send. Metrics are recorded through
//! the `metrics` facade; without an installed exporter (tests) they cost nothing.

/// Counter: RPCs answered, by `service`, `method` and `code`.
pub const GRPC_REQUESTS: &str = "tern_grpc_requests_total";
/// Histogram: RPC latency in seconds, by `service`, `method` and `code`.
pub const GRPC_DURATION: &str = "tern_grpc_request_duration_seconds";
/// Counter: HTTP API requests answered, by `path` (a route, or `other`) and `status`.
pub const HTTP_REQUESTS: &str = "tern_http_requests_total";
/// Histogram: HTTP API request latency in seconds, by `path` and `status`.
pub const HTTP_DURATION: &str = "tern_http_request_duration_seconds";
/// Counter: rows stored by online writes, by view.
pub const ONLINE_WRITE_ROWS: &str = "tern_online_write_rows_total";
/// Counter: pushed rows not stored because the store held a newer event, by view.
pub const ONLINE_WRITE_SKIPPED: &str = "tern_online_write_rows_skipped_total";
/// Gauge: GetOnlineFeatures requests being answered.
pub const IN_FLIGHT: &str = "tern_requests_in_flight";
/// Counter: entity rows answered by GetOnlineFeatures.
pub const ENTITY_ROWS: &str = "tern_entity_rows_total";
/// Counter: feature values served, by field `status`.
pub const FEATURE_VALUES: &str = "tern_feature_values_total";
/// Histogram: one request's online-store read in seconds, by `store`.
pub const STORE_READ_DURATION: &str = "tern_store_read_duration_seconds";
/// Counter: failed online-store reads, by `store` and error `kind`.
pub const STORE_ERRORS: &str = "tern_store_errors_total";
/// Gauge: 1 while the online store answers health checks, 0 while it does not, by `store`.
pub const STORE_UP: &str = "tern_store_up";
/// Counter: times the online store answered again after failing health checks, by `store`.
pub const STORE_RECONNECTS: &str = "tern_store_reconnects_total";
/// Counter: SQLite reads with keys, by `path`: `inline` (answered on the request's thread),
/// `handed_over` (stopped inline by a writer's lock or the work budget, answered by a
/// reader thread), `pool` (sent to a reader thread directly).
pub const SQLITE_READS: &str = "tern_sqlite_reads_total";
/// Gauge: generation of the registry snapshot being served.
pub const REGISTRY_GENERATION: &str = "tern_registry_generation";
/// Counter: registry reload attempts, by `result` (swapped, unchanged, failed).
pub const REGISTRY_RELOADS: &str = "tern_registry_reloads_total";
/// Gauge: Unix time of the last reload (or initial load) that succeeded.
pub const REGISTRY_LAST_SUCCESS: &str = "tern_registry_last_success_timestamp_seconds";
/// Histogram: time to read and index a registry, in seconds.
pub const REGISTRY_LOAD_SECONDS: &str = "tern_registry_load_duration_seconds";
/// Counter: calls refused because the caller was not authenticated, by `reason`
/// (missing, not_bearer, invalid, unknown_key, keys_unavailable).
pub const AUTH_FAILURES: &str = "tern_auth_failures_total";
/// Counter: TLS certificate reloads, by `result` (loaded, failed).
pub const TLS_RELOADS: &str = "tern_tls_reloads_total";
/// Counter: TLS handshakes that failed (no or untrusted client certificate, plaintext
/// on a TLS port, a client that gave up).
pub const TLS_HANDSHAKE_FAILURES: &str = "tern_tls_handshake_failures_total";

/// Latency buckets (seconds) for request and store histograms: sub-millisecond
/// resolution where a feature server lives, up to the request timeout.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_2, 0.000_3, 0.000_5, 0.000_75, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Describes every metric once, so the exporter prints HELP lines.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        GRPC_REQUESTS,
        "gRPC requests answered, by service, method and status code"
    );
    describe_histogram!(
        GRPC_DURATION,
        Unit::Seconds,
        "gRPC request latency, by service, method and status code"
    );
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP API requests answered, by path and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP API request latency, by path and status"
    );
    describe_counter!(ONLINE_WRITE_ROWS, "Rows stored by online writes, by view");
    describe_counter!(
        ONLINE_WRITE_SKIPPED,
        "Rows of online writes not stored: the store held a newer event for the entity, by view"
    );
    describe_gauge!(IN_FLIGHT, "GetOnlineFeatures requests being answered");
    describe_counter!(ENTITY_ROWS, "Entity rows answered by GetOnlineFeatures");
    describe_counter!(FEATURE_VALUES, "Feature values served, by field status");
    describe_histogram!(
        STORE_READ_DURATION,
        Unit::Seconds,
        "Online store read latency per request, by store"
    );
    describe_counter!(
        STORE_ERRORS,
        "Failed online store reads, by store and error kind"
    );
    describe_gauge!(
        STORE_UP,
        "1 while the online store answers health checks, else 0"
    );
    describe_counter!(
        STORE_RECONNECTS,
        "Times the online store came back after failing health checks"
    );
    describe_counter!(
        SQLITE_READS,
        "SQLite reads, by path: inline, handed_over (stopped inline, finished by a reader thread), pool"
    );
    describe_gauge!(
        REGISTRY_GENERATION,
        "Generation of the registry snapshot being served"
    );
    describe_counter!(
        REGISTRY_RELOADS,
        "Registry reload attempts, by result (swapped, unchanged, failed)"
    );
    describe_counter!(
        TLS_RELOADS,
        "TLS certificate reloads, by result (loaded, failed)"
    );
    describe_counter!(TLS_HANDSHAKE_FAILURES, "TLS handshakes that failed");
    describe_counter!(
        AUTH_FAILURES,
        "Calls refused because the caller was not authenticated, by reason"
    );
    describe_gauge!(
        REGISTRY_LAST_SUCCESS,
        "Unix time of the last successful registry load"
    );
    describe_histogram!(
        REGISTRY_LOAD_SECONDS,
        Unit::Seconds,
        "Time to read and index a registry snapshot"
    );
}

/// Label values for `status` on [`FEATURE_VALUES`], indexed by `FieldStatus` number.
pub const FIELD_STATUS_LABELS: [&str; 5] = [
    "INVALID",
    "PRESENT",
    "NULL_VALUE",
    "NOT_FOUND",
    "OUTSIDE_MAX_AGE",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_sorted() {
        assert!(LATENCY_BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn names_are_prometheus_safe_and_unique() {
        let names = [
            GRPC_REQUESTS,
            GRPC_DURATION,
            HTTP_REQUESTS,
            HTTP_DURATION,
            ENTITY_ROWS,
            FEATURE_VALUES,
            STORE_READ_DURATION,
            STORE_ERRORS,
            STORE_UP,
            STORE_RECONNECTS,
            REGISTRY_GENERATION,
            REGISTRY_RELOADS,
            REGISTRY_LAST_SUCCESS,
            REGISTRY_LOAD_SECONDS,
            TLS_RELOADS,
            TLS_HANDSHAKE_FAILURES,
            AUTH_FAILURES,
        ];
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        for n in names {
            assert!(
                n.starts_with("tern_") && n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{n}"
            );
        }
    }
}
