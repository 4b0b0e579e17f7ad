//! The store as the engine's journal: `StoreJournal` appends each record the engine hands
//! over, and `StoreJournal::replay_into` feeds what the store holds back into an engine, in each tenant's
//! order, through the same rules (`Tenant::replay`).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use waitline::{Engine, Journal, Tenant};

use crate::{Entry, Replayed, Result, Store};

/// The engine's journal in a store (give it to `EngineBuilder::journal`). It also knows each
/// tenant's last number appended.
#[derive(Debug)]
pub struct StoreJournal {
    store: Store,
    heads: Mutex<HashMap<Box<str>, u64>>,
}

impl StoreJournal {
    /// A journal appending to `store`.
    #[must_use]
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(Self { store, heads: Mutex::default() })
    }

    /// Each tenant's last number replayed or appended through this journal.
    #[must_use]
    pub fn heads(&self) -> HashMap<Box<str>, u64> {
        self.heads.lock().clone()
    }
}

impl Journal for StoreJournal {
    fn append(&self, tenant: &str, seq: u64, record: &[u8]) {
        // A store that has stopped refuses; whoever waits for this record hears why.
        let _ = self.store.append(tenant, seq, record);
        let mut heads = self.heads.lock();
        match heads.get_mut(tenant) {
            Some(last) => *last = seq,
            None => {
                heads.insert(tenant.into(), seq);
            }
        }
    }
}

impl StoreJournal {
    /// Replays everything the store holds into `engine`: each record goes to `apply` with
    /// its tenant's handle (which applies it with `Tenant::replay`, and may do more around
    /// it, like listening for the events it makes again). The journal's heads then start at
    /// what was replayed.
    ///
    /// # Errors
    /// What [`Store::replay`] refuses, an `Err` from `apply`, or a snapshot (this version
    /// writes none and reads none).
    pub fn replay_into(
        &self,
        engine: &Engine,
        mut apply: impl FnMut(&Tenant, u64, &[u8]) -> Result<(), String>,
    ) -> Result<Replayed> {
        self.store.replay(|entry| match entry {
            Entry::Record { tenant, seq, data } => {
                apply(&engine.tenant(tenant), seq, data)?;
                self.heads.lock().insert(tenant.into(), seq);
                Ok(())
            }
            Entry::Snapshot { .. } => Err("this version does not read snapshots".to_owned()),
        })
    }
}

/// Applies one record (the `apply` of [`StoreJournal::replay_into`] that does nothing more).
///
/// # Errors
/// Why the engine refused it.
pub fn apply_record(tenant: &Tenant, seq: u64, data: &[u8]) -> Result<(), String> {
    tenant.replay(seq, data).map_err(|e| e.to_string())
}
