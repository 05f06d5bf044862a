//! `tern export`: the registry's project as definition files.

use std::io::Write;
use std::path::Path;

use super::{Error, Outcome, REGISTRY_TIMEOUT};
use crate::definitions::export;
use crate::registry::RegistrySource;

/// Writes the definitions of the config's project into `out_dir`; reports what the
/// definitions cannot express on `out`.
pub async fn run(
    config: &Path,
    out_dir: &Path,
    out: &mut (dyn Write + Send),
) -> Result<Outcome, Error> {
    let config = super::load_config(config)?;
    let mut source = RegistrySource::open(&config, REGISTRY_TIMEOUT)?;
    let model = source.read(&config.project).await?.model;
    let exported = export::export(&model, &config.project, &config.repo_dir, out_dir);
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |cause| Error::Output { path, cause }
    };
    std::fs::create_dir_all(out_dir).map_err(failed(out_dir))?;
    for file in &exported.files {
        let path = out_dir.join(&file.name);
        // Written whole or not at all, like the registry.
        let tmp = out_dir.join(format!(".{}.tmp", file.name));
        std::fs::write(&tmp, &file.text).map_err(failed(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(failed(&path))?;
        let _ = writeln!(out, "wrote {}", path.display());
    }
    for s in &exported.skipped {
        let _ = writeln!(out, "skipped {s}");
    }
    Ok(Outcome::Done)
}
