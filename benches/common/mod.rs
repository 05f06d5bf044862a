//! What several benches share: the synthetic repo's request keys, the bare store work
//! Tern is compared with, and the machine line.
#![allow(dead_code)] // each bench uses a part

use std::rc::Rc;

use tern::config::KeySerialization;
use tern::store::redis::field_name;
use tern::store::{EntityValue, key};
use tern::testing::SyntheticRepo;

/// Driver ids of an `n`-entity request, spread over a table of `stored` entities so reads
/// are not all one page.
pub(crate) fn ids(n: i64, stored: i64) -> Vec<i64> {
    (0..n).map(|i| 1 + (i * 7919) % stored).collect()
}

/// Feast v3 entity keys of `ids(n, stored)`.
pub(crate) fn entity_keys(n: i64, stored: i64) -> Vec<Vec<u8>> {
    ids(n, stored)
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

/// Tern's statement for a single key.
pub(crate) const BARE_POINT_SELECT: &str =
    "SELECT 1, feature_name, value, event_ts FROM synthetic_bench WHERE entity_key = ?1";

/// The bare baseline's connection, with the settings Tern's read connections get:
/// the `rarray` module and the same memory map.
pub(crate) fn bare_connection(db: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(db).expect("open");
    rusqlite::vtab::array::load_module(&conn).expect("rarray");
    let mmap = tern::store::SqliteSettings::MMAP_SIZE;
    conn.query_row(&format!("PRAGMA mmap_size = {mmap}"), [], |_| Ok(()))
        .expect("mmap_size");
    conn
}

/// One bare SQLite read of `keys`: every column Tern needs, and nothing else, with the
/// statement Tern uses for that many keys. `conn` has the `rarray` module loaded.
pub(crate) fn bare_select(conn: &rusqlite::Connection, keys: &[Vec<u8>]) -> usize {
    let (mut stmt, one) = match keys {
        [_] => (
            conn.prepare_cached(BARE_POINT_SELECT).expect("prepare"),
            true,
        ),
        _ => (conn.prepare_cached(BARE_SELECT).expect("prepare"), false),
    };
    let mut rows = if one {
        stmt.query([keys[0].as_slice()])
    } else {
        let ids: Rc<Vec<rusqlite::types::Value>> = Rc::new(
            keys.iter()
                .map(|k| rusqlite::types::Value::Blob(k.clone()))
                .collect(),
        );
        stmt.query([ids])
    }
    .expect("query");
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

/// Entity counts from a comma-separated env variable (synthetic repo sizes).
pub(crate) fn sizes(var: &str, default: &str) -> Vec<i64> {
    std::env::var(var)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|n| n.trim().parse().expect("entity counts: numbers"))
        .collect()
}

/// User + system CPU time of process `pid` and its live descendants (`feast serve`
/// answers from worker processes), from `/proc/PID/stat`.
pub(crate) fn cpu_time(pid: u32) -> std::time::Duration {
    // (pid, parent, ticks) of every process.
    let procs: Vec<(u32, u32, u64)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            // Fields after the command name (which may hold spaces) in parentheses.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let parent = fields.get(1)?.parse().ok()?;
            let ticks = [11, 12]
                .iter()
                .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
                .sum();
            Some((p, parent, ticks))
        })
        .collect();
    let mut ticks = 0;
    let mut tree = vec![pid];
    while let Some(p) = tree.pop() {
        for &(child, parent, t) in &procs {
            if child == p {
                ticks += t;
            }
            if parent == p {
                tree.push(child);
            }
        }
    }
    std::time::Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
}

/// Kernel clock ticks per second (`getconf CLK_TCK`; 100 on Linux everywhere).
fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
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
