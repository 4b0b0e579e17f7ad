//! Interleavings of commands from several threads, on two tenants (threads 0 and 2 on one,
//! 1 and 3 on the other): the engine's invariants hold at the end, every enqueue is matched
//! by exactly one dequeue or the call is still queued, and each tenant's events come in the
//! order of its sequence; and replaying the journal the interleaving wrote, tenant by
//! tenant, makes the same events and the same state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;
use waitline::{
    BridgeParams, Clock, CommandOptions, DialParams, Engine, EnqueueParams, EventKind, PageRequest,
};

use crate::model::VecJournal;

const CALLS: usize = 8;
const QUEUES: usize = 3;

/// One command of one thread.
#[derive(Debug, Clone, Arbitrary)]
pub enum ThreadOp {
    /// Enqueue call `c` into queue `q` (priority, optional max wait, keep after hangup).
    Enqueue { c: u8, q: u8, priority: u8, wait: Option<u8>, keep: bool },
    /// Bridge call `c` with the head of queue `q`.
    BridgeQueue { c: u8, q: u8 },
    /// Bridge two calls.
    BridgeCall { c: u8, other: u8 },
    /// Leave the queue.
    Leave { c: u8 },
    /// Hang up.
    Hangup { c: u8 },
    /// Remove a member through the queue API.
    Remove { q: u8, c: u8 },
    /// Move the clock (by this thread; other threads see it too).
    Advance { secs: u8 },
}

/// Runs each list on its own thread against one engine, then checks the accounting.
///
/// # Errors
/// A broken invariant, an unexpected error code, or an enqueue/dequeue imbalance.
pub fn check_threads(threads: &[Vec<ThreadOp>]) -> Result<(), String> {
    let (clock, hand) = Clock::manual(crate::model::START);
    let journal = Arc::new(VecJournal::default());
    let engine = Engine::builder().clock(clock).event_capacity(1 << 20).journal(journal.clone()).build();
    let mut events = engine.subscribe();
    let tenants = [engine.tenant("a"), engine.tenant("b")];
    // The same ids in both tenants: they must not meet.
    let ids: Vec<String> = (0..CALLS).map(|i| format!("c{i}")).collect();
    for tenant in &tenants {
        for id in &ids {
            let mut p = DialParams::new("+1", "+2", "app");
            p.call_control_id = Some(id.clone());
            tenant.dial(&p).map_err(|e| e.to_string())?;
        }
    }
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = threads
            .iter()
            .take(4)
            .enumerate()
            .map(|(i, ops)| {
                let (tenant, ids, hand) = (&tenants[i % tenants.len()], &ids, &hand);
                s.spawn(move || -> Result<(), String> {
                    for op in ops.iter().take(64) {
                        let c = |i: &u8| &ids[*i as usize % CALLS];
                        let q = |i: &u8| format!("q{}", *i as usize % QUEUES);
                        let r = match op {
                            ThreadOp::Enqueue { c: ci, q: qi, priority, wait, keep } => {
                                let mut p = EnqueueParams::new(q(qi))
                                    .priority(*priority % 10)
                                    .keep_after_hangup(*keep);
                                p.max_wait = wait.map(|w| Duration::from_secs(u64::from(w % 5) + 1));
                                tenant.enqueue(c(ci), &p)
                            }
                            ThreadOp::BridgeQueue { c: ci, q: qi } => {
                                tenant.bridge(c(ci), &BridgeParams::queue(q(qi)).park_after_unbridge())
                            }
                            ThreadOp::BridgeCall { c: ci, other } => {
                                tenant.bridge(c(ci), &BridgeParams::call(c(other)))
                            }
                            ThreadOp::Leave { c: ci } => {
                                tenant.leave_queue(c(ci), &CommandOptions::default())
                            }
                            ThreadOp::Hangup { c: ci } => tenant.hangup(c(ci), &CommandOptions::default()),
                            ThreadOp::Remove { q: qi, c: ci } => tenant.remove_queue_call(&q(qi), c(ci)),
                            ThreadOp::Advance { secs } => {
                                hand.advance(Duration::from_secs(u64::from(*secs % 4)));
                                Ok(())
                            }
                        };
                        if let Err(e) = r {
                            let expected =
                                ["90015", "90018", "90036", "90038", "95001", "95002", "10005", "10033"];
                            if !expected.contains(&e.code()) {
                                return Err(format!("{op:?}: unexpected {e:?}"));
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().map_err(|_| "a thread panicked".to_owned()).and_then(|r| r).err())
            .collect()
    });
    if let Some(f) = failures.into_iter().next() {
        return Err(f);
    }
    engine.run_pending_tasks();
    engine.check_invariants()?;
    if events.dropped() > 0 {
        return Err("events dropped".into());
    }
    let mut open: HashMap<(String, String), i64> = HashMap::new();
    let mut seqs: HashMap<String, u64> = HashMap::new();
    let all = events.drain();
    check_replay(&journal, &all, &tenants, &ids, hand.now())?;
    for e in all {
        let seq = seqs.entry(e.tenant.to_string()).or_default();
        if e.seq() < *seq {
            return Err(format!("tenant {}: event of {} after {seq}", e.tenant, e.seq()));
        }
        *seq = e.seq();
        let Some(s) = e.kind.subject() else { continue };
        let delta = match e.kind {
            EventKind::CallEnqueued { .. } => 1,
            EventKind::CallDequeued { .. } => -1,
            _ => continue,
        };
        let v = open.entry((e.tenant.to_string(), s.call.call_control_id.to_string())).or_default();
        *v += delta;
        if !(0..=1).contains(v) {
            return Err(format!("{}: enqueues minus dequeues went to {v}", s.call.call_control_id));
        }
    }
    for tenant in &tenants {
        let key = |id: &str| (tenant.name().to_owned(), id.to_owned());
        if seqs.get(tenant.name()).is_some_and(|s| *s > tenant.last_seq()) {
            return Err(format!("tenant {}: an event beyond its last sequence number", tenant.name()));
        }
        for q in 0..QUEUES {
            let Ok(page) = tenant.queue_calls(&format!("q{q}"), PageRequest::new(1, 250)) else { continue };
            for (i, m) in page.data.iter().enumerate() {
                if m.queue_position != i + 1 {
                    return Err("positions are not dense".into());
                }
                if open.get(&key(&m.call_control_id)) != Some(&1) {
                    return Err(format!("{} is queued without an open enqueue", m.call_control_id));
                }
            }
        }
        // An open enqueue that is no membership can only be a dead kept call dropped silently.
        for id in &ids {
            let member = (0..QUEUES).any(|q| tenant.queue_call(&format!("q{q}"), id).is_ok());
            let alive = tenant.call(id).map(|c| c.is_alive).unwrap_or(false);
            if open.get(&key(id)) == Some(&1) && !member && alive {
                return Err(format!("{id} has an open enqueue but is in no queue"));
            }
        }
    }
    Ok(())
}

/// What a tenant shows of itself: its queues, their members, and the calls `ids`.
fn dump(tenant: &waitline::Tenant, ids: &[String]) -> Vec<String> {
    let mut out = vec![format!("{:?}", tenant.queues(PageRequest::new(1, 250)))];
    for q in 0..QUEUES {
        out.push(format!("{:?}", tenant.queue_calls(&format!("q{q}"), PageRequest::new(1, 250))));
    }
    out.extend(ids.iter().map(|id| format!("{:?}", tenant.call(id))));
    out
}

/// Replays the records that the threads' interleaving made into a fresh engine, tenant by
/// tenant: the same events (ids included) and the same state.
fn check_replay(
    journal: &VecJournal,
    events: &[waitline::Event],
    tenants: &[waitline::Tenant],
    ids: &[String],
    now: waitline::Timestamp,
) -> Result<(), String> {
    let (clock, hand) = Clock::manual(crate::model::START);
    let engine = Engine::builder().clock(clock).event_capacity(1 << 20).build();
    let mut sub = engine.subscribe();
    let records = journal.records();
    let mut replayed = Vec::new();
    for live in tenants {
        let again = engine.tenant(live.name());
        for (_, seq, bytes) in records.iter().filter(|r| r.0 == live.name()) {
            again.replay(*seq, bytes).map_err(|e| format!("tenant {}: {e}", live.name()))?;
        }
        replayed.extend(sub.drain());
        let mine = |e: &&waitline::Event| *e.tenant == *live.name();
        if !events.iter().filter(mine).eq(replayed.iter().filter(mine)) {
            return Err(format!("tenant {}: replayed events differ", live.name()));
        }
    }
    hand.set(now);
    engine.check_invariants()?;
    for live in tenants {
        let (a, b) = (dump(live, ids), dump(&engine.tenant(live.name()), ids));
        if a != b {
            return Err(format!("tenant {}: replayed state differs:\n{a:#?}\nvs\n{b:#?}", live.name()));
        }
    }
    Ok(())
}
