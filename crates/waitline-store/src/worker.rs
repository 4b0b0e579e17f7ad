//! A thread of the store's own that owns a connection and runs what it is asked to on it.
//! The `postgres` client blocks on a small tokio runtime of its own, which tokio forbids
//! (it panics) on a thread already driving a runtime, such as an async service's; and such a
//! client may not be dropped there either. So every PostgreSQL connection lives, is used
//! and is dropped on a plain thread: callers wait for its answers on a channel, which any
//! thread may.

use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::backend::{Conn, JournalSize, NewRow, Row, RowVisitor};
use crate::{Error, Result};

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// A thread owning `S`.
pub(crate) struct Worker<S> {
    jobs: Option<mpsc::Sender<Job<S>>>,
    thread: Option<JoinHandle<()>>,
    /// In a fork of this process the thread is not there to join.
    birth: crate::fork::Birth,
}

impl<S> std::fmt::Debug for Worker<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").finish_non_exhaustive()
    }
}

/// The worker's thread ended (it panicked): said as the store's error.
fn gone() -> Error {
    Error::Stopped("a connection's thread ended".into())
}

impl<S: 'static> Worker<S> {
    /// Starts the thread, which makes its `S` with `make` (there, not here).
    pub(crate) fn start(name: &str, make: impl FnOnce() -> Result<S> + Send + 'static) -> Result<Self> {
        let (jobs, inbox) = mpsc::channel::<Job<S>>();
        let (made, made_rx) = mpsc::sync_channel::<Result<()>>(1);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut state = match make() {
                    Ok(state) => {
                        let _ = made.send(Ok(()));
                        state
                    }
                    Err(e) => {
                        let _ = made.send(Err(e));
                        return;
                    }
                };
                for job in inbox {
                    job(&mut state);
                }
            })
            .map_err(|e| Error::Io { path: name.into(), source: e })?;
        made_rx.recv().map_err(|_| gone())??;
        Ok(Self { jobs: Some(jobs), thread: Some(thread), birth: crate::fork::Birth::now() })
    }

    /// Runs `f` on the thread and waits for its answer.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut S) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (answer, answer_rx) = mpsc::sync_channel(1);
        let job: Job<S> = Box::new(move |state| {
            let _ = answer.send(f(state));
        });
        self.jobs.as_ref().ok_or_else(gone)?.send(job).map_err(|_| gone())?;
        answer_rx.recv().map_err(|_| gone())?
    }
}

impl<S> Drop for Worker<S> {
    fn drop(&mut self) {
        // The thread ends once its inbox is closed and empty; its `S` is dropped there.
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take()
            && !self.birth.forked()
        {
            let _ = thread.join();
        }
    }
}

/// A connection on a worker's thread, used through [`Conn`] from any thread.
pub(crate) struct RemoteConn(pub(crate) Worker<Box<dyn Conn>>);

/// One message of `rows_after` from the worker: a row, or the end.
enum Streamed {
    Row(Row),
    End(Result<()>),
}

impl Conn for RemoteConn {
    fn begin(&mut self) -> Result<()> {
        self.0.run(|c| c.begin())
    }

    fn commit(&mut self) -> Result<()> {
        self.0.run(|c| c.commit())
    }

    fn rollback(&mut self) {
        let _ = self.0.run(|c| {
            c.rollback();
            Ok(())
        });
    }

    fn fence(&mut self, claims: &[(u32, u64)]) -> Result<Vec<(u32, u64)>> {
        let claims = claims.to_vec();
        self.0.run(move |c| c.fence(&claims))
    }

    fn head(&mut self, tenant: &str) -> Result<u64> {
        let tenant = tenant.to_owned();
        self.0.run(move |c| c.head(&tenant))
    }

    fn insert_rows(&mut self, rows: &[NewRow<'_>]) -> Result<()> {
        let owned: Vec<(String, u64, u64, u64, Vec<u8>)> =
            rows.iter().map(|r| (r.tenant.to_owned(), r.first, r.last, r.epoch, r.records.clone())).collect();
        self.0.run(move |c| {
            let rows: Vec<NewRow<'_>> = owned
                .iter()
                .map(|(tenant, first, last, epoch, records)| NewRow {
                    tenant,
                    first: *first,
                    last: *last,
                    epoch: *epoch,
                    records: records.clone(),
                })
                .collect();
            c.insert_rows(&rows)
        })
    }

    fn put_snapshot(&mut self, tenant: &str, seq: u64, data: &[u8]) -> Result<()> {
        let (tenant, data) = (tenant.to_owned(), data.to_vec());
        self.0.run(move |c| c.put_snapshot(&tenant, seq, &data))
    }

    fn put_delivered(&mut self, tenant: &str, seq: u64) -> Result<()> {
        let tenant = tenant.to_owned();
        self.0.run(move |c| c.put_delivered(&tenant, seq))
    }

    fn put_intake(&mut self, position: u64) -> Result<()> {
        self.0.run(move |c| c.put_intake(position))
    }

    fn delete_covered(&mut self, tenant: &str, base: u64) -> Result<()> {
        let tenant = tenant.to_owned();
        self.0.run(move |c| c.delete_covered(&tenant, base))
    }

    fn forget_from(&mut self, tenant: &str, from: u64) -> Result<()> {
        let tenant = tenant.to_owned();
        self.0.run(move |c| c.forget_from(&tenant, from))
    }

    fn row_holding(&mut self, tenant: &str, seq: u64) -> Result<Option<Row>> {
        let tenant = tenant.to_owned();
        self.0.run(move |c| c.row_holding(&tenant, seq))
    }

    fn cut_row(&mut self, tenant: &str, first: u64, last: u64, records: &[u8]) -> Result<()> {
        let (tenant, records) = (tenant.to_owned(), records.to_vec());
        self.0.run(move |c| c.cut_row(&tenant, first, last, &records))
    }

    fn tenants(&mut self) -> Result<Vec<String>> {
        self.0.run(|c| c.tenants())
    }

    fn newest_snapshot_until(&mut self, tenant: &str, bound: u64) -> Result<Option<u64>> {
        let tenant = tenant.to_owned();
        self.0.run(move |c| c.newest_snapshot_until(&tenant, bound))
    }

    fn oldest_snapshot(&mut self, tenant: &str) -> Result<Option<u64>> {
        let tenant = tenant.to_owned();
        self.0.run(move |c| c.oldest_snapshot(&tenant))
    }

    fn first_row(&mut self, tenant: &str) -> Result<Option<u64>> {
        let tenant = tenant.to_owned();
        self.0.run(move |c| c.first_row(&tenant))
    }

    fn delivered_mark(&mut self, tenant: &str) -> Result<Option<u64>> {
        let tenant = tenant.to_owned();
        self.0.run(move |c| c.delivered_mark(&tenant))
    }

    fn snapshot(&mut self, tenant: &str, seq: u64) -> Result<Option<Vec<u8>>> {
        let tenant = tenant.to_owned();
        self.0.run(move |c| c.snapshot(&tenant, seq))
    }

    /// The rows come over a small channel as the worker reads them: a long journal is not
    /// held in memory at once, and `visit` runs here, on the caller's thread.
    fn rows_after(&mut self, tenant: &str, after: u64, visit: &mut RowVisitor<'_>) -> Result<()> {
        let tenant = tenant.to_owned();
        let (tx, rx) = mpsc::sync_channel::<Streamed>(64);
        let jobs = self.0.jobs.as_ref().ok_or_else(gone)?;
        let job: Job<Box<dyn Conn>> = Box::new(move |c| {
            let end = c.rows_after(&tenant, after, &mut |row| Ok(tx.send(Streamed::Row(row)).is_ok()));
            let _ = tx.send(Streamed::End(end));
        });
        jobs.send(job).map_err(|_| gone())?;
        loop {
            match rx.recv().map_err(|_| gone())? {
                Streamed::Row(row) => {
                    if !visit(row)? {
                        // Dropping the receiver stops the worker at its next row.
                        return Ok(());
                    }
                }
                Streamed::End(end) => return end,
            }
        }
    }

    fn snapshot_sizes(&mut self, tenant: &str) -> Result<Vec<(u64, u64)>> {
        let tenant = tenant.to_owned();
        self.0.run(move |c| c.snapshot_sizes(&tenant))
    }

    fn journal_size(&mut self, tenant: &str) -> Result<JournalSize> {
        let tenant = tenant.to_owned();
        self.0.run(move |c| c.journal_size(&tenant))
    }

    fn delivered(&mut self) -> Result<std::collections::HashMap<String, u64>> {
        self.0.run(|c| c.delivered())
    }

    fn newest_snapshots(&mut self) -> Result<std::collections::HashMap<String, u64>> {
        self.0.run(|c| c.newest_snapshots())
    }
}
