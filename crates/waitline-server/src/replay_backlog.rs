//! The webhooks a replay owes: replaying a store into the engine makes every event again,
//! and those past each tenant's delivery mark were not handled by whoever ran the tenant
//! before (this process before a restart, or the node that owned a bucket before this one
//! took it). They are kept as the backlog, which the webhook outbox sends first, at start or
//! as soon as a running outbox sees them (same event ids: at least once).

use std::collections::HashMap;

use waitline::journal::Record;
use waitline::{Engine, Event, Subscription};
use waitline_store::Replayed;
use waitline_store::engine::{StoreJournal, apply_record};

/// Events to send again, taken by the webhook outbox; it is woken when some are added while
/// it runs.
#[derive(Debug, Default)]
pub struct Backlog {
    events: parking_lot::Mutex<Vec<Event>>,
    added: tokio::sync::Notify,
}

impl Backlog {
    /// Whether events wait.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.events.lock().is_empty()
    }

    /// The events waiting, each once.
    #[must_use]
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut self.events.lock())
    }

    /// Adds `events` (in each tenant's order) and wakes the outbox.
    pub fn add(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        self.events.lock().extend(events);
        self.added.notify_one();
    }

    /// Keeps only the events waiting that `keep` accepts.
    pub fn retain(&self, keep: impl FnMut(&Event) -> bool) {
        self.events.lock().retain(keep);
    }

    /// Resolves when events were added (at once if some were added since the last wait).
    pub async fn added(&self) {
        self.added.notified().await;
    }
}

/// Replays `journal`'s tenants (all, or those of `buckets`) into `engine` and returns the
/// events past each tenant's mark in `delivered`.
///
/// Events are made again only past the mark: a subscription opens when the replay gets
/// there (before it, no event is even built for it). One firing of timers may take numbers
/// on both sides of the mark, all made by its first record: such a record is replayed with
/// a subscription, kept if it went past the mark.
///
/// # Errors
/// What the store holds cannot be read or replayed.
pub fn replay(
    engine: &Engine,
    journal: &StoreJournal,
    delivered: &HashMap<String, u64>,
    buckets: Option<&[u32]>,
) -> Result<(Replayed, Vec<Event>), String> {
    let mut listening: HashMap<String, Subscription> = HashMap::new();
    let listen = |handle: &waitline::Tenant, seq, data: &[u8]| {
        let tenant = handle.name();
        if listening.contains_key(tenant) {
            return apply_record(handle, seq, data);
        }
        let mark = delivered.get(tenant).copied().unwrap_or(0);
        let timers =
            seq <= mark && Record::decode(data).is_ok_and(|r| r.change == waitline::journal::Change::Timers);
        if seq > mark || timers {
            listening.insert(tenant.to_owned(), engine.subscribe_tenant_bounded(tenant, usize::MAX));
        }
        apply_record(handle, seq, data)?;
        if timers && handle.last_seq() <= mark {
            listening.remove(tenant);
        }
        Ok(())
    };
    let replayed = match buckets {
        Some(buckets) => journal.replay_buckets_into(engine, buckets, listen),
        None => journal.replay_into(engine, listen),
    }
    .map_err(|e| e.to_string())?;
    let backlog: Vec<Event> = listening
        .into_values()
        .flat_map(|mut sub| sub.drain())
        .filter(|e| e.seq() > delivered.get(&*e.tenant).copied().unwrap_or(0))
        .collect();
    if !backlog.is_empty() {
        tracing::info!(events = backlog.len(), "events whose webhooks were not handled before: sent again");
    }
    Ok((replayed, backlog))
}
