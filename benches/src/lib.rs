//! Baselines and fixtures for the benchmarks.
//!
//! [`NaiveEngine`] is the "full naive" engine a developer would write first: one `Mutex`
//! over a map of queues plus a call index, with the same hasher as waitline's internal maps.
//! It is the baseline every core ratio is measured against; keep it what a developer would
//! really write (do not tune it down).

use std::collections::VecDeque;
use std::time::Duration;

use parking_lot::Mutex;
use waitline::{BridgeParams, DialParams, Engine, EnqueueParams, Tenant};

type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Call ids are numbers in the baseline; queue names are strings.
pub type CallId = u64;

#[derive(Default)]
struct NaiveState {
    queues: Map<String, VecDeque<CallId>>,
    index: Map<CallId, String>,
}

/// One mutex over everything.
#[derive(Default)]
pub struct NaiveEngine {
    state: Mutex<NaiveState>,
}

impl std::fmt::Debug for NaiveEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NaiveEngine")
    }
}

impl NaiveEngine {
    /// Appends a call to a queue (made on first use); false if it is already queued.
    pub fn enqueue(&self, call: CallId, queue: &str) -> bool {
        let mut s = self.state.lock();
        if s.index.contains_key(&call) {
            return false;
        }
        s.index.insert(call, queue.to_owned());
        s.queues.entry(queue.to_owned()).or_default().push_back(call);
        true
    }

    /// Takes the head of a queue.
    pub fn pop(&self, queue: &str) -> Option<CallId> {
        let mut s = self.state.lock();
        let call = s.queues.get_mut(queue)?.pop_front()?;
        s.index.remove(&call);
        Some(call)
    }

    /// 1-based position by scanning the queue.
    pub fn position(&self, call: CallId) -> Option<usize> {
        let s = self.state.lock();
        let queue = s.index.get(&call)?;
        s.queues.get(queue)?.iter().position(|c| *c == call).map(|p| p + 1)
    }

    /// Removes a call from anywhere in its queue.
    pub fn remove(&self, call: CallId) -> bool {
        let mut s = self.state.lock();
        let Some(queue) = s.index.remove(&call) else { return false };
        let Some(q) = s.queues.get_mut(&queue) else { return false };
        match q.iter().position(|c| *c == call) {
            Some(p) => q.remove(p).is_some(),
            None => false,
        }
    }
}

/// `n` enqueue + pop pairs of the naive engine over the queues `names`, round robin, with call
/// ids from `offset`: the baseline of every pair row. Returns the elapsed time. Out of line,
/// so that the caller's other code does not change how the loop is compiled.
#[inline(never)]
pub fn naive_pairs(naive: &NaiveEngine, names: &[String], n: usize, offset: u64) -> Duration {
    let t = std::time::Instant::now();
    for i in 0..n {
        let q = i % names.len();
        naive.enqueue(offset + q as u64, &names[q]);
        std::hint::black_box(naive.pop(&names[q]));
    }
    t.elapsed()
}

/// A caller and a parked agent per queue: `enqueue(caller)` then `bridge(agent, queue)` is
/// one pair, and repeating it needs no new call (the agent asked to be parked, so the next
/// enqueue of the caller just unbridges it).
#[derive(Debug)]
pub struct PairFixture {
    /// The tenant the calls live in.
    pub tenant: Tenant,
    /// (caller, agent, queue) per queue.
    pub lanes: Vec<(String, String, String)>,
}

impl PairFixture {
    /// `queues` lanes in the engine's default tenant.
    #[must_use]
    pub fn new(engine: &Engine, queues: usize) -> Self {
        Self::in_tenant(engine.default_tenant(), queues)
    }

    /// `queues` lanes in `tenant`.
    #[must_use]
    pub fn in_tenant(tenant: Tenant, queues: usize) -> Self {
        let lanes = (0..queues)
            .map(|i| {
                let caller = dial(&tenant);
                let agent = dial(&tenant);
                (caller, agent, format!("queue-{i}"))
            })
            .collect();
        Self { tenant, lanes }
    }

    /// One enqueue + bridge-from-queue pair on lane `i`.
    ///
    /// # Panics
    /// If the engine refuses (a bug in the fixture or the engine).
    pub fn pair(&self, i: usize, enqueue: &EnqueueParams, bridge: &BridgeParams) {
        let (caller, agent, _) = &self.lanes[i];
        self.tenant.enqueue(caller, enqueue).expect("enqueue");
        self.tenant.bridge(agent, bridge).expect("bridge");
    }

    /// The parameters of lane `i`'s pair.
    #[must_use]
    pub fn params(&self, i: usize, max_wait: Option<Duration>) -> (EnqueueParams, BridgeParams) {
        let queue = &self.lanes[i].2;
        let mut e = EnqueueParams::new(queue.clone());
        e.max_wait = max_wait;
        (e, BridgeParams::queue(queue.clone()).park_after_unbridge())
    }
}

/// Dials a call and returns its id.
///
/// # Panics
/// If dial is refused.
#[must_use]
pub fn dial(tenant: &Tenant) -> String {
    tenant.dial(&DialParams::new("+15550001", "+15550002", "bench")).expect("dial").call_control_id
}

/// Fills queue `name` with `n` calls and returns their ids in order.
///
/// # Panics
/// If an enqueue is refused.
#[must_use]
pub fn fill(tenant: &Tenant, name: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    fill_each(tenant, name, n, |id| ids.push(id));
    ids
}

/// Fills queue `name` with `n` calls and hands each id to `each`, in order: a caller that
/// keeps none of them (the memory measure) holds nothing but what the engine holds.
///
/// # Panics
/// If an enqueue is refused.
pub fn fill_each(tenant: &Tenant, name: &str, n: usize, mut each: impl FnMut(String)) {
    let p = EnqueueParams::new(name).max_size(1_000_000);
    for _ in 0..n {
        let id = dial(tenant);
        tenant.enqueue(&id, &p).expect("enqueue");
        each(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naive_engine_is_a_fifo() {
        let n = NaiveEngine::default();
        assert!(n.enqueue(1, "q") && n.enqueue(2, "q") && n.enqueue(3, "q"));
        assert!(!n.enqueue(1, "q"));
        assert_eq!(n.position(3), Some(3));
        assert!(n.remove(2));
        assert_eq!(n.position(3), Some(2));
        assert_eq!(n.pop("q"), Some(1));
        assert_eq!(n.pop("q"), Some(3));
        assert_eq!(n.pop("q"), None);
    }

    #[test]
    fn pair_fixture_repeats() {
        let engine = Engine::default();
        let f = PairFixture::new(&engine, 3);
        for round in 0..3 {
            for i in 0..3 {
                let (e, b) = f.params(i, if round == 1 { Some(Duration::from_secs(60)) } else { None });
                f.pair(i, &e, &b);
            }
        }
        engine.check_invariants().unwrap();
    }
}
