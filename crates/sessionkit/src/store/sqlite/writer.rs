//! The group-commit writer of a [`SqliteStore`](super::SqliteStore): one thread with its own
//! connection runs every write, many per transaction, each in its own savepoint (see the module
//! documentation of `sqlite` for why).

use rusqlite::Connection;

use super::{db, SqliteStore, KIND};
use crate::error::{Error, Result};

/// One write for the writer thread: given the connection inside the open group transaction
/// (or the reason the transaction could not begin), it runs and returns what to do once the
/// group's commit is known (`Some(message)` if the commit failed).
pub(super) type WriteJob =
    Box<dyn FnOnce(std::result::Result<&mut Connection, &str>) -> WriteDone + Send + 'static>;
pub(super) type WriteDone = Box<dyn FnOnce(Option<&str>) + Send + 'static>;

/// Most writes one group commit takes; later ones wait for the next group.
const MAX_GROUP: usize = 64;

/// The writer thread: group commits until every sender is gone.
pub(super) fn run_writer(mut conn: Connection, jobs: std::sync::mpsc::Receiver<WriteJob>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let msg = e.to_string();
            for job in group {
                job(Err(&msg))(None);
            }
            continue;
        }
        let done: Vec<WriteDone> = group.into_iter().map(|job| job(Ok(&mut conn))).collect();
        let commit_error = conn.execute_batch("COMMIT").err().map(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            e.to_string()
        });
        for d in done {
            d(commit_error.as_deref());
        }
    }
}

/// Runs one write inside a savepoint of the group transaction: kept if it succeeds, undone
/// (without touching the rest of the group) if it fails or panics.
pub(super) fn in_savepoint<T, F>(conn: &mut Connection, op: &'static str, f: F) -> Result<T>
where
    F: FnOnce(&mut Connection) -> Result<T>,
{
    conn.execute_batch("SAVEPOINT write").map_err(db(op))?;
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut *conn)))
        .unwrap_or_else(|_| Err(Error::backend(KIND, op, "the write panicked")));
    let end = if out.is_ok() {
        "RELEASE write"
    } else {
        "ROLLBACK TO write; RELEASE write"
    };
    conn.execute_batch(end).map_err(db(op))?;
    out
}

impl SqliteStore {
    /// Runs `f` on the writer thread, inside a savepoint of the next group commit; answers once
    /// that commit is durable (or failed).
    pub(super) async fn write<T, F>(&self, op: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let stopped = || Error::backend(KIND, op, "the SQLite writer thread has stopped");
        let (answer, outcome) = tokio::sync::oneshot::channel::<Result<T>>();
        let job: WriteJob = Box::new(move |conn| {
            let conn = match conn {
                Ok(conn) => conn,
                Err(e) => {
                    let _ = answer.send(Err(Error::backend(KIND, op, e.to_owned())));
                    return Box::new(|_| {});
                }
            };
            let out = in_savepoint(conn, op, f);
            Box::new(move |commit_error| {
                let out = match (out, commit_error) {
                    // The write's own outcome stands if it failed; a good one needs the commit.
                    (Ok(_), Some(e)) => Err(Error::backend(KIND, op, e.to_owned())),
                    (out, _) => out,
                };
                let _ = answer.send(out);
            })
        });
        self.inner
            .writer
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{futures_join, key, temp_db, url};
    use super::*;
    use crate::id::Key;
    use crate::record::Record;
    use crate::store::Store;

    /// Many writes land in one group commit; a stale one among them fails alone and the
    /// others (including a rotation) are kept, each with its own outcome.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_keeps_each_writes_own_outcome() {
        let store = SqliteStore::open(&url(&temp_db("group"))).await.unwrap();
        let now = crate::record::now_millis();
        let keys: Vec<Key> = (0..40).map(|_| key()).collect();
        for k in &keys {
            store
                .create(k, &Record::new(now, now + 60_000, now + 60_000))
                .await
                .unwrap();
        }
        let mut tasks = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let (store, k) = (store.clone(), *k);
            tasks.push(tokio::spawn(async move {
                let mut r = Record::new(now, now + 60_000, now + 60_000);
                r.data.set("i", &i.to_string()).unwrap();
                r.version = 2;
                match i % 4 {
                    // Stale: expects version 7, the row is at 1.
                    0 => store.save(&k, &r, 7).await,
                    1 => store.rotate(&k, 1, &key(), &r, None).await,
                    _ => store.save(&k, &r, 1).await,
                }
            }));
        }
        let outcomes: Vec<Result<()>> = futures_join(tasks).await;
        for (i, (k, out)) in keys.iter().zip(&outcomes).enumerate() {
            let row = store.load(k, now).await.unwrap();
            match i % 4 {
                0 => {
                    assert!(matches!(out, Err(Error::Conflict)), "{i}: {out:?}");
                    assert_eq!(
                        row.unwrap().version,
                        1,
                        "{i}: a failed write changed the row"
                    );
                }
                1 => {
                    assert!(out.is_ok(), "{i}: {out:?}");
                    assert!(row.is_none(), "{i}: the rotated-away key is still live");
                }
                _ => {
                    assert!(out.is_ok(), "{i}: {out:?}");
                    let row = row.unwrap();
                    assert_eq!(row.version, 2);
                    assert_eq!(row.data.get("i"), Some(i.to_string().as_str()));
                }
            }
        }
        assert_eq!(store.len(now).await.unwrap(), 40);
    }
}
