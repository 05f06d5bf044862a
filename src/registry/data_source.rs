//! Data sources: what kind each is, and file sources as typed data.
//!
//! Owns: reading a `feast.core.DataSource` as a [`FileSource`] (the kind Tern
//! materializes from) and writing one back the way Feast's `FileSource` does; naming
//! the other kinds, whose options stay opaque bytes in the proto.

use std::collections::BTreeMap;

use crate::proto::feast::core as pb;
use pb::data_source::SourceType;

/// Feast's Python class for file sources, written into `data_source_class_type`.
pub const FILE_SOURCE_CLASS: &str = "feast.infra.offline_stores.file_source.FileSource";

/// Feast's Python class for push sources.
pub const PUSH_SOURCE_CLASS: &str = "feast.data_source.PushSource";

/// Which kind of source a `DataSource` is, from the options it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// Parquet (or Delta) files.
    File,
    /// BigQuery.
    BigQuery,
    /// Kafka.
    Kafka,
    /// Kinesis.
    Kinesis,
    /// Redshift.
    Redshift,
    /// A custom source class.
    Custom,
    /// A request source (on-demand inputs).
    Request,
    /// Snowflake.
    Snowflake,
    /// A push source.
    Push,
    /// Spark.
    Spark,
    /// Trino.
    Trino,
    /// Athena.
    Athena,
    /// No options Tern knows.
    Unknown,
}

impl SourceKind {
    /// The kind of `source`.
    pub fn of(source: &pb::DataSource) -> Self {
        let s = source;
        if s.file_options.is_some() {
            SourceKind::File
        } else if s.bigquery_options.is_some() {
            SourceKind::BigQuery
        } else if s.kafka_options.is_some() {
            SourceKind::Kafka
        } else if s.kinesis_options.is_some() {
            SourceKind::Kinesis
        } else if s.redshift_options.is_some() {
            SourceKind::Redshift
        } else if s.custom_options.is_some() {
            SourceKind::Custom
        } else if s.request_data_options.is_some() {
            SourceKind::Request
        } else if s.snowflake_options.is_some() {
            SourceKind::Snowflake
        } else if s.push_options.is_some() || s.r#type == SourceType::PushSource as i32 {
            // Feast 0.67's PushSource sets no options, only its type.
            SourceKind::Push
        } else if s.spark_options.is_some() {
            SourceKind::Spark
        } else if s.trino_options.is_some() {
            SourceKind::Trino
        } else if s.athena_options.is_some() {
            SourceKind::Athena
        } else {
            SourceKind::Unknown
        }
    }

    /// Lower-case name for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::BigQuery => "bigquery",
            SourceKind::Kafka => "kafka",
            SourceKind::Kinesis => "kinesis",
            SourceKind::Redshift => "redshift",
            SourceKind::Custom => "custom",
            SourceKind::Request => "request",
            SourceKind::Snowflake => "snowflake",
            SourceKind::Push => "push",
            SourceKind::Spark => "spark",
            SourceKind::Trino => "trino",
            SourceKind::Athena => "athena",
            SourceKind::Unknown => "unknown",
        }
    }
}

/// The format of a file source's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// Not declared (Feast reads Parquet then).
    Unspecified,
    /// Parquet.
    Parquet,
    /// Delta Lake.
    Delta,
}

/// A file source, typed: everything materialization needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSource {
    /// Source name.
    pub name: String,
    /// Project.
    pub project: String,
    /// File or folder path (or URI), as written; relative paths are relative to the
    /// feature repo.
    pub path: String,
    /// File format.
    pub format: FileFormat,
    /// Column holding each row's event time.
    pub timestamp_field: String,
    /// Column holding each row's creation time (breaks event-time ties).
    pub created_timestamp_column: Option<String>,
    /// Source column -> feature or entity column.
    pub field_mapping: BTreeMap<String, String>,
    /// Column the files are partitioned by date on.
    pub date_partition_column: Option<String>,
    /// `s3_endpoint_override`.
    pub s3_endpoint_override: Option<String>,
    /// Description.
    pub description: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Owner.
    pub owner: String,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

impl FileSource {
    /// `source` as a file source; `None` for any other kind.
    pub fn from_proto(source: &pb::DataSource) -> Option<Self> {
        let options = source.file_options.as_ref()?;
        let format = match &options.file_format {
            Some(f) if f.parquet_format.is_some() => FileFormat::Parquet,
            Some(f) if f.delta_format.is_some() => FileFormat::Delta,
            _ => FileFormat::Unspecified,
        };
        Some(Self {
            name: source.name.clone(),
            project: source.project.clone(),
            path: options.uri.clone(),
            format,
            timestamp_field: source.timestamp_field.clone(),
            created_timestamp_column: non_empty(&source.created_timestamp_column),
            field_mapping: source.field_mapping.clone(),
            date_partition_column: non_empty(&source.date_partition_column),
            s3_endpoint_override: non_empty(&options.s3_endpoint_override),
            description: source.description.clone(),
            tags: source.tags.clone(),
            owner: source.owner.clone(),
        })
    }

    /// The proto Feast's `FileSource.to_proto` writes for this source (`meta`, the
    /// registry's bookkeeping, left for the writer to set).
    pub fn to_proto(&self) -> pb::DataSource {
        let file_format = match self.format {
            FileFormat::Unspecified => None,
            FileFormat::Parquet => Some(pb::FileFormat {
                parquet_format: Some(pb::file_format::ParquetFormat {}),
                delta_format: None,
            }),
            // Delta's own options are not modelled: an empty DeltaFormat.
            FileFormat::Delta => Some(pb::FileFormat {
                parquet_format: None,
                delta_format: Some(Vec::new()),
            }),
        };
        pb::DataSource {
            name: self.name.clone(),
            project: self.project.clone(),
            description: self.description.clone(),
            tags: self.tags.clone(),
            owner: self.owner.clone(),
            r#type: SourceType::BatchFile as i32,
            field_mapping: self.field_mapping.clone(),
            timestamp_field: self.timestamp_field.clone(),
            date_partition_column: self.date_partition_column.clone().unwrap_or_default(),
            created_timestamp_column: self.created_timestamp_column.clone().unwrap_or_default(),
            data_source_class_type: FILE_SOURCE_CLASS.to_owned(),
            file_options: Some(pb::data_source::FileOptions {
                file_format,
                uri: self.path.clone(),
                s3_endpoint_override: self.s3_endpoint_override.clone().unwrap_or_default(),
            }),
            ..Default::default()
        }
    }
}

/// A push source over a file source, as Feast's `PushSource` registers it.
#[derive(Debug, Clone, PartialEq)]
pub struct PushSource {
    /// Name.
    pub name: String,
    /// Project.
    pub project: String,
    /// The file source behind it.
    pub batch_source: FileSource,
    /// Description.
    pub description: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Owner.
    pub owner: String,
}

impl PushSource {
    /// `source` as a push source over a file source; `None` otherwise.
    pub fn from_proto(source: &pb::DataSource) -> Option<Self> {
        if SourceKind::of(source) != SourceKind::Push {
            return None;
        }
        Some(Self {
            name: source.name.clone(),
            project: source.project.clone(),
            batch_source: FileSource::from_proto(source.batch_source.as_deref()?)?,
            description: source.description.clone(),
            tags: source.tags.clone(),
            owner: source.owner.clone(),
        })
    }

    /// The proto Feast writes: its own name and type, the batch source's time columns
    /// and field mapping copied up, the batch source nested.
    pub fn to_proto(&self) -> pb::DataSource {
        let batch = &self.batch_source;
        pb::DataSource {
            name: self.name.clone(),
            project: self.project.clone(),
            description: self.description.clone(),
            tags: self.tags.clone(),
            owner: self.owner.clone(),
            r#type: SourceType::PushSource as i32,
            field_mapping: batch.field_mapping.clone(),
            timestamp_field: batch.timestamp_field.clone(),
            date_partition_column: batch.date_partition_column.clone().unwrap_or_default(),
            created_timestamp_column: batch.created_timestamp_column.clone().unwrap_or_default(),
            data_source_class_type: PUSH_SOURCE_CLASS.to_owned(),
            batch_source: Some(Box::new(batch.to_proto())),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sources_round_trip_and_other_kinds_are_named() {
        let source = FileSource {
            name: "driver_src".into(),
            project: "demo".into(),
            path: "data/driver_stats.parquet".into(),
            format: FileFormat::Parquet,
            timestamp_field: "event_timestamp".into(),
            created_timestamp_column: Some("created".into()),
            field_mapping: BTreeMap::from([("id".into(), "driver_id".into())]),
            date_partition_column: None,
            s3_endpoint_override: None,
            description: String::new(),
            tags: BTreeMap::new(),
            owner: String::new(),
        };
        let proto = source.to_proto();
        assert_eq!(SourceKind::of(&proto), SourceKind::File);
        assert_eq!(proto.r#type, SourceType::BatchFile as i32);
        assert_eq!(FileSource::from_proto(&proto), Some(source.clone()));

        let push = pb::DataSource {
            push_options: Some(Vec::new()),
            ..Default::default()
        };
        assert_eq!(SourceKind::of(&push), SourceKind::Push);
        assert_eq!(FileSource::from_proto(&push), None);

        let push = PushSource {
            name: "driver_push".into(),
            project: "demo".into(),
            batch_source: source.clone(),
            description: String::new(),
            tags: BTreeMap::new(),
            owner: String::new(),
        };
        let proto = push.to_proto();
        assert_eq!(SourceKind::of(&proto), SourceKind::Push);
        assert_eq!(proto.timestamp_field, "event_timestamp");
        assert_eq!(PushSource::from_proto(&proto), Some(push));
        assert_eq!(FileSource::from_proto(&proto), None);
        assert_eq!(PushSource::from_proto(&source.to_proto()), None);
    }
}
