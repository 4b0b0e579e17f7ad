//! A full consistency check of the engine's state, for tests, stress runs and fuzzing.

use std::collections::BTreeSet;

use crate::call::{CallKey, Link};
use crate::engine::Engine;
use crate::state::{Shared, TenantCore};

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

fn check_tenant(shared: &Shared, core: &TenantCore) -> Result<(), String> {
    let find_call = |id: &str| core.call(CallKey { hash: shared.call_hash(id), id });
    let find_queue = |name: &str| core.queue(shared.queue_hash(name), name);
    let mut live = 0;
    for rec in core.calls() {
        let id = &*rec.ident.call_control_id;
        if rec.ident.key_hash != shared.call_hash(id) {
            return Err(format!("call {id} with a wrong hash"));
        }
        if !rec.is_ended() {
            live += 1;
        }
        match &rec.link {
            Link::None => {}
            Link::Queued(q) => {
                let queue = find_queue(q).ok_or(format!("call {id} queued in missing queue {q}"))?;
                let m = queue
                    .member(rec.ident.key())
                    .ok_or(format!("call {id} not a member of its queue {q}"))?;
                if m.alive == rec.is_ended() {
                    return Err(format!("member {id} alive={} but call ended={}", m.alive, rec.is_ended()));
                }
            }
            Link::Bridged { with, .. } => {
                if rec.is_ended() {
                    return Err(format!("ended call {id} still bridged"));
                }
                let other = find_call(&with.call_control_id)
                    .ok_or(format!("call {id} bridged with a missing call"))?;
                if other.bridged_with().map(|o| &*o.call_control_id) != Some(id) {
                    return Err(format!("bridge of {id} is not symmetric"));
                }
            }
        }
    }
    let mut names = BTreeSet::new();
    for q in core.queues() {
        if q.key_hash != shared.queue_hash(&q.name) {
            return Err(format!("queue {} with a wrong hash", q.name));
        }
        names.insert(q.name.clone());
        let mut positions = Vec::new();
        let mut count = 0;
        for m in q.members_in_arrival_order() {
            count += 1;
            let id = &*m.call.call_control_id;
            let rec = find_call(id).ok_or(format!("member {id} of {} has no call", q.name))?;
            if rec.queue().map(|n| &**n) != Some(&*q.name) {
                return Err(format!("member {id} of {} points elsewhere", q.name));
            }
            positions.push(q.position(m.call.key()).ok_or(format!("member {id} without position"))?);
        }
        if count != q.len() {
            return Err(format!("queue {} counts {} but has {count}", q.name, q.len()));
        }
        positions.sort_unstable();
        if positions != (1..=count).collect::<Vec<_>>() {
            return Err(format!("queue {} positions are not 1..={count}", q.name));
        }
        if let Some(head) = q.head() {
            if q.position(head.call.key()) != Some(1) {
                return Err(format!("queue {} head is not at position 1", q.name));
            }
        }
    }
    if core.live_calls() != live {
        return Err(format!("counts {} live calls, has {live}", core.live_calls()));
    }
    if *core.queue_names() != names {
        return Err("queue registry differs from its queues".into());
    }
    Ok(())
}
