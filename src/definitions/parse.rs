//! Reading definition files (see the module above).

use std::path::{Path, PathBuf};

use super::{DefinitionError, DefinitionErrors, Definitions, Origin};

pub(super) fn load(paths: &[PathBuf], _repo_dir: &Path) -> Result<Definitions, DefinitionErrors> {
    Err(DefinitionErrors(vec![DefinitionError {
        origin: Origin {
            file: paths.first().cloned().unwrap_or_default(),
            line: 0,
        },
        field: String::new(),
        message: "definition files cannot be read yet".to_owned(),
    }]))
}
