//! A small, obviously-correct reference model of the engine (plain vectors and maps, every
//! rule of docs/behaviour.md written the direct way), and [`run`], which applies a scenario to the
//! engine and to the model and compares every result, event, queue figure, listing and call
//! state after every step, with the engine's own invariants. Shared by the proptest
//! (`tests/model.rs`), the `engine_model` fuzz target and the corpus replay.
#![allow(clippy::too_many_lines, clippy::manual_checked_ops, clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use waitline::journal::{Change, Record};

use waitline::{
    Bounds, BridgeParams, CallState, Clock, CommandOptions, DequeueTotals, DialParams, Engine, EnqueueParams,
    Error, Event, EventKind, HangupSource, Journal, MAX_WAIT_TIME_SECS, PRIORITY, PageRequest,
    QUEUE_MAX_SIZE, QueueCallUpdate, QueueDeletedReason, ReplayError, Timestamp, TransferParams,
};

/// 2026-01-01T00:00:00Z, where scenarios start.
pub const START: Timestamp = Timestamp::from_secs(1_767_225_600);

/// `prop_assert_eq!` for plain `Result<(), String>` code.
macro_rules! ensure_eq {
    ($a:expr, $b:expr $(,)?) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err(format!("{} != {}: {:?} vs {:?}", stringify!($a), stringify!($b), a, b));
        }
    }};
    ($a:expr, $b:expr, $($fmt:tt)+) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err(format!("{}: {:?} vs {:?}", format!($($fmt)+), a, b));
        }
    }};
}

pub const TTL: u64 = 300;
pub const RETENTION: u64 = 600;
pub const CALLS: usize = 6;
pub const QUEUES: [&str; 3] = ["q0", "q1", "q 2/x"];
pub const TENANTS: [&str; 2] = ["t0", "t1"];
pub const SEC: u64 = 1_000_000;

/// One step of a generated scenario. Indices are reduced modulo the sizes of the scenario
/// (see [`Op::normalized`]), so any value is valid: fuzzers and proptest share the type.
#[derive(Debug, Clone, arbitrary::Arbitrary)]
pub enum Op {
    Dial {
        t: usize,
        c: usize,
        cmd: Option<u8>,
    },
    Enqueue {
        t: usize,
        c: usize,
        q: usize,
        wait: Option<i64>,
        size: Option<i64>,
        keep: bool,
        prio: Option<i64>,
        cmd: Option<u8>,
    },
    Leave {
        t: usize,
        c: usize,
        cmd: Option<u8>,
    },
    BridgeQueue {
        t: usize,
        c: usize,
        q: usize,
        park: bool,
    },
    BridgeCall {
        t: usize,
        c: usize,
        other: usize,
        park: bool,
    },
    Hangup {
        t: usize,
        c: usize,
        cmd: Option<u8>,
    },
    Transfer {
        t: usize,
        c: usize,
    },
    CreateQueue {
        t: usize,
        q: usize,
        size: Option<i64>,
    },
    UpdateQueue {
        t: usize,
        q: usize,
        size: i64,
    },
    DeleteQueue {
        t: usize,
        q: usize,
    },
    UpdateQueueCall {
        t: usize,
        q: usize,
        c: usize,
        keep: Option<bool>,
        prio: Option<i64>,
    },
    RemoveQueueCall {
        t: usize,
        q: usize,
        c: usize,
    },
    Advance {
        secs: u64,
    },
}

// ------------------------------------------------------------------------------------------
// The model: plain vectors and maps, every rule of docs/behaviour.md written the obvious way.
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum MLink {
    None,
    Queued(String),
    Bridged { with: String, park: bool },
}

#[derive(Debug, Clone)]
struct MCall {
    ended: Option<u64>,
    forget_at: u64,
    link: MLink,
    client_state: Option<String>,
    commands: Vec<(String, u64)>,
    /// Which call of this id it is (an id is free again once its call is forgotten).
    born: u64,
}

#[derive(Debug, Clone)]
struct MMember {
    id: String,
    enqueued_at: u64,
    deadline: Option<u64>,
    keep: bool,
    prio: u8,
    alive: bool,
    arrival: u64,
}

#[derive(Debug, Clone, Default)]
struct MQueue {
    members: Vec<MMember>, // arrival order
    max_size: usize,
    explicit: bool,
    updated_at: u64,
    total_enqueued: u64,
    totals: DequeueTotals,
    bridge_times: Vec<u64>,
}

impl MQueue {
    fn service_order(&self) -> Vec<&MMember> {
        let mut v: Vec<&MMember> = self.members.iter().collect();
        v.sort_by_key(|m| (std::cmp::Reverse(m.prio), m.arrival));
        v
    }
    fn position(&self, id: &str) -> Option<usize> {
        self.service_order().iter().position(|m| m.id == id).map(|p| p + 1)
    }
    fn estimate(&self, position: usize) -> u64 {
        let n = self.bridge_times.len();
        if n < 2 {
            return 0;
        }
        let mean = u128::from(self.bridge_times[n - 1] - self.bridge_times[0]) / (n as u128 - 1);
        (mean * position as u128 / u128::from(SEC)) as u64
    }
}

type Ev = String;

#[derive(Debug, Default, Clone)]
struct Tenant {
    calls: BTreeMap<String, MCall>,
    queues: BTreeMap<String, MQueue>,
    /// Each dial `command_id` accepted: the call it made (its id and `born`), and when.
    dials: BTreeMap<String, (String, u64)>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Model {
    pub(crate) now: u64,
    tenants: [Tenant; 2],
    pub(crate) events: Vec<Ev>,
}

fn code(r: Result<(), &'static str>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(c) => c.into(),
    }
}

impl Model {
    fn t(&mut self, t: usize) -> &mut Tenant {
        &mut self.tenants[t]
    }

    fn ev(&mut self, s: String) {
        self.events.push(s);
    }

    /// Common checks of call commands: Err(code), Ok(false) for a repeated command id.
    fn target(&self, t: usize, id: &str, cmd: Option<&str>) -> Result<bool, &'static str> {
        let call = self.tenants[t].calls.get(id).ok_or("90015")?;
        if let Some(c) = cmd {
            if call.commands.iter().any(|(x, at)| x == c && self.now - at < 60 * SEC) {
                return Ok(false);
            }
        }
        if call.ended.is_some() {
            return Err("90018");
        }
        Ok(true)
    }

    fn accept(&mut self, t: usize, id: &str, cmd: Option<&str>) {
        let now = self.now;
        if let Some(c) = cmd {
            let call = self.t(t).calls.get_mut(id).unwrap();
            call.client_state = Some(format!("Y21k{}", &c[3..]));
            call.commands.retain(|(_, at)| now - at < 60 * SEC);
            if call.commands.len() == 16 {
                call.commands.remove(0);
            }
            call.commands.push((c.to_owned(), now));
        }
    }

    fn leave(&mut self, t: usize, id: &str, q: &str, reason: Option<&str>) {
        let now = self.now;
        let queue = self.t(t).queues.get_mut(q).unwrap();
        let pos = queue.position(id).unwrap();
        let i = queue.members.iter().position(|m| m.id == id).unwrap();
        let m = queue.members.remove(i);
        queue.updated_at = now;
        match reason {
            Some("bridged") => {
                queue.totals.bridged += 1;
                queue.bridge_times.push(now);
                if queue.bridge_times.len() > 20 {
                    queue.bridge_times.remove(0);
                }
            }
            Some("hangup") => queue.totals.hangup += 1,
            Some("leave") => queue.totals.leave += 1,
            Some("timeout") => queue.totals.timeout += 1,
            _ => {}
        }
        let call = self.t(t).calls.get_mut(id).unwrap();
        call.link = MLink::None;
        if call.ended.is_some() {
            // A dead member is forgotten one retention period after it leaves.
            call.forget_at = now + RETENTION * SEC;
        }
        if let Some(r) = reason {
            let wait = (now - m.enqueued_at) / SEC;
            self.ev(format!("{t} call.dequeued {id} {q} pos={pos} {r} wait={wait}"));
        }
    }

    fn end(&mut self, t: usize, id: &str, source: &str) {
        let now = self.now;
        let c = self.t(t).calls.get_mut(id).unwrap();
        c.ended = Some(now);
        // Never while it waits in a queue as a dead member: leaving sets the time.
        c.forget_at = if matches!(c.link, MLink::Queued(_)) { u64::MAX } else { now + RETENTION * SEC };
        self.ev(format!("{t} call.hangup {id} {source}"));
    }

    fn release_partner(&mut self, t: usize, p: &str) {
        let c = self.t(t).calls.get_mut(p).unwrap();
        let park = matches!(c.link, MLink::Bridged { park: true, .. });
        c.link = MLink::None;
        if !park {
            self.end(t, p, "callee");
        }
    }

    fn detach(&mut self, t: usize, id: &str, reason: &str) {
        match self.tenants[t].calls[id].link.clone() {
            MLink::None => {}
            MLink::Queued(q) => self.leave(t, id, &q, Some(reason)),
            MLink::Bridged { with, .. } => {
                self.t(t).calls.get_mut(id).unwrap().link = MLink::None;
                self.release_partner(t, &with);
            }
        }
    }

    /// Events of one command, ordered by kind as docs/behaviour.md §4 says.
    fn order_events(&mut self, from: usize) {
        let rank = |e: &String| {
            let kind = e.split(' ').nth(1).unwrap_or("");
            [
                "call.initiated",
                "call.answered",
                "call.dequeued",
                "queue.deleted",
                "call.bridged",
                "call.hangup",
                "queue.created",
                "call.enqueued",
            ]
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(99)
        };
        self.events[from..].sort_by_key(rank);
    }

    fn bridge_pair(&mut self, t: usize, a: &str, b: &str, park: bool) {
        self.detach(t, a, "bridged");
        self.detach(t, b, "bridged");
        self.t(t).calls.get_mut(a).unwrap().link = MLink::Bridged { with: b.into(), park };
        self.t(t).calls.get_mut(b).unwrap().link = MLink::Bridged { with: a.into(), park: false };
        self.ev(format!("{t} call.bridged {a}"));
        self.ev(format!("{t} call.bridged {b}"));
    }

    fn new_call(&mut self, t: usize, id: &str) {
        let now = self.now;
        self.t(t).calls.insert(
            id.into(),
            MCall {
                ended: None,
                forget_at: 0,
                link: MLink::None,
                client_state: None,
                commands: vec![],
                born: now,
            },
        );
        self.ev(format!("{t} call.initiated {id}"));
        self.ev(format!("{t} call.answered {id}"));
    }

    /// Fires due timers in time order: deadlines (enqueue order), idle queues, forgetting.
    /// Fires what is due by `now`. Tenants never interact: each tenant's timers fire in
    /// time order, one tenant after the other in the order the engine made them.
    /// The model at `START`, before any step.
    pub(crate) fn at_start() -> Self {
        Self { now: START.as_micros(), ..Self::default() }
    }

    pub(crate) fn advance_to(&mut self, now: u64) {
        for ti in 0..self.tenants.len() {
            loop {
                let mut due: Vec<(u64, u8, String, u64, String)> = vec![];
                let t = &self.tenants[ti];
                for (qn, q) in &t.queues {
                    for m in &q.members {
                        if let Some(d) = m.deadline.filter(|d| *d <= now) {
                            due.push((d, 0, qn.clone(), m.arrival, m.id.clone()));
                        }
                    }
                    if !q.explicit && q.members.is_empty() && q.updated_at + TTL * SEC <= now {
                        due.push((q.updated_at + TTL * SEC, 1, qn.clone(), 0, String::new()));
                    }
                }
                for (id, c) in &t.calls {
                    if c.ended.is_some() && c.forget_at <= now {
                        due.push((c.forget_at, 2, id.clone(), 0, id.clone()));
                    }
                }
                let Some(first) = due.into_iter().min() else { break };
                let (at, class, name, _, id) = first;
                self.now = at;
                match class {
                    0 => self.leave(ti, &id, &name, Some("timeout")),
                    1 => {
                        self.t(ti).queues.remove(&name);
                        self.ev(format!("{ti} queue.deleted {name} idle"));
                    }
                    _ => {
                        self.t(ti).calls.remove(&id);
                    }
                }
            }
        }
        self.now = now;
    }

    pub(crate) fn apply(&mut self, op: &Op, engine_new_id: Option<&str>) -> String {
        let from = self.events.len();
        let r = self.apply_inner(op, engine_new_id);
        self.order_events(from);
        r
    }

    fn apply_inner(&mut self, op: &Op, engine_new_id: Option<&str>) -> String {
        let now = self.now;
        match op {
            Op::Dial { t, c, cmd } => {
                let (id, cmd) = (format!("c{c}"), cmd.map(|c| format!("cmd{c}")));
                let tenant = &self.tenants[*t];
                if let Some((first, at)) = cmd.as_ref().and_then(|c| tenant.dials.get(c)) {
                    if now - at < 60 * SEC {
                        // The same call, not a later one with its id.
                        let same = tenant.calls.get(first).is_some_and(|c| c.born == *at);
                        return if same { format!("ok {first}") } else { "90015".into() };
                    }
                }
                if tenant.calls.contains_key(&id) {
                    return "90015".into();
                }
                self.new_call(*t, &id);
                if let Some(cmd) = cmd {
                    self.t(*t).dials.insert(cmd, (id.clone(), now));
                }
                format!("ok {id}")
            }
            Op::Enqueue { t, c, q, wait, size, keep, prio, cmd } => {
                let (t, id, qn) = (*t, format!("c{c}"), QUEUES[*q].to_owned());
                if wait.is_some_and(|w| !(1..=86_400).contains(&w))
                    || size.is_some_and(|s| !(1..=1_000_000).contains(&s))
                    || prio.is_some_and(|p| !(0..=9).contains(&p))
                {
                    return "10033".into();
                }
                let cmd = cmd.map(|c| format!("cmd{c}"));
                let r = (|| {
                    if !self.target(t, &id, cmd.as_deref())? {
                        return Ok(());
                    }
                    if self.tenants[t].calls[&id].link == MLink::Queued(qn.clone()) {
                        return Err("90038");
                    }
                    if let Some(queue) = self.tenants[t].queues.get(&qn) {
                        if queue.members.len() >= queue.max_size {
                            return Err("90036");
                        }
                    } else {
                        let max_size = size.map_or(100, |s| s as usize);
                        self.t(t)
                            .queues
                            .insert(qn.clone(), MQueue { max_size, updated_at: now, ..MQueue::default() });
                        self.ev(format!("{t} queue.created {qn}"));
                    }
                    self.accept(t, &id, cmd.as_deref());
                    self.detach(t, &id, "leave");
                    let queue = self.t(t).queues.get_mut(&qn).unwrap();
                    queue.total_enqueued += 1;
                    queue.updated_at = now;
                    let arrival = queue.total_enqueued;
                    queue.members.push(MMember {
                        id: id.clone(),
                        enqueued_at: now,
                        deadline: wait.map(|w| now + w as u64 * SEC),
                        keep: *keep,
                        prio: prio.unwrap_or(0) as u8,
                        alive: true,
                        arrival,
                    });
                    let pos = queue.position(&id).unwrap();
                    let n = queue.members.len() as u64;
                    let avg = queue.members.iter().map(|m| now - m.enqueued_at).sum::<u64>() / n / SEC;
                    self.t(t).calls.get_mut(&id).unwrap().link = MLink::Queued(qn.clone());
                    self.ev(format!("{t} call.enqueued {id} {qn} pos={pos} avg={avg}"));
                    Ok(())
                })();
                code(r)
            }
            Op::Leave { t, c, cmd } => {
                let (t, id) = (*t, format!("c{c}"));
                let cmd = cmd.map(|c| format!("cmd{c}"));
                let r = (|| {
                    if !self.target(t, &id, cmd.as_deref())? {
                        return Ok(());
                    }
                    let MLink::Queued(q) = self.tenants[t].calls[&id].link.clone() else {
                        return Err("95002");
                    };
                    self.accept(t, &id, cmd.as_deref());
                    self.leave(t, &id, &q, Some("leave"));
                    Ok(())
                })();
                code(r)
            }
            Op::BridgeQueue { t, c, q, park } => {
                let (t, id, qn) = (*t, format!("c{c}"), QUEUES[*q].to_owned());
                let r = (|| {
                    self.target(t, &id, None)?;
                    if self.tenants[t].calls[&id].link == MLink::Queued(qn.clone()) {
                        return Err("10033");
                    }
                    let queue = self.tenants[t].queues.get(&qn).ok_or("95001")?;
                    let head =
                        queue.service_order().first().map(|m| (m.id.clone(), m.alive)).ok_or("95001")?;
                    if !head.1 {
                        self.leave(t, &head.0, &qn, Some("hangup"));
                        return Err("90018");
                    }
                    self.bridge_pair(t, &id, &head.0, *park);
                    Ok(())
                })();
                code(r)
            }
            Op::BridgeCall { t, c, other, park } => {
                let (t, a, b) = (*t, format!("c{c}"), format!("c{other}"));
                let r = (|| {
                    self.target(t, &a, None)?;
                    if a == b {
                        return Err("10033");
                    }
                    let bc = self.tenants[t].calls.get(&b).ok_or("90015")?;
                    if bc.ended.is_some() {
                        return Err("90018");
                    }
                    if matches!(&bc.link, MLink::Bridged { with, .. } if *with == a) {
                        if let MLink::Bridged { park: p, .. } = &mut self.t(t).calls.get_mut(&a).unwrap().link
                        {
                            *p = *park;
                        }
                        return Ok(());
                    }
                    self.bridge_pair(t, &a, &b, *park);
                    Ok(())
                })();
                code(r)
            }
            Op::Hangup { t, c, cmd } => {
                let (t, id) = (*t, format!("c{c}"));
                let cmd = cmd.map(|c| format!("cmd{c}"));
                let r = (|| {
                    if !self.target(t, &id, cmd.as_deref())? {
                        return Ok(());
                    }
                    self.accept(t, &id, cmd.as_deref());
                    let mut partner = None;
                    match self.tenants[t].calls[&id].link.clone() {
                        MLink::None => {}
                        MLink::Queued(q) => {
                            let queue = self.t(t).queues.get_mut(&q).unwrap();
                            let m = queue.members.iter_mut().find(|m| m.id == id).unwrap();
                            if m.keep {
                                m.alive = false;
                                queue.updated_at = now;
                            } else {
                                self.leave(t, &id, &q, Some("hangup"));
                            }
                        }
                        MLink::Bridged { with, .. } => {
                            self.t(t).calls.get_mut(&id).unwrap().link = MLink::None;
                            partner = Some(with);
                        }
                    }
                    self.end(t, &id, "caller");
                    if let Some(p) = partner {
                        self.release_partner(t, &p);
                    }
                    Ok(())
                })();
                code(r)
            }
            Op::Transfer { t, c } => {
                let (t, id) = (*t, format!("c{c}"));
                let r = (|| {
                    self.target(t, &id, None)?;
                    let b = engine_new_id.expect("engine made a call").to_owned();
                    self.new_call(t, &b);
                    self.bridge_pair(t, &id, &b, false);
                    Ok(())
                })();
                code(r)
            }
            Op::CreateQueue { t, q, size } => {
                let (t, qn) = (*t, QUEUES[*q].to_owned());
                if size.is_some_and(|s| !(1..=1_000_000).contains(&s)) {
                    return "10033".into();
                }
                if self.tenants[t].queues.contains_key(&qn) {
                    return "95003".into();
                }
                let max_size = size.map_or(300, |s| s as usize);
                self.t(t).queues.insert(
                    qn.clone(),
                    MQueue { max_size, explicit: true, updated_at: now, ..MQueue::default() },
                );
                self.ev(format!("{t} queue.created {qn}"));
                "ok".into()
            }
            Op::UpdateQueue { t, q, size } => {
                let (t, qn) = (*t, QUEUES[*q].to_owned());
                if !(1..=1_000_000).contains(size) {
                    return "10033".into();
                }
                let Some(queue) = self.t(t).queues.get_mut(&qn) else { return "10005".into() };
                queue.max_size = *size as usize;
                queue.updated_at = now;
                "ok".into()
            }
            Op::DeleteQueue { t, q } => {
                let (t, qn) = (*t, QUEUES[*q].to_owned());
                let Some(queue) = self.tenants[t].queues.get(&qn) else { return "10005".into() };
                if !queue.members.is_empty() {
                    return "90050".into();
                }
                self.t(t).queues.remove(&qn);
                self.ev(format!("{t} queue.deleted {qn} explicit"));
                "ok".into()
            }
            Op::UpdateQueueCall { t, q, c, keep, prio } => {
                let (t, qn, id) = (*t, QUEUES[*q].to_owned(), format!("c{c}"));
                if prio.is_some_and(|p| !(0..=9).contains(&p)) {
                    return "10033".into();
                }
                let Some(queue) = self.t(t).queues.get_mut(&qn) else { return "10005".into() };
                let Some(m) = queue.members.iter_mut().find(|m| m.id == id) else { return "10005".into() };
                if let Some(k) = keep {
                    m.keep = *k;
                }
                if let Some(p) = prio {
                    m.prio = *p as u8;
                }
                if keep.is_some() || prio.is_some() {
                    queue.updated_at = now;
                }
                "ok".into()
            }
            Op::RemoveQueueCall { t, q, c } => {
                let (t, qn, id) = (*t, QUEUES[*q].to_owned(), format!("c{c}"));
                let Some(queue) = self.tenants[t].queues.get(&qn) else { return "10005".into() };
                let Some(m) = queue.members.iter().find(|m| m.id == id) else { return "10005".into() };
                let alive = m.alive;
                self.leave(t, &id, &qn, alive.then_some("leave"));
                "ok".into()
            }
            Op::Advance { .. } => "ok".into(),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Driving the engine.
// ------------------------------------------------------------------------------------------

/// The tenant sequences after a step (`seqs`: before it, updated): a command moves only its
/// own tenant's, by one exactly when it changed something (always when it made events, never
/// when it was refused without events); moving the clock moves each tenant's by the timers
/// that changed something. Every event carries a number its step took, in order.
fn check_seq(
    op: &Op,
    got: &str,
    events: &[Event],
    seqs: &mut [u64],
    tenants: &[waitline::Tenant],
) -> Result<(), String> {
    for (i, t) in tenants.iter().enumerate() {
        let (before, after) = (seqs[i], t.last_seq());
        let mine: Vec<u64> = events.iter().filter(|e| *e.tenant == *TENANTS[i]).map(Event::seq).collect();
        if after < before
            || !mine.windows(2).all(|w| w[0] <= w[1])
            || mine.iter().any(|s| *s <= before || *s > after)
        {
            return Err(format!("{op:?}: tenant {i} went {before} -> {after}, events carry {mine:?}"));
        }
        let moved = after - before;
        match op.tenant() {
            None => {}
            Some(own) if own != i => ensure_eq!(moved, 0, "{op:?}: sequence of tenant {i}"),
            Some(_) => {
                let refused = got != "ok" && mine.is_empty();
                if moved > 1 || (!mine.is_empty() && moved != 1) || (refused && moved != 0) {
                    return Err(format!("{op:?} answered {got}: sequence moved by {moved}, events {mine:?}"));
                }
            }
        }
        seqs[i] = after;
    }
    Ok(())
}

/// A number as the scenario has it (any integer, as a client sends it) in the engine's type,
/// converted as a frontend converts it.
fn wire<T: TryFrom<i64>>(bounds: Bounds, v: Option<i64>) -> Result<Option<T>, Error> {
    v.map(|v| bounds.convert(v)).transpose()
}

fn result_code<T>(r: Result<T, Error>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e.code().into(),
    }
}

fn describe(e: &Event, tenants: &[&str]) -> String {
    let t = tenants.iter().position(|t| **t == *e.tenant).unwrap();
    match &e.kind {
        EventKind::CallDequeued { subject, queue, queue_position, reason, wait_time_secs } => format!(
            "{t} call.dequeued {} {queue} pos={queue_position} {} wait={wait_time_secs}",
            subject.call.call_control_id,
            reason.as_str()
        ),
        EventKind::CallEnqueued { subject, queue, current_position, queue_avg_wait_time_secs } => format!(
            "{t} call.enqueued {} {queue} pos={current_position} avg={queue_avg_wait_time_secs}",
            subject.call.call_control_id
        ),
        EventKind::CallHangup { subject, source } => {
            format!(
                "{t} call.hangup {} {}",
                subject.call.call_control_id,
                if *source == HangupSource::Caller { "caller" } else { "callee" }
            )
        }
        EventKind::QueueCreated { queue, .. } => format!("{t} queue.created {queue}"),
        EventKind::QueueDeleted { queue, reason, .. } => {
            format!(
                "{t} queue.deleted {queue} {}",
                if *reason == QueueDeletedReason::Idle { "idle" } else { "explicit" }
            )
        }
        k => format!("{t} {} {}", k.event_type(), k.subject().unwrap().call.call_control_id),
    }
}

pub(crate) fn run_engine(tenants: &[waitline::Tenant], op: &Op) -> (String, Option<String>) {
    // A command id also brings a client state, so that both are exercised.
    let opts = |cmd: &Option<u8>| CommandOptions {
        client_state: cmd.map(|c| format!("Y21k{c}")),
        command_id: cmd.map(|c| format!("cmd{c}")),
    };
    match op {
        Op::Dial { t, c, cmd } => {
            let mut p = DialParams::new("+1555", "+1666", "conn");
            p.call_control_id = Some(format!("c{c}"));
            p.command_id = cmd.map(|c| format!("cmd{c}"));
            match tenants[*t].dial(&p) {
                Ok(call) => (format!("ok {}", call.call_control_id), None),
                Err(e) => (e.code().into(), None),
            }
        }
        Op::Enqueue { t, c, q, wait, size, keep, prio, cmd } => {
            let p = || -> Result<EnqueueParams, Error> {
                Ok(EnqueueParams {
                    queue_name: QUEUES[*q].into(),
                    max_wait: wire(MAX_WAIT_TIME_SECS, *wait)?.map(Duration::from_secs),
                    max_size: wire(QUEUE_MAX_SIZE, *size)?,
                    keep_after_hangup: *keep,
                    priority: wire(PRIORITY, *prio)?,
                    options: opts(cmd),
                })
            };
            (result_code(p().and_then(|p| tenants[*t].enqueue(&format!("c{c}"), &p))), None)
        }
        Op::Leave { t, c, cmd } => (result_code(tenants[*t].leave_queue(&format!("c{c}"), &opts(cmd))), None),
        Op::BridgeQueue { t, c, q, park } => {
            let mut p = BridgeParams::queue(QUEUES[*q]);
            p.call_control_id = Some("ignored".into());
            if *park {
                p = p.park_after_unbridge();
            }
            (result_code(tenants[*t].bridge(&format!("c{c}"), &p)), None)
        }
        Op::BridgeCall { t, c, other, park } => {
            let mut p = BridgeParams::call(format!("c{other}"));
            if *park {
                p = p.park_after_unbridge();
            }
            (result_code(tenants[*t].bridge(&format!("c{c}"), &p)), None)
        }
        Op::Hangup { t, c, cmd } => (result_code(tenants[*t].hangup(&format!("c{c}"), &opts(cmd))), None),
        Op::Transfer { t, c } => {
            match tenants[*t].transfer(&format!("c{c}"), &TransferParams::new("+1777")) {
                Ok(info) => ("ok".into(), Some(info.call_control_id)),
                Err(e) => (e.code().into(), None),
            }
        }
        Op::CreateQueue { t, q, size } => {
            let size = wire(QUEUE_MAX_SIZE, *size);
            (result_code(size.and_then(|size| tenants[*t].create_queue(QUEUES[*q], size))), None)
        }
        Op::UpdateQueue { t, q, size } => {
            let size = QUEUE_MAX_SIZE.convert(*size);
            (result_code(size.and_then(|size| tenants[*t].update_queue(QUEUES[*q], size))), None)
        }
        Op::DeleteQueue { t, q } => (result_code(tenants[*t].delete_queue(QUEUES[*q])), None),
        Op::UpdateQueueCall { t, q, c, keep, prio } => {
            let u =
                wire(PRIORITY, *prio).map(|priority| QueueCallUpdate { keep_after_hangup: *keep, priority });
            (
                result_code(u.and_then(|u| tenants[*t].update_queue_call(QUEUES[*q], &format!("c{c}"), &u))),
                None,
            )
        }
        Op::RemoveQueueCall { t, q, c } => {
            (result_code(tenants[*t].remove_queue_call(QUEUES[*q], &format!("c{c}"))), None)
        }
        Op::Advance { .. } => ("ok".into(), None),
    }
}

pub(crate) fn compare_state(model: &Model, tenants: &[waitline::Tenant]) -> Result<(), String> {
    let now = model.now;
    for (ti, t) in tenants.iter().enumerate() {
        let m = &model.tenants[ti];
        let listed: Vec<String> =
            t.queues(PageRequest::new(1, 250)).unwrap().data.into_iter().map(|q| q.name).collect();
        ensure_eq!(listed, m.queues.keys().cloned().collect::<Vec<_>>());
        for (name, mq) in &m.queues {
            let q = t.queue(name).unwrap();
            let n = mq.members.len() as u64;
            let avg = if n == 0 {
                0
            } else {
                mq.members.iter().map(|x| now - x.enqueued_at).sum::<u64>() / n / SEC
            };
            let longest = mq.members.iter().map(|x| (now - x.enqueued_at) / SEC).max().unwrap_or(0);
            ensure_eq!(q.current_size, mq.members.len());
            ensure_eq!(q.max_size, mq.max_size);
            ensure_eq!(q.average_wait_time_secs, avg);
            ensure_eq!(q.longest_wait_time_secs, longest);
            ensure_eq!(q.total_enqueued, mq.total_enqueued);
            ensure_eq!(q.total_dequeued, mq.totals);
            ensure_eq!(q.explicit, mq.explicit);
            ensure_eq!(q.estimated_wait_time_secs, mq.estimate(mq.members.len() + 1));
            let calls = t.queue_calls(name, PageRequest::new(1, 250)).unwrap().data;
            let got: Vec<_> = calls
                .iter()
                .map(|c| {
                    (
                        c.call_control_id.clone(),
                        c.queue_position,
                        c.wait_time_secs,
                        c.is_alive,
                        c.priority,
                        c.keep_after_hangup,
                        c.estimated_wait_time_secs,
                    )
                })
                .collect();
            let want: Vec<_> = mq
                .service_order()
                .iter()
                .enumerate()
                .map(|(i, x)| {
                    (
                        x.id.clone(),
                        i + 1,
                        (now - x.enqueued_at) / SEC,
                        x.alive,
                        x.prio,
                        x.keep,
                        mq.estimate(i + 1),
                    )
                })
                .collect();
            ensure_eq!(got, want);
        }
        for (id, mc) in &m.calls {
            let info = t.call(id).unwrap();
            let state = match (&mc.ended, &mc.link) {
                (Some(_), _) => CallState::Ended,
                (None, MLink::Queued(_)) => CallState::Queued,
                (None, MLink::Bridged { .. }) => CallState::Bridged,
                (None, MLink::None) => CallState::Active,
            };
            ensure_eq!(info.state, state, "call {}", id);
            ensure_eq!(info.client_state, mc.client_state.clone());
        }
        for c in 0..CALLS {
            let id = format!("c{c}");
            if !m.calls.contains_key(&id) {
                ensure_eq!(t.call(&id).err().map(|e| e.code()), Some("90015"));
            }
        }
        ensure_eq!(t.live_calls(), m.calls.values().filter(|c| c.ended.is_none()).count());
    }
    Ok(())
}

impl Op {
    /// The tenant the step is a command of (`None`: moving the clock).
    const fn tenant(&self) -> Option<usize> {
        match self {
            Self::Dial { t, .. }
            | Self::Enqueue { t, .. }
            | Self::Leave { t, .. }
            | Self::BridgeQueue { t, .. }
            | Self::BridgeCall { t, .. }
            | Self::Hangup { t, .. }
            | Self::Transfer { t, .. }
            | Self::CreateQueue { t, .. }
            | Self::UpdateQueue { t, .. }
            | Self::DeleteQueue { t, .. }
            | Self::UpdateQueueCall { t, .. }
            | Self::RemoveQueueCall { t, .. } => Some(*t),
            Self::Advance { .. } => None,
        }
    }

    /// The same step with every index reduced to the scenario's sizes.
    #[must_use]
    pub fn normalized(&self) -> Self {
        let (nt, nc, nq) = (TENANTS.len(), CALLS, QUEUES.len());
        let cmd = |c: &Option<u8>| c.map(|c| c % 3);
        match self.clone() {
            Self::Dial { t, c, cmd: k } => Self::Dial { t: t % nt, c: c % nc, cmd: cmd(&k) },
            Self::Enqueue { t, c, q, wait, size, keep, prio, cmd: k } => {
                Self::Enqueue { t: t % nt, c: c % nc, q: q % nq, wait, size, keep, prio, cmd: cmd(&k) }
            }
            Self::Leave { t, c, cmd: k } => Self::Leave { t: t % nt, c: c % nc, cmd: cmd(&k) },
            Self::BridgeQueue { t, c, q, park } => {
                Self::BridgeQueue { t: t % nt, c: c % nc, q: q % nq, park }
            }
            Self::BridgeCall { t, c, other, park } => {
                Self::BridgeCall { t: t % nt, c: c % nc, other: other % nc, park }
            }
            Self::Hangup { t, c, cmd: k } => Self::Hangup { t: t % nt, c: c % nc, cmd: cmd(&k) },
            Self::Transfer { t, c } => Self::Transfer { t: t % nt, c: c % nc },
            Self::CreateQueue { t, q, size } => Self::CreateQueue { t: t % nt, q: q % nq, size },
            Self::UpdateQueue { t, q, size } => Self::UpdateQueue { t: t % nt, q: q % nq, size },
            Self::DeleteQueue { t, q } => Self::DeleteQueue { t: t % nt, q: q % nq },
            Self::UpdateQueueCall { t, q, c, keep, prio } => {
                Self::UpdateQueueCall { t: t % nt, q: q % nq, c: c % nc, keep, prio }
            }
            Self::RemoveQueueCall { t, q, c } => Self::RemoveQueueCall { t: t % nt, q: q % nq, c: c % nc },
            Self::Advance { secs } => Self::Advance { secs: secs % 1300 },
        }
    }
}

/// Applies `ops` to a fresh engine and to the model; the first disagreement is the error.
///
/// # Errors
/// A description of the first step where engine and model disagree, or an invariant broke.
pub fn run(ops: &[Op]) -> Result<(), String> {
    let (clock, hand) = Clock::manual(START);
    let journal = Arc::new(VecJournal::default());
    let engine = scenario_engine(clock).journal(journal.clone()).build();
    let mut sub = engine.subscribe();
    let mut all_events = Vec::new();
    let tenants: Vec<_> = TENANTS.iter().map(|n| engine.tenant(n)).collect();
    let mut model = Model::at_start();
    let mut seqs = vec![0; tenants.len()];
    for op in ops {
        let op = &op.normalized();
        if let Op::Advance { secs } = op {
            hand.advance(Duration::from_secs(*secs));
            engine.run_pending_tasks();
            model.advance_to(hand.now().as_micros());
        }
        let (got, new_id) = run_engine(&tenants, op);
        let want = model.apply(op, new_id.as_deref());
        ensure_eq!(got, want, "result of {op:?}");
        let raw = sub.drain();
        check_seq(op, &got, &raw, &mut seqs, &tenants)?;
        let events: Vec<String> = raw.iter().map(|e| describe(e, &TENANTS)).collect();
        let expected = std::mem::take(&mut model.events);
        ensure_eq!(events, expected, "events of {op:?}");
        engine.check_invariants().map_err(|e| format!("after {op:?}: {e}"))?;
        compare_state(&model, &tenants).map_err(|e| format!("after {op:?}: {e}"))?;
        all_events.extend(raw);
    }
    check_replay(&journal, &all_events, &model, hand.now()).map_err(|e| format!("replaying the journal: {e}"))
}

pub(crate) fn scenario_engine(clock: Clock) -> waitline::EngineBuilder {
    Engine::builder()
        .clock(clock)
        .queue_idle_ttl(Duration::from_secs(TTL))
        .ended_call_retention(Duration::from_secs(RETENTION))
}

/// A journal in memory: every record the engine handed over, in the order it did.
#[derive(Debug, Default)]
pub struct VecJournal {
    records: Mutex<Vec<(String, u64, Vec<u8>)>>,
}

impl Journal for VecJournal {
    fn append(&self, tenant: &str, seq: u64, record: &[u8]) {
        self.records.lock().unwrap().push((tenant.into(), seq, record.to_vec()));
    }
}

impl VecJournal {
    /// The records so far, as (tenant, seq, bytes).
    #[must_use]
    pub fn records(&self) -> Vec<(String, u64, Vec<u8>)> {
        self.records.lock().unwrap().clone()
    }
}

/// Replays `journal` into a fresh engine, tenant by tenant (tenants are independent), and
/// checks that it makes the same events (ids included) and ends in the model's state.
fn check_replay(journal: &VecJournal, events: &[Event], model: &Model, now: Timestamp) -> Result<(), String> {
    let records = journal.records();
    for t in TENANTS {
        let seqs: Vec<u64> = records.iter().filter(|r| r.0 == t).map(|r| r.1).collect();
        ensure_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "tenant {t}: one record per number");
    }
    let (clock, hand) = Clock::manual(START);
    let engine = scenario_engine(clock).build();
    let mut sub = engine.subscribe();
    let tenants: Vec<_> = TENANTS.iter().map(|n| engine.tenant(n)).collect();
    let mut replayed = Vec::new();
    for (ti, t) in tenants.iter().enumerate() {
        for (_, seq, bytes) in records.iter().filter(|r| r.0 == TENANTS[ti]) {
            t.replay(*seq, bytes).map_err(|e| format!("tenant {}: {e}", TENANTS[ti]))?;
        }
        replayed.extend(sub.drain());
    }
    // The same events, tenant by tenant (the live run interleaved the tenants).
    for t in TENANTS {
        let live: Vec<&Event> = events.iter().filter(|e| *e.tenant == *t).collect();
        let again: Vec<&Event> = replayed.iter().filter(|e| *e.tenant == *t).collect();
        ensure_eq!(live, again, "events of tenant {t}");
    }
    hand.set(now);
    engine.check_invariants()?;
    compare_state(model, &tenants)?;
    // A record out of turn is refused and changes nothing.
    if let Some((t, seq, bytes)) =
        records.iter().rev().find(|r| !matches!(Record::decode(&r.2).map(|r| r.change), Ok(Change::Timers)))
    {
        let tenant = engine.tenant(t);
        let last = tenant.last_seq();
        ensure_eq!(tenant.replay(*seq, bytes), Err(ReplayError::OutOfOrder { got: *seq, last }));
        ensure_eq!(tenant.last_seq(), last);
    }
    Ok(())
}
