//! Reading definition files: YAML into a tree that keeps line numbers, then a typed
//! walk that collects every error instead of stopping at the first.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::{
    DefinitionError, DefinitionErrors, Definitions, EntityDef, FieldDef, Origin,
    PREVENT_DESTROY_TAG, PermissionDef, PolicyDef, ProjectionDef, PushSourceDef, ServiceDef,
    SourceDef, VersionPin, ViewDef,
};
use crate::proto::feast::types::value_type::Enum as ValueType;

/// A YAML node with the line it starts on.
#[derive(Debug, Clone)]
enum Node {
    Scalar {
        text: String,
        plain: bool,
        line: usize,
    },
    Seq {
        items: Vec<Node>,
        line: usize,
    },
    Map {
        entries: Vec<(String, usize, Node)>,
        line: usize,
    },
}

impl Node {
    fn line(&self) -> usize {
        match self {
            Node::Scalar { line, .. } | Node::Seq { line, .. } | Node::Map { line, .. } => *line,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self, Node::Scalar { text, plain: true, .. } if text.is_empty() || text == "~" || text == "null")
    }

    fn what(&self) -> &'static str {
        match self {
            Node::Scalar { .. } if self.is_null() => "nothing",
            Node::Scalar { .. } => "a scalar",
            Node::Seq { .. } => "a list",
            Node::Map { .. } => "a mapping",
        }
    }
}

/// Builds [`Node`]s from the parser's events.
#[derive(Default)]
struct Builder {
    stack: Vec<(Node, Option<(String, usize)>)>,
    done: Vec<Node>,
    /// Aliases and anchors are refused: definitions are plain data.
    alias_line: Option<usize>,
}

impl Builder {
    fn push_value(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.done.push(node),
            Some((Node::Seq { items, .. }, _)) => items.push(node),
            Some((Node::Map { entries, .. }, pending)) => match pending.take() {
                None => {
                    // A key: scalars only (a complex key is reported as a key text).
                    let line = node.line();
                    let key = match node {
                        Node::Scalar { text, .. } => text,
                        other => format!("<{}>", other.what()),
                    };
                    *pending = Some((key, line));
                }
                Some((key, line)) => entries.push((key, line, node)),
            },
            Some((Node::Scalar { .. }, _)) => {}
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::Scalar(text, style, _, _) => self.push_value(Node::Scalar {
                text,
                plain: style == TScalarStyle::Plain,
                line,
            }),
            Event::SequenceStart(..) => self.stack.push((
                Node::Seq {
                    items: Vec::new(),
                    line,
                },
                None,
            )),
            Event::MappingStart(..) => self.stack.push((
                Node::Map {
                    entries: Vec::new(),
                    line,
                },
                None,
            )),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((node, _)) = self.stack.pop() {
                    self.push_value(node);
                }
            }
            Event::Alias(_) => {
                self.alias_line.get_or_insert(line);
                self.push_value(Node::Scalar {
                    text: String::new(),
                    plain: true,
                    line,
                });
            }
            _ => {}
        }
    }
}

/// Collects errors for one file.
struct Ctx<'a> {
    file: &'a Path,
    errors: &'a mut Vec<DefinitionError>,
}

impl Ctx<'_> {
    fn origin(&self, line: usize) -> Origin {
        Origin {
            file: self.file.to_owned(),
            line,
        }
    }

    fn error(&mut self, line: usize, field: &str, message: impl Into<String>) {
        self.errors.push(DefinitionError {
            origin: self.origin(line),
            field: field.to_owned(),
            message: message.into(),
        });
    }

    /// The entries of a mapping, with unknown keys reported.
    fn mapping<'n>(&mut self, node: &'n Node, path: &str, allowed: &[&str]) -> Option<Fields<'n>> {
        let Node::Map { entries, line } = node else {
            self.error(
                node.line(),
                path,
                format!("expected a mapping, found {}", node.what()),
            );
            return None;
        };
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (key, key_line, _) in entries {
            if !allowed.contains(&key.as_str()) {
                self.error(
                    *key_line,
                    &join(path, key),
                    format!(
                        "unknown key '{key}' (expected one of {})",
                        allowed.join(", ")
                    ),
                );
            }
            if let Some(first) = seen.insert(key, *key_line) {
                self.error(
                    *key_line,
                    &join(path, key),
                    format!("'{key}' is given twice (first on line {first})"),
                );
            }
        }
        Some(Fields {
            entries,
            line: *line,
            path: path.to_owned(),
        })
    }

    fn string(&mut self, fields: &Fields<'_>, key: &str) -> Option<String> {
        let node = fields.get(key)?;
        match node {
            Node::Scalar { text, .. } if !node.is_null() => Some(text.clone()),
            Node::Scalar { .. } => None,
            other => {
                self.error(
                    other.line(),
                    &join(&fields.path, key),
                    format!("expected text, found {}", other.what()),
                );
                None
            }
        }
    }

    fn required(&mut self, fields: &Fields<'_>, key: &str) -> Option<String> {
        let path = join(&fields.path, key);
        match fields.get(key) {
            None => {
                self.error(fields.line, &path, "required");
                None
            }
            Some(n) if n.is_null() => {
                self.error(n.line(), &path, "required");
                None
            }
            Some(n) => match self.string(fields, key) {
                Some(v) if v.is_empty() => {
                    self.error(n.line(), &path, "must not be empty");
                    None
                }
                other => other,
            },
        }
    }

    fn boolean(&mut self, fields: &Fields<'_>, key: &str, default: bool) -> bool {
        let Some(node) = fields.get(key) else {
            return default;
        };
        match node {
            Node::Scalar {
                text, plain: true, ..
            } => match text.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" => true,
                "false" | "no" | "off" => false,
                _ => {
                    self.error(
                        node.line(),
                        &join(&fields.path, key),
                        format!("expected true or false, found '{text}'"),
                    );
                    default
                }
            },
            other => {
                self.error(
                    other.line(),
                    &join(&fields.path, key),
                    format!("expected true or false, found {}", other.what()),
                );
                default
            }
        }
    }

    fn strings(&mut self, node: &Node, path: &str) -> Vec<(String, usize)> {
        match node {
            Node::Seq { items, .. } => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| match item {
                    Node::Scalar { text, .. } if !item.is_null() => {
                        Some((text.clone(), item.line()))
                    }
                    other => {
                        self.error(
                            other.line(),
                            &format!("{path}[{i}]"),
                            format!("expected a name, found {}", other.what()),
                        );
                        None
                    }
                })
                .collect(),
            other => {
                self.error(
                    other.line(),
                    path,
                    format!("expected a list, found {}", other.what()),
                );
                Vec::new()
            }
        }
    }

    fn string_map(&mut self, fields: &Fields<'_>, key: &str) -> BTreeMap<String, String> {
        let path = join(&fields.path, key);
        let mut out = BTreeMap::new();
        match fields.get(key) {
            None => {}
            Some(n) if n.is_null() => {}
            Some(Node::Map { entries, .. }) => {
                for (k, _, v) in entries {
                    match v {
                        Node::Scalar { text, .. } => {
                            out.insert(k.clone(), text.clone());
                        }
                        other => self.error(
                            other.line(),
                            &join(&path, k),
                            format!("expected text, found {}", other.what()),
                        ),
                    }
                }
            }
            Some(other) => self.error(
                other.line(),
                &path,
                format!("expected a mapping, found {}", other.what()),
            ),
        }
        out
    }

    fn tags(&mut self, fields: &Fields<'_>) -> BTreeMap<String, String> {
        let tags = self.string_map(fields, "tags");
        if tags.contains_key(PREVENT_DESTROY_TAG) {
            self.error(
                fields.get("tags").map_or(fields.line, Node::line),
                &join(&fields.path, "tags"),
                format!("'{PREVENT_DESTROY_TAG}' is reserved: use `prevent_destroy: true`"),
            );
        }
        tags
    }

    fn name(&mut self, line: usize, path: &str, kind: &str, name: &str) {
        for (c, why) in [
            (
                '@',
                "The '@' character is reserved for version-qualified references (e.g., 'fv@v2:feature').",
            ),
            (
                ':',
                "The ':' character is reserved as the separator in fully qualified feature references (e.g., 'feature_view:feature_name').",
            ),
        ] {
            if name.contains(c) {
                self.error(
                    line,
                    path,
                    format!("{kind} name '{name}' must not contain '{c}'. {why}"),
                );
            }
        }
    }
}

struct Fields<'n> {
    entries: &'n [(String, usize, Node)],
    line: usize,
    path: String,
}

impl<'n> Fields<'n> {
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, _, n)| n)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

const DTYPES: &str =
    "Int32, Int64, Float32, Float64, String, Bytes, Bool, UnixTimestamp, Array(...) of each";

/// `Float32` → FLOAT, `Array(Float64)` → DOUBLE_LIST.
pub(crate) fn dtype(text: &str) -> Option<ValueType> {
    let text = text.trim();
    if let Some(inner) = text
        .strip_prefix("Array(")
        .and_then(|r| r.strip_suffix(')'))
    {
        return Some(match dtype(inner)? {
            ValueType::Int32 => ValueType::Int32List,
            ValueType::Int64 => ValueType::Int64List,
            ValueType::Float => ValueType::FloatList,
            ValueType::Double => ValueType::DoubleList,
            ValueType::String => ValueType::StringList,
            ValueType::Bytes => ValueType::BytesList,
            ValueType::Bool => ValueType::BoolList,
            ValueType::UnixTimestamp => ValueType::UnixTimestampList,
            _ => return None,
        });
    }
    Some(match text {
        "Int32" => ValueType::Int32,
        "Int64" => ValueType::Int64,
        "Float32" => ValueType::Float,
        "Float64" => ValueType::Double,
        "String" => ValueType::String,
        "Bytes" => ValueType::Bytes,
        "Bool" => ValueType::Bool,
        "UnixTimestamp" => ValueType::UnixTimestamp,
        _ => return None,
    })
}

/// The dtype text of a value type (the inverse of [`dtype`]).
pub(crate) fn dtype_name(t: ValueType) -> Option<String> {
    let scalar = |t: ValueType| -> Option<&'static str> {
        Some(match t {
            ValueType::Int32 => "Int32",
            ValueType::Int64 => "Int64",
            ValueType::Float => "Float32",
            ValueType::Double => "Float64",
            ValueType::String => "String",
            ValueType::Bytes => "Bytes",
            ValueType::Bool => "Bool",
            ValueType::UnixTimestamp => "UnixTimestamp",
            _ => return None,
        })
    };
    match list_item(t) {
        Some(item) => scalar(item).map(|s| format!("Array({s})")),
        None => scalar(t).map(str::to_owned),
    }
}

/// The item type of a list type (`DOUBLE_LIST` → `DOUBLE`); `None` for scalars.
pub(crate) fn list_item(t: ValueType) -> Option<ValueType> {
    Some(match t {
        ValueType::Int32List => ValueType::Int32,
        ValueType::Int64List => ValueType::Int64,
        ValueType::FloatList => ValueType::Float,
        ValueType::DoubleList => ValueType::Double,
        ValueType::StringList => ValueType::String,
        ValueType::BytesList => ValueType::Bytes,
        ValueType::BoolList => ValueType::Bool,
        ValueType::UnixTimestampList => ValueType::UnixTimestamp,
        _ => return None,
    })
}

/// Entity value types: Feast's enum names of the scalar and list types.
fn value_type(text: &str) -> Option<ValueType> {
    let t = ValueType::from_str_name(text)?;
    dtype_name(t).map(|_| t)
}

/// `90`, `90s`, `15m`, `2h`, `1d` → seconds.
pub(crate) fn ttl_seconds(text: &str) -> Option<i64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "s"),
    };
    let n: i64 = digits.parse().ok()?;
    let scale = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// Feast's pin strings: `''`/`latest` (any case), `vN`/`versionN` (any case).
pub(crate) fn version_pin(text: &str) -> Result<VersionPin, String> {
    let lower = text.trim().to_ascii_lowercase();
    if lower.is_empty() || lower == "latest" {
        return Ok(VersionPin::Latest);
    }
    let digits = lower
        .strip_prefix("version")
        .or_else(|| lower.strip_prefix('v'))
        .unwrap_or("");
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = digits.parse()
    {
        return Ok(VersionPin::Pinned(n));
    }
    Err(format!(
        "Invalid version string '{text}'. Expected 'latest', 'vN', or 'versionN' (e.g. 'v2', 'version3')."
    ))
}

/// `a/./b/../c` → `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        normalize(path)
    } else {
        let cwd = std::env::current_dir().unwrap_or_default();
        normalize(&cwd.join(path))
    }
}

/// A source path as written in `file` → as the registry stores it (relative to
/// `repo_dir` when under it).
fn source_path(written: &str, file: &Path, repo_dir: &Path) -> String {
    if written.contains("://") {
        return written.to_owned();
    }
    let dir = file.parent().unwrap_or(Path::new(""));
    let full = absolute(&dir.join(written));
    match full.strip_prefix(absolute(repo_dir)) {
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => full.to_string_lossy().into_owned(),
    }
}

/// One file's objects, before the checks across files.
#[derive(Default)]
struct Parsed {
    project: Option<(String, Origin)>,
    entities: Vec<EntityDef>,
    sources: Vec<SourceDef>,
    push_sources: Vec<PushSourceDef>,
    views: Vec<(ViewDef, Vec<FieldDef>)>,
    services: Vec<ServiceDef>,
    /// Projection features with the line they are written on, for the checks.
    projection_lines: Vec<Vec<usize>>,
    /// `None` when the file has no `permissions:` key.
    permissions: Option<Vec<PermissionDef>>,
}

fn parse_file(
    file: &Path,
    text: &str,
    repo_dir: &Path,
    errors: &mut Vec<DefinitionError>,
) -> Parsed {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, false) {
        errors.push(DefinitionError {
            origin: Origin {
                file: file.to_owned(),
                line: e.marker().line(),
            },
            field: String::new(),
            message: format!("not valid YAML: {}", e.info()),
        });
        return Parsed::default();
    }
    let mut cx = Ctx { file, errors };
    if let Some(line) = builder.alias_line {
        cx.error(line, "", "YAML aliases are not supported in definitions");
    }
    let mut parsed = Parsed::default();
    let Some(root) = builder.done.into_iter().next() else {
        return parsed;
    };
    if root.is_null() {
        return parsed;
    }
    let Some(top) = cx.mapping(
        &root,
        "",
        &[
            "project",
            "entities",
            "sources",
            "feature_views",
            "feature_services",
            "permissions",
        ],
    ) else {
        return parsed;
    };
    if let Some(p) = cx.string(&top, "project") {
        let line = top.get("project").map_or(0, Node::line);
        parsed.project = Some((p, cx.origin(line)));
    }
    let list = |cx: &mut Ctx<'_>, key: &str| -> Vec<Node> {
        match top.get(key) {
            None => Vec::new(),
            Some(n) if n.is_null() => Vec::new(),
            Some(Node::Seq { items, .. }) => items.clone(),
            Some(other) => {
                cx.error(
                    other.line(),
                    key,
                    format!("expected a list, found {}", other.what()),
                );
                Vec::new()
            }
        }
    };
    for (i, node) in list(&mut cx, "entities").iter().enumerate() {
        if let Some(e) = entity(&mut cx, node, i) {
            parsed.entities.push(e);
        }
    }
    for (i, node) in list(&mut cx, "sources").iter().enumerate() {
        match source(&mut cx, node, i, repo_dir) {
            Some(Source::File(s)) => parsed.sources.push(s),
            Some(Source::Push(s)) => parsed.push_sources.push(s),
            None => {}
        }
    }
    for (i, node) in list(&mut cx, "feature_views").iter().enumerate() {
        if let Some(v) = view(&mut cx, node, i) {
            parsed.views.push(v);
        }
    }
    for (i, node) in list(&mut cx, "feature_services").iter().enumerate() {
        if let Some((s, lines)) = service(&mut cx, node, i) {
            parsed.services.push(s);
            parsed.projection_lines.push(lines);
        }
    }
    if top.get("permissions").is_some() {
        let mut permissions = Vec::new();
        for (i, node) in list(&mut cx, "permissions").iter().enumerate() {
            if let Some(p) = permission(&mut cx, node, i) {
                permissions.push(p);
            }
        }
        parsed.permissions = Some(permissions);
    }
    parsed
}

/// The permission types, by their names in definitions (Feast's enum names, any case).
fn permission_type(text: &str) -> Option<crate::proto::feast::core::permission_spec::Type> {
    crate::proto::feast::core::permission_spec::Type::from_str_name(&text.to_ascii_uppercase())
}

fn permission_action(
    text: &str,
) -> Option<crate::proto::feast::core::permission_spec::AuthzedAction> {
    crate::proto::feast::core::permission_spec::AuthzedAction::from_str_name(
        &text.to_ascii_uppercase(),
    )
}

fn permission(cx: &mut Ctx<'_>, node: &Node, i: usize) -> Option<PermissionDef> {
    let path = object_path("permissions", node, i);
    let f = cx.mapping(
        node,
        &path,
        &[
            "name",
            "types",
            "name_patterns",
            "required_tags",
            "actions",
            "policy",
            "tags",
        ],
    )?;
    let name = cx.required(&f, "name");
    let mut types = Vec::new();
    if let Some(n) = f.get("types").filter(|n| !n.is_null()) {
        for (text, line) in cx.strings(n, &join(&path, "types")) {
            match permission_type(&text) {
                Some(t) => types.push(t),
                None => cx.error(
                    line,
                    &join(&path, "types"),
                    format!(
                        "unknown type '{text}' (expected feature_view, on_demand_feature_view, batch_feature_view, stream_feature_view, label_view, feature_service, entity, data_source, validation_reference, saved_dataset, permission or project)"
                    ),
                ),
            }
        }
    }
    let mut name_patterns = Vec::new();
    if let Some(n) = f.get("name_patterns").filter(|n| !n.is_null()) {
        for (text, line) in cx.strings(n, &join(&path, "name_patterns")) {
            match regex::Regex::new(&format!("^(?:{text})$")) {
                Ok(_) => name_patterns.push(text),
                Err(e) => cx.error(
                    line,
                    &join(&path, "name_patterns"),
                    format!("'{text}' is not a regular expression: {e}"),
                ),
            }
        }
    }
    let required_tags = cx.string_map(&f, "required_tags");
    let tags = cx.string_map(&f, "tags");
    let mut actions = Vec::new();
    match f.get("actions").filter(|n| !n.is_null()) {
        None => cx.error(
            f.line,
            &join(&path, "actions"),
            "required: the actions covered, e.g. [read_online, write_online]",
        ),
        Some(n) => {
            for (text, line) in cx.strings(n, &join(&path, "actions")) {
                match permission_action(&text) {
                    Some(a) => actions.push(a),
                    None => cx.error(
                        line,
                        &join(&path, "actions"),
                        format!(
                            "unknown action '{text}' (expected create, describe, update, delete, read_online, read_offline, write_online or write_offline)"
                        ),
                    ),
                }
            }
        }
    }
    let policy = policy(cx, &f, &join(&path, "policy"));
    Some(PermissionDef {
        origin: cx.origin(f.line),
        name: name?,
        types,
        name_patterns,
        required_tags,
        actions,
        policy: policy?,
        tags,
    })
}

fn policy(cx: &mut Ctx<'_>, f: &Fields<'_>, path: &str) -> Option<PolicyDef> {
    let Some(node) = f.get("policy").filter(|n| !n.is_null()) else {
        cx.error(
            f.line,
            path,
            "required: who is let in, e.g. {roles: [reader]}, {groups: [ml]} or {namespaces: [serving]}",
        );
        return None;
    };
    let p = cx.mapping(node, path, &["roles", "groups", "namespaces"])?;
    let mut list = |key: &str| {
        p.get(key).filter(|n| !n.is_null()).map(|n| {
            cx.strings(n, &join(path, key))
                .into_iter()
                .map(|(s, _)| s)
                .collect::<Vec<_>>()
        })
    };
    let (roles, groups, namespaces) = (list("roles"), list("groups"), list("namespaces"));
    match (roles, groups, namespaces) {
        (Some(r), None, None) => Some(PolicyDef::Roles(r)),
        (None, Some(g), None) => Some(PolicyDef::Groups(g)),
        (None, None, Some(n)) => Some(PolicyDef::Namespaces(n)),
        (None, Some(g), Some(n)) => Some(PolicyDef::GroupsOrNamespaces(g, n)),
        _ => {
            cx.error(
                p.line,
                path,
                "give roles, groups, namespaces, or groups with namespaces (roles combine with nothing)",
            );
            None
        }
    }
}

/// `kind[name]` when the object has a readable name, else `kind[i]`.
fn object_path(kind: &str, node: &Node, i: usize) -> String {
    if let Node::Map { entries, .. } = node
        && let Some((_, _, Node::Scalar { text, .. })) =
            entries.iter().find(|(k, _, _)| k == "name")
        && !text.is_empty()
    {
        return format!("{kind}[{text}]");
    }
    format!("{kind}[{i}]")
}

fn entity(cx: &mut Ctx<'_>, node: &Node, i: usize) -> Option<EntityDef> {
    let path = object_path("entities", node, i);
    let f = cx.mapping(
        node,
        &path,
        &[
            "name",
            "join_keys",
            "join_key",
            "value_type",
            "description",
            "owner",
            "tags",
        ],
    )?;
    let name = cx.required(&f, "name");
    if let Some(n) = &name {
        cx.name(f.line, &join(&path, "name"), "Entity", n);
    }
    let mut join_key = cx.string(&f, "join_key");
    if let Some(keys) = f.get("join_keys") {
        let keys = cx.strings(keys, &join(&path, "join_keys"));
        match (keys.as_slice(), &join_key) {
            ([(k, _)], None) => join_key = Some(k.clone()),
            ([_], Some(_)) => cx.error(f.line, &path, "give `join_keys` or `join_key`, not both"),
            (_, _) => cx.error(
                f.get("join_keys").map_or(f.line, Node::line),
                &join(&path, "join_keys"),
                format!(
                    "expected exactly one join key (Feast entities have one), found {}",
                    keys.len()
                ),
            ),
        }
    }
    let value_type = match cx.string(&f, "value_type") {
        None => {
            cx.error(
                f.line,
                &join(&path, "value_type"),
                "required: the join key's type (INT64, STRING, INT32, ...)",
            );
            None
        }
        Some(t) => match value_type(&t) {
            Some(v) => Some(v),
            None => {
                cx.error(
                    f.get("value_type").map_or(f.line, Node::line),
                    &join(&path, "value_type"),
                    format!("unknown value type '{t}' (expected one of INT32, INT64, FLOAT, DOUBLE, STRING, BYTES, BOOL, UNIX_TIMESTAMP, or their _LIST forms)"),
                );
                None
            }
        },
    };
    let description = cx.string(&f, "description").unwrap_or_default();
    let owner = cx.string(&f, "owner").unwrap_or_default();
    let tags = cx.string_map(&f, "tags");
    let name = name?;
    Some(EntityDef {
        origin: cx.origin(f.line),
        join_key: join_key.unwrap_or_else(|| name.clone()),
        name,
        value_type: value_type?,
        description,
        owner,
        tags,
    })
}

/// One entry of `sources:`.
enum Source {
    File(SourceDef),
    Push(PushSourceDef),
}

fn source(cx: &mut Ctx<'_>, node: &Node, i: usize, repo_dir: &Path) -> Option<Source> {
    let path = object_path("sources", node, i);
    if mapping_type(node).as_deref() == Some("push") {
        return push_source(cx, node, &path).map(Source::Push);
    }
    let f = cx.mapping(
        node,
        &path,
        &[
            "name",
            "type",
            "path",
            "timestamp_field",
            "created_timestamp_column",
            "field_mapping",
            "date_partition_column",
            "description",
            "owner",
            "tags",
        ],
    )?;
    let name = cx.required(&f, "name");
    if let Some(n) = &name {
        cx.name(f.line, &join(&path, "name"), "Data source", n);
    }
    if let Some(t) = cx.string(&f, "type")
        && t != "file"
    {
        cx.error(
            f.get("type").map_or(f.line, Node::line),
            &join(&path, "type"),
            format!("unknown source type '{t}' (expected: file or push)"),
        );
    }
    let written = cx.required(&f, "path");
    let timestamp_field = cx.required(&f, "timestamp_field");
    let created_timestamp_column = cx
        .string(&f, "created_timestamp_column")
        .unwrap_or_default();
    let field_mapping = cx.string_map(&f, "field_mapping");
    let date_partition_column = cx.string(&f, "date_partition_column").unwrap_or_default();
    let description = cx.string(&f, "description").unwrap_or_default();
    let owner = cx.string(&f, "owner").unwrap_or_default();
    let tags = cx.string_map(&f, "tags");
    Some(Source::File(SourceDef {
        origin: cx.origin(f.line),
        name: name?,
        path: source_path(&written?, cx.file, repo_dir),
        timestamp_field: timestamp_field?,
        created_timestamp_column,
        field_mapping,
        date_partition_column,
        description,
        owner,
        tags,
    }))
}

/// The `type:` of a mapping, when it is a plain scalar.
fn mapping_type(node: &Node) -> Option<String> {
    let Node::Map { entries, .. } = node else {
        return None;
    };
    entries.iter().find_map(|(key, _, value)| match value {
        Node::Scalar { text, .. } if key == "type" => Some(text.clone()),
        _ => None,
    })
}

fn push_source(cx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<PushSourceDef> {
    let f = cx.mapping(
        node,
        path,
        &[
            "name",
            "type",
            "batch_source",
            "description",
            "owner",
            "tags",
        ],
    )?;
    let name = cx.required(&f, "name");
    if let Some(n) = &name {
        cx.name(f.line, &join(path, "name"), "Data source", n);
    }
    let batch_source = cx.required(&f, "batch_source");
    let description = cx.string(&f, "description").unwrap_or_default();
    let owner = cx.string(&f, "owner").unwrap_or_default();
    let tags = cx.string_map(&f, "tags");
    Some(PushSourceDef {
        origin: cx.origin(f.line),
        name: name?,
        batch_source: batch_source?,
        description,
        owner,
        tags,
    })
}

/// A view and its whole schema (entity columns are split out across files, once the
/// entities are known).
fn view(cx: &mut Ctx<'_>, node: &Node, i: usize) -> Option<(ViewDef, Vec<FieldDef>)> {
    let path = object_path("feature_views", node, i);
    let f = cx.mapping(
        node,
        &path,
        &[
            "name",
            "entities",
            "source",
            "ttl",
            "online",
            "offline",
            "prevent_destroy",
            "version",
            "description",
            "owner",
            "tags",
            "schema",
        ],
    )?;
    let name = cx.required(&f, "name");
    if let Some(n) = &name {
        cx.name(f.line, &join(&path, "name"), "Feature view", n);
    }
    let entities = match f.get("entities") {
        Some(n) => cx.strings(n, &join(&path, "entities")),
        None => {
            cx.error(
                f.line,
                &join(&path, "entities"),
                "required (`[]` for a view without entities)",
            );
            Vec::new()
        }
    };
    let source = cx.required(&f, "source");
    let ttl_seconds = match f.get("ttl") {
        None => 0,
        Some(n) if n.is_null() => 0,
        Some(Node::Scalar { text, line, .. }) => ttl_seconds(text).unwrap_or_else(|| {
            cx.error(
                *line,
                &join(&path, "ttl"),
                format!("'{text}' is not a duration (expected seconds, or a number with s, m, h or d: 90s, 15m, 2h, 1d)"),
            );
            0
        }),
        Some(other) => {
            cx.error(other.line(), &join(&path, "ttl"), format!("expected a duration, found {}", other.what()));
            0
        }
    };
    let online = cx.boolean(&f, "online", true);
    let offline = cx.boolean(&f, "offline", false);
    let prevent_destroy = cx.boolean(&f, "prevent_destroy", false);
    let version_text = cx
        .string(&f, "version")
        .unwrap_or_else(|| "latest".to_owned());
    let version = match version_pin(&version_text) {
        Ok(v) => v,
        Err(message) => {
            cx.error(
                f.get("version").map_or(f.line, Node::line),
                &join(&path, "version"),
                message,
            );
            VersionPin::Latest
        }
    };
    let description = cx.string(&f, "description").unwrap_or_default();
    let owner = cx.string(&f, "owner").unwrap_or_default();
    let tags = cx.tags(&f);
    let mut schema = Vec::new();
    match f.get("schema") {
        None => cx.error(
            f.line,
            &join(&path, "schema"),
            "required: the view's features",
        ),
        Some(Node::Seq { items, .. }) => {
            for (k, item) in items.iter().enumerate() {
                let fpath = format!("{path}.schema[{k}]");
                let Some(ff) = cx.mapping(item, &fpath, &["name", "dtype", "description", "tags"])
                else {
                    continue;
                };
                let fname = cx.required(&ff, "name");
                if let Some(n) = &fname {
                    cx.name(ff.line, &join(&fpath, "name"), "Feature", n);
                }
                let dt = match cx.string(&ff, "dtype") {
                    None => {
                        cx.error(
                            ff.line,
                            &join(&fpath, "dtype"),
                            format!("required (one of {DTYPES})"),
                        );
                        None
                    }
                    Some(t) => dtype(&t).or_else(|| {
                        cx.error(
                            ff.get("dtype").map_or(ff.line, Node::line),
                            &join(&fpath, "dtype"),
                            format!("unknown type '{t}' (expected one of {DTYPES})"),
                        );
                        None
                    }),
                };
                let description = cx.string(&ff, "description").unwrap_or_default();
                let tags = cx.string_map(&ff, "tags");
                if let (Some(name), Some(dtype)) = (fname, dt) {
                    schema.push(FieldDef {
                        origin: cx.origin(ff.line),
                        name,
                        dtype,
                        description,
                        tags,
                    });
                }
            }
        }
        Some(other) => cx.error(
            other.line(),
            &join(&path, "schema"),
            format!("expected a list, found {}", other.what()),
        ),
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for field in &schema {
        if let Some(first) = seen.insert(field.name.clone(), field.origin.line) {
            cx.error(
                field.origin.line,
                &format!("{path}.schema"),
                format!(
                    "feature '{}' is listed twice (first on line {first})",
                    field.name
                ),
            );
        }
    }
    Some((
        ViewDef {
            origin: cx.origin(f.line),
            name: name?,
            entities: entities.into_iter().map(|(e, _)| e).collect(),
            source: source?,
            ttl_seconds,
            online,
            offline,
            prevent_destroy,
            version,
            version_text,
            description,
            owner,
            tags,
            features: Vec::new(),
            entity_columns: Vec::new(),
        },
        schema,
    ))
}

fn service(cx: &mut Ctx<'_>, node: &Node, i: usize) -> Option<(ServiceDef, Vec<usize>)> {
    let path = object_path("feature_services", node, i);
    let f = cx.mapping(
        node,
        &path,
        &[
            "name",
            "prevent_destroy",
            "features",
            "description",
            "owner",
            "tags",
        ],
    )?;
    let name = cx.required(&f, "name");
    if let Some(n) = &name {
        cx.name(f.line, &join(&path, "name"), "Feature service", n);
    }
    let prevent_destroy = cx.boolean(&f, "prevent_destroy", false);
    let description = cx.string(&f, "description").unwrap_or_default();
    let owner = cx.string(&f, "owner").unwrap_or_default();
    let tags = cx.tags(&f);
    let mut features = Vec::new();
    let mut lines = Vec::new();
    match f.get("features") {
        None => cx.error(
            f.line,
            &join(&path, "features"),
            "required: what the service returns",
        ),
        Some(Node::Seq { items, .. }) => {
            for (k, item) in items.iter().enumerate() {
                let ppath = format!("{path}.features[{k}]");
                if let Some(p) = projection(cx, item, &ppath) {
                    lines.push(item.line());
                    features.push(p);
                }
            }
        }
        Some(other) => cx.error(
            other.line(),
            &join(&path, "features"),
            format!("expected a list, found {}", other.what()),
        ),
    }
    Some((
        ServiceDef {
            origin: cx.origin(f.line),
            name: name?,
            prevent_destroy,
            features,
            description,
            owner,
            tags,
        },
        lines,
    ))
}

fn projection(cx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<ProjectionDef> {
    let origin = cx.origin(node.line());
    match node {
        Node::Scalar { text, .. } if !node.is_null() => Some(ProjectionDef {
            origin,
            view: text.clone(),
            alias: String::new(),
            version: None,
            features: None,
            join_key_map: BTreeMap::new(),
        }),
        Node::Map { entries, .. } if entries.iter().any(|(k, _, _)| k == "view") => {
            let f = cx.mapping(
                node,
                path,
                &["view", "alias", "version", "features", "join_key_map"],
            )?;
            let view = cx.required(&f, "view");
            let alias = cx.string(&f, "alias").unwrap_or_default();
            if !alias.is_empty() {
                cx.name(f.line, &join(path, "alias"), "Alias", &alias);
            }
            let version = match cx.string(&f, "version") {
                None => None,
                Some(t) => match version_pin(&t) {
                    Ok(VersionPin::Pinned(n)) => Some(n),
                    Ok(VersionPin::Latest) => None,
                    Err(m) => {
                        cx.error(
                            f.get("version").map_or(f.line, Node::line),
                            &join(path, "version"),
                            m,
                        );
                        None
                    }
                },
            };
            let features = f.get("features").filter(|n| !n.is_null()).map(|n| {
                cx.strings(n, &join(path, "features"))
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect()
            });
            let join_key_map = cx.string_map(&f, "join_key_map");
            Some(ProjectionDef {
                origin,
                view: view?,
                alias,
                version,
                features,
                join_key_map,
            })
        }
        Node::Map { entries, .. } if entries.len() == 1 => {
            let (view, _, list) = &entries[0];
            let features = cx.strings(list, &format!("{path}.{view}"));
            Some(ProjectionDef {
                origin,
                view: view.clone(),
                alias: String::new(),
                version: None,
                features: Some(features.into_iter().map(|(s, _)| s).collect()),
                join_key_map: BTreeMap::new(),
            })
        }
        other => {
            cx.error(
                other.line(),
                path,
                "expected a view name, `view: [features]`, or a mapping with `view`, `features`, `alias`, `version`, `join_key_map`",
            );
            None
        }
    }
}

/// The `.yaml`/`.yml` files `paths` name (folders: their files, in name order).
fn files(paths: &[PathBuf], errors: &mut Vec<DefinitionError>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let whole = |file: &Path, message: String| DefinitionError {
        origin: Origin {
            file: file.to_owned(),
            line: 0,
        },
        field: String::new(),
        message,
    };
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = match std::fs::read_dir(path) {
                Ok(entries) => entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        p.is_file()
                            && matches!(
                                p.extension().and_then(|e| e.to_str()),
                                Some("yaml" | "yml")
                            )
                    })
                    .collect(),
                Err(e) => {
                    errors.push(whole(path, format!("cannot read the folder: {e}")));
                    continue;
                }
            };
            found.sort();
            if found.is_empty() {
                errors.push(whole(
                    path,
                    "the folder holds no .yaml or .yml files".to_owned(),
                ));
            }
            out.extend(found);
        } else if path.exists() {
            out.push(path.clone());
        } else {
            errors.push(whole(path, "no such file or folder".to_owned()));
        }
    }
    out
}

pub(super) fn load(paths: &[PathBuf], repo_dir: &Path) -> Result<Definitions, DefinitionErrors> {
    let mut errors = Vec::new();
    let mut all = Vec::new();
    for file in files(paths, &mut errors) {
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                let parsed = parse_file(&file, &text, repo_dir, &mut errors);
                all.push((file, parsed));
            }
            Err(e) => errors.push(DefinitionError {
                origin: Origin {
                    file: file.clone(),
                    line: 0,
                },
                field: String::new(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
    let defs = combine(all, &mut errors);
    if errors.is_empty() {
        Ok(defs)
    } else {
        errors
            .sort_by(|a, b| (&a.origin.file, a.origin.line).cmp(&(&b.origin.file, b.origin.line)));
        errors.dedup();
        Err(DefinitionErrors(errors))
    }
}

/// Merges the files and runs the checks that need every object.
fn combine(all: Vec<(PathBuf, Parsed)>, errors: &mut Vec<DefinitionError>) -> Definitions {
    let mut defs = Definitions::default();
    let mut views: Vec<(ViewDef, Vec<FieldDef>)> = Vec::new();
    let mut lines: Vec<Vec<usize>> = Vec::new();
    for (_, parsed) in all {
        if let Some((p, origin)) = parsed.project {
            match &defs.project {
                Some((q, first)) if *q != p => errors.push(DefinitionError {
                    origin,
                    field: "project".to_owned(),
                    message: format!("'{p}' differs from '{q}' given at {first}"),
                }),
                Some(_) => {}
                None => defs.project = Some((p, origin)),
            }
        }
        defs.entities.extend(parsed.entities);
        defs.sources.extend(parsed.sources);
        defs.push_sources.extend(parsed.push_sources);
        views.extend(parsed.views);
        defs.feature_services.extend(parsed.services);
        lines.extend(parsed.projection_lines);
        if let Some(p) = parsed.permissions {
            defs.permissions.get_or_insert_with(Vec::new).extend(p);
        }
    }
    let err =
        |errors: &mut Vec<DefinitionError>, origin: &Origin, field: String, message: String| {
            errors.push(DefinitionError {
                origin: origin.clone(),
                field,
                message,
            });
        };
    fn duplicates<'a>(
        items: impl Iterator<Item = (&'a str, &'a Origin)>,
        kind: &str,
        errors: &mut Vec<DefinitionError>,
    ) {
        let mut seen: HashMap<&str, &Origin> = HashMap::new();
        for (name, origin) in items {
            if let Some(first) = seen.insert(name, origin) {
                errors.push(DefinitionError {
                    origin: origin.clone(),
                    field: format!("{kind}[{name}]"),
                    message: format!("'{name}' is defined twice (first at {first})"),
                });
            }
        }
    }
    duplicates(
        defs.entities.iter().map(|e| (e.name.as_str(), &e.origin)),
        "entities",
        errors,
    );
    duplicates(
        defs.sources
            .iter()
            .map(|e| (e.name.as_str(), &e.origin))
            .chain(
                defs.push_sources
                    .iter()
                    .map(|e| (e.name.as_str(), &e.origin)),
            ),
        "sources",
        errors,
    );
    duplicates(
        views.iter().map(|(v, _)| (v.name.as_str(), &v.origin)),
        "feature_views",
        errors,
    );
    duplicates(
        defs.feature_services
            .iter()
            .map(|e| (e.name.as_str(), &e.origin)),
        "feature_services",
        errors,
    );
    duplicates(
        defs.permissions
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), &e.origin)),
        "permissions",
        errors,
    );

    let entities: HashMap<&str, &EntityDef> =
        defs.entities.iter().map(|e| (e.name.as_str(), e)).collect();
    let file_sources: Vec<&str> = defs.sources.iter().map(|s| s.name.as_str()).collect();
    for push in &defs.push_sources {
        if !file_sources.contains(&push.batch_source.as_str()) {
            err(
                errors,
                &push.origin,
                format!("sources[{}].batch_source", push.name),
                format!(
                    "unknown file source '{}' (file sources: {})",
                    push.batch_source,
                    list(&file_sources)
                ),
            );
        }
    }
    let sources: Vec<&str> = file_sources
        .iter()
        .copied()
        .chain(defs.push_sources.iter().map(|s| s.name.as_str()))
        .collect();
    for (view, schema) in &mut views {
        let path = format!("feature_views[{}]", view.name);
        if !sources.contains(&view.source.as_str()) {
            err(
                errors,
                &view.origin,
                format!("{path}.source"),
                format!(
                    "unknown source '{}' (sources: {})",
                    view.source,
                    list(&sources)
                ),
            );
        }
        let mut columns = Vec::new();
        let mut keys = Vec::new();
        for e in &view.entities {
            match entities.get(e.as_str()) {
                None => err(
                    errors,
                    &view.origin,
                    format!("{path}.entities"),
                    format!(
                        "unknown entity '{e}' (entities: {})",
                        list(&entities.keys().copied().collect::<Vec<_>>())
                    ),
                ),
                Some(entity) => {
                    keys.push(entity.join_key.clone());
                    let listed = schema.iter().find(|f| f.name == entity.join_key);
                    columns.push(FieldDef {
                        origin: listed.map_or_else(|| view.origin.clone(), |f| f.origin.clone()),
                        name: entity.join_key.clone(),
                        dtype: listed.map_or(entity.value_type, |f| f.dtype),
                        description: listed.map(|f| f.description.clone()).unwrap_or_default(),
                        tags: listed.map(|f| f.tags.clone()).unwrap_or_default(),
                    });
                }
            }
        }
        view.features = schema
            .iter()
            .filter(|f| !keys.contains(&f.name))
            .cloned()
            .collect();
        view.entity_columns = columns;
        if view.features.is_empty() && !schema.is_empty() {
            err(
                errors,
                &view.origin,
                format!("{path}.schema"),
                "lists only join keys: a view needs at least one feature".to_owned(),
            );
        }
    }
    defs.feature_views = views.into_iter().map(|(v, _)| v).collect();

    let by_name: HashMap<&str, &ViewDef> = defs
        .feature_views
        .iter()
        .map(|v| (v.name.as_str(), v))
        .collect();
    for service in &defs.feature_services {
        for (k, p) in service.features.iter().enumerate() {
            let path = format!("feature_services[{}].features[{k}]", service.name);
            let Some(view) = by_name.get(p.view.as_str()) else {
                err(
                    errors,
                    &p.origin,
                    path,
                    format!(
                        "unknown feature view '{}' (feature views: {})",
                        p.view,
                        list(&by_name.keys().copied().collect::<Vec<_>>())
                    ),
                );
                continue;
            };
            // A pinned projection's features are checked against that version by the plan.
            if p.version.is_some() {
                continue;
            }
            for name in p.features.iter().flatten() {
                if !view.features.iter().any(|f| &f.name == name) {
                    err(
                        errors,
                        &p.origin,
                        format!("{path}.features"),
                        format!("feature view '{}' has no feature '{name}'", p.view),
                    );
                }
            }
        }
    }
    let _ = lines;
    defs
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        return "none".to_owned();
    }
    let mut v = names.to_vec();
    v.sort_unstable();
    v.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Definitions, DefinitionErrors> {
        let dir = tempfile_dir();
        let file = dir.join("features.yaml");
        std::fs::write(&file, text).unwrap();
        let r = load(&[file], &dir);
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    fn tempfile_dir() -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("tern-defs-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    const GOOD: &str = "\
project: demo
entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
sources:
  - {name: src, type: file, path: data/d.parquet, timestamp_field: ts}
feature_views:
  - name: stats
    entities: [driver]
    source: src
    ttl: 1d
    schema:
      - {name: driver_id, dtype: Int32}
      - {name: conv_rate, dtype: Float32}
      - {name: ratings, dtype: Array(Float64)}
feature_services:
  - name: svc
    features:
      - stats: [conv_rate]
      - stats
      - {view: stats, alias: s, features: [ratings], join_key_map: {driver_id: other}}
      - {view: stats, version: V02, features: [anything]}
";

    #[test]
    fn push_sources_name_a_file_source() {
        let good = GOOD.replace(
            "    source: src\n",
            "    source: pushed\n",
        )
        .replace(
            "timestamp_field: ts}\n",
            "timestamp_field: ts}\n  - {name: pushed, type: push, batch_source: src, owner: a@b}\n",
        );
        let d = parse(&good).unwrap();
        assert_eq!(d.push_sources.len(), 1);
        assert_eq!(
            (
                d.push_sources[0].name.as_str(),
                d.push_sources[0].batch_source.as_str()
            ),
            ("pushed", "src")
        );
        assert_eq!(d.feature_views[0].source, "pushed");

        let bad = good.replace("batch_source: src,", "batch_source: nope, path: x,");
        let e = parse(&bad).unwrap_err();
        let text: Vec<String> =
            e.0.iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect();
        assert!(
            text.iter()
                .any(|l| l.contains("sources[pushed].path: unknown key 'path'")),
            "{text:#?}"
        );
        let bad = good.replace("batch_source: src,", "batch_source: nope,");
        let e = parse(&bad).unwrap_err();
        let text: Vec<String> =
            e.0.iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect();
        assert!(
            text.iter().any(|l| l
                == "sources[pushed].batch_source: unknown file source 'nope' (file sources: src)"),
            "{text:#?}"
        );
    }

    #[test]
    fn a_good_file_reads_whole() {
        let d = parse(GOOD).unwrap();
        assert_eq!(d.project.as_ref().map(|p| p.0.as_str()), Some("demo"));
        let v = &d.feature_views[0];
        assert_eq!(v.ttl_seconds, 86_400);
        assert_eq!(v.features.len(), 2);
        assert_eq!(v.features[1].dtype, ValueType::DoubleList);
        assert_eq!(v.entity_columns[0].name, "driver_id");
        assert_eq!(v.entity_columns[0].dtype, ValueType::Int32);
        assert!(v.online && !v.offline && !v.prevent_destroy);
        assert_eq!(v.version, VersionPin::Latest);
        let s = &d.feature_services[0];
        assert_eq!(s.features[0].features, Some(vec!["conv_rate".to_owned()]));
        assert_eq!(s.features[1].features, None);
        assert_eq!(s.features[2].alias, "s");
        assert_eq!(
            s.features[2]
                .join_key_map
                .get("driver_id")
                .map(String::as_str),
            Some("other")
        );
        assert_eq!(s.features[3].version, Some(2));
        assert_eq!(d.sources[0].path, "data/d.parquet");
    }

    #[test]
    fn every_error_is_reported_with_its_line_and_field() {
        let text = "\
entities:
  - {name: driver, join_keys: [driver_id]}
sources:
  - {name: src, path: d.parquet, timestamp_field: ts, colour: red}
feature_views:
  - name: stats
    entities: [driver, rider]
    source: nowhere
    ttl: 3w
    version: v-1
    schema:
      - {name: a, dtype: Float32}
      - {name: b, dtype: Float32}
      - {name: c, dtype: Flaot32}
      - {name: 'd@x', dtype: Int64}
feature_services:
  - name: svc
    features:
      - stats: [zzz]
      - ghost
";
        let e = parse(text).unwrap_err();
        let lines: Vec<String> =
            e.0.iter()
                .map(|e| format!("{}: {}: {}", e.origin.line, e.field, e.message))
                .collect();
        let has = |needle: &str| {
            assert!(
                lines.iter().any(|l| l.contains(needle)),
                "missing {needle:?} in {lines:#?}"
            );
        };
        has("2: entities[driver].value_type: required");
        has("4: sources[src].colour: unknown key 'colour'");
        has("6: feature_views[stats].entities: unknown entity 'rider'");
        has("6: feature_views[stats].source: unknown source 'nowhere'");
        has("9: feature_views[stats].ttl: '3w' is not a duration");
        has(
            "10: feature_views[stats].version: Invalid version string 'v-1'. Expected 'latest', 'vN', or 'versionN' (e.g. 'v2', 'version3').",
        );
        has(
            "14: feature_views[stats].schema[2].dtype: unknown type 'Flaot32' (expected one of Int32, Int64, Float32, Float64, String, Bytes, Bool, UnixTimestamp, Array(...) of each)",
        );
        has("15: feature_views[stats].schema[3].name: Feature name 'd@x' must not contain '@'");
        has(
            "19: feature_services[svc].features[0].features: feature view 'stats' has no feature 'zzz'",
        );
        has("20: feature_services[svc].features[1]: unknown feature view 'ghost'");
        // Display names the file.
        assert!(
            e.to_string().contains(
                "features.yaml:14: feature_views[stats].schema[2].dtype: unknown type 'Flaot32'"
            ),
            "{e}"
        );
    }

    #[test]
    fn pins_parse_as_feast_does() {
        assert_eq!(version_pin(""), Ok(VersionPin::Latest));
        assert_eq!(version_pin("LATEST"), Ok(VersionPin::Latest));
        assert_eq!(version_pin("v02"), Ok(VersionPin::Pinned(2)));
        assert_eq!(version_pin("Version3"), Ok(VersionPin::Pinned(3)));
        assert!(version_pin("v").is_err());
        assert!(version_pin("v 2").is_err());
        assert!(version_pin("2").is_err());
    }

    #[test]
    fn dtypes_and_ttls() {
        for (text, t) in [
            ("Int32", ValueType::Int32),
            ("Int64", ValueType::Int64),
            ("Float32", ValueType::Float),
            ("Float64", ValueType::Double),
            ("String", ValueType::String),
            ("Bytes", ValueType::Bytes),
            ("Bool", ValueType::Bool),
            ("UnixTimestamp", ValueType::UnixTimestamp),
            ("Array(Int32)", ValueType::Int32List),
            ("Array(Bool)", ValueType::BoolList),
            ("Array(UnixTimestamp)", ValueType::UnixTimestampList),
        ] {
            assert_eq!(dtype(text), Some(t), "{text}");
            assert_eq!(dtype_name(t).as_deref(), Some(text));
        }
        assert_eq!(dtype("Array(Array(Int32))"), None);
        assert_eq!(ttl_seconds("90"), Some(90));
        assert_eq!(ttl_seconds("15m"), Some(900));
        assert_eq!(ttl_seconds("2h"), Some(7200));
        assert_eq!(ttl_seconds("0"), Some(0));
        assert_eq!(ttl_seconds("1w"), None);
    }

    #[test]
    fn folders_read_in_name_order_and_paths_resolve_against_the_repo() {
        let dir = tempfile_dir();
        let defs = dir.join("defs");
        std::fs::create_dir_all(&defs).unwrap();
        std::fs::write(
            defs.join("b.yaml"),
            "sources:\n  - {name: src, path: ../data/d.parquet, timestamp_field: ts}\n",
        )
        .unwrap();
        std::fs::write(
            defs.join("a.yml"),
            "entities:\n  - {name: driver, join_key: driver_id, value_type: STRING}\n",
        )
        .unwrap();
        std::fs::write(defs.join("notes.txt"), "not yaml: [").unwrap();
        let d = load(std::slice::from_ref(&defs), &dir).unwrap();
        assert_eq!(d.entities[0].join_key, "driver_id");
        assert_eq!(d.sources[0].path, "data/d.parquet");
        let outside = load(&[defs], &dir.join("elsewhere")).unwrap();
        assert!(Path::new(&outside.sources[0].path).is_absolute());
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let e = load(&[empty], &dir).unwrap_err();
        assert!(e.to_string().contains("holds no .yaml"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn syntax_errors_name_their_line() {
        let e = parse("entities:\n  - {name: a\n").unwrap_err();
        assert!(e.0[0].message.starts_with("not valid YAML"), "{e}");
        assert!(e.0[0].origin.line >= 2, "{e:?}");
    }

    #[test]
    fn the_reserved_tag_and_duplicates_are_refused() {
        let text = "\
entities:
  - {name: driver, join_key: id, value_type: INT64}
  - {name: driver, join_key: id, value_type: INT64}
sources:
  - {name: src, path: d.parquet, timestamp_field: ts}
feature_views:
  - name: v
    entities: []
    source: src
    tags: {feast.dev/prevent-destroy: 'true'}
    schema:
      - {name: a, dtype: Int64}
      - {name: a, dtype: Int64}
";
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains("'driver' is defined twice"), "{e}");
        assert!(e.contains("use `prevent_destroy: true`"), "{e}");
        assert!(e.contains("feature 'a' is listed twice"), "{e}");
    }
}
