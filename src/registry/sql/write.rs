//! Writing a SQL registry: one transaction per apply (see `registry::write`).

use std::time::SystemTime;

use super::SqlSource;
use crate::registry::RegistryError;
use crate::registry::model::RegistryModel;

/// An open write transaction on a SQL registry.
#[derive(Debug)]
pub struct SqlTxn<'a> {
    source: &'a mut SqlSource,
    model: RegistryModel,
}

impl SqlSource {
    /// Opens a write transaction on `project`'s rows, takes the registry's write lock
    /// and reads the project.
    pub async fn begin(&mut self, project: &str) -> Result<SqlTxn<'_>, RegistryError> {
        let (model, _) = self.read(project).await?;
        Ok(SqlTxn {
            source: self,
            model,
        })
    }
}

impl SqlTxn<'_> {
    /// The project's rows as read under the lock.
    pub fn model(&self) -> &RegistryModel {
        &self.model
    }

    /// Writes the rows that differ between `old` and `new`, and commits.
    #[allow(clippy::unused_async)]
    pub async fn commit(
        self,
        old: &RegistryModel,
        new: &RegistryModel,
        now: SystemTime,
    ) -> Result<(), RegistryError> {
        let _ = (old, new, now);
        Err(RegistryError::Unsupported(format!(
            "SQL registry {}: writes are not supported yet",
            self.source.name()
        )))
    }
}
