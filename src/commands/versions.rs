//! `tern versions list|show|diff|prune`.

use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use super::{Error, Outcome, REGISTRY_TIMEOUT};
use crate::definitions::export;
use crate::plan::versions::{self, VersionsError};
use crate::registry::RegistrySource;
use crate::registry::model::Stored;

/// What `tern versions` was asked.
#[derive(Debug, Clone)]
pub enum VersionsCommand {
    /// `list VIEW`.
    List {
        /// View.
        view: String,
    },
    /// `show VIEW vN`.
    Show {
        /// View.
        view: String,
        /// Version.
        version: u32,
    },
    /// `diff VIEW vA vB`.
    Diff {
        /// View.
        view: String,
        /// From.
        a: u32,
        /// To.
        b: u32,
    },
    /// `prune VIEW --keep N`.
    Prune {
        /// View.
        view: String,
        /// Newest versions kept (besides the active and staged ones).
        keep: usize,
        /// `--dev`.
        dev: bool,
    },
}

/// Parses `vN` / `versionN` (any case), as pins are written.
pub fn parse_version(text: &str) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    let digits = lower
        .strip_prefix("version")
        .or_else(|| lower.strip_prefix('v'))
        .unwrap_or("");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "Invalid version string '{text}'. Expected 'vN' or 'versionN' (e.g. 'v2', 'version3')."
        ));
    }
    digits
        .parse()
        .map_err(|_| format!("version '{text}' is too large"))
}

fn table(rows: &[[String; 6]]) -> String {
    let mut widths = [0usize; 6];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Runs one `tern versions` command against `--config`.
pub async fn run(
    config: &std::path::Path,
    command: &VersionsCommand,
    out: &mut (dyn Write + Send),
) -> Result<Outcome, Error> {
    let config = super::load_config(config)?;
    let project = config.project.clone();
    let mut source = RegistrySource::open(&config, REGISTRY_TIMEOUT)?;
    let write = |out: &mut (dyn Write + Send), text: &str| {
        out.write_all(text.as_bytes())
            .map_err(|cause| Error::Output {
                path: PathBuf::from("<stdout>"),
                cause,
            })
    };
    match command {
        VersionsCommand::List { view } => {
            let model = source.read(&project).await?.model;
            let style = if source.file().is_some() {
                versions::TimeStyle::Naive
            } else {
                versions::TimeStyle::Utc
            };
            let rows = versions::list(&model, &project, view, style)?;
            if rows.is_empty() {
                write(
                    out,
                    &format!("No version history found for feature view '{view}'.\n"),
                )?;
                return Ok(Outcome::Done);
            }
            let yes = |b: bool| if b { "yes" } else { "" }.to_owned();
            let mut lines = vec![[
                "VERSION".to_owned(),
                "TYPE".to_owned(),
                "CREATED".to_owned(),
                "VERSION_ID".to_owned(),
                "ACTIVE".to_owned(),
                "MATERIALIZED".to_owned(),
            ]];
            for r in rows {
                let active = if r.active {
                    "yes".to_owned()
                } else if r.staged {
                    "staged".to_owned()
                } else {
                    String::new()
                };
                lines.push([
                    r.version,
                    r.feature_view_type,
                    r.created,
                    r.version_id,
                    active,
                    yes(r.materialized),
                ]);
            }
            write(out, &table(&lines))?;
            Ok(Outcome::Done)
        }
        VersionsCommand::Show { view, version } => {
            let model = source.read(&project).await?.model;
            let snap = versions::get(&model, &project, view, *version)?;
            // Export a copy of the project in which the snapshot is the view.
            let mut copy = model.clone();
            copy.feature_services.retain(|s| s.project != project);
            copy.feature_views.retain(|v| v.project != project);
            copy.feature_views.push(Stored {
                project: project.clone(),
                name: view.clone(),
                row: None,
                object: snap,
            });
            let exported = export::export(&copy, &project, &config.repo_dir, &config.repo_dir);
            let text: String = exported.files.iter().map(|f| only_view(&f.text)).collect();
            write(out, &format!("# {view} v{version}\n{text}"))?;
            Ok(Outcome::Done)
        }
        VersionsCommand::Diff { view, a, b } => {
            let model = source.read(&project).await?.model;
            let lines = versions::diff(&model, &project, view, *a, *b)?;
            let mut text = format!("{view}: v{a} -> v{b}\n");
            if lines.is_empty() {
                text.push_str("  no differences\n");
            }
            for l in lines {
                text.push_str(&format!("  {l}\n"));
            }
            write(out, &text)?;
            Ok(Outcome::Done)
        }
        VersionsCommand::Prune { view, keep, dev } => {
            let enforce = !(*dev || config.development);
            let txn = source.begin(&project).await?;
            let pruned = versions::prune(
                txn.model(),
                &project,
                view,
                *keep,
                config.registry.versioning,
            )?;
            if pruned.dropped.is_empty() {
                write(
                    out,
                    &format!("Nothing to prune for feature view '{view}'.\n"),
                )?;
                return Ok(Outcome::Done);
            }
            let list: Vec<String> = pruned.dropped.iter().map(|v| format!("v{v}")).collect();
            if !pruned.violations.is_empty() {
                if enforce {
                    return Err(VersionsError::Protected(pruned.violations).into());
                }
                for v in &pruned.violations {
                    write(
                        out,
                        &format!("not enforced (development environment): {}\n", v.message),
                    )?;
                }
            }
            super::apply::apply_tables(&config, &pruned.tables).await?;
            txn.commit(pruned.model, SystemTime::now()).await?;
            let mut text = format!("Pruned {view}: {}\n", list.join(", "));
            for t in &pruned.tables {
                text.push_str(&format!("  dropped table {}\n", t.table));
            }
            write(out, &text)?;
            Ok(Outcome::Done)
        }
    }
}

/// The `feature_views:` section of an exported file (`versions show` prints the view).
fn only_view(text: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("feature_views:") {
            inside = true;
        } else if !line.starts_with(' ') && !line.starts_with('-') && !line.is_empty() {
            inside = false;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    if out.is_empty() { text.to_owned() } else { out }
}
