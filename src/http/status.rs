//! The one mapping from core errors to HTTP statuses and Feast's error bodies.
//!
//! Owns: which status every [`ErrorKind`] gets (Google's mapping of the gRPC codes the
//! same kinds get, so both edges agree), which core errors carry Feast's exception
//! class in the body, and the FastAPI-style 422 body for a request that does not parse.
//!
//! Feast answers 500 for most client mistakes, which its own client retries; Tern
//! answers them with a 4xx (`docs/compatibility.md`).

use axum::http::StatusCode;
use bytes::Bytes;

use super::json;
use super::request::{Loc, Problem};
use super::response;
use crate::error::{ErrorKind, cap_message};
use crate::serving::Error;

/// The HTTP status for a kind of failure. Exhaustive on purpose: a new kind must choose.
pub fn status_for(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest | ErrorKind::NotServable => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Unsupported => StatusCode::NOT_IMPLEMENTED,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::Overloaded => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::CorruptData | ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
    }
}

/// A failed `/get-online-features`.
#[derive(Debug)]
pub(crate) struct ServingFailure(pub Error);

impl ServingFailure {
    /// Status and body: Feast's exception detail, which Feast's client raises again as
    /// that exception. Errors Feast raises as its own exceptions keep their class; the
    /// rest are `FeastError` (Feast's own answer for them is a bare message, which its
    /// client cannot parse: it logs "Invalid error detail" and raises a RuntimeError).
    pub(crate) fn response(&self) -> (StatusCode, Bytes) {
        let class = match &self.0 {
            Error::ViewNotFound { .. } => "FeatureViewNotFoundException",
            Error::VersionNotFound { .. } => "FeatureViewVersionNotFound",
            Error::ServiceNotFound { .. } => "FeatureServiceNotFoundException",
            Error::FeatureNotFound { .. } => "FeastObjectNotFoundException",
            Error::NameCollision { .. } => "FeatureNameCollisionError",
            Error::PermissionDenied(_) => "FeastPermissionError",
            _ => GENERIC_CLASS,
        };
        (
            status_for(self.0.kind()),
            response::feast_error(class, &cap_message(self.0.to_string())),
        )
    }
}

/// The class of errors Feast has no exception of its own for.
pub(crate) const GENERIC_CLASS: &str = "FeastError";

/// Status and body of a refused write. Unknown targets keep Feast's statuses and
/// classes (404, and 422 for a push source); the rest go by kind.
pub(crate) fn write_response(err: &crate::writes::WriteError) -> (StatusCode, Bytes) {
    use crate::writes::WriteError as W;
    let (status, class) = match err {
        W::ViewNotFound { .. } | W::VersionNotFound { .. } => {
            (StatusCode::NOT_FOUND, "FeastObjectNotFoundException")
        }
        W::PushSourceNotFound(_) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "PushSourceNotFoundException",
        ),
        W::PermissionDenied(_) => (StatusCode::FORBIDDEN, "FeastPermissionError"),
        other => (status_for(other.kind()), GENERIC_CLASS),
    };
    (
        status,
        response::feast_error(class, &cap_message(err.to_string())),
    )
}

/// Status and message for a body that could not be read.
pub(crate) fn body_error(err: &axum::Error, limit: usize) -> (StatusCode, String) {
    let too_large = std::error::Error::source(err)
        .is_some_and(|s| s.to_string().contains("length limit exceeded"))
        || err.to_string().contains("length limit exceeded");
    if too_large {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than {limit} bytes (--max-request-bytes); split it into smaller requests"
            ),
        )
    } else {
        (
            StatusCode::BAD_REQUEST,
            format!("the request body could not be read: {err}"),
        )
    }
}

/// FastAPI's 422 body: `{"detail":[{"type":…,"loc":[…],"msg":…,"input":…}]}`.
pub(crate) fn validation_body(problem: &Problem) -> Bytes {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"{\"detail\":[{\"type\":");
    json::string(&mut out, problem.kind);
    out.extend_from_slice(b",\"loc\":[");
    for (i, step) in problem.loc.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match step {
            Loc::Key(k) => json::string(&mut out, k),
            Loc::Index(n) => json::int(&mut out, i64::try_from(*n).unwrap_or(i64::MAX)),
        }
    }
    out.extend_from_slice(b"],\"msg\":");
    json::string(&mut out, &problem.msg);
    if let Some(input) = &problem.input {
        out.extend_from_slice(b",\"input\":");
        input_json(&mut out, input);
    }
    if let Some(error) = &problem.ctx_error {
        out.extend_from_slice(b",\"ctx\":{\"error\":");
        json::string(&mut out, error);
        out.push(b'}');
    }
    out.extend_from_slice(b"}]}");
    Bytes::from(out)
}

/// A request value echoed back, written as Python's `json.dumps` would write it.
fn input_json(out: &mut Vec<u8>, v: &serde_json::Value) {
    use serde_json::Value as J;
    match v {
        J::Null => out.extend_from_slice(b"null"),
        J::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        J::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => json::int(out, i),
            (None, Some(u), _) => out.extend_from_slice(u.to_string().as_bytes()),
            (None, None, Some(f)) => json::float(out, f),
            _ => out.extend_from_slice(n.to_string().as_bytes()),
        },
        J::String(s) => json::string(out, s),
        J::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                input_json(out, item);
            }
            out.push(b']');
        }
        J::Object(map) => {
            out.push(b'{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json::string(out, k);
                out.push(b':');
                input_json(out, item);
            }
            out.push(b'}');
        }
    }
}
