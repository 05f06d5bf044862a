//! The errors of a GetOnlineFeatures request, transport-free.
//!
//! Owns: every way a request can fail and its [`ErrorKind`]. Messages keep Feast's
//! wording where Feast has one (clients match on those texts); the rest say what was
//! wrong and how to fix it. Client strings in messages are clipped
//! ([`crate::error::clip`]). The edges map kinds to gRPC codes or HTTP statuses.

use std::time::Duration;

use crate::error::ErrorKind;
use crate::refs::RefError;
use crate::serving::EntityError;
use crate::store::StoreError;

/// Everything a GetOnlineFeatures request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A feature ref that cannot be parsed.
    #[error(transparent)]
    Ref(#[from] RefError),
    /// The caller may not read this (Feast's `FeastPermissionError` text).
    #[error("{0}")]
    PermissionDenied(#[from] crate::permissions::Denied),
    /// Neither refs nor a service, or an empty list. Feast's text.
    #[error("No features specified for retrieval")]
    NoFeatures,
    /// Feast's text.
    #[error("Feature view {view} does not exist in project {project}")]
    ViewNotFound {
        /// View name as requested.
        view: String,
        /// Configured project.
        project: String,
    },
    /// Feast's text.
    #[error("Version v{version} of feature view {view} does not exist in project {project}")]
    VersionNotFound {
        /// View name.
        view: String,
        /// Requested version.
        version: u32,
        /// Configured project.
        project: String,
    },
    /// Feast's text (without the quotes its KeyError adds).
    #[error("Feature {feature} not found in projection {projection}")]
    FeatureNotFound {
        /// Requested feature.
        feature: String,
        /// `view`, `alias` or `view@vN`.
        projection: String,
    },
    /// Feast's text.
    #[error("Feature service {service} does not exist in project {project}")]
    ServiceNotFound {
        /// Requested service.
        service: String,
        /// Configured project.
        project: String,
    },
    /// A `@vN` ref (or a version-pinned service) while online versioning is off.
    /// Feast's exact text.
    #[error(
        "Version-qualified ref '{view}@v{version}' not supported: online versioning is disabled. Set 'enable_online_feature_view_versioning: true' under 'registry' in feature_store.yaml."
    )]
    VersioningDisabled {
        /// View name.
        view: String,
        /// Requested version.
        version: u32,
    },
    /// Feast's text.
    #[error(
        "Feature view '{view}' is disabled and cannot serve features. Enable it with `feast feature-views enable {view}` or set enabled=True."
    )]
    ViewDisabled {
        /// View name.
        view: String,
    },
    /// Feast's text.
    #[error(
        "Feature view '{view}' is in state '{state}' and cannot serve features. Only AVAILABLE_ONLINE feature views can serve."
    )]
    ViewNotServable {
        /// View name.
        view: String,
        /// State name, e.g. `MATERIALIZING`.
        state: String,
    },
    /// The registry is inconsistent for this view (e.g. it names a missing entity).
    #[error("Feature view '{view}' cannot be served: {problem}")]
    ViewBroken {
        /// View name.
        view: String,
        /// What is inconsistent.
        problem: String,
    },
    /// An on-demand view computed at request time (Tern runs no transformations).
    #[error(
        "On-demand feature view '{view}' computes its features at request time, which Tern does not do; only on-demand views with write_to_online_store=True can be served"
    )]
    OnDemandTransform {
        /// View name.
        view: String,
    },
    /// Two output columns with one name. Feast's text.
    #[error("Duplicate features named {names} found.\n{}", collision_hint(*.full_feature_names))]
    NameCollision {
        /// Colliding output names, comma-separated.
        names: String,
        /// Whether full feature names were requested.
        full_feature_names: bool,
    },
    /// Bad entity columns.
    #[error(transparent)]
    Entity(#[from] EntityError),
    /// The online store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// More entity rows than `--max-entity-rows` allows.
    #[error(
        "the request has {rows} entity rows, more than the limit of {limit} (--max-entity-rows); split it into smaller requests"
    )]
    TooManyRows {
        /// Rows in the request.
        rows: usize,
        /// The configured limit.
        limit: usize,
    },
    /// More requests in flight than `--max-concurrent-requests` allows.
    #[error(
        "the server is answering {limit} requests already, its limit (--max-concurrent-requests); retry with backoff"
    )]
    TooManyRequests {
        /// The configured limit.
        limit: usize,
    },
    /// The request's deadline passed before the answer was ready.
    #[error("the request did not complete within its deadline of {} ms", after.as_millis())]
    DeadlineExceeded {
        /// The deadline that applied (the client's, or `--request-timeout-ms`).
        after: Duration,
    },
    /// Not (yet) served by Tern.
    #[error("{0}")]
    Unimplemented(String),
    /// A bug in Tern: an invariant did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

fn collision_hint(full_feature_names: bool) -> &'static str {
    if full_feature_names {
        "To resolve this collision, please ensure that the feature views or their own features have different names. If you're intentionally joining the same feature view twice on different sets of entities, please rename one of the feature views with '.with_name'."
    } else {
        "To resolve this collision, either use the full feature name by setting 'full_feature_names=True', or ensure that the features in question have different names."
    }
}

impl Error {
    /// How a caller must treat this error. Exhaustive on purpose: a new variant must
    /// choose.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Ref(_) | Error::NoFeatures | Error::NameCollision { .. } | Error::Entity(_) => {
                ErrorKind::BadRequest
            }
            Error::ViewNotFound { .. }
            | Error::VersionNotFound { .. }
            | Error::FeatureNotFound { .. }
            | Error::ServiceNotFound { .. } => ErrorKind::NotFound,
            Error::VersioningDisabled { .. }
            | Error::ViewDisabled { .. }
            | Error::ViewNotServable { .. }
            | Error::ViewBroken { .. } => ErrorKind::NotServable,
            Error::OnDemandTransform { .. } | Error::Unimplemented(_) => ErrorKind::Unsupported,
            Error::TooManyRows { .. } => ErrorKind::TooLarge,
            Error::TooManyRequests { .. } => ErrorKind::Overloaded,
            Error::DeadlineExceeded { .. } => ErrorKind::Timeout,
            Error::Internal(_) => ErrorKind::Internal,
            Error::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Error::Store(e) => e.kind(),
        }
    }
}
