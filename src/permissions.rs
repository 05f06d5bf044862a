//! Feast's permissions (registry field 16), decided as Feast decides them: with
//! authentication on, an action on a resource is allowed when at least one permission
//! that covers the resource (type, name pattern, required tags) and the action lets the
//! caller in (roles, groups, namespaces); when permissions exist but none covers it,
//! it is denied; when the project has no permission at all, every authenticated
//! caller is let in.
//!
//! Owns: decoding the permissions of a project once per snapshot (patterns compiled,
//! bad ones reported), which permissions cover a resource and an action
//! ([`Permissions::covering`], computed once per plan), and the decision for one caller
//! ([`Permissions::decide`], no allocation unless denied). Does not own: who the caller
//! is (`auth`).
//!
//! One deliberate difference: Feast 0.67 compares `required_tags` against an attribute
//! its resources do not have, so `required_tags` never narrows a permission there;
//! here a resource must carry every required tag with its value.

use std::collections::BTreeMap;

use prost::Message as _;

use crate::auth::Principal;
use crate::proto::feast::core as pb;

/// A kind of resource, as permissions name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    /// `FeatureView` (batch views included).
    FeatureView,
    /// `StreamFeatureView` (a `FeatureView` too, as in Feast's class hierarchy).
    StreamFeatureView,
    /// `OnDemandFeatureView`.
    OnDemandFeatureView,
    /// `LabelView`.
    LabelView,
    /// `FeatureService`.
    FeatureService,
}

impl ResourceKind {
    /// Feast's Python class, as `<class '...'>` prints it.
    fn python_class(self) -> &'static str {
        match self {
            ResourceKind::FeatureView => "feast.feature_view.FeatureView",
            ResourceKind::StreamFeatureView => "feast.stream_feature_view.StreamFeatureView",
            ResourceKind::OnDemandFeatureView => "feast.on_demand_feature_view.OnDemandFeatureView",
            ResourceKind::LabelView => "feast.labeling.label_view.LabelView",
            ResourceKind::FeatureService => "feast.feature_service.FeatureService",
        }
    }

    /// Feast's class name, for messages.
    pub fn class(self) -> &'static str {
        match self {
            ResourceKind::FeatureView => "FeatureView",
            ResourceKind::StreamFeatureView => "StreamFeatureView",
            ResourceKind::OnDemandFeatureView => "OnDemandFeatureView",
            ResourceKind::LabelView => "LabelView",
            ResourceKind::FeatureService => "FeatureService",
        }
    }

    /// Whether a permission listing `t` covers this kind (Python's `isinstance`: a
    /// stream view is a feature view).
    fn covered_by(self, t: pb::permission_spec::Type) -> bool {
        use pb::permission_spec::Type as T;
        match self {
            ResourceKind::FeatureView => t == T::FeatureView,
            ResourceKind::StreamFeatureView => matches!(t, T::FeatureView | T::StreamFeatureView),
            ResourceKind::OnDemandFeatureView => t == T::OnDemandFeatureView,
            ResourceKind::LabelView => t == T::LabelView,
            ResourceKind::FeatureService => t == T::FeatureService,
        }
    }
}

impl From<crate::registry::ViewKind> for ResourceKind {
    fn from(kind: crate::registry::ViewKind) -> Self {
        use crate::registry::ViewKind;
        match kind {
            ViewKind::Feature => ResourceKind::FeatureView,
            ViewKind::Stream => ResourceKind::StreamFeatureView,
            ViewKind::OnDemand { .. } => ResourceKind::OnDemandFeatureView,
            ViewKind::Label => ResourceKind::LabelView,
        }
    }
}

/// What is being done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reading feature values online.
    ReadOnline,
    /// Writing feature values online (writes, pushes, materialization).
    WriteOnline,
}

impl Action {
    fn proto(self) -> pb::permission_spec::AuthzedAction {
        match self {
            Action::ReadOnline => pb::permission_spec::AuthzedAction::ReadOnline,
            Action::WriteOnline => pb::permission_spec::AuthzedAction::WriteOnline,
        }
    }

    /// Python's repr of Feast's enum member.
    fn python_repr(self) -> &'static str {
        match self {
            Action::ReadOnline => "<AuthzedAction.READ_ONLINE: 'read_online'>",
            Action::WriteOnline => "<AuthzedAction.WRITE_ONLINE: 'write_online'>",
        }
    }

    /// Feast's spelling, for messages.
    pub fn label(self) -> &'static str {
        match self {
            Action::ReadOnline => "READ_ONLINE",
            Action::WriteOnline => "WRITE_ONLINE",
        }
    }
}

/// A resource a permission is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Resource<'a> {
    /// Its kind.
    pub kind: ResourceKind,
    /// Its name.
    pub name: &'a str,
    /// Its tags.
    pub tags: &'a BTreeMap<String, String>,
}

impl<'a> Resource<'a> {
    /// A view (of any kind), as permissions see it.
    pub fn view(view: &'a crate::registry::ViewVersion) -> Self {
        Self {
            kind: view.kind.into(),
            name: &view.name,
            tags: &view.tags,
        }
    }
}

/// Who a permission lets in.
#[derive(Debug, Clone, PartialEq)]
enum Policy {
    Roles(Vec<String>),
    Groups(Vec<String>),
    Namespaces(Vec<String>),
    GroupsOrNamespaces(Vec<String>, Vec<String>),
    /// No policy stored: Feast cannot load such a permission; it lets no one in here.
    Nobody,
}

impl Policy {
    fn of(p: Option<&pb::Policy>) -> Self {
        use pb::policy::PolicyType as P;
        match p.and_then(|p| p.policy_type.as_ref()) {
            Some(P::RoleBasedPolicy(r)) => Policy::Roles(r.roles.clone()),
            Some(P::GroupBasedPolicy(g)) => Policy::Groups(g.groups.clone()),
            Some(P::NamespaceBasedPolicy(n)) => Policy::Namespaces(n.namespaces.clone()),
            Some(P::CombinedGroupNamespacePolicy(c)) => {
                Policy::GroupsOrNamespaces(c.groups.clone(), c.namespaces.clone())
            }
            None => Policy::Nobody,
        }
    }

    /// Whether `who` is let in; Feast's explanation when not.
    fn admits(&self, who: &Principal) -> Result<(), String> {
        let any = |wanted: &[String], held: &[String]| wanted.iter().any(|w| held.contains(w));
        let ok = match self {
            Policy::Roles(roles) => any(roles, &who.roles),
            Policy::Groups(groups) => any(groups, &who.groups),
            Policy::Namespaces(ns) => any(ns, &who.namespaces),
            Policy::GroupsOrNamespaces(g, n) => any(g, &who.groups) || any(n, &who.namespaces),
            Policy::Nobody => false,
        };
        if ok {
            return Ok(());
        }
        Err(match self {
            Policy::Roles(roles) => format!("Requires roles {}", python_list(roles)),
            Policy::Groups(_) => "User is not added into the permitted groups".into(),
            Policy::Namespaces(_) => "User is not added into the permitted namespaces".into(),
            Policy::GroupsOrNamespaces(..) => {
                "User must be in at least one of the permitted groups or namespaces".into()
            }
            Policy::Nobody => "the permission has no policy".into(),
        })
    }
}

/// `['a', 'b']`, as Python prints a list of strings.
fn python_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("'{s}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// One permission, ready to match.
#[derive(Debug, Clone)]
struct Rule {
    name: String,
    /// Empty: every type.
    types: Vec<pb::permission_spec::Type>,
    /// Empty: every name. Anchored: Python's `re.fullmatch`.
    patterns: Vec<regex::Regex>,
    required_tags: Vec<(String, String)>,
    actions: Vec<pb::permission_spec::AuthzedAction>,
    policy: Policy,
}

/// The permissions of one project, as a snapshot holds them.
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    rules: Vec<Rule>,
}

/// Indices of the permissions covering one resource and action (computed once per
/// plan: they depend on the snapshot, not on the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Covering {
    rules: Vec<u32>,
    /// `Class:name`, for messages.
    resource: String,
    /// Feast's text when no permission covers the resource.
    uncovered: String,
    action: Action,
}

/// A denied action, with Feast's explanation (`FeastPermissionError`'s text: "Permission
/// error:" and the reasons).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

impl Permissions {
    /// The permissions of `project` among a registry's serialized permissions; the
    /// second value lists problems (an undecodable permission, a bad name pattern) to
    /// report. A permission that cannot be read covers nothing.
    pub fn build<'a>(
        serialized: impl IntoIterator<Item = &'a [u8]>,
        project: &str,
    ) -> (Self, Vec<String>) {
        let mut rules = Vec::new();
        let mut problems = Vec::new();
        for bytes in serialized {
            let permission = match pb::Permission::decode(bytes) {
                Ok(p) => p,
                Err(e) => {
                    problems.push(format!("a permission does not decode: {e}"));
                    continue;
                }
            };
            let Some(spec) = permission.spec else {
                continue;
            };
            if spec.project != project {
                continue;
            }
            let mut patterns = Vec::new();
            for p in &spec.name_patterns {
                match regex::Regex::new(&format!("^(?:{p})$")) {
                    Ok(r) => patterns.push(r),
                    Err(e) => problems.push(format!(
                        "permission '{}': name pattern '{p}' is not a regular expression Tern reads ({e}); it matches nothing",
                        spec.name
                    )),
                }
            }
            if patterns.len() != spec.name_patterns.len() && patterns.is_empty() {
                // Every pattern was bad: match nothing rather than everything.
                patterns.push(never());
            }
            rules.push(Rule {
                name: spec.name.clone(),
                types: spec.types().collect(),
                patterns,
                required_tags: spec.required_tags.clone().into_iter().collect(),
                actions: spec.actions().collect(),
                policy: Policy::of(spec.policy.as_ref()),
            });
        }
        (Self { rules }, problems)
    }

    /// How many permissions the project has.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the project has none (then every authenticated caller is let in).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The permissions covering `action` on `resource`.
    pub fn covering(&self, resource: Resource<'_>, action: Action) -> Covering {
        let rules = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                (r.types.is_empty() || r.types.iter().any(|t| resource.kind.covered_by(*t)))
                    && (r.patterns.is_empty()
                        || r.patterns.iter().any(|p| p.is_match(resource.name)))
                    && r.required_tags
                        .iter()
                        .all(|(k, v)| resource.tags.get(k) == Some(v))
                    && r.actions.contains(&action.proto())
            })
            .filter_map(|(i, _)| u32::try_from(i).ok())
            .collect();
        Covering {
            rules,
            resource: format!("{}:{}", resource.kind.class(), resource.name),
            uncovered: format!(
                "No permissions defined to manage [{}] on <class '{}'>/{}.",
                action.python_repr(),
                resource.kind.python_class(),
                resource.name
            ),
            action,
        }
    }

    /// Whether `who` may do `action` on `resource`, matching the permissions now (for
    /// writes; reads match once per plan with [`covering`](Self::covering)).
    pub fn check(
        &self,
        resource: Resource<'_>,
        action: Action,
        who: &Principal,
    ) -> Result<(), Denied> {
        self.decide(&self.covering(resource, action), who)
    }

    /// Whether `who` may do what `covering` describes (Feast's affirmative decision:
    /// one permission letting the caller in is enough).
    pub fn decide(&self, covering: &Covering, who: &Principal) -> Result<(), Denied> {
        if self.rules.is_empty() {
            return Ok(());
        }
        if covering.rules.is_empty() {
            return Err(Denied(format!("{FEAST_PREFIX}{}", covering.uncovered)));
        }
        let mut explanations = Vec::new();
        for &i in &covering.rules {
            let Some(rule) = self.rules.get(i as usize) else {
                continue;
            };
            match rule.policy.admits(who) {
                Ok(()) => return Ok(()),
                Err(why) => explanations.push(format!(
                    "Permission {} denied execution of ['{}'] to {}: {why}",
                    rule.name,
                    covering.action.label(),
                    covering.resource
                )),
            }
        }
        Err(Denied(format!("{FEAST_PREFIX}{}", explanations.join(","))))
    }
}

/// How `FeastPermissionError` starts its message.
const FEAST_PREFIX: &str = "Permission error:\n";

/// A pattern no name matches.
fn never() -> regex::Regex {
    // An empty character class matches nothing; the pattern is a constant.
    regex::Regex::new("[^\\s\\S]").unwrap_or_else(|_| unreachable!("constant pattern"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::permission_spec::{AuthzedAction as A, Type as T};

    fn permission(
        name: &str,
        types: &[T],
        patterns: &[&str],
        tags: &[(&str, &str)],
        actions: &[A],
        policy: pb::policy::PolicyType,
    ) -> Vec<u8> {
        pb::Permission {
            spec: Some(pb::PermissionSpec {
                name: name.into(),
                project: "p".into(),
                types: types.iter().map(|t| *t as i32).collect(),
                name_patterns: patterns.iter().map(|s| s.to_string()).collect(),
                required_tags: tags
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                actions: actions.iter().map(|a| *a as i32).collect(),
                policy: Some(pb::Policy {
                    policy_type: Some(policy),
                    ..Default::default()
                }),
                tags: BTreeMap::new(),
            }),
            meta: None,
        }
        .encode_to_vec()
    }

    fn roles(r: &[&str]) -> pb::policy::PolicyType {
        pb::policy::PolicyType::RoleBasedPolicy(pb::RoleBasedPolicy {
            roles: r.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn who(roles: &[&str], groups: &[&str]) -> Principal {
        Principal {
            username: "u".into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            namespaces: Vec::new(),
        }
    }

    #[test]
    fn decisions_follow_feast() {
        let (perms, problems) = Permissions::build(
            [
                permission(
                    "readers",
                    &[T::FeatureView],
                    &["driver_.*"],
                    &[],
                    &[A::ReadOnline],
                    roles(&["reader"]),
                ),
                permission(
                    "ml",
                    &[],
                    &[],
                    &[("team", "ml")],
                    &[A::ReadOnline, A::WriteOnline],
                    pb::policy::PolicyType::GroupBasedPolicy(pb::GroupBasedPolicy {
                        groups: vec!["ml".into()],
                    }),
                ),
                permission("elsewhere", &[], &[], &[], &[A::ReadOnline], roles(&["x"])),
                permission(
                    "bad",
                    &[T::FeatureService],
                    &["("],
                    &[],
                    &[A::ReadOnline],
                    roles(&["reader"]),
                ),
            ]
            .iter()
            .map(Vec::as_slice),
            "p",
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        let none = BTreeMap::new();
        let ml: BTreeMap<String, String> = [("team".to_string(), "ml".to_string())].into();
        let view = |name, tags| Resource {
            kind: ResourceKind::FeatureView,
            name,
            tags,
        };
        let stream = Resource {
            kind: ResourceKind::StreamFeatureView,
            name: "driver_live",
            tags: &none,
        };

        let c = perms.covering(view("driver_stats", &none), Action::ReadOnline);
        assert!(perms.decide(&c, &who(&["reader"], &[])).is_ok());
        // A stream view is a feature view.
        assert!(
            perms
                .decide(
                    &perms.covering(stream, Action::ReadOnline),
                    &who(&["reader"], &[])
                )
                .is_ok()
        );
        let denied = perms.decide(&c, &who(&["writer"], &[])).unwrap_err();
        assert_eq!(
            denied.0,
            "Permission error:\nPermission readers denied execution of ['READ_ONLINE'] to FeatureView:driver_stats: Requires roles ['reader'],Permission elsewhere denied execution of ['READ_ONLINE'] to FeatureView:driver_stats: Requires roles ['x']"
        );
        // Full-name match only.
        let c = perms.covering(view("my_driver_stats", &none), Action::WriteOnline);
        assert_eq!(
            perms.decide(&c, &who(&["reader"], &["ml"])).unwrap_err().0,
            "Permission error:\nNo permissions defined to manage [<AuthzedAction.WRITE_ONLINE: 'write_online'>] on <class 'feast.feature_view.FeatureView'>/my_driver_stats."
        );
        // Required tags narrow the permission.
        let c = perms.covering(view("zone", &ml), Action::WriteOnline);
        assert!(perms.decide(&c, &who(&[], &["ml"])).is_ok());
        assert!(perms.decide(&c, &who(&[], &["other"])).is_err());
        // The bad pattern matches nothing.
        let svc = Resource {
            kind: ResourceKind::FeatureService,
            name: "(",
            tags: &none,
        };
        let c = perms.covering(svc, Action::ReadOnline);
        assert_eq!(c.rules.len(), 1, "only 'elsewhere' (all types)");
        // No permission at all: everyone authenticated is in.
        let (empty, _) = Permissions::build([], "p");
        assert!(
            empty
                .decide(
                    &empty.covering(view("x", &none), Action::ReadOnline),
                    &who(&[], &[])
                )
                .is_ok()
        );
    }
}
