//! A PostgreSQL store after the server dropped its connections (a failover, a restart, a
//! backend terminated): new connections replace the old ones, without a process restart.
//!
//! The lease connection is simply replaced: a lease renewal or a takeover is one statement,
//! harmless to repeat. The writer is another matter: a batch whose commit failed may or may
//! not have been committed, so the store stops (as on any failed write) and what the
//! caller's memory holds of every tenant is no longer known to match the journal. The
//! caller forgets it, then [`Store::restart_writer`] drops what was queued (those tickets
//! fail) and every lease held, and the caller takes its buckets again (at new epochs) and
//! replays them from the store. A SQLite store never reconnects: a failed `fsync` leaves
//! the file's state unknown.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::postgres::LeaseConn;
use crate::worker::Worker;
use crate::{Error, Location, PgConfig, Result, Store};

/// The thread owning a new lease connection.
pub(crate) fn lease_worker(config: &PgConfig) -> Result<Worker<LeaseConn>> {
    let config = config.clone();
    Worker::start("waitline-leases", move || LeaseConn::open(&config))
}

impl Store {
    /// Whether the store stopped because PostgreSQL dropped the writer's connection (or
    /// could not be reached): [`Store::restart_writer`] may bring it back.
    #[must_use]
    pub fn can_restart_writer(&self) -> bool {
        self.is_stopped() && self.shared.channel.reconnectable.load(Ordering::Acquire)
    }

    /// Replaces the connection that takes and renews leases (after an error of
    /// [`Error::is_disconnect`]); the leases held stay held (a renewal finds those lost
    /// meanwhile).
    ///
    /// # Errors
    /// A SQLite store ([`Error::NoLeases`]), or PostgreSQL cannot be reached yet.
    pub fn reconnect_leases(&self) -> Result<()> {
        let Location::Postgres { config, leases, .. } = &self.shared.location else {
            return Err(Error::NoLeases);
        };
        let fresh = lease_worker(config)?;
        *leases.lock() = Arc::new(fresh);
        Ok(())
    }

    /// Brings back a store stopped by a lost connection ([`Store::can_restart_writer`]): a
    /// new writer connects, what was queued or being committed is dropped (its tickets fail:
    /// each change may or may not be stored), every lease held is forgotten, and appends are
    /// taken again. Call it once nothing of the tenants' state in memory is served any more
    /// and it is forgotten; then take the buckets again ([`Store::acquire`] or
    /// [`Store::take_share`] take this store's own leases at new epochs) and replay them.
    ///
    /// # Errors
    /// The store did not stop that way (then it stays stopped), or PostgreSQL cannot be
    /// reached yet (try again later).
    pub fn restart_writer(&self) -> Result<()> {
        let Location::Postgres { held, .. } = &self.shared.location else { return Err(Error::NoLeases) };
        if !self.can_restart_writer() {
            return Err(self.stopped());
        }
        let mut writer = self.shared.writer.lock();
        if let Some(ended) = writer.take() {
            // It returned when the write failed.
            let _ = ended.join();
        }
        let shared = &self.shared;
        // Nothing queued under the old leases may reach the new writer.
        held.forget_all();
        shared.channel.drop_queued();
        *writer = Some(crate::spawn_writer(
            &shared.place,
            &shared.channel,
            &shared.make,
            shared.options,
            Some(Arc::clone(held)),
        )?);
        shared.channel.resume();
        Ok(())
    }
}
