#!/usr/bin/env bash
# Rebuilds the example repo, in the current folder, from its definitions and Parquet files
# alone: the registry with driver_stats' history as Feast recorded it (v0; v1 active; v2
# staged with --no-promote; the services pinned to v0 and v2), then the online rows of
# every view and of every driver_stats version. The result equals what Feast 0.67 built
# (tests/it/materialize.rs checks it table by table). TERN names the binary (default:
# `tern` on the PATH).
set -euo pipefail
tern=${TERN:-tern}
start=2025-01-01T00:00:00
end=2025-01-10T12:00:00
if [ -e data/registry.db ]; then
  echo "rebuild.sh: data/registry.db exists; run it in a copy holding only the YAML and Parquet files" >&2
  exit 1
fi
"$tern" apply -f definitions.yaml -f history/driver_stats_v0.yaml
"$tern" apply -f definitions.yaml -f driver_stats.yaml
"$tern" apply --no-promote -f definitions.yaml -f history/driver_stats_v2.yaml
"$tern" apply -f definitions.yaml -f driver_stats.yaml -f history/pinned_services.yaml
"$tern" materialize "$start" "$end"
for version in v0 v2; do
  "$tern" materialize --views driver_stats --version "$version" "$start" "$end"
done
