//! A view's versions: listing, comparing and pruning them (`tern versions`).

use std::collections::BTreeSet;

use super::diff::diff_schema;
use super::protect::{self, Violation};
use super::{
    ObjectKind, TableAction, TableChange, active_version, materialized, position, records, snapshot,
};
use crate::error::ErrorKind;
use crate::proto::feast::core as pb;
use crate::registry::model::RegistryModel;
use crate::store::StorageLayout;

/// One line of `tern versions list`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VersionRow {
    /// `vN`.
    pub version: String,
    /// N.
    pub version_number: u32,
    /// Feast's type string (`feature_view`, ...).
    pub feature_view_type: String,
    /// When it was recorded, as Feast prints it (`2026-11-28 19:40:23.123456`).
    pub created: String,
    /// The record's UUID.
    pub version_id: String,
    /// The active version.
    pub active: bool,
    /// Recorded after the active one and not promoted (`--no-promote`).
    pub staged: bool,
    /// Its table was ever materialized.
    pub materialized: bool,
}

/// What `tern versions` cannot do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionsError {
    /// No such view in the project.
    #[error("feature view '{view}' does not exist in project '{project}'")]
    UnknownView {
        /// View.
        view: String,
        /// Project.
        project: String,
    },
    /// Feast's wording.
    #[error("Version v{version} of feature view {view} does not exist in project {project}")]
    UnknownVersion {
        /// View.
        view: String,
        /// Version.
        version: u32,
        /// Project.
        project: String,
    },
    /// prevent_destroy refuses the prune.
    #[error("{}", .0.iter().map(|v| v.message.as_str()).collect::<Vec<_>>().join("\n"))]
    Protected(Vec<Violation>),
}

impl VersionsError {
    /// The transport-free kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            VersionsError::UnknownView { .. } | VersionsError::UnknownVersion { .. } => {
                ErrorKind::NotFound
            }
            VersionsError::Protected(_) => ErrorKind::NotServable,
        }
    }
}

fn active<'m>(
    model: &'m RegistryModel,
    project: &str,
    view: &str,
) -> Result<&'m pb::FeatureView, VersionsError> {
    position(&model.feature_views, project, view)
        .map(|i| &model.feature_views[i].object)
        .ok_or_else(|| VersionsError::UnknownView {
            view: view.to_owned(),
            project: project.to_owned(),
        })
}

/// Python's `str(datetime)` of a naive UTC time: microseconds only when non-zero.
pub fn feast_time(ts: Option<&prost_types::Timestamp>) -> String {
    let Some(ts) = ts else {
        return String::new();
    };
    let days = ts.seconds.div_euclid(86_400);
    let secs = ts.seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    );
    let micros = ts.nanos / 1000;
    if micros > 0 {
        s.push_str(&format!(".{micros:06}"));
    }
    s
}

// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// How `feast feature-views list-versions` prints CREATED: a file registry holds a
/// naive UTC time, a SQL registry an epoch that Feast turns into an aware one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeStyle {
    /// `2026-11-22 14:07:15.433686`.
    Naive,
    /// `2026-11-22 14:07:15+00:00`.
    Utc,
}

/// Every recorded version of `view`, oldest first.
pub fn list(
    model: &RegistryModel,
    project: &str,
    view: &str,
    style: TimeStyle,
) -> Result<Vec<VersionRow>, VersionsError> {
    let active_view = active(model, project, view)?;
    let active_n = active_version(active_view);
    let mut rows: Vec<VersionRow> = records(model, project, view)
        .filter_map(|r| {
            let n = u32::try_from(r.version_number).ok()?;
            Some(VersionRow {
                version: format!("v{n}"),
                version_number: n,
                feature_view_type: r.feature_view_type.clone(),
                created: match style {
                    TimeStyle::Naive => feast_time(r.created_timestamp.as_ref()),
                    TimeStyle::Utc => format!("{}+00:00", feast_time(r.created_timestamp.as_ref())),
                },
                version_id: r.version_id.clone(),
                active: n == active_n,
                staged: n > active_n,
                materialized: materialized(model, project, active_view, n),
            })
        })
        .collect();
    rows.sort_by_key(|r| r.version_number);
    Ok(rows)
}

/// Version `version` of `view` as recorded.
pub fn get(
    model: &RegistryModel,
    project: &str,
    view: &str,
    version: u32,
) -> Result<pb::FeatureView, VersionsError> {
    active(model, project, view)?;
    records(model, project, view)
        .filter(|r| r.version_number == version as i32)
        .find_map(snapshot)
        .ok_or_else(|| VersionsError::UnknownVersion {
            view: view.to_owned(),
            version,
            project: project.to_owned(),
        })
}

/// What changed from version `a` to version `b`: features added, removed, retyped;
/// entities; metadata.
pub fn diff(
    model: &RegistryModel,
    project: &str,
    view: &str,
    a: u32,
    b: u32,
) -> Result<Vec<String>, VersionsError> {
    let old = get(model, project, view, a)?;
    let new = get(model, project, view, b)?;
    Ok(diff_schema(old.spec.as_ref(), new.spec.as_ref()))
}

/// The registry without the pruned versions, and the tables to drop.
#[derive(Debug, Clone)]
pub struct Prune {
    /// Versions removed.
    pub dropped: Vec<u32>,
    /// Their tables (none when online versioning is off: versions share one table).
    pub tables: Vec<TableChange>,
    /// The registry after.
    pub model: RegistryModel,
    /// prevent_destroy violations (refused unless `enforce` is off).
    pub violations: Vec<Violation>,
}

/// Keeps the `keep` newest versions of `view`, plus the active one and any staged
/// (newer than active) ones, and drops the rest.
pub fn prune(
    model: &RegistryModel,
    project: &str,
    view: &str,
    keep: usize,
    versioning: bool,
) -> Result<Prune, VersionsError> {
    let active_view = active(model, project, view)?;
    let active_n = active_version(active_view);
    let all: Vec<u32> = records(model, project, view)
        .filter_map(|r| u32::try_from(r.version_number).ok())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let keep_set: BTreeSet<u32> = all.iter().rev().take(keep).copied().collect();
    let dropped: Vec<u32> = all
        .iter()
        .copied()
        .filter(|n| *n < active_n && !keep_set.contains(n))
        .collect();
    let mut next = model.clone();
    next.version_history.retain(|r| {
        !(r.project_id == project
            && r.feature_view_name == view
            && u32::try_from(r.version_number).is_ok_and(|n| dropped.contains(&n)))
    });
    let tables = if versioning {
        dropped
            .iter()
            .map(|n| {
                let features = get(model, project, view, *n)
                    .ok()
                    .and_then(|s| s.spec)
                    .map(|s| s.features.iter().map(|f| f.name.clone()).collect())
                    .unwrap_or_default();
                let layout = StorageLayout::new(project, view, *n, Vec::new());
                TableChange {
                    action: TableAction::Drop,
                    view: view.to_owned(),
                    version: *n,
                    storage_name: layout.storage_name,
                    table: layout.sqlite_table,
                    features,
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut violations = Vec::new();
    if !dropped.is_empty()
        && let Some(by) = protect::protection(model, project).get(ObjectKind::FeatureView, view)
    {
        violations.push(Violation::drop_versions(project, view, &dropped, by));
    }
    Ok(Prune {
        dropped,
        tables,
        model: next,
        violations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_python_does() {
        let ts = prost_types::Timestamp {
            seconds: 1_795_356_435,
            nanos: 433_686_000,
        };
        assert_eq!(feast_time(Some(&ts)), "2026-11-22 14:07:15.433686");
        let whole = prost_types::Timestamp {
            seconds: 0,
            nanos: 0,
        };
        assert_eq!(feast_time(Some(&whole)), "1970-01-01 00:00:00");
    }
}
