//! A full consistency check of the engine's state, for tests, stress runs and fuzzing.

use std::collections::BTreeSet;

use crate::call::{IdTail, Link};
use crate::engine::Engine;
use crate::state::{Shared, TenantCore};
use crate::text;

impl Engine {
    /// Checks the engine's invariants (every queued call in exactly the queue that lists it,
    /// positions dense, sizes equal to members, bridges symmetric, counters right), one
    /// tenant at a time under its lock: for tests and fuzzing, not for production paths.
    ///
    /// # Errors
    /// A description of the first broken invariant.
    pub fn check_invariants(&self) -> Result<(), String> {
        for tenant in self.inner.tenants() {
            check_tenant(&self.inner.shared, &tenant.lock())
                .map_err(|e| format!("tenant {}: {e}", tenant.name))?;
        }
        Ok(())
    }
}

pub(crate) fn check_tenant(shared: &Shared, core: &TenantCore) -> Result<(), String> {
    core.timers.check()?;
    let mut live = 0;
    let mut calls = 0;
    for (ix, rec) in core.calls() {
        calls += 1;
        let id = &*rec.ident.call_control_id;
        if rec.ident.id_hash().is_some_and(|h| h != shared.call_hash(id)) {
            return Err(format!("call {id} with a wrong hash"));
        }
        if rec.id_tail != IdTail::for_identity(&rec.ident) {
            return Err(format!("call {id} keeps a tail that is not its id's"));
        }
        if core.call_by_id(shared, id).map(|(found, _)| found) != Some(ix) {
            return Err(format!("call {id} not found by its id"));
        }
        if !rec.is_ended() {
            live += 1;
        }
        match &rec.link {
            Link::None => {}
            Link::Queued(m) => {
                let q = core.queue_get(m.queue).ok_or(format!("call {id} queued in a missing queue"))?;
                if q.call_at(m) != Some(ix) {
                    return Err(format!("call {id} not at its slot in its queue {}", q.name));
                }
                if m.alive == rec.is_ended() {
                    return Err(format!("member {id} alive={} but call ended={}", m.alive, rec.is_ended()));
                }
            }
            Link::Bridged { with, .. } => {
                if rec.is_ended() {
                    return Err(format!("ended call {id} still bridged"));
                }
                let other = core.call_get(*with).ok_or(format!("call {id} bridged with a missing call"))?;
                if other.bridged_with() != Some(ix) {
                    return Err(format!("bridge of {id} is not symmetric"));
                }
            }
        }
    }
    let mut names = BTreeSet::new();
    for (qix, q) in core.queues() {
        if q.key_hash != shared.queue_hash(&q.name) {
            return Err(format!("queue {} with a wrong hash", q.name));
        }
        if q.name_words != text::words(q.name.as_bytes()).unwrap_or_default() {
            return Err(format!("queue {} with wrong name words", q.name));
        }
        if core.queue_by_name(q.key_hash, &q.name).map(|(found, _)| found) != Some(qix) {
            return Err(format!("queue {} not found by its name", q.name));
        }
        names.insert(q.name.clone());
        let mut positions = Vec::new();
        let mut count = 0;
        for c in q.members_in_arrival_order() {
            count += 1;
            let rec = core.call_at(c);
            let id = &*rec.ident.call_control_id;
            let m = core.member(qix, c).ok_or(format!("member {id} of {} points elsewhere", q.name))?;
            if q.call_at(m) != Some(c) {
                return Err(format!("member {id} of {} has a wrong slot", q.name));
            }
            if q.band_at(m) != Some(m.band) {
                return Err(format!("member {id} of {} is in another band than its priority", q.name));
            }
            positions.push(q.position(m));
        }
        if count != q.len() {
            return Err(format!("queue {} counts {} but has {count}", q.name, q.len()));
        }
        if (q.figures.peak as usize) < count {
            return Err(format!("queue {} has a peak length below its {count} members", q.name));
        }
        positions.sort_unstable();
        if positions != (1..=count).collect::<Vec<_>>() {
            return Err(format!("queue {} positions are not 1..={count}", q.name));
        }
        if let Some(head) = q.head() {
            if core.member(qix, head).map(|m| q.position(m)) != Some(1) {
                return Err(format!("queue {} head is not at position 1", q.name));
            }
        }
    }
    if core.call_count() != calls {
        return Err(format!("counts {} calls, has {calls}", core.call_count()));
    }
    if core.live_calls() != live {
        return Err(format!("counts {} live calls, has {live}", core.live_calls()));
    }
    if *core.queue_names() != names {
        return Err("queue registry differs from its queues".into());
    }
    core.dial_commands.check(|id| shared.command_hash(id))
}
