//! Compatibility with the real Feast 0.67: every case in
//! `tests/fixtures/feast/cases.json` (Feast's own `get_online_features` answers over
//! the repo in `examples/feature_repo`, written by Feast) is sent to `tern serve` over
//! both gRPC paths and compared value by value, status by status, timestamp by
//! timestamp.
//!
//! Tern's deliberate deviations (docs/compatibility.md) are the only differences
//! allowed, and each is spelled out below:
//! - cell rules, applied everywhere: a stored null is NULL_VALUE (Feast: PRESENT), and
//!   a value older than its view's ttl is OUTSIDE_MAX_AGE with the value kept (Feast
//!   never checks ttl);
//! - unpinned feature-service projections read the view's active version (Feast 0.67
//!   reads v0); the expected cells then come from Feast's own answers for the active
//!   version (`ORACLE_CASES`);
//! - version metadata lists every (view, version) read, with the version read;
//! - bad input Feast answers or crashes on gets INVALID_ARGUMENT; Feast's errors get
//!   gRPC codes instead of UNKNOWN/INTERNAL, with Feast's message where it has one.

use std::collections::HashMap;
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use prost::Message;
use serde::Deserialize;
use tern::proto::feast::serving::{FieldStatus, GetOnlineFeaturesResponse};
use tern::proto::feast::types::Value;
use tern::proto::feast::types::value::Val;
use tern::serving::Clock;
use tern::testing::TestServer;
use tonic::Code;

use crate::support::*;

#[derive(Debug, Deserialize)]
pub struct Fixture {
    pub reference_time: i64,
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
pub struct Case {
    pub name: String,
    config: String,
    pub request: CaseRequest,
    pub response: Option<CaseResponse>,
    error: Option<CaseError>,
}

#[derive(Debug, Deserialize)]
pub struct CaseRequest {
    features: Option<Vec<String>>,
    feature_service: Option<String>,
    entities: Vec<CaseColumn>,
    full_feature_names: bool,
    include_feature_view_version_metadata: bool,
}

#[derive(Debug, Deserialize)]
pub struct CaseColumn {
    name: String,
    values: Vec<HashMap<String, serde_json::Value>>,
}

#[derive(Debug, Deserialize)]
pub struct CaseResponse {
    pub feature_names: Vec<String>,
    pub results: Vec<CaseVector>,
    feature_view_metadata: Vec<CaseMetadata>,
}

#[derive(Debug, Deserialize)]
pub struct CaseVector {
    values: Vec<String>,
    statuses: Vec<String>,
    event_timestamps: Vec<(i64, i32)>,
    pub ttl_seconds: i64,
}

#[derive(Debug, Deserialize)]
pub struct CaseMetadata {
    name: String,
    version: Option<i32>,
}

#[derive(Debug, Deserialize)]
pub struct CaseError {
    class: String,
    message: String,
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/feast")
}

pub fn load_cases() -> Fixture {
    load_fixture_from(&fixture_dir().join("cases.json"))
}

fn load_fixture_from(path: &std::path::Path) -> Fixture {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One expected cell.
#[derive(Debug, Clone, PartialEq)]
struct Cell {
    value: Vec<u8>,
    status: FieldStatus,
    ts: (i64, i32),
}

fn status(name: &str) -> FieldStatus {
    FieldStatus::from_str_name(name).unwrap_or_else(|| panic!("unknown status {name}"))
}

/// Feast's cell, turned into what Tern answers: stored nulls are NULL_VALUE, values
/// past the ttl are OUTSIDE_MAX_AGE (kept).
fn tern_cell(feast: Cell, ttl: i64, now: i64) -> Cell {
    match feast.status {
        FieldStatus::Present if feast.value.is_empty() && feast.ts != (0, 0) => Cell {
            status: FieldStatus::NullValue,
            ..feast
        },
        FieldStatus::Present if ttl > 0 && now - feast.ts.0 > ttl => Cell {
            status: FieldStatus::OutsideMaxAge,
            ..feast
        },
        _ => feast,
    }
}

fn feast_column(v: &CaseVector) -> Vec<Cell> {
    (0..v.values.len())
        .map(|i| Cell {
            value: B64.decode(&v.values[i]).expect("base64"),
            status: status(&v.statuses[i]),
            ts: v.event_timestamps[i],
        })
        .collect()
}

fn tern_column(r: &GetOnlineFeaturesResponse, name: &str) -> Option<Vec<Cell>> {
    let i = names(r).iter().position(|n| n == name)?;
    let c = &r.results[i];
    Some(
        (0..c.values.len())
            .map(|row| Cell {
                value: c.values[row].encode_to_vec(),
                status: FieldStatus::try_from(c.statuses[row]).expect("status"),
                ts: (
                    c.event_timestamps[row].seconds,
                    c.event_timestamps[row].nanos,
                ),
            })
            .collect(),
    )
}

fn typed_value(v: &HashMap<String, serde_json::Value>) -> Value {
    let (kind, raw) = v.iter().next().expect("one typed value");
    let val = match kind.as_str() {
        "int64" => Val::Int64Val(raw.as_i64().expect("int64")),
        "int32" => Val::Int32Val(raw.as_i64().expect("int32") as i32),
        "unix_timestamp" => Val::UnixTimestampVal(raw.as_i64().expect("ts")),
        "string" => Val::StringVal(raw.as_str().expect("string").to_owned()),
        "double" => Val::DoubleVal(raw.as_f64().expect("double")),
        "float" => Val::FloatVal(raw.as_f64().expect("float") as f32),
        "bool" => Val::BoolVal(raw.as_bool().expect("bool")),
        "bytes_b64" => Val::BytesVal(B64.decode(raw.as_str().expect("b64")).expect("b64")),
        other => panic!("unknown typed value {other}"),
    };
    Value { val: Some(val) }
}

pub fn grpc_request(c: &CaseRequest) -> tern::proto::tern::wire::GetOnlineFeaturesRequest {
    let entities = c
        .entities
        .iter()
        .map(|col| {
            (
                col.name.as_str(),
                col.values.iter().map(typed_value).collect(),
            )
        })
        .collect();
    let mut req = match &c.feature_service {
        Some(s) => service_request(s, entities),
        None => {
            let refs: Vec<&str> = c.features.iter().flatten().map(String::as_str).collect();
            refs_request(&refs, entities)
        }
    };
    req.full_feature_names = c.full_feature_names;
    req.include_feature_view_version_metadata = c.include_feature_view_version_metadata;
    req
}

/// What Tern must answer where it deliberately differs from Feast.
pub enum Deviation {
    /// An error with this code and a message containing this text.
    Error(Code, &'static str),
    /// Feast's answer, except these driver_stats columns, which Tern reads from the
    /// active version: `(output column, feature, column holding the driver id)`.
    ActiveVersion(&'static [(&'static str, &'static str, &'static str)]),
    /// Feast's answer, except the version metadata.
    Metadata(Vec<(&'static str, i32)>),
    /// Both of the above.
    ActiveVersionAndMetadata(
        &'static [(&'static str, &'static str, &'static str)],
        Vec<(&'static str, i32)>,
    ),
}

/// `active` is driver_stats' active version in the fixture's registry.
pub fn deviation(case: &str, active: i32) -> Option<Deviation> {
    use Deviation::*;
    const SVC: &[(&str, &str, &str)] = &[
        ("avg_daily_trips", "avg_daily_trips", "driver_id"),
        ("conv_rate", "conv_rate", "driver_id"),
    ];
    const ALIAS: &[(&str, &str, &str)] = &[
        ("name", "name", "driver_id"),
        ("conv_rate", "conv_rate", "driver_id"),
    ];
    Some(match case {
        // A missing join key is an error, not a silent miss.
        "driver_customer_only_driver_id" => Error(
            Code::InvalidArgument,
            "missing join key 'customer_id' needed by feature view 'driver_customer'",
        ),
        "svc_driver_svc_joinmap_missing_other_column" => {
            Error(Code::InvalidArgument, "missing join key 'other_driver_id'")
        }
        "err_no_join_key_column" => Error(
            Code::InvalidArgument,
            "missing join key 'driver_id' needed by feature view 'driver_stats'",
        ),
        "err_svc_missing_driver_id" => Error(
            Code::InvalidArgument,
            "missing join key 'driver_id' needed by feature view 'driver_stats'",
        ),
        // Feast turns True into 1 and 1001.5 into 1001; neither is an id.
        "coerce_bool_driver_id" => Error(
            Code::InvalidArgument,
            "entity column 'driver_id' row 0: cannot use bool true as a INT64 join key value",
        ),
        "coerce_fractional_float_driver_id" => Error(
            Code::InvalidArgument,
            "cannot use double 1001.5 as a INT64 join key value",
        ),
        "coerce_bad_string_driver_id" => Error(
            Code::InvalidArgument,
            "cannot use string \"abc\" as a INT64 join key value",
        ),
        // Feast reads these as part of the view name and answers "view not found".
        "err_bad_version_vX" => Error(
            Code::InvalidArgument,
            "Invalid version 'vX' in feature reference 'driver_stats@vX:conv_rate'",
        ),
        "err_bad_version_version1" => Error(
            Code::InvalidArgument,
            "Invalid version 'version1' in feature reference",
        ),
        // Feast: "All entity rows must have the same columns." / KeyError 'pop from an empty set'.
        "err_ragged_entity_columns" => Error(
            Code::InvalidArgument,
            "entity column 'customer_id' has 1 values but 'driver_id' has 2",
        ),
        "err_empty_entities" => Error(Code::InvalidArgument, "the request has no entity columns"),
        // Unpinned service projections read the active version (v1).
        "svc_driver_svc" => ActiveVersion(SVC),
        "svc_driver_svc_full_names" => ActiveVersion(&[
            (
                "driver_stats__avg_daily_trips",
                "avg_daily_trips",
                "driver_id",
            ),
            ("driver_stats__conv_rate", "conv_rate", "driver_id"),
        ]),
        "svc_driver_svc_alias" => ActiveVersion(ALIAS),
        "svc_driver_svc_alias_full_names" => ActiveVersion(&[
            ("ds_alias__name", "name", "driver_id"),
            ("ds_alias__conv_rate", "conv_rate", "driver_id"),
        ]),
        "svc_driver_svc_joinmap_full_names" => ActiveVersion(&[
            ("driver_stats__conv_rate", "conv_rate", "driver_id"),
            ("other_driver__conv_rate", "conv_rate", "other_driver_id"),
        ]),
        "meta_svc_driver_svc" => {
            ActiveVersionAndMetadata(SVC, vec![("driver_stats", active), ("customer_profile", 0)])
        }
        "meta_svc_driver_svc_alias" => {
            ActiveVersionAndMetadata(ALIAS, vec![("ds_alias", active), ("driver_customer", 0)])
        }
        // Metadata names every version read, with the version actually read.
        "meta_mixed_v0_v1_full_names" => Metadata(vec![("driver_stats", 0), ("driver_stats", 1)]),
        "meta_mixed_v1_v0_full_names" => Metadata(vec![("driver_stats", 1), ("driver_stats", 0)]),
        "meta_svc_driver_svc_pinned_v2" => Metadata(vec![("driver_stats", 2)]),
        // Flag off: the unversioned table is read and the view's current version reported.
        "off_meta_svc_driver_svc" => {
            Metadata(vec![("driver_stats", active), ("customer_profile", 0)])
        }
        _ => return None,
    })
}

/// Feast's error classes Tern answers with a gRPC code and Feast's own message.
fn feast_error(e: &CaseError) -> Option<(Code, String)> {
    let unquoted = e.message.trim_matches('\'').to_owned();
    match e.class.as_str() {
        "FeatureViewNotFoundException"
        | "FeatureViewVersionNotFound"
        | "FeatureServiceNotFoundException" => Some((Code::NotFound, e.message.clone())),
        "KeyError"
            if unquoted.starts_with("Feature ")
                && unquoted.contains(" not found in projection ") =>
        {
            Some((Code::NotFound, unquoted))
        }
        "FeatureNameCollisionError" => Some((Code::InvalidArgument, e.message.clone())),
        "ValueError" if e.message.starts_with("Version-qualified ref") => {
            Some((Code::FailedPrecondition, e.message.clone()))
        }
        "ValueError"
            if e.message.starts_with("Invalid feature reference")
                || e.message == "No features specified for retrieval" =>
        {
            Some((Code::InvalidArgument, e.message.clone()))
        }
        _ => None,
    }
}

/// Feast's answers for driver_stats' active version (v1), by (feature, driver id).
fn active_oracle(fixture: &Fixture, now: i64) -> HashMap<(String, i64), Cell> {
    const ORACLE_CASES: [&str; 2] = ["active_all_features", "active_conv_rate_all_drivers"];
    let mut oracle = HashMap::new();
    for case in fixture
        .cases
        .iter()
        .filter(|c| ORACLE_CASES.contains(&c.name.as_str()))
    {
        let r = case.response.as_ref().expect("oracle case answered");
        let ids: Vec<i64> = feast_column(
            &r.results[r
                .feature_names
                .iter()
                .position(|n| n == "driver_id")
                .expect("driver_id")],
        )
        .iter()
        .map(
            |c| match Value::decode(c.value.as_slice()).expect("value").val {
                Some(Val::Int64Val(id)) => id,
                other => panic!("driver id {other:?}"),
            },
        )
        .collect();
        for (name, vector) in r
            .feature_names
            .iter()
            .zip(&r.results)
            .filter(|(n, _)| *n != "driver_id")
        {
            for (cell, id) in feast_column(vector).into_iter().zip(&ids) {
                oracle.insert(
                    (name.clone(), *id),
                    tern_cell(cell, vector.ttl_seconds, now),
                );
            }
        }
    }
    oracle
}

fn request_int64s(req: &CaseRequest, column: &str) -> Vec<i64> {
    req.entities
        .iter()
        .find(|c| c.name == column)
        .unwrap_or_else(|| panic!("request column {column}"))
        .values
        .iter()
        .map(|v| v["int64"].as_i64().expect("int64 id"))
        .collect()
}

#[tokio::test]
async fn every_feast_case_matches_over_both_paths() {
    let fixture = load_cases();
    let now = fixture.reference_time;
    let repo =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/feature_repo/feature_store.yaml");
    let flag_on = TestServer::start(&repo, Clock::Fixed(now))
        .await
        .expect("serve flag-on repo");
    let flag_off = TestServer::start(
        &fixture_dir().join("flag_off/feature_store.yaml"),
        Clock::Fixed(now),
    )
    .await
    .expect("serve flag-off repo");
    check_all_cases(&flag_on.url(), &flag_off.url()).await;
    flag_on.stop().await.unwrap();
    flag_off.stop().await.unwrap();
}

/// Sends every fixture case to the server for its config (`on_url` with online
/// versioning on, `off_url` with it off), over both gRPC paths, and checks each
/// answer against Feast's (with Tern's deliberate deviations). Any store must pass.
pub(crate) async fn check_all_cases(on_url: &str, off_url: &str) {
    check_fixture_cases(&fixture_dir().join("cases.json"), 1, on_url, off_url).await;
}

/// As [`check_all_cases`], for another recording of the same cases (e.g. Feast's
/// answers from its SQL registry), where driver_stats' active version is `active`.
pub(crate) async fn check_fixture_cases(
    path: &std::path::Path,
    active: i32,
    on_url: &str,
    off_url: &str,
) {
    let fixture = load_fixture_from(path);
    let now = fixture.reference_time;
    let channels = [
        ("on", channel(on_url).await),
        ("off", channel(off_url).await),
    ];
    let oracle = active_oracle(&fixture, now);
    let mut checked = 0;
    for case in &fixture.cases {
        let ch = &channels
            .iter()
            .find(|(k, _)| *k == case.config)
            .expect("config on|off")
            .1;
        for path in BOTH_PATHS {
            let what = format!("case {} ({path:?})", case.name);
            let result = call(ch, path, grpc_request(&case.request)).await;
            check_case(case, &what, result, &oracle, now, active);
            checked += 1;
        }
    }
    assert_eq!(checked, fixture.cases.len() * 2);
    assert!(
        fixture.cases.len() >= 80,
        "the fixture holds the whole case list"
    );
}

fn check_case(
    case: &Case,
    what: &str,
    result: Result<GetOnlineFeaturesResponse, tonic::Status>,
    oracle: &HashMap<(String, i64), Cell>,
    now: i64,
    active: i32,
) {
    let deviation = deviation(&case.name, active);
    // Errors first.
    let expected_error = match (&deviation, &case.error) {
        (Some(Deviation::Error(code, text)), _) => Some((*code, (*text).to_owned(), false)),
        (_, Some(e)) => {
            let (code, message) =
                feast_error(e).unwrap_or_else(|| panic!("{what}: unclassified Feast error {e:?}"));
            Some((code, message, true))
        }
        _ => None,
    };
    if let Some((code, message, exact)) = expected_error {
        let status = result.expect_err(what);
        assert_eq!(status.code(), code, "{what}: {}", status.message());
        if exact {
            assert_eq!(status.message(), message, "{what}: Feast's wording");
        } else {
            assert!(
                status.message().contains(&message),
                "{what}: {:?} lacks {message:?}",
                status.message()
            );
        }
        return;
    }

    let r = result.unwrap_or_else(|s| panic!("{what}: {:?} {}", s.code(), s.message()));
    let feast = case.response.as_ref().expect("answered");
    let mut expected_names = feast.feature_names.clone();
    expected_names.sort();
    let mut got_names = names(&r);
    got_names.sort();
    assert_eq!(got_names, expected_names, "{what}: the same columns");

    // Order: entity columns first, in request order; then features in request order.
    let got = names(&r);
    let entity_cols: Vec<&String> = feast
        .feature_names
        .iter()
        .filter(|n| {
            case.request.entities.iter().any(|c| &c.name == *n) || n.as_str() == "driver_id"
        })
        .collect();
    assert!(
        got[..entity_cols.len()]
            .iter()
            .all(|n| entity_cols.contains(&n)),
        "{what}: entity columns first: {got:?}"
    );
    if let Some(refs) = &case.request.features {
        let feature_cols: Vec<String> = refs
            .iter()
            .map(|r| {
                let (view, feature) = r.split_once(':').expect("ref");
                let version = view.split_once('@').map(|(_, v)| v.to_lowercase());
                let view = view.split('@').next().unwrap_or(view);
                match (case.request.full_feature_names, version.as_deref()) {
                    (false, _) => feature.to_owned(),
                    (true, None | Some("" | "latest")) => format!("{view}__{feature}"),
                    (true, Some(v)) => format!(
                        "{view}@v{}__{feature}",
                        v.trim_start_matches('v').parse::<u32>().expect("n")
                    ),
                }
            })
            .collect();
        assert_eq!(
            &got[got.len() - feature_cols.len()..],
            feature_cols.as_slice(),
            "{what}: features in request order"
        );
    }

    let active_columns: &[(&str, &str, &str)] = match &deviation {
        Some(Deviation::ActiveVersion(c) | Deviation::ActiveVersionAndMetadata(c, _)) => c,
        _ => &[],
    };
    for (name, vector) in feast.feature_names.iter().zip(&feast.results) {
        let got = tern_column(&r, name).unwrap_or_else(|| panic!("{what}: no column {name}"));
        let expected: Vec<Cell> = match active_columns.iter().find(|(col, _, _)| col == name) {
            Some((_, feature, key_column)) => request_int64s(&case.request, key_column)
                .iter()
                .map(|id| {
                    oracle
                        .get(&((*feature).to_owned(), *id))
                        .unwrap_or_else(|| panic!("{what}: no oracle cell for {feature} of {id}"))
                        .clone()
                })
                .collect(),
            None => feast_column(vector)
                .into_iter()
                .map(|c| tern_cell(c, vector.ttl_seconds, now))
                .collect(),
        };
        assert_eq!(got, expected, "{what}: column {name}");
    }

    let expected_metadata: Vec<(String, i32)> = match &deviation {
        Some(Deviation::Metadata(m) | Deviation::ActiveVersionAndMetadata(_, m)) => {
            m.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect()
        }
        _ => feast
            .feature_view_metadata
            .iter()
            .map(|m| (m.name.clone(), m.version.unwrap_or(0)))
            .collect(),
    };
    let got_metadata: Vec<(String, i32)> = r
        .metadata
        .as_ref()
        .map(|m| {
            m.feature_view_metadata
                .iter()
                .map(|m| (m.name.clone(), m.version))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(got_metadata, expected_metadata, "{what}: version metadata");
}

#[test]
fn every_deviation_names_a_real_case() {
    let fixture = load_cases();
    let names: Vec<&str> = fixture.cases.iter().map(|c| c.name.as_str()).collect();
    let listed = [
        "driver_customer_only_driver_id",
        "svc_driver_svc_joinmap_missing_other_column",
        "err_no_join_key_column",
        "err_svc_missing_driver_id",
        "coerce_bool_driver_id",
        "coerce_fractional_float_driver_id",
        "coerce_bad_string_driver_id",
        "err_bad_version_vX",
        "err_bad_version_version1",
        "err_ragged_entity_columns",
        "err_empty_entities",
        "svc_driver_svc",
        "svc_driver_svc_full_names",
        "svc_driver_svc_alias",
        "svc_driver_svc_alias_full_names",
        "svc_driver_svc_joinmap_full_names",
        "meta_svc_driver_svc",
        "meta_svc_driver_svc_alias",
        "meta_mixed_v0_v1_full_names",
        "meta_mixed_v1_v0_full_names",
        "meta_svc_driver_svc_pinned_v2",
        "off_meta_svc_driver_svc",
    ];
    for name in listed {
        assert!(deviation(name, 1).is_some(), "{name} has a deviation");
        assert!(
            names.contains(&name),
            "deviation for a case the fixture does not have: {name}"
        );
    }
}
