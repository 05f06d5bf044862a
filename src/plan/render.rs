//! A plan for a person (aligned columns, colour on a terminal) or for CI (JSON).

use std::fmt::Write as _;

use super::{Action, Plan, TableAction};

/// ANSI colours, or none.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    colour: bool,
}

impl Style {
    /// Colour when `colour`.
    pub fn new(colour: bool) -> Self {
        Self { colour }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

fn action_colour(action: &Action) -> &'static str {
    match action {
        Action::Create => "32",
        Action::Update | Action::NewVersion { .. } | Action::Activate { .. } => "33",
        Action::Delete => "31",
    }
}

/// The plan as text.
pub fn text(plan: &Plan, style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Plan for project '{}':", plan.project);
    if plan.is_empty() {
        let _ = writeln!(out, "  No changes.");
    }
    if !plan.objects.is_empty() {
        let kind_w = plan
            .objects
            .iter()
            .map(|o| o.kind.as_str().len())
            .max()
            .unwrap_or(0);
        let name_w = plan.objects.iter().map(|o| o.name.len()).max().unwrap_or(0);
        let _ = writeln!(out);
        for o in &plan.objects {
            let action = o.action.to_string();
            let _ = write!(
                out,
                "  {:kind_w$}  {:name_w$}  {}",
                o.kind.as_str(),
                o.name,
                style.paint(action_colour(&o.action), &action)
            );
            if let Some(p) = &o.protected {
                let _ = write!(
                    out,
                    "  {}",
                    style.paint("36", &format!("[protected by {p}]"))
                );
            }
            let _ = writeln!(out);
            for d in &o.details {
                let _ = writeln!(out, "  {:kind_w$}  {:name_w$}    {d}", "", "");
            }
        }
    }
    if !plan.tables.is_empty() {
        let _ = writeln!(out, "\nOnline tables:");
        for t in &plan.tables {
            let (word, code) = match t.action {
                TableAction::Create => ("create", "32"),
                TableAction::Drop => ("drop  ", "31"),
            };
            let _ = writeln!(
                out,
                "  {}  {}  (feature view {} v{})",
                style.paint(code, word),
                t.table,
                t.view,
                t.version
            );
        }
    }
    if !plan.kept.is_empty() {
        let _ = writeln!(out, "\nKept as they are (not expressible in definitions):");
        for k in &plan.kept {
            let _ = writeln!(out, "  {k}");
        }
    }
    if !plan.violations.is_empty() {
        let n = plan.violations.len();
        let head = if plan.enforced {
            format!(
                "{n} change{} refused by prevent_destroy:",
                if n == 1 { "" } else { "s" }
            )
        } else {
            format!(
                "{n} change{} prevent_destroy would refuse (not enforced: development environment):",
                if n == 1 { "" } else { "s" }
            )
        };
        let _ = writeln!(out, "\n{}", style.paint("31", &head));
        for v in &plan.violations {
            let _ = writeln!(out, "  - {}", v.message);
        }
    }
    out
}

/// The plan as one JSON document.
pub fn json(plan: &Plan) -> String {
    let doc = serde_json::json!({
        "project": plan.project,
        "changes": plan.objects,
        "tables": plan.tables,
        "kept": plan.kept,
        "violations": plan.violations,
        "enforced": plan.enforced,
        "refused": plan.refused(),
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}
