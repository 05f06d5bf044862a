//! The one mapping from core errors to gRPC status codes.
//!
//! Owns: which code every [`ErrorKind`] gets, the final length cap on messages, and
//! the code labels used in metrics.

use tonic::{Code, Status};

use crate::error::{ErrorKind, cap_message};
use crate::serving::Error;

/// The gRPC code for a kind of failure. Exhaustive on purpose: a new kind must choose.
pub fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::BadRequest => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::NotServable => Code::FailedPrecondition,
        ErrorKind::Unsupported => Code::Unimplemented,
        ErrorKind::TooLarge | ErrorKind::Overloaded => Code::ResourceExhausted,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Timeout => Code::DeadlineExceeded,
        ErrorKind::CorruptData => Code::DataLoss,
        ErrorKind::Internal => Code::Internal,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
    }
}

/// A request error as a gRPC status: its kind's code, its message capped.
pub fn status(err: &Error) -> Status {
    Status::new(code(err.kind()), cap_message(err.to_string()))
}

/// An unauthenticated call as a gRPC status.
pub fn auth_status(err: &crate::auth::AuthError) -> Status {
    Status::new(code(err.kind()), cap_message(err.to_string()))
}

/// A write error as a gRPC status.
pub fn write_status(err: &crate::writes::WriteError) -> Status {
    Status::new(code(err.kind()), cap_message(err.to_string()))
}

/// Metric label for a gRPC code (a closed set).
pub fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
