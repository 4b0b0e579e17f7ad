//! A full consistency check of the engine's state, for tests, stress runs and fuzzing.

use std::collections::{BTreeSet, HashMap};

use crate::call::CallKey;
use crate::call::Link;
use crate::engine::Inner;

pub(crate) fn check(inner: &Inner) -> Result<(), String> {
    // Ascending shard order, as every command takes them.
    let shards: Vec<_> = inner.shards.iter().map(parking_lot::Mutex::lock).collect();
    let tenants = inner.tenants();
    let mut live: HashMap<u32, usize> = HashMap::new();
    let mut queue_names: HashMap<u32, BTreeSet<String>> = HashMap::new();
    let find_call = |tenant: u32, id: &str| {
        let key = CallKey { hash: inner.shards.call_hash(tenant, id), id };
        shards[inner.shards.of_hash(key.hash)].call(tenant, key)
    };
    let find_queue = |tenant: u32, name: &str| {
        let hash = inner.shards.queue_hash(tenant, name);
        shards[inner.shards.of_hash(hash)].queue(tenant, hash, name)
    };

    for (index, shard) in shards.iter().enumerate() {
        for rec in &shard.calls {
            let id = &*rec.ident.call_control_id;
            let tenant = rec.tenant;
            if rec.ident.key_hash != inner.shards.call_hash(tenant, id)
                || inner.shards.of_hash(rec.ident.key_hash) != index
            {
                return Err(format!("call {id} with a wrong hash or in the wrong shard"));
            }
            if !rec.is_ended() {
                *live.entry(tenant).or_default() += 1;
            }
            match &rec.link {
                Link::None => {}
                Link::Queued(q) => {
                    let queue =
                        find_queue(tenant, q).ok_or(format!("call {id} queued in missing queue {q}"))?;
                    let m = queue
                        .member(rec.ident.key())
                        .ok_or(format!("call {id} not a member of its queue {q}"))?;
                    if m.alive == rec.is_ended() {
                        return Err(format!(
                            "member {id} alive={} but call ended={}",
                            m.alive,
                            rec.is_ended()
                        ));
                    }
                }
                Link::Bridged { with, .. } => {
                    if rec.is_ended() {
                        return Err(format!("ended call {id} still bridged"));
                    }
                    let other = find_call(tenant, &with.call_control_id)
                        .ok_or(format!("call {id} bridged with a missing call"))?;
                    if other.bridged_with().map(|o| &*o.call_control_id) != Some(id) {
                        return Err(format!("bridge of {id} is not symmetric"));
                    }
                }
            }
        }
        for q in &shard.queues {
            if q.key_hash != inner.shards.queue_hash(q.tenant, &q.name)
                || inner.shards.of_hash(q.key_hash) != index
            {
                return Err(format!("queue {} with a wrong hash or in the wrong shard", q.name));
            }
            queue_names.entry(q.tenant).or_default().insert(q.name.to_string());
            let mut positions = Vec::new();
            let mut count = 0;
            for m in q.members_in_arrival_order() {
                count += 1;
                let id = &*m.call.call_control_id;
                let rec = find_call(q.tenant, id).ok_or(format!("member {id} of {} has no call", q.name))?;
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
    }
    for t in tenants {
        let counted = t.live_calls.load(std::sync::atomic::Ordering::Acquire);
        let found = live.get(&t.index).copied().unwrap_or(0);
        if counted != found {
            return Err(format!("tenant {} counts {counted} live calls, has {found}", t.name));
        }
        let registered: BTreeSet<String> = t.queue_names.lock().iter().map(ToString::to_string).collect();
        if registered != queue_names.remove(&t.index).unwrap_or_default() {
            return Err(format!("tenant {} queue registry differs from its queues", t.name));
        }
    }
    Ok(())
}
