//! Feast 0.67's SQL registry schema, as Feast creates it (`feast/infra/registry/sql.py`),
//! checked against the fixtures Feast made (`tests/fixtures/feast/sql/registry.pg.sql`,
//! a `pg_dump`, and `registry.sqlite`). Tern creates the tables Feast would when it
//! writes to a database that has none.

/// A column type, spelled per database as Feast's SQLAlchemy model makes it.
#[derive(Debug, Clone, Copy)]
enum Ty {
    /// `String(255)`.
    Name,
    /// `String(50)`.
    Short,
    /// `String(36)`.
    Uuid,
    BigInt,
    Int,
    Blob,
    Text,
}

impl Ty {
    fn postgres(self) -> &'static str {
        match self {
            Ty::Name => "character varying(255)",
            Ty::Short => "character varying(50)",
            Ty::Uuid => "character varying(36)",
            Ty::BigInt => "bigint",
            Ty::Int => "integer",
            Ty::Blob => "bytea",
            Ty::Text => "text",
        }
    }

    fn sqlite(self) -> &'static str {
        match self {
            Ty::Name => "VARCHAR(255)",
            Ty::Short => "VARCHAR(50)",
            Ty::Uuid => "VARCHAR(36)",
            Ty::BigInt => "BIGINT",
            Ty::Int => "INTEGER",
            Ty::Blob => "BLOB",
            Ty::Text => "TEXT",
        }
    }
}

/// `(column, type, NOT NULL)`.
type Column = (&'static str, Ty, bool);

/// One table: columns in Feast's order, its primary key, its `project_id` index.
#[derive(Debug)]
pub(super) struct TableDef {
    pub(super) name: &'static str,
    columns: &'static [Column],
    /// Empty for an object table: its name column and `project_id`.
    key: &'static [&'static str],
    index: &'static str,
}

const fn object_table(
    name: &'static str,
    columns: &'static [Column],
    index: &'static str,
) -> TableDef {
    TableDef {
        name,
        columns,
        key: &[],
        index,
    }
}

macro_rules! object_columns {
    ($name:literal, $proto:literal) => {
        &[
            ($name, Ty::Name, true),
            ("project_id", Ty::Name, true),
            ("last_updated_timestamp", Ty::BigInt, true),
            ($proto, Ty::Blob, true),
        ]
    };
}

const VIEW_COLUMNS: &[Column] = &[
    ("feature_view_name", Ty::Name, true),
    ("project_id", Ty::Name, true),
    ("last_updated_timestamp", Ty::BigInt, true),
    ("feature_view_proto", Ty::Blob, true),
    ("user_metadata", Ty::Blob, false),
];

/// Every table of Feast 0.67's SQL registry, in the order Feast declares them.
pub(super) const SCHEMA: [TableDef; 14] = [
    TableDef {
        name: "projects",
        columns: &[
            ("project_id", Ty::Name, true),
            ("project_name", Ty::Name, true),
            ("last_updated_timestamp", Ty::BigInt, true),
            ("project_proto", Ty::Blob, true),
        ],
        key: &["project_id"],
        index: "idx_projects_project_id",
    },
    object_table(
        "entities",
        object_columns!("entity_name", "entity_proto"),
        "idx_entities_project_id",
    ),
    object_table(
        "data_sources",
        object_columns!("data_source_name", "data_source_proto"),
        "idx_data_sources_project_id",
    ),
    object_table(
        "feature_views",
        &[
            ("feature_view_name", Ty::Name, true),
            ("project_id", Ty::Name, true),
            ("last_updated_timestamp", Ty::BigInt, true),
            ("materialized_intervals", Ty::Blob, false),
            ("feature_view_proto", Ty::Blob, true),
            ("user_metadata", Ty::Blob, false),
        ],
        "idx_feature_views_project_id",
    ),
    object_table(
        "stream_feature_views",
        VIEW_COLUMNS,
        "idx_stream_feature_views_project_id",
    ),
    object_table(
        "on_demand_feature_views",
        VIEW_COLUMNS,
        "idx_on_demand_feature_views_project_id",
    ),
    object_table("label_views", VIEW_COLUMNS, "idx_label_views_project_id"),
    object_table(
        "feature_services",
        object_columns!("feature_service_name", "feature_service_proto"),
        "idx_feature_services_project_id",
    ),
    object_table(
        "saved_datasets",
        object_columns!("saved_dataset_name", "saved_dataset_proto"),
        "idx_saved_datasets_project_id",
    ),
    object_table(
        "validation_references",
        object_columns!("validation_reference_name", "validation_reference_proto"),
        "idx_validation_references_project_id",
    ),
    object_table(
        "managed_infra",
        object_columns!("infra_name", "infra_proto"),
        "idx_managed_infra_project_id",
    ),
    object_table(
        "permissions",
        object_columns!("permission_name", "permission_proto"),
        "idx_permissions_project_id",
    ),
    TableDef {
        name: "feature_view_version_history",
        columns: &[
            ("feature_view_name", Ty::Name, true),
            ("project_id", Ty::Name, true),
            ("version_number", Ty::Int, true),
            ("feature_view_type", Ty::Short, true),
            ("feature_view_proto", Ty::Blob, true),
            ("created_timestamp", Ty::BigInt, true),
            ("description", Ty::Text, false),
            ("version_id", Ty::Uuid, true),
        ],
        key: &["feature_view_name", "project_id", "version_number"],
        index: "idx_fv_version_history_project_id",
    },
    TableDef {
        name: "feast_metadata",
        columns: &[
            ("project_id", Ty::Name, true),
            ("metadata_key", Ty::Short, true),
            ("metadata_value", Ty::Text, true),
            ("last_updated_timestamp", Ty::BigInt, true),
        ],
        key: &["project_id", "metadata_key"],
        index: "idx_feast_metadata_project_id",
    },
];

/// Which database's spelling.
#[derive(Debug, Clone, Copy)]
pub(super) enum Dialect {
    Postgres,
    Sqlite,
}

impl TableDef {
    /// `CREATE TABLE` and its index, as one batch.
    pub(super) fn ddl(&self, dialect: Dialect) -> String {
        let mut sql = format!("CREATE TABLE {} (\n", self.name);
        for (column, ty, not_null) in self.columns {
            let ty = match dialect {
                Dialect::Postgres => ty.postgres(),
                Dialect::Sqlite => ty.sqlite(),
            };
            let null = if *not_null { " NOT NULL" } else { "" };
            sql.push_str(&format!("\t{column} {ty}{null},\n"));
        }
        let key = match self.key {
            [] => format!("{}, project_id", self.columns[0].0),
            key => key.join(", "),
        };
        sql.push_str(&format!(
            "\tPRIMARY KEY ({key})\n);\nCREATE INDEX {} ON {} (project_id);",
            self.index, self.name
        ));
        sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_reads_like_feasts() {
        let history = SCHEMA
            .iter()
            .find(|t| t.name == "feature_view_version_history")
            .unwrap();
        assert_eq!(
            history.ddl(Dialect::Sqlite),
            "CREATE TABLE feature_view_version_history (\n\tfeature_view_name VARCHAR(255) NOT NULL,\n\
             \tproject_id VARCHAR(255) NOT NULL,\n\tversion_number INTEGER NOT NULL,\n\
             \tfeature_view_type VARCHAR(50) NOT NULL,\n\tfeature_view_proto BLOB NOT NULL,\n\
             \tcreated_timestamp BIGINT NOT NULL,\n\tdescription TEXT,\n\
             \tversion_id VARCHAR(36) NOT NULL,\n\
             \tPRIMARY KEY (feature_view_name, project_id, version_number)\n);\n\
             CREATE INDEX idx_fv_version_history_project_id ON feature_view_version_history (project_id);"
        );
    }
}
