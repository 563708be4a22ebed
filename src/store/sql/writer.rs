//! SQLite's writer task: group commit.
//!
//! Owns the queue of writes waiting for SQLite's single writer and how they are committed
//! together ([`group_commit`]), and how a write's failure becomes a [`StoreError`]. It must not
//! build SQL (the store does) nor decide what a constraint failure means to a caller.

use sqlx::AnyPool;

use super::{is_foreign_key_violation, is_unique_violation, query_err, AnyQuery};
use crate::store::{Result, StoreError};

/// One write for the writer task and where its outcome goes.
pub(super) type WriteJob = (
    AnyQuery<'static>,
    tokio::sync::oneshot::Sender<Result<u64, WriteError>>,
);

/// Why a write failed.
#[derive(Debug)]
pub(super) enum WriteError {
    /// The statement itself failed (nothing of it was written).
    Sql(sqlx::Error),
    /// Its transaction failed or was abandoned; no write of the batch was committed.
    Batch(String),
}

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 64;

/// SQLite's writer: takes the writes waiting (up to [`MAX_BATCH`]) and commits them in one
/// transaction, then answers each; a lone write runs on its own. A statement that fails on a
/// constraint (duplicate name, missing network) fails alone: SQLite undoes only that statement
/// and the batch goes on. Any other failure abandons the batch: it is rolled back and every
/// write in it, run or not, fails. Callers are answered only after the commit, so a write
/// reported done is durable and one reported failed did not land. Ends when the store is
/// dropped.
pub(super) async fn group_commit(pool: AnyPool, mut jobs: tokio::sync::mpsc::Receiver<WriteJob>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if batch.len() == 1 {
            if let Some((query, reply)) = batch.pop() {
                let result = query.execute(&pool).await;
                let _ = reply.send(result.map(|r| r.rows_affected()).map_err(WriteError::Sql));
            }
            continue;
        }
        commit_batch(&pool, &mut batch).await;
    }
}

async fn commit_batch(pool: &AnyPool, batch: &mut Vec<WriteJob>) {
    let fail_all = |batch: &mut Vec<WriteJob>, why: String| {
        for (_, reply) in batch.drain(..) {
            let _ = reply.send(Err(WriteError::Batch(why.clone())));
        }
    };
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(e) => return fail_all(batch, format!("cannot begin a transaction: {e}")),
    };
    let mut done = Vec::with_capacity(batch.len());
    let mut abandoned = None;
    for (query, reply) in batch.drain(..) {
        if abandoned.is_some() {
            let _ = reply.send(Err(WriteError::Batch(
                "an earlier write of its transaction failed".into(),
            )));
            continue;
        }
        match query.execute(&mut *tx).await {
            Ok(r) => done.push((Ok(r.rows_affected()), reply)),
            Err(e) if is_unique_violation(&e) || is_foreign_key_violation(&e) => {
                done.push((Err(WriteError::Sql(e)), reply));
            }
            Err(e) => {
                abandoned = Some(e.to_string());
                let _ = reply.send(Err(WriteError::Sql(e)));
            }
        }
    }
    let outcome = match abandoned {
        Some(why) => {
            let _ = tx.rollback().await;
            Err(format!("its transaction was rolled back: {why}"))
        }
        None => tx.commit().await.map_err(|e| format!("commit failed: {e}")),
    };
    for (result, reply) in done {
        let _ = reply.send(match &outcome {
            Ok(()) => result,
            Err(why) => Err(WriteError::Batch(why.clone())),
        });
    }
}

/// A write's failure as a [`StoreError::Query`] (see [`query_err`]).
pub(super) fn write_err(action: &str, e: WriteError) -> StoreError {
    match e {
        WriteError::Sql(e) => query_err(action, e),
        WriteError::Batch(why) => StoreError::Query(format!("{action}: {why}")),
    }
}
