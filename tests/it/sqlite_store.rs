//! The SQLite store under `--store-timeout-ms`: a read that cannot finish in time is
//! answered DEADLINE_EXCEEDED naming the store, and a reader never runs a read whose
//! caller has given up. A writer's exclusive lock (as `feast materialize` takes while
//! committing) holds the readers, on a real database file.

use std::path::Path;
use std::time::Duration;

use tern::server::StoreSettings;
use tern::store::Store;
use tern::testing::{TestServer, synthetic_value};
use tonic::Code;

use crate::support::*;

const DEADLINE: Duration = Duration::from_secs(10);

/// A writer holding SQLite's exclusive lock on a database (as `feast materialize` does
/// while it commits) until released: readers wait on it.
pub struct WriterLock(rusqlite::Connection);

impl WriterLock {
    pub fn hold(db: &Path) -> Self {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        Self(conn)
    }

    pub fn release(self) {
        self.0.execute_batch("COMMIT").unwrap();
    }
}

/// A synthetic repo of 3 drivers x 2 features, served with `settings`.
async fn serve(settings: StoreSettings) -> (tempfile::TempDir, TestServer) {
    let (dir, _repo, server) = crate::limits::serve(tern::testing::TestOptions {
        store: settings,
        ..Default::default()
    })
    .await;
    (dir, server)
}

fn f0_of_driver_1() -> tern::proto::tern::wire::GetOnlineFeaturesRequest {
    refs_request(&["bench:f0"], vec![("driver_id", vec![int64(1)])])
}

#[tokio::test]
async fn a_read_past_the_store_timeout_answers_deadline_exceeded_naming_the_store() {
    let (dir, server) = serve(StoreSettings::default()).await;
    let ch = channel(&server.url()).await;
    let db = dir.path().join("data/online.db");
    let lock = WriterLock::hold(&db);

    let status = call(&ch, Route::Serving, f0_of_driver_1())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        status.message(),
        format!(
            "online store sqlite {} did not answer within 250 ms",
            db.display()
        )
    );

    lock.release();
    let r = call(&ch, Route::Serving, f0_of_driver_1()).await.unwrap();
    assert_eq!(column(&r, "f0").0, [double(synthetic_value(1, 0))]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_read_whose_caller_gave_up_is_skipped_not_run() {
    // One reader, and a timeout long enough that only the caller can give up.
    let (dir, server) = serve(StoreSettings {
        sqlite_readers: 1,
        timeout: Duration::from_secs(60),
        ..StoreSettings::default()
    })
    .await;
    let Store::Sqlite(store) = server.serving.store().clone() else {
        panic!("a SQLite store");
    };
    let ch = channel(&server.url()).await;
    let lock = WriterLock::hold(&dir.path().join("data/online.db"));

    // The reader waits on the lock with the first read; the second queues behind it.
    let first = tokio::spawn({
        let ch = ch.clone();
        async move { call(&ch, Route::Serving, f0_of_driver_1()).await }
    });
    let serving = server.serving.clone();
    eventually(DEADLINE, "first read in flight", || {
        let n = serving.in_flight();
        async move { (n == 1).then_some(()) }
    })
    .await;
    let second = tokio::spawn({
        let ch = ch.clone();
        async move { call(&ch, Route::Serving, f0_of_driver_1()).await }
    });
    eventually(DEADLINE, "second read in flight", || {
        let n = serving.in_flight();
        async move { (n == 2).then_some(()) }
    })
    .await;
    // Its client gives up: the server drops the request.
    second.abort();
    eventually(DEADLINE, "second request dropped by the server", || {
        let n = serving.in_flight();
        async move { (n == 1).then_some(()) }
    })
    .await;

    lock.release();
    let r = first.await.unwrap().expect("the first read completes");
    assert_eq!(column(&r, "f0").0, [double(synthetic_value(1, 0))]);
    eventually(DEADLINE, "the abandoned read skipped", || {
        let skipped = store.reads_skipped();
        async move { (skipped == 1).then_some(()) }
    })
    .await;
    server.stop().await.unwrap();
}
