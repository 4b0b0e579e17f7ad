//! Snapshots: a tenant's whole state as bytes, and a fresh tenant restored from them.
//!
//! A snapshot keeps exactly what decides the tenant's future behaviour, so that a tenant
//! restored from it and then fed the journal after it ends byte for byte where the original
//! did: the slots of calls and queues with their generations and free lists (the ids of
//! future calls name their slot), each queue's order as its members' slots and bands with
//! the layout that decides the next compaction, the timers in the order they fire within an
//! instant with the stale count, the ended calls in end order, the `command_id`s still
//! remembered (each call's, and the dials' in the order they came), every figure, and the
//! sequence number. What follows from these (the maps from
//! ids and names to slots, the bitmaps of the orders, the live-call count, sums) is rebuilt.
//!
//! The bytes: a magic, a format version (u16, little endian), then the state encoded with
//! postcard (format 1, from before dials took a `command_id`, is the same without the dials'
//! memory, and is still read), written straight from the tenant's state under its lock (no copy of the state
//! is made). Restoring checks everything before the tenant uses it: every reference in
//! range and consistent, every pending deadline, idle check and retention with its timer,
//! then the engine's invariants. Bad bytes get a [`SnapshotError`], never a panic and never
//! a state that is silently wrong.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use hashbrown::HashTable;
use serde::de::{DeserializeSeed, Deserializer, Error as _, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use uuid::Uuid;

use crate::call::{CallId, CallIdentity, CallRecord, Link, Membership, engine_slot};
use crate::clock::Timestamp;
use crate::dials::{DialCommand, DialCommands};
use crate::engine::Tenant;
use crate::figures::{Figures, Outcomes, WaitHistogram};
use crate::order::{MemberOrder, Seq};
use crate::queue::{ESTIMATE_WINDOW, Queue};
use crate::slab::{Handle, Slab};
use crate::state::{Shared, TenantCore, share};
use crate::timers::{Timer, Timers};

/// The first bytes of every snapshot.
pub const MAGIC: &[u8; 8] = b"wlsnap\r\n";
/// The format this code writes (it reads this one and the ones before).
pub const FORMAT_VERSION: u16 = 2;
/// The first format with the dials' `command_id`s.
const DIAL_COMMANDS_FORMAT: u16 = 2;

/// Why a snapshot could not be restored. The tenant is left as it was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The bytes are not a snapshot of this format.
    #[error("not a waitline snapshot of format 1 to {FORMAT_VERSION}: {0}")]
    Format(String),
    /// The bytes decode, but describe a state that cannot be (a reference out of range, a
    /// member without its timer, a broken invariant).
    #[error("the snapshot's state is inconsistent: {0}")]
    Inconsistent(String),
    /// Snapshots are restored into a tenant with no state yet.
    #[error("tenant {0:?} already has state: a snapshot is restored only into a new tenant")]
    TenantNotEmpty(String),
}

impl Tenant {
    /// Drops the tenant's whole state: it is then as new (no change yet), ready to be
    /// restored or replayed again. For a node whose tenant another node now holds: what it
    /// had may miss the other node's changes. Subscriptions stay.
    pub fn forget(&self) {
        let mut core = self.state.lock();
        let event_list = std::mem::take(&mut core.event_list);
        **core = crate::state::TenantCore::default();
        core.event_list = event_list;
    }

    /// The tenant's whole state as of its last change: that change's number and the bytes
    /// [`Tenant::restore`] takes. Taken under the tenant's lock (its commands wait meanwhile:
    /// about 0.15 µs per queued call, see BENCHMARKS.md).
    #[must_use]
    pub fn snapshot(&self) -> (u64, Vec<u8>) {
        let core = self.state.lock();
        (core.seq, encode(&core))
    }

    /// Restores this tenant, which must have no state yet, from `bytes` (made by
    /// [`Tenant::snapshot`]); returns the number of the last change the snapshot holds. The
    /// tenant then replays the journal from the next number on ([`Tenant::replay`]).
    ///
    /// # Errors
    /// [`SnapshotError`]; the tenant is then unchanged.
    pub fn restore(&self, bytes: &[u8]) -> Result<u64, SnapshotError> {
        let shared = &self.engine.inner.shared;
        let restored = decode(shared, bytes)?;
        let mut core = self.state.lock();
        // Every call and queue a tenant ever had came with a change: no change, no state.
        if core.seq != 0 {
            return Err(SnapshotError::TenantNotEmpty(self.name().to_owned()));
        }
        let event_list = std::mem::take(&mut core.event_list);
        **core = restored;
        core.event_list = event_list;
        shared.note_timer(core.next_due());
        Ok(core.seq)
    }
}

// ---------------------------------------------------------------------------------------
// The encoded form. The same types are written (borrowing from the state, with the long
// sequences produced as they are written) and read (borrowing from the bytes).
// ---------------------------------------------------------------------------------------

/// A slot and its generation.
type HandleData = (u32, u32);

#[derive(Serialize, Deserialize)]
struct Body<'a, Calls, Queues, Timers, Ended, Dials> {
    seq: u64,
    /// Each call slot: its generation and its call, if any.
    calls: Calls,
    call_free: Cow<'a, [u32]>,
    queues: Queues,
    queue_free: Cow<'a, [u32]>,
    /// Each second with its timers in firing order.
    timers: Timers,
    stale_timers: u64,
    /// (when it ended, the call) in end order.
    ended: Ended,
    #[serde(borrow)]
    last_connection: Option<&'a str>,
    #[serde(borrow)]
    last_to: Option<&'a str>,
    /// (when, the call made, the `command_id`) of the dials remembered, oldest first. Not
    /// in format 1.
    dial_commands: Dials,
}

#[derive(Serialize, Deserialize)]
struct CallData<'a> {
    id: &'a str,
    /// Made by the engine (it names its slot), else given by the client.
    engine_id: bool,
    leg: Uuid,
    session: Uuid,
    connection: &'a str,
    from: &'a str,
    to: &'a str,
    start: u64,
    #[serde(borrow)]
    webhook_url: Option<&'a str>,
    #[serde(borrow)]
    client_state: Option<&'a str>,
    ended_at: Option<u64>,
    link: LinkData,
    #[serde(borrow)]
    recent_commands: Vec<(&'a str, u64)>,
}

#[derive(Serialize, Deserialize)]
enum LinkData {
    None,
    Queued {
        queue: u32,
        arrival: u32,
        band: u8,
        keep_after_hangup: bool,
        alive: bool,
        serial: u32,
        enqueued_at: u64,
        deadline: Option<u64>,
    },
    Bridged {
        with: u32,
        park_after_unbridge: bool,
    },
}

#[derive(Serialize, Deserialize)]
struct QueueData<'a, Times> {
    name: &'a str,
    id: Uuid,
    max_size: u64,
    explicit: bool,
    created_at: u64,
    updated_at: u64,
    idle_timer: Option<u64>,
    /// The order's slots used, capacity and first live slot; its members are the calls
    /// whose link names this queue.
    order: (u64, u64, u64),
    last_enqueued_at: u64,
    bridge_dequeue_times: Times,
    total_enqueued: u64,
    /// By `DequeueReason::index`: bridged, hangup, leave, timeout.
    totals: [u64; 4],
    figures: FiguresData,
}

#[derive(Serialize, Deserialize)]
struct FiguresData {
    day: u64,
    today: Outcomes,
    bridged_within_service_level: u64,
    waits: WaitHistogram,
    minute: u64,
    lengths: Vec<u32>,
}

#[derive(Serialize, Deserialize)]
enum TimerData {
    Deadline { queue: HandleData, call: HandleData, arrival: u64 },
    Idle { queue: HandleData },
    Forget { call: HandleData },
}

/// A sequence written as it is produced: no copy of a million calls is made first.
struct Lazy<I>(I);

impl<I> Serialize for Lazy<I>
where
    I: Iterator + ExactSizeIterator + Clone,
    I::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.clone())
    }
}

const fn handle_data(h: Handle) -> HandleData {
    (h.ix, h.generation)
}

const fn handle((ix, generation): HandleData) -> Handle {
    Handle { ix, generation }
}

fn micros(t: Timestamp) -> u64 {
    t.as_micros()
}

fn call_data(rec: &CallRecord) -> CallData<'_> {
    let id = &rec.ident;
    let link = match rec.link {
        Link::None => LinkData::None,
        Link::Queued(m) => LinkData::Queued {
            queue: m.queue,
            arrival: m.arrival,
            band: m.band,
            keep_after_hangup: m.keep_after_hangup,
            alive: m.alive,
            serial: m.serial,
            enqueued_at: micros(m.enqueued_at),
            deadline: m.deadline().map(micros),
        },
        Link::Bridged { with, park_after_unbridge } => LinkData::Bridged { with, park_after_unbridge },
    };
    CallData {
        id: &id.call_control_id,
        engine_id: id.id_hash().is_none(),
        leg: id.call_leg_id,
        session: id.call_session_id,
        connection: &id.connection_id,
        from: &id.from,
        to: &id.to,
        start: micros(id.start_time),
        webhook_url: id.webhook_url.as_deref(),
        client_state: rec.client_state.as_deref(),
        ended_at: rec.end_time().map(micros),
        link,
        recent_commands: rec.recent_commands().iter().map(|(c, at)| (&**c, micros(*at))).collect(),
    }
}

fn queue_data(q: &Queue) -> QueueData<'_, impl Serialize> {
    let (used, cap, first_live) = q.members.layout();
    let f = &q.figures;
    QueueData {
        name: &q.name,
        id: q.id,
        max_size: q.max_size as u64,
        explicit: q.explicit,
        created_at: micros(q.created_at),
        updated_at: micros(q.updated_at),
        idle_timer: q.idle_timer.map(micros),
        order: (used as u64, cap as u64, first_live as u64),
        last_enqueued_at: micros(q.last_enqueued_at),
        bridge_dequeue_times: Lazy(q.bridge_dequeue_times.iter().copied().map(micros)),
        total_enqueued: q.total_enqueued,
        totals: q.departed,
        figures: FiguresData {
            day: f.day(),
            today: f.outcomes(),
            bridged_within_service_level: f.bridged_within_service_level,
            waits: f.waits(),
            minute: f.minute(),
            lengths: f.lengths().to_vec(),
        },
    }
}

fn timer_data(t: &Timer) -> TimerData {
    match *t {
        Timer::Deadline { queue, call, arrival } => {
            TimerData::Deadline { queue: handle_data(queue), call: handle_data(call), arrival }
        }
        Timer::Idle { queue } => TimerData::Idle { queue: handle_data(queue) },
        Timer::Forget { call } => TimerData::Forget { call: handle_data(call) },
    }
}

/// The bytes of a tenant's state.
fn encode(core: &TenantCore) -> Vec<u8> {
    let body =
        Body {
            seq: core.seq,
            calls: Lazy(core.calls.slots().map(|(generation, rec)| (generation, rec.map(call_data)))),
            call_free: Cow::Borrowed(core.calls.free_list()),
            queues: Lazy(core.queues.slots().map(|(generation, q)| (generation, q.map(queue_data)))),
            queue_free: Cow::Borrowed(core.queues.free_list()),
            timers: Lazy(core.timers.buckets().map(|(second, items)| {
                (second, Lazy(items.iter().map(|(at, t)| (micros(*at), timer_data(t)))))
            })),
            stale_timers: core.timers.stale() as u64,
            ended: Lazy(core.ended.iter().map(|(at, h)| (micros(*at), handle_data(*h)))),
            last_connection: core.last_connection.as_deref(),
            last_to: core.last_to.as_deref(),
            dial_commands: Lazy(
                core.dial_commands.entries().map(|d| (micros(d.at), handle_data(d.call), &*d.command_id)),
            ),
        };
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    // Writing plain data into a Vec cannot fail (the lengths are known up front).
    postcard::to_extend(&body, out).unwrap_or_default()
}

/// The call slots as read: each slot's generation and record, and the last connection id
/// and called number met (the strings later calls share).
type CallSlots = (Vec<(u32, Option<CallRecord>)>, Option<Arc<str>>, Option<Arc<str>>);

/// What [`Body`] reads into: the calls straight into records, the rest as encoded.
type Decoded<'a> = Body<
    'a,
    CallSlots,
    Vec<(u32, Option<QueueData<'a, Vec<u64>>>)>,
    Vec<(u64, Vec<(u64, TimerData)>)>,
    Vec<(u64, HandleData)>,
    Vec<(u64, HandleData, &'a str)>,
>;

fn inconsistent(why: impl Into<String>) -> SnapshotError {
    SnapshotError::Inconsistent(why.into())
}

/// A tenant's state from its bytes, checked.
fn decode(shared: &Shared, bytes: &[u8]) -> Result<TenantCore, SnapshotError> {
    let format = |why: &str| SnapshotError::Format(why.to_owned());
    let rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or_else(|| format("no snapshot magic"))?;
    let (version, body) = rest.split_first_chunk::<2>().ok_or_else(|| format("no format version"))?;
    let version = u16::from_le_bytes(*version);
    if !(1..=FORMAT_VERSION).contains(&version) {
        return Err(format(&format!("format version {version}")));
    }
    let failure = RefCell::new(None);
    let mut reader = postcard::Deserializer::from_bytes(body);
    let decoded = BodySeed { shared, failure: &failure, version }.deserialize(&mut reader);
    if let Some(e) = failure.into_inner() {
        return Err(e);
    }
    let body = decoded.map_err(|e| SnapshotError::Format(e.to_string()))?;
    let trailing = reader.finalize().map_err(|e| SnapshotError::Format(e.to_string()))?;
    if !trailing.is_empty() {
        return Err(format(&format!("{} bytes after the state", trailing.len())));
    }
    build(shared, body)
}

/// Reads a [`Body`] with its call slots read by [`CallSlotsSeed`].
struct BodySeed<'s> {
    shared: &'s Shared,
    failure: &'s RefCell<Option<SnapshotError>>,
    /// The bytes' format.
    version: u16,
}

impl<'de> DeserializeSeed<'de> for BodySeed<'_> {
    type Value = Decoded<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let fields = if self.version >= DIAL_COMMANDS_FORMAT { BODY_FIELDS } else { BODY_FIELDS - 1 };
        d.deserialize_tuple(fields, self)
    }
}

/// The fields of [`Body`].
const BODY_FIELDS: usize = 11;

impl<'de> Visitor<'de> for BodySeed<'_> {
    type Value = Decoded<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a tenant's state")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        fn next<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(seq: &mut A) -> Result<T, A::Error> {
            seq.next_element()?.ok_or_else(|| A::Error::custom("the state ends early"))
        }
        Ok(Body {
            seq: next(&mut seq)?,
            calls: seq
                .next_element_seed(CallSlotsSeed { shared: self.shared, failure: self.failure })?
                .ok_or_else(|| A::Error::custom("the state ends early"))?,
            call_free: next(&mut seq)?,
            queues: next(&mut seq)?,
            queue_free: next(&mut seq)?,
            timers: next(&mut seq)?,
            stale_timers: next(&mut seq)?,
            ended: next(&mut seq)?,
            last_connection: next(&mut seq)?,
            last_to: next(&mut seq)?,
            dial_commands: if self.version >= DIAL_COMMANDS_FORMAT { next(&mut seq)? } else { Vec::new() },
        })
    }
}

/// Reads the call slots straight into records, each checked as it comes: at a million
/// calls, a copy of the encoded form first would cost more than the records.
struct CallSlotsSeed<'s> {
    shared: &'s Shared,
    /// Why a call was refused (the decoder's own error only carries a message).
    failure: &'s RefCell<Option<SnapshotError>>,
}

impl<'de> DeserializeSeed<'de> for CallSlotsSeed<'_> {
    type Value = CallSlots;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for CallSlotsSeed<'_> {
    type Value = CallSlots;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("call slots")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // The length is the input's word: room for at most 64k slots up front.
        let mut slots = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        let (mut last_connection, mut last_to) = (None, None);
        while let Some((generation, data)) = seq.next_element::<(u32, Option<CallData<'de>>)>()? {
            let ix = u32::try_from(slots.len()).map_err(|_| A::Error::custom("too many call slots"))?;
            let rec = match data {
                None => None,
                Some(d) => {
                    let here = Handle { ix, generation };
                    match call_record(self.shared, d, here, &mut last_connection, &mut last_to) {
                        Ok(rec) => Some(rec),
                        Err(e) => {
                            let message = e.to_string();
                            *self.failure.borrow_mut() = Some(e);
                            return Err(A::Error::custom(message));
                        }
                    }
                }
            };
            slots.push((generation, rec));
        }
        Ok((slots, last_connection, last_to))
    }
}

fn build(shared: &Shared, body: Decoded<'_>) -> Result<TenantCore, SnapshotError> {
    let mut core = TenantCore { seq: body.seq, ..TenantCore::default() };

    // Calls (read into records already), and the map of the ids clients gave.
    let (slots, last_connection, last_to) = body.calls;
    core.calls = Slab::from_parts(slots, body.call_free.into_owned())
        .map_err(|e| inconsistent(format!("calls: {e}")))?;
    for (ix, rec) in core.calls.iter() {
        if let Some(hash) = rec.ident.id_hash() {
            let calls = &core.calls;
            let id = &*rec.ident.call_control_id;
            if core.call_ids.find(hash, |&i| *calls.at(i).ident.call_control_id == *id).is_some() {
                return Err(inconsistent(format!("call id {id:?} twice")));
            }
            core.call_ids.insert_unique(hash, ix, |&i| calls.at(i).ident.id_hash().unwrap_or_default());
        }
    }
    core.last_connection = body.last_connection.map(|s| interned(&last_connection, s));
    core.last_to = body.last_to.map(|s| interned(&last_to, s));

    // Queues, their names, and their orders (members found through the calls' links).
    let mut members: HashMap<u32, Vec<(Seq, u8, u32)>> = HashMap::new();
    for (ix, rec) in core.calls.iter() {
        match rec.link {
            Link::Queued(m) => members.entry(m.queue).or_default().push((m.arrival as Seq, m.band, ix)),
            Link::Bridged { with, .. } if with == ix || core.calls.get(with).is_none() => {
                return Err(inconsistent(format!(
                    "call {} bridged with slot {with}",
                    rec.ident.call_control_id
                )));
            }
            Link::Bridged { .. } | Link::None => {}
        }
    }
    let mut slots = Vec::with_capacity(body.queues.len());
    for (ix, (generation, data)) in body.queues.into_iter().enumerate() {
        let ix = u32::try_from(ix).map_err(|_| inconsistent("too many queue slots"))?;
        let q = match data {
            Some(d) => Some(queue(shared, d, members.remove(&ix).unwrap_or_default(), &core.calls)?),
            None => None,
        };
        slots.push((generation, q));
    }
    if let Some(queue) = members.keys().next() {
        return Err(inconsistent(format!("calls queued in slot {queue}, which holds no queue")));
    }
    core.queues = Slab::from_parts(slots, body.queue_free.into_owned())
        .map_err(|e| inconsistent(format!("queues: {e}")))?;
    let mut queue_ids = HashTable::new();
    for (ix, q) in core.queues.iter() {
        let queues = &core.queues;
        if !core.queue_names.insert(q.name.clone()) {
            return Err(inconsistent(format!("queue name {:?} twice", q.name)));
        }
        queue_ids.insert_unique(q.key_hash, ix, |&i| queues.at(i).key_hash);
    }
    core.queue_ids = queue_ids;

    // Timers, ended calls, counts.
    let (call_slots, queue_slots) = (core.calls.slot_count(), core.queues.slot_count());
    let in_range = |h: HandleData, slots: usize| (h.0 as usize) < slots;
    let mut buckets = Vec::with_capacity(body.timers.len());
    for (second, items) in body.timers {
        let mut timers = Vec::with_capacity(items.len());
        for (at, t) in items {
            let (timer, ok) = match t {
                TimerData::Deadline { queue, call, arrival } => (
                    Timer::Deadline { queue: handle(queue), call: handle(call), arrival },
                    in_range(queue, queue_slots) && in_range(call, call_slots),
                ),
                TimerData::Idle { queue } => {
                    (Timer::Idle { queue: handle(queue) }, in_range(queue, queue_slots))
                }
                TimerData::Forget { call } => {
                    (Timer::Forget { call: handle(call) }, in_range(call, call_slots))
                }
            };
            if !ok {
                return Err(inconsistent(format!("a timer for a slot out of range: {timer:?}")));
            }
            timers.push((Timestamp::from_micros(at), timer));
        }
        buckets.push((second, timers));
    }
    let stale = usize::try_from(body.stale_timers).map_err(|_| inconsistent("stale timer count"))?;
    core.timers = Timers::from_parts(buckets, stale).map_err(|e| inconsistent(format!("timers: {e}")))?;
    core.ended = VecDeque::with_capacity(body.ended.len());
    for (at, h) in body.ended {
        if !in_range(h, call_slots) {
            return Err(inconsistent(format!("an ended call in slot {} of {call_slots}", h.0)));
        }
        core.ended.push_back((Timestamp::from_micros(at), handle(h)));
    }
    core.live_calls = core.calls.iter().filter(|(_, r)| !r.is_ended()).count();
    let mut dials = Vec::with_capacity(body.dial_commands.len());
    for (at, h, command_id) in body.dial_commands {
        if !in_range(h, call_slots) {
            return Err(inconsistent(format!("a dial's call in slot {} of {call_slots}", h.0)));
        }
        crate::params::validate_text("command_id", command_id)
            .map_err(|_| inconsistent(format!("dial command id {command_id:?}")))?;
        dials.push(DialCommand {
            command_id: command_id.into(),
            at: Timestamp::from_micros(at),
            call: handle(h),
        });
    }
    core.dial_commands = DialCommands::from_entries(|id| shared.command_hash(id), dials);

    check_pending_timers(&core)?;
    crate::invariants::check_tenant(shared, &core).map_err(SnapshotError::Inconsistent)?;
    Ok(core)
}

/// `s`, as the allocation `last` holds if equal (see `state::share`).
fn interned(last: &Option<Arc<str>>, s: &str) -> Arc<str> {
    match last {
        Some(l) if **l == *s => l.clone(),
        _ => s.into(),
    }
}

fn call_record(
    shared: &Shared,
    d: CallData<'_>,
    here: Handle,
    last_connection: &mut Option<Arc<str>>,
    last_to: &mut Option<Arc<str>>,
) -> Result<CallRecord, SnapshotError> {
    let call_control_id = if d.engine_id {
        let id =
            CallId::engine(d.id).ok_or_else(|| inconsistent(format!("{:?} is not an engine id", d.id)))?;
        if engine_slot(&id) != Some(here) {
            return Err(inconsistent(format!(
                "call {:?} is in slot {here:?}, not the one its id names",
                d.id
            )));
        }
        id
    } else {
        CallId::client(d.id, shared.call_hash(d.id))
    };
    let mut connection_id: Arc<str> = d.connection.into();
    let mut to: Arc<str> = d.to.into();
    share(last_connection, &mut connection_id);
    share(last_to, &mut to);
    let ident = Arc::new(CallIdentity {
        call_control_id,
        call_leg_id: d.leg,
        call_session_id: d.session,
        connection_id,
        from: d.from.into(),
        to,
        start_time: Timestamp::from_micros(d.start),
        webhook_url: d.webhook_url.map(Into::into),
    });
    let link = match d.link {
        LinkData::None => Link::None,
        LinkData::Queued {
            queue,
            arrival,
            band,
            keep_after_hangup,
            alive,
            serial,
            enqueued_at,
            deadline,
        } => {
            let at = Timestamp::from_micros(enqueued_at);
            let deadline = deadline.map(Timestamp::from_micros);
            let mut m = Membership::new(queue, arrival, band, keep_after_hangup, serial, at, deadline);
            m.alive = alive;
            Link::Queued(m)
        }
        LinkData::Bridged { with, park_after_unbridge } => Link::Bridged { with, park_after_unbridge },
    };
    if d.recent_commands.len() > crate::call::COMMAND_ID_MEMORY {
        return Err(inconsistent(format!("call {:?} remembers too many command ids", d.id)));
    }
    let recent =
        d.recent_commands.into_iter().map(|(c, at)| (c.into(), Timestamp::from_micros(at))).collect();
    let ended_at = d.ended_at.map(Timestamp::from_micros);
    Ok(CallRecord::restored(ident, d.client_state.map(Into::into), ended_at, link, recent))
}

fn queue(
    shared: &Shared,
    d: QueueData<'_, Vec<u64>>,
    mut members: Vec<(Seq, u8, u32)>,
    calls: &Slab<CallRecord>,
) -> Result<Queue, SnapshotError> {
    let name: Arc<str> = d.name.into();
    let max_size = usize::try_from(d.max_size).map_err(|_| inconsistent("queue size"))?;
    let created_at = Timestamp::from_micros(d.created_at);
    let mut q = Queue::unallocated(shared.queue_hash(&name), name, d.id, max_size, d.explicit, created_at)
        .with_room();
    let whose = |why: String| inconsistent(format!("queue {:?}: {why}", d.name));
    let size = |v: u64| usize::try_from(v).map_err(|_| whose("order layout".into()));
    let layout = (size(d.order.0)?, size(d.order.1)?, size(d.order.2)?);
    q.members = MemberOrder::from_parts(layout, &members).map_err(whose)?;
    // Enqueue times never decrease in arrival order: the oldest arrival waits longest.
    members.sort_unstable_by_key(|m| m.0);
    q.last_enqueued_at = Timestamp::from_micros(d.last_enqueued_at);
    let mut previous = Timestamp::EPOCH;
    for &(_, _, call) in &members {
        let at = calls.get(call).and_then(CallRecord::membership).map_or(previous, |m| m.enqueued_at);
        if at < previous || at > q.last_enqueued_at {
            return Err(whose("enqueue times out of arrival order".into()));
        }
        previous = at;
        q.sum_enqueued_micros += u128::from(at.as_micros());
    }
    if d.bridge_dequeue_times.len() > ESTIMATE_WINDOW {
        return Err(whose("too many bridge times".into()));
    }
    q.updated_at = Timestamp::from_micros(d.updated_at);
    q.idle_timer = d.idle_timer.map(Timestamp::from_micros);
    q.bridge_dequeue_times = d.bridge_dequeue_times.into_iter().map(Timestamp::from_micros).collect();
    q.total_enqueued = d.total_enqueued;
    q.departed = d.totals;
    let f = d.figures;
    q.figures =
        Figures::from_parts(f.day, f.today, f.bridged_within_service_level, f.waits, f.minute, &f.lengths)
            .map_err(whose)?;
    // Every change raises the minute's peak to the length it leaves, and a departure relies
    // on it (it does not raise the peak again): a peak below the length is not the engine's.
    if (q.figures.peak as usize) < q.len() {
        return Err(whose("the current minute's peak length is below the queue's length".into()));
    }
    Ok(q)
}

/// Every pending piece of work has the timer that does it: each member's deadline, each
/// queue's idle check, each ended call's retention. Without it the restored tenant would
/// never time that member out, collect that queue or forget that call.
fn check_pending_timers(core: &TenantCore) -> Result<(), SnapshotError> {
    let mut deadlines = HashSet::new();
    let mut idle = BTreeSet::new();
    let mut forget = HashSet::new();
    for (_, items) in core.timers.buckets() {
        for (at, timer) in items {
            if !core.timer_holds(*at, timer) {
                continue;
            }
            match *timer {
                Timer::Deadline { call, .. } => deadlines.insert(call.ix),
                Timer::Idle { queue } => idle.insert(queue.ix),
                Timer::Forget { call } => forget.insert(call.ix),
            };
        }
    }
    for (ix, rec) in core.calls.iter() {
        let id = &rec.ident.call_control_id;
        if rec.membership().is_some_and(|m| m.deadline().is_some()) && !deadlines.contains(&ix) {
            return Err(inconsistent(format!("member {id} has a deadline but no timer for it")));
        }
        if rec.is_ended() && rec.queue().is_none() && !forget.contains(&ix) {
            return Err(inconsistent(format!("ended call {id} has no timer to forget it")));
        }
    }
    for (ix, q) in core.queues.iter() {
        if q.idle_timer.is_some() && !idle.contains(&ix) {
            return Err(inconsistent(format!("queue {:?} waits for an idle check with no timer", q.name)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        BridgeParams, Clock, CommandOptions, DialParams, Engine, EnqueueParams, ManualClock, QueueCallUpdate,
    };

    const START: Timestamp = Timestamp::from_secs(1_767_225_600);

    fn engine() -> (Engine, ManualClock) {
        let (clock, hand) = Clock::manual(START);
        let engine = Engine::builder()
            .clock(clock)
            .queue_idle_ttl(Duration::from_secs(30))
            .ended_call_retention(Duration::from_secs(60))
            .build();
        (engine, hand)
    }

    fn dial(t: &Tenant, id: Option<&str>) -> String {
        dial_once(t, id, None)
    }

    fn dial_once(t: &Tenant, id: Option<&str>, command_id: Option<&str>) -> String {
        let mut p = DialParams::new("+15550001", "+15550002", "app");
        p.call_control_id = id.map(Into::into);
        p.command_id = command_id.map(Into::into);
        t.dial(&p).unwrap().call_control_id
    }

    /// A tenant with a bit of everything: engine and client ids, freed slots, members in
    /// several bands with deadlines, a kept dead member, a bridge, ended calls, remembered
    /// command ids (of calls and of dials), an auto queue waiting for its idle check, a
    /// deleted queue.
    fn busy_tenant(engine: &Engine, hand: &ManualClock) -> Tenant {
        let t = engine.tenant("acme");
        let calls: Vec<String> = (0..8)
            .map(|i| {
                let command_id = format!("dial-{i}");
                dial_once(&t, (i == 3).then_some("client-3"), (i % 3 == 0).then_some(&command_id))
            })
            .collect();
        t.create_queue("gone", Some(5)).unwrap();
        for (i, c) in calls.iter().enumerate().take(6) {
            let p = EnqueueParams::new(if i % 2 == 0 { "support" } else { "sales" })
                .max_wait_time_secs(100 + i as u64)
                .priority(i as u8 % 3)
                .keep_after_hangup(i == 4);
            t.enqueue(c, &p).unwrap();
            hand.advance(Duration::from_millis(300));
        }
        let cmd = CommandOptions { command_id: Some("cmd-1".into()), ..CommandOptions::default() };
        t.hangup(&calls[4], &cmd).unwrap();
        t.update_queue_call("sales", &calls[1], &QueueCallUpdate { priority: Some(7), ..Default::default() })
            .unwrap();
        t.bridge(&calls[6], &BridgeParams::queue("sales")).unwrap();
        t.hangup(&calls[6], &CommandOptions::default()).unwrap();
        t.leave_queue(&calls[3], &CommandOptions::default()).unwrap();
        t.delete_queue("gone").unwrap();
        t.enqueue(&calls[7], &EnqueueParams::new("brief")).unwrap();
        t.leave_queue(&calls[7], &CommandOptions::default()).unwrap(); // "brief" waits to be collected
        t.bridge(&calls[7], &BridgeParams::call(&calls[3])).unwrap();
        hand.advance(Duration::from_secs(1));
        t
    }

    /// Every public read of a tenant, as text.
    fn reads(t: &Tenant) -> String {
        let mut out = format!("seq {} live {}\n", t.last_seq(), t.live_calls());
        let queues = t.queues(crate::PageRequest::new(1, 250)).unwrap();
        for q in &queues.data {
            out += &format!("{q:?}\n");
            for m in &t.queue_calls(&q.name, crate::PageRequest::new(1, 250)).unwrap().data {
                out += &format!("  {m:?}\n{:?}\n", t.call(&m.call_control_id));
            }
        }
        out
    }

    fn restored(bytes: &[u8], hand: &ManualClock) -> (Engine, Tenant, ManualClock) {
        let (engine, other) = engine();
        other.set(hand.now());
        let t = engine.tenant("acme");
        t.restore(bytes).unwrap();
        (engine, t, other)
    }

    #[test]
    fn a_restored_tenant_reads_and_goes_on_exactly_as_the_original() {
        let (engine, hand) = engine();
        let t = busy_tenant(&engine, &hand);
        let (seq, bytes) = t.snapshot();
        assert_eq!(seq, t.last_seq());
        assert!(bytes.starts_with(MAGIC));
        let (copy_engine, copy, copy_hand) = restored(&bytes, &hand);
        copy_engine.check_invariants().unwrap();
        assert_eq!(copy.snapshot(), (seq, bytes), "the same state, byte for byte");
        assert_eq!(reads(&copy), reads(&t));
        assert_eq!(copy_engine.next_wakeup(), engine.next_wakeup());
        // The next call takes the same slot (the id's slot part) in both.
        let (a, b) = (dial(&t, None), dial(&copy, None));
        assert_eq!(a[..14], b[..14]);
        // A command id inside its window is still remembered.
        let calls = t.queue_calls("support", crate::PageRequest::new(1, 10)).unwrap().data;
        let member = &calls[0].call_control_id;
        let cmd = CommandOptions { command_id: Some("cmd-2".into()), ..CommandOptions::default() };
        for x in [&t, &copy] {
            x.leave_queue(member, &cmd).unwrap();
            x.enqueue(member, &EnqueueParams::new("support")).unwrap();
            x.leave_queue(member, &cmd).unwrap(); // a repeat: answered, nothing done
            assert_eq!(
                x.queue_position("support", member).ok(),
                Some(x.queue("support").unwrap().current_size)
            );
        }
        // So is a dial's: the repeat answers the first dial's call and makes nothing.
        let (seq, copy_seq) = (t.last_seq(), copy.last_seq());
        assert_eq!(dial_once(&t, None, Some("dial-3")), "client-3");
        assert_eq!(dial_once(&copy, None, Some("dial-3")), "client-3");
        let first = dial_once(&t, None, Some("dial-0"));
        assert_eq!(dial_once(&copy, None, Some("dial-0")), first);
        assert_eq!(t.call(&first).unwrap().start_time, START, "the tenant's first call");
        assert_eq!((t.last_seq(), copy.last_seq()), (seq, copy_seq));
        // Then time runs: deadlines, retention and idle checks fire the same in both.
        for _ in 0..5 {
            hand.advance(Duration::from_secs(40));
            copy_hand.advance(Duration::from_secs(40));
            engine.run_pending_tasks();
            copy_engine.run_pending_tasks();
            assert_eq!(reads(&copy), reads(&t));
        }
    }

    /// A forgotten tenant is as new: nothing to read, and it takes a restore again (as a
    /// node does that takes back a tenant another node held meanwhile).
    #[test]
    fn a_forgotten_tenant_is_as_new_and_takes_a_restore() {
        let (engine, hand) = engine();
        let t = busy_tenant(&engine, &hand);
        let (seq, bytes) = t.snapshot();
        let fresh = reads(&engine.tenant("never-used"));
        t.forget();
        assert_eq!(t.last_seq(), 0);
        assert_eq!(reads(&t), fresh);
        assert_eq!(t.restore(&bytes).unwrap(), seq);
        assert_eq!(t.snapshot(), (seq, bytes));
        engine.check_invariants().unwrap();
    }

    /// The edges of what a restore accepts, all reached by real use: members enqueued at
    /// the same instant, a call remembering as many command ids as it can, a queue with its
    /// full window of bridge times; and the connection and number shared by the next call
    /// are the ones the tenant last used, not the last slot's.
    #[test]
    fn states_at_the_edges_restore_exactly() {
        let (engine, hand) = engine();
        let t = engine.tenant("acme");
        let second = t.dial(&DialParams::new("+15550009", "+15550008", "other")).unwrap().call_control_id;
        for i in 0..crate::call::COMMAND_ID_MEMORY {
            let cmd = CommandOptions { command_id: Some(format!("c{i}")), ..CommandOptions::default() };
            t.enqueue(&second, &EnqueueParams { options: cmd, ..EnqueueParams::new("full") }).unwrap();
            t.leave_queue(&second, &CommandOptions::default()).unwrap();
        }
        for _ in 0..=ESTIMATE_WINDOW {
            let calls = [dial(&t, None), dial(&t, None), dial(&t, None)];
            for c in &calls {
                t.enqueue(c, &EnqueueParams::new("busy")).unwrap(); // the same instant
            }
            t.bridge(&dial(&t, None), &BridgeParams::queue("busy")).unwrap();
            hand.advance(Duration::from_millis(10));
        }
        let full = |t: &Tenant| {
            let (seq, bytes) = t.snapshot();
            let (_copy_engine, copy, _) = restored(&bytes, &hand);
            assert_eq!(copy.snapshot(), (seq, bytes));
            assert_eq!(reads(&copy), reads(&t.clone()));
        };
        full(&t);
        // A call in a freed low slot with another connection: the tenant's last one is
        // its, not the last slot's.
        t.hangup(&second, &CommandOptions::default()).unwrap();
        hand.advance(Duration::from_secs(61));
        engine.run_pending_tasks(); // `second` forgotten: its slot 0 is free
        t.dial(&DialParams::new("+15550007", "+15550006", "third")).unwrap();
        full(&t);
    }

    /// Format 1 is format 2 without the dials' memory: a data directory written before dial
    /// took a `command_id` still starts.
    #[test]
    fn a_snapshot_of_format_1_is_read() {
        let (engine, hand) = engine();
        let t = engine.tenant("acme");
        for i in 0..3 {
            let call = dial(&t, None);
            t.enqueue(&call, &EnqueueParams::new("support").max_wait_time_secs(30 + i)).unwrap();
            hand.advance(Duration::from_secs(1));
        }
        let (seq, bytes) = t.snapshot();
        // No dial remembered: the state's last byte is the memory's length, 0.
        assert_eq!(bytes.last(), Some(&0));
        let mut old = bytes[..bytes.len() - 1].to_vec();
        old[MAGIC.len()..MAGIC.len() + 2].copy_from_slice(&1u16.to_le_bytes());
        let (copy_engine, copy, _) = restored(&old, &hand);
        assert_eq!(copy.snapshot(), (seq, bytes), "the same state, written as format 2");
        copy_engine.check_invariants().unwrap();
        // Format 1 with something after the state it had is refused.
        let mut longer = old.clone();
        longer.push(0);
        let (other, _) = self::engine();
        assert!(matches!(other.tenant("acme").restore(&longer), Err(SnapshotError::Format(_))));
    }

    #[test]
    fn only_a_new_tenant_is_restored() {
        let (engine, hand) = engine();
        let (_, bytes) = busy_tenant(&engine, &hand).snapshot();
        let (other, _) = self::engine();
        let t = other.tenant("acme");
        dial(&t, None);
        assert_eq!(t.restore(&bytes), Err(SnapshotError::TenantNotEmpty("acme".into())));
        assert_eq!(t.last_seq(), 1);
        // An empty tenant's snapshot restores into an empty tenant.
        let empty = other.tenant("empty").snapshot();
        let (third, _) = self::engine();
        assert_eq!(third.tenant("x").restore(&empty.1), Ok(0));
    }

    #[test]
    fn bad_bytes_are_refused_and_change_nothing() {
        let (engine, hand) = engine();
        let (_, bytes) = busy_tenant(&engine, &hand).snapshot();
        let (other, _) = self::engine();
        let t = other.tenant("acme");
        let format = |b: &[u8]| matches!(t.restore(b), Err(SnapshotError::Format(_)));
        assert!(format(b""));
        assert!(format(&bytes[..MAGIC.len()]), "no version");
        let mut wrong = bytes.clone();
        wrong[0] ^= 1;
        assert!(format(&wrong), "magic");
        for unknown in [0, FORMAT_VERSION + 1] {
            let mut version = bytes.clone();
            version[MAGIC.len()..MAGIC.len() + 2].copy_from_slice(&unknown.to_le_bytes());
            assert!(format(&version), "version {unknown}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(format(&longer), "trailing bytes");
        for cut in 0..bytes.len() {
            assert!(t.restore(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // Any single flipped byte: refused, or a state that holds together.
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x55;
            let (fresh, _) = self::engine();
            if fresh.tenant("acme").restore(&flipped).is_ok() {
                fresh.check_invariants().unwrap();
            }
        }
        assert_eq!((t.last_seq(), t.live_calls()), (0, 0));
    }

    /// The encoded form read as it is (the calls too), for editing.
    type Plain<'a> = Body<
        'a,
        Vec<(u32, Option<CallData<'a>>)>,
        Vec<(u32, Option<QueueData<'a, Vec<u64>>>)>,
        Vec<(u64, Vec<(u64, TimerData)>)>,
        Vec<(u64, HandleData)>,
        Vec<(u64, HandleData, &'a str)>,
    >;

    /// Decodes `bytes`, changes the state with `edit`, and restores the result.
    fn edited(bytes: &[u8], edit: impl FnOnce(&mut Plain<'_>)) -> Result<u64, SnapshotError> {
        let mut body: Plain<'_> = postcard::from_bytes(&bytes[MAGIC.len() + 2..]).unwrap();
        edit(&mut body);
        let mut again = bytes[..MAGIC.len() + 2].to_vec();
        again.extend(postcard::to_allocvec(&body).unwrap());
        let (engine, _) = engine();
        engine.tenant("acme").restore(&again)
    }

    fn each_link(body: &mut Plain<'_>, f: impl FnMut(&mut LinkData)) {
        body.calls.iter_mut().filter_map(|(_, c)| c.as_mut()).map(|c| &mut c.link).for_each(f);
    }

    /// A queue whose current minute's peak is below its length is not the engine's (a
    /// departure then would never raise it): refused.
    #[test]
    fn a_peak_below_the_queues_length_is_refused() {
        let (engine, hand) = engine();
        let (_, bytes) = busy_tenant(&engine, &hand).snapshot();
        let got = edited(&bytes, |b| {
            for (_, q) in &mut b.queues {
                if let Some(q) = q.as_mut() {
                    q.figures.lengths.iter_mut().for_each(|l| *l = 0);
                }
            }
        });
        assert!(
            matches!(&got, Err(SnapshotError::Inconsistent(e)) if e.contains("peak length is below")),
            "{got:?}"
        );
    }

    #[test]
    fn inconsistent_states_are_refused() {
        let (engine, hand) = engine();
        let (seq, bytes) = busy_tenant(&engine, &hand).snapshot();
        assert_eq!(edited(&bytes, |_| {}), Ok(seq), "unedited");
        let mut case = 0;
        let mut refused = |edit: &dyn Fn(&mut Plain<'_>)| {
            case += 1;
            let got = edited(&bytes, edit);
            assert!(matches!(got, Err(SnapshotError::Inconsistent(_))), "case {case}: {got:?}");
        };
        // Refused for the reason named (each also breaks an invariant the checker would
        // find later, with another message).
        let because = |edit: &dyn Fn(&mut Plain<'_>), why: &str| {
            let got = edited(&bytes, edit);
            assert!(matches!(&got, Err(SnapshotError::Inconsistent(e)) if e.contains(why)), "{why}: {got:?}");
        };
        because(
            &|b| {
                let ids: Vec<_> = b
                    .calls
                    .iter()
                    .filter_map(|(_, c)| c.as_ref())
                    .filter(|c| !c.engine_id)
                    .map(|c| c.id)
                    .collect();
                let other = b.calls.iter_mut().flat_map(|(_, c)| c.as_mut()).find(|c| c.engine_id).unwrap();
                (other.id, other.engine_id) = (ids[0], false);
            },
            "twice",
        );
        because(
            &|b| {
                let (ix, c) = b
                    .calls
                    .iter_mut()
                    .enumerate()
                    .find(|(_, (_, c))| {
                        c.as_ref().is_some_and(|c| matches!(c.link, LinkData::Bridged { .. }))
                    })
                    .unwrap();
                if let Some(CallData { link: LinkData::Bridged { with, .. }, .. }) = &mut c.1 {
                    *with = ix as u32; // bridged with itself
                }
            },
            "bridged with slot",
        );
        // Timers for one slot past the last (an extra timer: nothing else is wrong).
        let extra = |b: &mut Plain<'_>, t: TimerData| {
            let at = b.timers[0].1[0].0;
            b.timers[0].1.push((at, t));
        };
        because(&|b| extra(b, TimerData::Forget { call: (b.calls.len() as u32, 0) }), "out of range");
        because(&|b| extra(b, TimerData::Idle { queue: (b.queues.len() as u32, 0) }), "out of range");
        because(
            &|b| extra(b, TimerData::Deadline { queue: (0, 0), call: (b.calls.len() as u32, 0), arrival: 1 }),
            "out of range",
        );
        because(
            &|b| {
                extra(b, TimerData::Deadline { queue: (b.queues.len() as u32, 0), call: (0, 0), arrival: 1 })
            },
            "out of range",
        );
        because(&|b| b.ended.push((0, (b.calls.len() as u32, 0))), "an ended call in slot");
        because(&|b| b.dial_commands[0].1 = (b.calls.len() as u32, 0), "a dial's call in slot");
        because(&|b| b.dial_commands[0].2 = "", "dial command id");
        because(&|b| b.dial_commands[0].2 = "a\nb", "dial command id");
        // Enqueue times: after the queue's last, or out of arrival order.
        because(
            &|b| {
                for (_, q) in &mut b.queues {
                    if let Some(q) = q.as_mut() {
                        q.last_enqueued_at -= 1;
                    }
                }
            },
            "enqueue times",
        );
        because(
            &|b| {
                let mut first = true;
                each_link(b, |l| {
                    if let LinkData::Queued { enqueued_at, queue: 1, .. } = l {
                        if std::mem::take(&mut first) {
                            *enqueued_at += 10_000_000; // the first arrival, after the others
                        }
                    }
                });
            },
            "enqueue times",
        );
        because(
            &|b| {
                let names: Vec<_> = b.queues.iter().flat_map(|(_, q)| q.as_ref()).map(|q| q.name).collect();
                let q = b.queues.iter_mut().flat_map(|(_, q)| q.as_mut()).nth(1).unwrap();
                q.name = names[0];
            },
            "twice",
        );
        refused(&|b| b.call_free.to_mut().push(0));
        refused(&|b| b.queue_free.to_mut().push(0));
        refused(&|b| b.calls[0].0 += 1); // an engine id naming another generation
        refused(&|b| {
            let first = b.calls.iter_mut().find_map(|(_, c)| c.as_mut().filter(|c| c.engine_id)).unwrap();
            first.id = "v3:not an id";
        });
        refused(&|b| {
            let ids: Vec<_> = b
                .calls
                .iter()
                .filter_map(|(_, c)| c.as_ref())
                .filter(|c| !c.engine_id)
                .map(|c| c.id)
                .collect();
            let other = b.calls.iter_mut().flat_map(|(_, c)| c.as_mut()).find(|c| c.engine_id).unwrap();
            (other.id, other.engine_id) = (ids[0], false); // a client id twice
        });
        refused(&|b| {
            each_link(b, |l| {
                if let LinkData::Queued { queue, .. } = l {
                    *queue = 99;
                }
            });
        });
        refused(&|b| {
            each_link(b, |l| {
                if let LinkData::Queued { band, .. } = l {
                    *band = 10;
                }
            });
        });
        refused(&|b| {
            each_link(b, |l| {
                if let LinkData::Queued { arrival, .. } = l {
                    *arrival = 0;
                }
            });
        });
        refused(&|b| {
            each_link(b, |l| {
                if let LinkData::Queued { deadline, .. } = l {
                    *deadline = deadline.map(|d| d + 1); // no timer at that instant
                }
            });
        });
        refused(&|b| {
            each_link(b, |l| {
                if let LinkData::Bridged { with, .. } = l {
                    *with = 1_000;
                }
            });
        });
        refused(&|b| {
            for (_, c) in &mut b.calls {
                if let Some(c) = c.as_mut().filter(|c| matches!(c.link, LinkData::Bridged { .. })) {
                    c.link = LinkData::None; // the other leg still says bridged
                    break;
                }
            }
        });
        refused(&|b| {
            each_link(b, |l| {
                if let LinkData::Queued { enqueued_at, .. } = l {
                    *enqueued_at = u64::MAX - *enqueued_at; // out of arrival order
                }
            });
        });
        refused(&|b| {
            for (_, c) in &mut b.calls {
                if let Some(c) = c.as_mut().filter(|c| c.ended_at.is_some()) {
                    c.ended_at = None; // live, but marked ended elsewhere
                }
            }
        });
        refused(&|b| {
            // Ended calls with no timer to forget them.
            for (_, items) in &mut b.timers {
                items.retain(|(_, t)| !matches!(t, TimerData::Forget { .. }));
            }
            b.timers.retain(|(_, items)| !items.is_empty());
        });
        refused(&|b| {
            b.calls
                .iter_mut()
                .flat_map(|(_, c)| c.as_mut())
                .for_each(|c| c.recent_commands = vec![("c", 1); 17])
        });
        refused(&|b| b.timers.clear());
        refused(&|b| b.timers.reverse());
        refused(&|b| b.timers[0].1[0].0 += 1_000_000); // in another second's bucket
        refused(&|b| {
            let t = &mut b.timers[0].1[0].1;
            *t = TimerData::Forget { call: (5_000, 0) };
        });
        refused(&|b| b.ended.push((0, (5_000, 0))));
        refused(&|b| {
            let q = b.queues.iter_mut().find_map(|(_, q)| q.as_mut()).unwrap();
            q.order.1 = 3;
        });
        refused(&|b| {
            let q = b.queues.iter_mut().find_map(|(_, q)| q.as_mut()).unwrap();
            q.bridge_dequeue_times = vec![0; ESTIMATE_WINDOW + 1];
        });
        refused(&|b| {
            let names: Vec<_> = b.queues.iter().flat_map(|(_, q)| q.as_ref()).map(|q| q.name).collect();
            let q = b.queues.iter_mut().flat_map(|(_, q)| q.as_mut()).nth(1).unwrap();
            q.name = names[0];
        });
        refused(&|b| {
            for (_, q) in &mut b.queues {
                if let Some(q) = q.as_mut().filter(|q| q.idle_timer.is_some()) {
                    q.idle_timer = q.idle_timer.map(|t| t + 1);
                }
            }
        });
    }
}
