//! Writing a registry's project as definition files: `tern export`.

use std::path::Path;

use crate::registry::RegistryModel;

/// One exported file: its name (relative to the output folder) and its YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedFile {
    /// File name, e.g. `definitions.yaml`.
    pub name: String,
    /// YAML text.
    pub text: String,
}

/// What an export produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Export {
    /// The files to write.
    pub files: Vec<ExportedFile>,
    /// Objects the definitions cannot express (on-demand and stream views, non-file
    /// sources, ...), each as `kind 'name': why`. `tern apply` leaves those alone.
    pub skipped: Vec<String>,
}

/// The definitions of `project` in `model`, with source paths written relative to
/// `out_dir` (stored paths are relative to `repo_dir`).
pub fn export(model: &RegistryModel, project: &str, repo_dir: &Path, out_dir: &Path) -> Export {
    let _ = (model, project, repo_dir, out_dir);
    Export::default()
}
