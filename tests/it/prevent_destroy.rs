//! prevent_destroy: every destructive change to a protected view or service is
//! refused with exit status 1 and a message naming what protects it, nothing changes
//! on disk, removal takes two applies, development mode reports without refusing.

use tern::commands::apply::ApplyOptions;
use tern::commands::versions::VersionsCommand;
use tern::commands::{Error, Outcome};

use crate::apply::{Repo, active_version, defs, history};

const V0: &[(&str, &str)] = &[("score", "Float64")];
const V1: &[(&str, &str)] = &[("score", "Float64"), ("trips", "Int64")];
const PROTECTED: &str = "    prevent_destroy: true\n";
const SERVICE: &str = "feature_services:\n  - name: ranking\n    prevent_destroy: true\n    features:\n      - driver_stats: [score]\n";
const SERVICE_OFF: &str =
    "feature_services:\n  - name: ranking\n    features:\n      - driver_stats: [score]\n";

/// The registry file and the online database, byte for byte.
fn disk(repo: &Repo) -> (Vec<u8>, Vec<u8>) {
    (
        std::fs::read(repo.registry_file()).unwrap(),
        std::fs::read(repo.online()).unwrap(),
    )
}

/// Applies `yaml` expecting a refusal; returns the output, having checked that
/// nothing changed on disk.
async fn refused(repo: &Repo, yaml: &str, options: ApplyOptions) -> String {
    let before = disk(repo);
    let (result, out) = repo.apply_with(yaml, options).await;
    assert!(matches!(result, Ok(Outcome::Refused)), "{result:?}\n{out}");
    assert!(out.contains("refused by prevent_destroy"), "{out}");
    assert!(out.contains("Nothing was changed."), "{out}");
    assert_eq!(disk(repo), before, "a refused apply changed the disk");
    out
}

#[tokio::test]
async fn a_protected_view_is_never_deleted_nor_its_active_schema_changed() {
    let repo = Repo::file();
    repo.apply(&defs(V0, PROTECTED, "")).await;

    // Delete: the definitions no longer hold the view.
    let only_entities = "entities:\n  - {name: driver, join_keys: [driver_id], value_type: INT64}\nsources:\n  - {name: driver_src, type: file, path: data/driver_stats.parquet, timestamp_field: event_timestamp}\n";
    let out = refused(&repo, only_entities, repo.options()).await;
    assert!(
        out.contains("Cannot delete (with every version's table and history) feature view 'driver_stats' in project 'lifecycle': it is protected by prevent_destroy (its own prevent_destroy)"),
        "{out}"
    );
    assert!(
        out.contains("first apply with `prevent_destroy: false` on feature view 'driver_stats'"),
        "{out}"
    );

    // A promoted schema change moves the active schema (and v1 is cold).
    let out = refused(&repo, &defs(V1, PROTECTED, ""), repo.options()).await;
    assert!(
        out.contains("change the active version (v0 -> v1)"),
        "{out}"
    );
    assert!(out.contains("never materialized"), "{out}");

    // Turning protection off in the same plan does not help: checks use the registry
    // as it is.
    refused(&repo, only_entities, repo.options()).await;
    refused(&repo, &defs(V1, "", ""), repo.options()).await;

    // Staging and metadata edits are never destructive.
    let (result, out) = repo
        .apply_with(
            &defs(V1, PROTECTED, ""),
            ApplyOptions {
                no_promote: true,
                ..repo.options()
            },
        )
        .await;
    assert!(matches!(result, Ok(Outcome::Done)), "{result:?}\n{out}");
    repo.apply(&defs(
        V0,
        &format!("{PROTECTED}    description: edited\n"),
        "",
    ))
    .await;
    let m = repo.model().await;
    assert_eq!(active_version(&m, "driver_stats"), 0);
    assert_eq!(history(&m, "driver_stats"), [0, 1]);

    // Promoting the staged version (a plain apply of its definition) is refused.
    let out = refused(&repo, &defs(V1, PROTECTED, ""), repo.options()).await;
    assert!(out.contains("promote v1"), "{out}");
    assert!(
        out.contains("change the active version (v0 -> v1)"),
        "{out}"
    );

    // Pinning another version is refused too.
    refused(
        &repo,
        &defs(V0, &format!("{PROTECTED}    version: v1\n"), ""),
        repo.options(),
    )
    .await;

    // Pruning versions of a protected view is refused.
    let (result, _) = repo
        .versions(VersionsCommand::Prune {
            view: "driver_stats".into(),
            keep: 0,
            dev: false,
        })
        .await;
    // v1 is staged and v0 active: nothing to prune, so nothing to refuse.
    assert!(matches!(result, Ok(Outcome::Done)), "{result:?}");

    // Two steps: clear the flag, then delete.
    repo.apply(&defs(V0, "", "")).await;
    let out = repo.apply(only_entities).await;
    assert!(out.contains("delete"), "{out}");
    let m = repo.model().await;
    assert!(m.feature_views.is_empty());
    assert!(history(&m, "driver_stats").is_empty());
    let tables = repo.tables();
    assert!(
        !tables
            .iter()
            .any(|t| t.starts_with("lifecycle_driver_stats")),
        "{tables:?}"
    );
}

#[tokio::test]
async fn pruning_a_protected_view_is_refused() {
    let repo = Repo::file();
    repo.apply(&defs(V0, "", "")).await;
    repo.apply(&defs(V1, "", "")).await;
    repo.apply(&defs(V1, PROTECTED, "")).await;
    let before = disk(&repo);
    let (result, _) = repo
        .versions(VersionsCommand::Prune {
            view: "driver_stats".into(),
            keep: 0,
            dev: false,
        })
        .await;
    match result {
        Err(Error::Versions(e)) => {
            let text = e.to_string();
            assert!(
                text.contains("Cannot drop v0 (tables and history) of feature view 'driver_stats'"),
                "{text}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(disk(&repo), before);
}

#[tokio::test]
async fn a_protected_service_protects_its_views_and_its_features() {
    let repo = Repo::file();
    repo.apply(&defs(V0, "", SERVICE)).await;

    // The view is protected through the service.
    let out = refused(&repo, &defs(V1, "", SERVICE), repo.options()).await;
    assert!(
        out.contains("it is protected by prevent_destroy (feature service 'ranking')"),
        "{out}"
    );
    assert!(
        out.contains("first apply with `prevent_destroy: false` on feature service 'ranking'"),
        "{out}"
    );

    // Changing what the service returns is a schema change of the service.
    let wider = "feature_services:\n  - name: ranking\n    prevent_destroy: true\n    features:\n      - driver_stats\n      - {view: driver_stats, alias: ds, features: [score]}\n";
    let out = refused(&repo, &defs(V0, "", wider), repo.options()).await;
    assert!(
        out.contains("Cannot change the features returned by feature service 'ranking'"),
        "{out}"
    );

    // Deleting the service is refused, even though its views are not protected.
    let out = refused(&repo, &defs(V0, "", ""), repo.options()).await;
    assert!(
        out.contains("Cannot delete feature service 'ranking'"),
        "{out}"
    );

    // Clearing the service's flag releases both.
    repo.apply(&defs(V0, "", SERVICE_OFF)).await;
    repo.apply(&defs(V1, "", SERVICE_OFF)).await;
    assert_eq!(active_version(&repo.model().await, "driver_stats"), 1);
}

#[tokio::test]
async fn development_mode_reports_but_does_not_refuse() {
    let repo = Repo::file();
    repo.apply(&defs(V0, PROTECTED, "")).await;

    // `tern plan` marks the violation and exits 1 in production...
    let (result, out) = repo
        .apply_with(
            &defs(V1, PROTECTED, ""),
            ApplyOptions {
                execute: false,
                ..repo.options()
            },
        )
        .await;
    assert!(matches!(result, Ok(Outcome::Refused)), "{out}");
    // ...and 0 in development, still naming what would have been refused.
    let dev = ApplyOptions {
        dev: true,
        ..repo.options()
    };
    let (result, out) = repo
        .apply_with(
            &defs(V1, PROTECTED, ""),
            ApplyOptions {
                execute: false,
                ..dev.clone()
            },
        )
        .await;
    assert!(matches!(result, Ok(Outcome::Done)), "{out}");
    assert!(
        out.contains("prevent_destroy would refuse (not enforced: development environment)"),
        "{out}"
    );
    assert!(
        out.contains("change the active version (v0 -> v1)"),
        "{out}"
    );

    let (result, out) = repo.apply_with(&defs(V1, PROTECTED, ""), dev).await;
    assert!(matches!(result, Ok(Outcome::Done)), "{out}");
    assert_eq!(active_version(&repo.model().await, "driver_stats"), 1);

    // The same through `environment: development` in feature_store.yaml.
    let text = std::fs::read_to_string(&repo.config).unwrap();
    std::fs::write(&repo.config, format!("{text}environment: development\n")).unwrap();
    let (result, out) = repo.apply_with("entities: []\n", repo.options()).await;
    assert!(matches!(result, Ok(Outcome::Done)), "{out}");
    assert!(repo.model().await.feature_views.is_empty());
}

#[tokio::test]
async fn plan_json_lists_changes_and_violations() {
    let repo = Repo::file();
    repo.apply(&defs(V0, PROTECTED, "")).await;
    let (result, out) = repo
        .apply_with(
            &defs(V1, PROTECTED, ""),
            ApplyOptions {
                execute: false,
                json: true,
                ..repo.options()
            },
        )
        .await;
    assert!(matches!(result, Ok(Outcome::Refused)), "{out}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["refused"], true);
    assert_eq!(doc["violations"][0]["action"], "promote-cold-version");
    assert_eq!(doc["violations"][0]["name"], "driver_stats");
    assert_eq!(doc["changes"][0]["action"], "new_version");
    assert_eq!(doc["changes"][0]["version"], 1);
    assert_eq!(doc["tables"][0]["table"], "lifecycle_driver_stats_v1");
}
