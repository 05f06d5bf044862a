//! What several benches share: the synthetic repo's request keys, the bare store work
//! Tern is compared with, and the machine line.
#![allow(dead_code)] // each bench uses a part

use std::rc::Rc;

use tern::config::KeySerialization;
use tern::store::redis::field_name;
use tern::store::{EntityValue, key};
use tern::testing::SyntheticRepo;

/// Driver ids of an `n`-entity request, spread over the 1,000-entity table so reads are
/// not all one page.
pub(crate) fn ids(n: i64) -> Vec<i64> {
    (0..n).map(|i| 1 + (i * 7919) % 1000).collect()
}

/// Feast v3 entity keys of `ids(n)`.
pub(crate) fn entity_keys(n: i64) -> Vec<Vec<u8>> {
    ids(n)
        .into_iter()
        .map(|id| {
            let mut k = key::key_prefix(&["driver_id"], KeySerialization::V3);
            key::push_value(&mut k, &EntityValue::Int64(id));
            k
        })
        .collect()
}

/// Tern's own SQLite statement (the bare baseline is the same SQLite work, minus Tern).
pub(crate) const BARE_SELECT: &str = "SELECT k.rowid, t.feature_name, t.value, t.event_ts FROM rarray(?1) AS k JOIN synthetic_bench AS t ON t.entity_key = k.value";

/// One bare SQLite read of `keys`: every column Tern needs, and nothing else. `conn`
/// has the `rarray` module loaded.
pub(crate) fn bare_select(conn: &rusqlite::Connection, keys: &[Vec<u8>]) -> usize {
    let ids: Rc<Vec<rusqlite::types::Value>> = Rc::new(
        keys.iter()
            .map(|k| rusqlite::types::Value::Blob(k.clone()))
            .collect(),
    );
    let mut stmt = conn.prepare_cached(BARE_SELECT).expect("prepare");
    let mut rows = stmt.query([ids]).expect("query");
    let mut bytes = 0usize;
    while let Some(row) = rows.next().expect("row") {
        use rusqlite::types::ValueRef;
        if let (
            Ok(ValueRef::Integer(k)),
            Ok(ValueRef::Text(f)),
            Ok(ValueRef::Blob(v)),
            Ok(ValueRef::Integer(ts)),
        ) = (
            row.get_ref(0),
            row.get_ref(1),
            row.get_ref(2),
            row.get_ref(3),
        ) {
            bytes += v.len() + f.len() + (k + ts) as usize;
        }
    }
    bytes
}

/// The hash fields one bare HMGET asks for: every feature of the synthetic view, then
/// its `_ts` field.
pub(crate) fn redis_fields(repo: &SyntheticRepo) -> Vec<Vec<u8>> {
    let view = SyntheticRepo::VIEW;
    let mut fields: Vec<Vec<u8>> = (0..repo.features)
        .map(|f| field_name(view, &format!("f{f}")).to_vec())
        .collect();
    fields.push(format!("_ts:{view}").into_bytes());
    fields
}

/// `CPU model, N cores, M GiB, OS` for the reports.
pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024 / 1024);
    format!(
        "{cpu}, {cores} cores, {mem_gib} GiB, {}",
        std::env::consts::OS
    )
}
