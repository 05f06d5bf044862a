//! The `/get-online-features` request body, as `feast serve` accepts it.
//!
//! Owns: parsing the JSON body into the columns the serving core takes (entity values
//! as `feast.types.Value`s, converted later exactly as on gRPC), and, for a body that
//! does not parse, a FastAPI-style validation problem naming the field.
//!
//! A well-formed body is parsed once, typed, with no JSON tree. Only a body that
//! fails is parsed a second time, into a tree, to say where it is wrong.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;

use crate::proto::feast::types::value::Val;
use crate::proto::feast::types::{RepeatedValue, Value};
use crate::proto::tern::wire::Column;

/// A parsed request body.
#[derive(Debug, Deserialize)]
pub(crate) struct Body {
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub feature_service: Option<String>,
    pub entities: Entities,
    #[serde(default, deserialize_with = "lax_bool")]
    pub full_feature_names: bool,
    #[serde(default, deserialize_with = "lax_bool")]
    pub include_feature_view_version_metadata: bool,
}

/// Entity columns in body order.
#[derive(Debug)]
pub(crate) struct Entities(pub Vec<Column>);

/// Why a body was refused, FastAPI's way: one entry of its 422 `detail` list.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Problem {
    /// Pydantic's error type (`missing`, `list_type`, `json_invalid`, ...).
    pub kind: &'static str,
    /// Where: `body`, then field names and list positions.
    pub loc: Vec<Loc>,
    /// What is wrong.
    pub msg: String,
    /// The value found there, when there is one.
    pub input: Option<Json>,
    /// For `json_invalid`: the parser's own words.
    pub ctx_error: Option<String>,
}

/// One step of a problem's location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Loc {
    Key(String),
    Index(usize),
}

impl Problem {
    fn at(kind: &'static str, loc: Vec<Loc>, msg: &str, input: Option<&Json>) -> Self {
        Self {
            kind,
            loc,
            msg: msg.to_owned(),
            input: input.cloned(),
            ctx_error: None,
        }
    }

    /// `body.entities.driver_id[1]`, for logs and plain-text messages.
    pub(crate) fn path(&self) -> String {
        let mut out = String::new();
        for step in &self.loc {
            match step {
                Loc::Key(k) if out.is_empty() => out.push_str(k),
                Loc::Key(k) => {
                    out.push('.');
                    out.push_str(k);
                }
                Loc::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }
}

impl Problem {
    /// A body of the write endpoints that does not parse: serde's words, at `body`.
    pub(crate) fn body(err: &serde_json::Error) -> Self {
        let kind = if err.is_syntax() || err.is_eof() {
            "json_invalid"
        } else if err.to_string().starts_with("missing field") {
            "missing"
        } else {
            "value_error"
        };
        Self {
            kind,
            loc: body_loc(&[]),
            msg: strip_position(&err.to_string()),
            input: None,
            ctx_error: None,
        }
    }

    /// A `df` column that is not a list.
    pub(crate) fn not_a_list(column: &str, value: &Json) -> Self {
        Self::at(
            "list_type",
            body_loc(&[key("df"), key(column)]),
            "Input should be a valid list",
            Some(value),
        )
    }
}

/// Parses a request body; on failure, says where and why.
pub(crate) fn parse(bytes: &[u8]) -> Result<Body, Box<Problem>> {
    serde_json::from_slice::<Body>(bytes).map_err(|err| Box::new(explain(bytes, &err)))
}

fn body_loc(rest: &[Loc]) -> Vec<Loc> {
    let mut loc = vec![Loc::Key("body".into())];
    loc.extend_from_slice(rest);
    loc
}

fn key(k: &str) -> Loc {
    Loc::Key(k.to_owned())
}

/// The problem with a body the typed parse refused.
fn explain(bytes: &[u8], err: &serde_json::Error) -> Problem {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Problem::at(
            "missing",
            body_loc(&[]),
            "Field required",
            Some(&Json::Null),
        );
    }
    let tree: Json = match serde_json::from_slice(bytes) {
        Ok(tree) => tree,
        Err(syntax) => {
            return Problem {
                kind: "json_invalid",
                loc: vec![
                    key("body"),
                    Loc::Index(char_offset(bytes, syntax.line(), syntax.column())),
                ],
                msg: "JSON decode error".into(),
                input: Some(Json::Object(Default::default())),
                ctx_error: Some(strip_position(&syntax.to_string())),
            };
        }
    };
    validate(&tree).unwrap_or_else(|| Problem {
        kind: "value_error",
        loc: body_loc(&[]),
        msg: strip_position(&err.to_string()),
        input: None,
        ctx_error: None,
    })
}

/// The first problem in a syntactically valid body, in field order.
fn validate(tree: &Json) -> Option<Problem> {
    let Json::Object(body) = tree else {
        return Some(Problem::at(
            "model_attributes_type",
            body_loc(&[]),
            "Input should be a valid dictionary or object to extract fields from",
            Some(tree),
        ));
    };
    match body.get("entities") {
        None => {
            return Some(Problem::at(
                "missing",
                body_loc(&[key("entities")]),
                "Field required",
                Some(tree),
            ));
        }
        Some(Json::Object(columns)) => {
            for (name, values) in columns {
                let Json::Array(values) = values else {
                    return Some(Problem::at(
                        "list_type",
                        body_loc(&[key("entities"), key(name)]),
                        "Input should be a valid list",
                        Some(values),
                    ));
                };
                for (i, v) in values.iter().enumerate() {
                    if let Err(msg) = crate::writes::convert::json_key(v) {
                        return Some(Problem::at(
                            "value_error",
                            body_loc(&[key("entities"), key(name), Loc::Index(i)]),
                            &msg,
                            Some(v),
                        ));
                    }
                }
            }
        }
        Some(other) => {
            return Some(Problem::at(
                "dict_type",
                body_loc(&[key("entities")]),
                "Input should be a valid dictionary",
                Some(other),
            ));
        }
    }
    match body.get("feature_service") {
        None | Some(Json::Null | Json::String(_)) => {}
        Some(other) => {
            return Some(Problem::at(
                "string_type",
                body_loc(&[key("feature_service")]),
                "Input should be a valid string",
                Some(other),
            ));
        }
    }
    match body.get("features") {
        None => {}
        Some(Json::Array(refs)) => {
            for (i, r) in refs.iter().enumerate() {
                if !r.is_string() {
                    return Some(Problem::at(
                        "string_type",
                        body_loc(&[key("features"), Loc::Index(i)]),
                        "Input should be a valid string",
                        Some(r),
                    ));
                }
            }
        }
        Some(other) => {
            return Some(Problem::at(
                "list_type",
                body_loc(&[key("features")]),
                "Input should be a valid list",
                Some(other),
            ));
        }
    }
    for flag in [
        "full_feature_names",
        "include_feature_view_version_metadata",
    ] {
        if let Some(v) = body.get(flag)
            && bool_of(v).is_none()
        {
            let (kind, msg) = if matches!(v, Json::String(_) | Json::Number(_)) {
                (
                    "bool_parsing",
                    "Input should be a valid boolean, unable to interpret input",
                )
            } else {
                ("bool_type", "Input should be a valid boolean")
            };
            return Some(Problem::at(kind, body_loc(&[key(flag)]), msg, Some(v)));
        }
    }
    None
}

/// serde's message without its " at line 1 column 72" (the location is in `loc`).
fn strip_position(message: &str) -> String {
    message
        .rfind(" at line ")
        .map_or(message, |i| &message[..i])
        .to_owned()
}

/// The character offset of serde's (1-based line, column) in `bytes`, as Python's
/// JSON decoder reports positions.
fn char_offset(bytes: &[u8], line: usize, column: usize) -> usize {
    let text = String::from_utf8_lossy(bytes);
    let mut offset = 0;
    for (i, l) in text.split('\n').enumerate() {
        if i + 1 == line {
            return offset + l.chars().take(column.saturating_sub(1)).count();
        }
        offset += l.chars().count() + 1;
    }
    offset
}

/// Pydantic's lax booleans: JSON booleans, 0 and 1, and the usual words.
fn bool_of(v: &Json) -> Option<bool> {
    match v {
        Json::Bool(b) => Some(*b),
        Json::Number(n) => match n.as_f64() {
            Some(0.0) => Some(false),
            Some(1.0) => Some(true),
            _ => None,
        },
        Json::String(s) => word_bool(s),
        _ => None,
    }
}

fn word_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "on" | "t" | "true" | "y" | "yes" => Some(true),
        "0" | "off" | "f" | "false" | "n" | "no" => Some(false),
        _ => None,
    }
}

fn lax_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    bool_of(&Json::deserialize(d)?).ok_or_else(|| de::Error::custom("not a boolean"))
}

impl<'de> Deserialize<'de> for Entities {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EntitiesVisitor)
    }
}

struct EntitiesVisitor;

impl<'de> Visitor<'de> for EntitiesVisitor {
    type Value = Entities;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object of entity columns")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entities, A::Error> {
        let mut columns = Vec::with_capacity(map.size_hint().unwrap_or(1));
        while let Some(name) = map.next_key::<String>()? {
            let values: ColumnValues = map.next_value()?;
            columns.push(Column {
                key: name,
                value: Some(RepeatedValue { val: values.0 }),
            });
        }
        Ok(Entities(columns))
    }
}

struct ColumnValues(Vec<Value>);

impl<'de> Deserialize<'de> for ColumnValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(ColumnVisitor)
    }
}

struct ColumnVisitor;

impl<'de> Visitor<'de> for ColumnVisitor {
    type Value = ColumnValues;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of entity values")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ColumnValues, A::Error> {
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(4));
        while let Some(v) = seq.next_element::<EntityValue>()? {
            values.push(v.0);
        }
        Ok(ColumnValues(values))
    }
}

struct EntityValue(Value);

impl<'de> Deserialize<'de> for EntityValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EntityValueVisitor)
    }
}

struct EntityValueVisitor;

impl EntityValueVisitor {
    fn of(val: Val) -> EntityValue {
        EntityValue(Value { val: Some(val) })
    }
}

impl Visitor<'_> for EntityValueVisitor {
    type Value = EntityValue;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string, number, boolean or null")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<EntityValue, E> {
        Ok(Self::of(Val::BoolVal(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<EntityValue, E> {
        Ok(Self::of(Val::Int64Val(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<EntityValue, E> {
        i64::try_from(v)
            .map(|v| Self::of(Val::Int64Val(v)))
            .map_err(|_| E::custom("integer out of range"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<EntityValue, E> {
        Ok(Self::of(Val::DoubleVal(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<EntityValue, E> {
        Ok(Self::of(Val::StringVal(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<EntityValue, E> {
        Ok(Self::of(Val::StringVal(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<EntityValue, E> {
        Ok(EntityValue(Value { val: None }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(body: &str) -> Problem {
        *parse(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn a_body_as_feast_sends_it() {
        let body = parse(
            br#"{"features": ["driver_stats:conv_rate"], "entities": {"driver_id": [1001, "1002", 1003.0, true, null]},
                "full_feature_names": "yes", "extra": [1]}"#,
        )
        .unwrap();
        assert_eq!(body.features, ["driver_stats:conv_rate"]);
        assert!(body.full_feature_names);
        assert!(!body.include_feature_view_version_metadata);
        let [column] = &body.entities.0[..] else {
            panic!("one column")
        };
        assert_eq!(column.key, "driver_id");
        let vals: Vec<_> = column
            .value
            .as_ref()
            .unwrap()
            .val
            .iter()
            .map(|v| v.val.clone())
            .collect();
        assert_eq!(
            vals,
            [
                Some(Val::Int64Val(1001)),
                Some(Val::StringVal("1002".into())),
                Some(Val::DoubleVal(1003.0)),
                Some(Val::BoolVal(true)),
                None
            ]
        );
    }

    #[test]
    fn problems_name_the_field() {
        let p = problem(r#"{"features": ["a:b"], "entities": {"driver_id": 1001}}"#);
        assert_eq!(
            (p.kind, p.path().as_str()),
            ("list_type", "body.entities.driver_id")
        );
        let p = problem(r#"{"features": ["a:b"]}"#);
        assert_eq!((p.kind, p.path().as_str()), ("missing", "body.entities"));
        let p = problem(r#"{"features": [7], "entities": {}}"#);
        assert_eq!(
            (p.kind, p.path().as_str()),
            ("string_type", "body.features[0]")
        );
        let p = problem(r#"{"entities": {"d": [1, [2]]}}"#);
        assert_eq!(
            (p.kind, p.path().as_str()),
            ("value_error", "body.entities.d[1]")
        );
        let p = problem(r#"{"entities": {"d": [18446744073709551615]}}"#);
        assert_eq!(p.kind, "value_error");
        assert!(p.msg.contains("out of range"), "{}", p.msg);
        let p = problem(r#"{"entities": {}, "full_feature_names": "maybe"}"#);
        assert_eq!(
            (p.kind, p.path().as_str()),
            ("bool_parsing", "body.full_feature_names")
        );
        let p = problem(r#"{"entities": {"d": [1"#);
        assert_eq!(p.kind, "json_invalid");
        assert_eq!(p.loc[1], Loc::Index(20));
        assert_eq!(problem("  ").kind, "missing");
        assert_eq!(problem("[1]").kind, "model_attributes_type");
    }
}
