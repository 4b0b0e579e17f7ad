//! Calls: the record the engine keeps per call leg, and the snapshot it hands out.

use std::cell::Cell;
use std::sync::{Arc, LazyLock};

use serde::Serialize;
use uuid::Uuid;

use crate::clock::Timestamp;
use crate::slab::{Handle, Vacant};

/// The fixed facts of a call leg, shared (not copied) by the call record, the queue member
/// and every event about the call.
#[derive(Debug, PartialEq, Eq)]
pub struct CallIdentity {
    /// The call's id and control token.
    pub call_control_id: CallId,
    /// Unique id of the leg.
    pub call_leg_id: Uuid,
    /// Id of the session the leg belongs to.
    pub call_session_id: Uuid,
    /// The Call Control application (connection) of the call.
    pub connection_id: Arc<str>,
    /// The calling party.
    pub from: Arc<str>,
    /// The called party.
    pub to: Arc<str>,
    /// When the call started (was answered).
    pub start_time: Timestamp,
    /// Where this call's webhooks go, if not to the frontend's default.
    pub webhook_url: Option<Box<str>>,
}

impl CallIdentity {
    /// For an id the client gave at dial: its hash under the engine's hasher, which finds
    /// the call in its tenant's map of client ids. `None` for ids the engine made, which
    /// lead to their slot by themselves.
    pub(crate) const fn id_hash(&self) -> Option<u64> {
        match &self.call_control_id.0 {
            Id::Engine(_) => None,
            Id::Client { hash, .. } => Some(*hash),
        }
    }
}

/// A call's id, read as a `str`. An id the engine made (43 bytes, see below) is kept
/// inline, without an allocation of its own; an id the client gave at dial is kept on the
/// heap with its hash.
#[derive(Clone)]
pub struct CallId(Id);

#[derive(Clone)]
enum Id {
    Engine([u8; ID_LEN]),
    Client { id: Box<str>, hash: u64 },
}

impl CallId {
    /// An id the client gave, with its hash under the engine's hasher.
    pub(crate) fn client(id: &str, hash: u64) -> Self {
        Self(Id::Client { id: id.into(), hash })
    }

    /// An id the engine made, as [`CallId::as_str`] gave it: `None` if it does not have
    /// the shape of one (length, prefix, alphabet).
    pub(crate) fn engine(id: &str) -> Option<Self> {
        let bytes = <[u8; ID_LEN]>::try_from(id.as_bytes()).ok()?;
        let shaped = bytes.starts_with(ID_PREFIX.as_bytes())
            && bytes[ID_PREFIX.len()..].iter().all(|&c| IN_ALPHABET[c as usize]);
        shaped.then_some(Self(Id::Engine(bytes)))
    }

    /// The id.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Only `new_call_control_id` and `stamp_slot` write it, in ASCII.
            Id::Engine(bytes) => std::str::from_utf8(bytes).unwrap_or_default(),
            Id::Client { id, .. } => id,
        }
    }
}

impl std::ops::Deref for CallId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for CallId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for CallId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for CallId {}

impl std::hash::Hash for CallId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl std::fmt::Debug for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CallId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------
// Call ids the engine makes.
// ---------------------------------------------------------------------------------------
//
// Telnyx-style: `v3:` and 40 characters of the URL-safe base64 alphabet (`A-Z a-z 0-9 - _`,
// 6 bits each), 43 bytes in all:
//
//   v3:  SSSSSSSSSSS  RRRRRRRRRRRRRRRRRRRRRRRRRRRRR
//        11 chars:    29 chars: 174 random bits (the secret), from the thread's CSPRNG
//        the slot     (`rand`'s ChaCha, seeded from the OS, through uuid's fast-rng)
//
// The slot part is 66 bits, most significant first; the top 2 are zero and the other 64
// hold the call's slot in its tenant's slab (high 32 bits) and the slot's generation (low 32
// bits). A lookup checks the id's length and prefix, decodes the slot's index, and compares
// the rest of the id (the slot part with its generation, and the secret) with the copy kept
// in the record in that slot ([`IdTail`]), in constant time: an id with
// a wrong secret, or for a slot used by another call since (its generation differs), fails
// and then answers exactly like an unknown id. The record alone decides: finding a call by
// id reads nothing else (at a million calls, every other read would be a cache miss). Ids the client gives at
// dial (any shape) are found through a per-tenant hash map, which a lookup consults when the
// slot the id would name does not hold it. To clients all ids stay opaque strings.

/// The base64url alphabet, in value order.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const ID_PREFIX: &str = "v3:";
/// Characters of the slot part.
const SLOT_CHARS: usize = 11;
/// Characters of the secret part (174 bits).
const SECRET_CHARS: usize = 29;
const ID_LEN: usize = ID_PREFIX.len() + SLOT_CHARS + SECRET_CHARS;

/// A fresh engine id with its secret and a placeholder slot part, to be completed with
/// [`stamp_slot`] once the slot is known (under the tenant's lock; the random part is drawn
/// before it).
pub(crate) fn new_call_control_id(mut draw_uuid: impl FnMut() -> Uuid) -> CallId {
    let mut id = [b'A'; ID_LEN];
    id[..ID_PREFIX.len()].copy_from_slice(ID_PREFIX.as_bytes());
    // 20 + 9 characters of 6 bits from the 122 random bits of each of two v4 UUIDs.
    let mut at = SECRET_START;
    for chars in [20, SECRET_CHARS - 20] {
        let mut bits = uuid_random_bits(draw_uuid());
        for c in &mut id[at..at + chars] {
            *c = ALPHABET[(bits & 63) as usize];
            bits >>= 6;
        }
        at += chars;
    }
    CallId(Id::Engine(id))
}

/// The 122 random bits of a v4 UUID, packed low (its 4 version and 2 variant bits are
/// fixed, and left out).
const fn uuid_random_bits(u: Uuid) -> u128 {
    let v = u.as_u128();
    let low = v & ((1 << 62) - 1); // below the variant
    let mid = (v >> 64) & ((1 << 12) - 1); // between the variant and the version
    let high = v >> 80; // above the version
    low | (mid << 62) | (high << 74)
}

/// Writes the slot part of an id made by [`new_call_control_id`].
pub(crate) fn stamp_slot(id: &mut CallId, slot: Handle) {
    let Id::Engine(id) = &mut id.0 else { unreachable!("only engine ids name their slot") };
    let value = (u64::from(slot.ix) << 32) | u64::from(slot.generation);
    for (i, c) in id[ID_PREFIX.len()..SECRET_START].iter_mut().enumerate() {
        let shift = 6 * (SLOT_CHARS - 1 - i);
        *c = ALPHABET[((value >> shift) & 63) as usize];
    }
}

/// The value of each byte of [`ALPHABET`] (the others: whatever, see [`engine_ix`]).
const DECODE: [u8; 256] = {
    let mut table = [0; 256];
    let mut i = 0;
    while i < 64 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Whether each byte is one of [`ALPHABET`].
const IN_ALPHABET: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 64 {
        table[ALPHABET[i] as usize] = true;
        i += 1;
    }
    table
};

/// Where the secret starts in an engine id.
const SECRET_START: usize = ID_PREFIX.len() + SLOT_CHARS;
/// Characters of an engine id after its prefix.
const TAIL_CHARS: usize = SLOT_CHARS + SECRET_CHARS;

/// The slot (index and generation) an id names if it has an engine id's length and prefix
/// (a snapshot's restore reads it; a lookup needs only the index, [`engine_ix`]).
pub(crate) fn engine_slot(id: &str) -> Option<Handle> {
    let value = slot_value(id, SLOT_CHARS)?;
    Some(Handle { ix: (value >> 32) as u32, generation: value as u32 })
}

/// The slot index alone of [`engine_slot`], from the first 6 of its 11 characters (bits 65
/// to 30 of the 66: the index is bits 63 to 32), if the id has an engine id's length and
/// prefix. A lookup needs no more: the generation is in the id's tail, which
/// [`IdTail::matches`] compares whole, so an id of an earlier call in the slot (another
/// generation) does not match the record there. Any characters decode to some index: an id
/// the engine did not make (or made for another slot) is found only if it is that call's id.
#[inline]
pub(crate) fn engine_ix(id: &str) -> Option<u32> {
    const IX_CHARS: usize = 6;
    // The 6 characters end at bit 30 of the 66; the index starts at bit 32.
    const BELOW_IX: usize = 32 - 6 * (SLOT_CHARS - IX_CHARS);
    Some((slot_value(id, IX_CHARS)? >> BELOW_IX) as u32)
}

/// The value of the first `chars` characters of an id's slot part, most significant first,
/// if the id has an engine id's length and prefix.
#[inline]
fn slot_value(id: &str, chars: usize) -> Option<u64> {
    let id = id.as_bytes();
    if id.len() != ID_LEN || !id.starts_with(ID_PREFIX.as_bytes()) {
        return None;
    }
    let slot = &id[ID_PREFIX.len()..ID_PREFIX.len() + chars];
    Some(slot.iter().fold(0u64, |v, &c| (v << 6) | u64::from(DECODE[c as usize])))
}

/// The 40 characters of a call's engine-made id after its prefix (slot part and secret),
/// kept in the call's record so that a lookup by id reads the record alone: with the prefix
/// and the length checked ([`engine_ix`]), an id is the call's if its tail is this. For
/// ids the client gave it is [`IdTail::NONE`], bytes that no `str` holds (0xFF is never
/// UTF-8), so no id matches it and those calls are found through the map of client ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IdTail([u8; TAIL_CHARS]);

impl IdTail {
    pub(crate) const NONE: Self = Self([0xFF; TAIL_CHARS]);

    /// The tail a record of `ident` keeps.
    pub(crate) fn for_identity(ident: &CallIdentity) -> Self {
        if ident.id_hash().is_none() { Self::of(&ident.call_control_id) } else { Self::NONE }
    }

    /// The tail of `id`, an id the engine made (else [`IdTail::NONE`]).
    fn of(id: &str) -> Self {
        id.as_bytes()
            .get(ID_PREFIX.len()..)
            .and_then(|s| <[u8; TAIL_CHARS]>::try_from(s).ok())
            .map_or(Self::NONE, Self)
    }

    /// Whether `id`, which has an engine id's length and prefix ([`engine_ix`]), ends
    /// with this tail, in time that does not depend on the bytes: the differences of all 40
    /// are or-ed together 8 at a time without an early exit (xor and or, no branch), and
    /// only the result is compared. The result passes through `black_box` first, so the
    /// compiler cannot see what the comparison is made of and turn the or-ing into a
    /// compare that stops at the first word that differs; inline, unlike `subtle`'s
    /// out-of-line `black_box` (a call and a volatile load per lookup).
    pub(crate) fn matches(&self, id: &str) -> bool {
        let Some(theirs) = id.as_bytes().get(ID_PREFIX.len()..).filter(|s| s.len() == TAIL_CHARS) else {
            return false;
        };
        let word = |s: &[u8], i: usize| {
            let mut w = [0; 8];
            w.copy_from_slice(&s[i..i + 8]);
            u64::from_ne_bytes(w)
        };
        let diff = (0..TAIL_CHARS).step_by(8).fold(0, |d, i| d | (word(theirs, i) ^ word(&self.0, i)));
        std::hint::black_box(diff) == 0
    }
}

/// Lifecycle state of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallState {
    /// Answered, in no queue, not bridged ("parked").
    Active,
    /// Waiting in exactly one queue.
    Queued,
    /// Bridged to exactly one other call.
    Bridged,
    /// Hung up; kept for `ended_call_retention` so its status can be read.
    Ended,
}

impl CallState {
    /// The state's name on the wire.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Queued => "queued",
            Self::Bridged => "bridged",
            Self::Ended => "ended",
        }
    }
}

/// A call's membership of a queue, kept in the call's record: the queue's slot, the call's
/// slot in the queue's order, and what the queue knows of the member. The queue itself keeps
/// only the order (call slots), so a command that found the call finds the member too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Membership {
    /// The queue's slot in the tenant's queue slab.
    pub(crate) queue: u32,
    /// The call's slot in the queue's order (changed by compaction, see `order`).
    pub(crate) arrival: u32,
    /// The priority band.
    pub(crate) band: u8,
    pub(crate) keep_after_hangup: bool,
    /// False once the call hung up while kept in the queue.
    pub(crate) alive: bool,
    /// The queue's enqueue count when the call joined (its low 32 bits): names this stay in
    /// the queue, so that a deadline timer of an earlier stay of the same call, due at the
    /// same instant, is seen as stale (it would fire out of enqueue order, and pile up).
    pub(crate) serial: u32,
    pub(crate) enqueued_at: Timestamp,
    /// The deadline in microseconds, [`NONE`] for none (an `Option` would take 8 bytes more
    /// in every call record).
    deadline: u64,
}

/// "None" in the compact optional timestamps of call records (no real time is this late).
const NONE: u64 = u64::MAX;

const fn compact(t: Option<Timestamp>) -> u64 {
    match t {
        Some(t) if t.as_micros() != NONE => t.as_micros(),
        Some(_) => NONE - 1,
        None => NONE,
    }
}

const fn expand(micros: u64) -> Option<Timestamp> {
    if micros == NONE { None } else { Some(Timestamp::from_micros(micros)) }
}

impl Membership {
    pub(crate) const fn new(
        queue: u32,
        arrival: u32,
        band: u8,
        keep_after_hangup: bool,
        serial: u32,
        enqueued_at: Timestamp,
        deadline: Option<Timestamp>,
    ) -> Self {
        Self {
            queue,
            arrival,
            band,
            keep_after_hangup,
            alive: true,
            serial,
            enqueued_at,
            deadline: compact(deadline),
        }
    }

    /// When `max_wait_time_secs` runs out, if it was given.
    pub(crate) const fn deadline(&self) -> Option<Timestamp> {
        expand(self.deadline)
    }
}

/// Where a call is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Link {
    None,
    /// Member of a queue (of the call's tenant). Also holds for an ended call kept after
    /// hangup.
    Queued(Membership),
    /// Bridged with the call in this slot; `park_after_unbridge` is what this leg asked for.
    Bridged {
        with: u32,
        park_after_unbridge: bool,
    },
}

/// How many `command_id`s are remembered per call; older ones are forgotten first.
pub(crate) const COMMAND_ID_MEMORY: usize = 16;
/// How long a `command_id` is remembered (docs/behaviour.md §2: 60 s).
pub(crate) const COMMAND_ID_WINDOW_MICROS: u64 = 60_000_000;

#[derive(Debug)]
pub(crate) struct CallRecord {
    pub(crate) ident: RecordIdentity,
    pub(crate) client_state: Option<Arc<str>>,
    /// When the call ended, [`NONE`] while it is alive.
    end_time: u64,
    pub(crate) link: Link,
    /// Boxed: most calls never see a `command_id`, and an empty `Vec` inline would take 24
    /// bytes of every record.
    recent_commands: Option<Box<RecentCommands>>,
    /// The tail of the call's id, if the engine made it: finding the call by id reads this
    /// record and nothing else (the identity is in another allocation).
    pub(crate) id_tail: IdTail,
}

/// A call record's identity, and where the batches that took the call's last event hold it
/// (an index among their identities, see `Batches::push`): a hint, checked there, so that
/// batches clone the `Arc` once for their events about one call, not once an event. Set by
/// the push, which reads the record shared; beside the `Arc`, so that an event's call is
/// one pointer.
#[derive(Debug)]
pub(crate) struct RecordIdentity {
    shared: Arc<CallIdentity>,
    pub(crate) held_at: Cell<u32>,
}

impl RecordIdentity {
    /// Held nowhere yet.
    const fn new(shared: Arc<CallIdentity>) -> Self {
        Self { shared, held_at: Cell::new(u32::MAX) }
    }

    /// The identity, to change, while this record alone holds it (see [`Arc::get_mut`]).
    pub(crate) fn get_mut(&mut self) -> Option<&mut CallIdentity> {
        Arc::get_mut(&mut self.shared)
    }
}

impl std::ops::Deref for RecordIdentity {
    type Target = Arc<CallIdentity>;

    fn deref(&self) -> &Arc<CallIdentity> {
        &self.shared
    }
}

/// What a vacant slot of the calls' slab holds: a record of one identity shared by every
/// vacant slot (a slot emptied costs a reference count, not an allocation; a call is
/// forgotten once in its life, so the count's line is seldom touched), whose tail no id
/// matches. A process-wide static rather than a thread-local one: it is there for a
/// command run from any thread, a thread-local destructor's included.
impl Vacant for CallRecord {
    fn vacant() -> Self {
        static VACANT: LazyLock<Arc<CallIdentity>> = LazyLock::new(|| {
            let none: Arc<str> = Arc::from("");
            Arc::new(CallIdentity {
                call_control_id: CallId::client("", 0),
                call_leg_id: Uuid::nil(),
                call_session_id: Uuid::nil(),
                connection_id: none.clone(),
                from: none.clone(),
                to: none,
                start_time: Timestamp::EPOCH,
                webhook_url: None,
            })
        });
        Self::new(Arc::clone(&VACANT), None)
    }
}

/// The `command_id`s accepted for a call, with when.
pub(crate) type RecentCommands = Vec<(Box<str>, Timestamp)>;

impl CallRecord {
    /// A record for `ident`, whose id is final (an engine id is stamped with its slot).
    pub(crate) fn new(ident: Arc<CallIdentity>, client_state: Option<Arc<str>>) -> Self {
        let id_tail = IdTail::for_identity(&ident);
        Self {
            ident: RecordIdentity::new(ident),
            client_state,
            end_time: NONE,
            link: Link::None,
            recent_commands: None,
            id_tail,
        }
    }

    /// A record as a snapshot kept it.
    pub(crate) fn restored(
        ident: Arc<CallIdentity>,
        client_state: Option<Arc<str>>,
        end_time: Option<Timestamp>,
        link: Link,
        recent_commands: RecentCommands,
    ) -> Self {
        let recent_commands = (!recent_commands.is_empty()).then(|| Box::new(recent_commands));
        Self { end_time: compact(end_time), link, recent_commands, ..Self::new(ident, client_state) }
    }

    /// The `command_id`s remembered, oldest first, with when they were accepted.
    pub(crate) fn recent_commands(&self) -> &[(Box<str>, Timestamp)] {
        self.recent_commands.as_deref().map_or(&[], Vec::as_slice)
    }

    pub(crate) fn state(&self) -> CallState {
        match (&self.end_time(), &self.link) {
            (Some(_), _) => CallState::Ended,
            (None, Link::Queued(_)) => CallState::Queued,
            (None, Link::Bridged { .. }) => CallState::Bridged,
            (None, Link::None) => CallState::Active,
        }
    }

    pub(crate) const fn membership(&self) -> Option<&Membership> {
        match &self.link {
            Link::Queued(m) => Some(m),
            _ => None,
        }
    }

    pub(crate) const fn membership_mut(&mut self) -> Option<&mut Membership> {
        match &mut self.link {
            Link::Queued(m) => Some(m),
            _ => None,
        }
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.end_time != NONE
    }

    /// When the call ended, if it did.
    pub(crate) const fn end_time(&self) -> Option<Timestamp> {
        expand(self.end_time)
    }

    /// Marks the call ended at `at`.
    pub(crate) const fn end(&mut self, at: Timestamp) {
        self.end_time = compact(Some(at));
    }

    /// The slot of the queue the call is a member of.
    pub(crate) const fn queue(&self) -> Option<u32> {
        match &self.link {
            Link::Queued(m) => Some(m.queue),
            _ => None,
        }
    }

    /// The slot of the call this one is bridged with.
    pub(crate) const fn bridged_with(&self) -> Option<u32> {
        match &self.link {
            Link::Bridged { with, .. } => Some(*with),
            _ => None,
        }
    }

    /// Whether `command_id` was accepted for this call within the window.
    pub(crate) fn saw_command(&self, command_id: &str, now: Timestamp) -> bool {
        self.recent_commands.iter().flat_map(|c| c.iter()).any(|(id, at)| {
            &**id == command_id && now.as_micros().saturating_sub(at.as_micros()) < COMMAND_ID_WINDOW_MICROS
        })
    }

    pub(crate) fn remember_command(&mut self, command_id: &str, now: Timestamp) {
        let recent = self.recent_commands.get_or_insert_default();
        recent.retain(|(_, at)| now.as_micros().saturating_sub(at.as_micros()) < COMMAND_ID_WINDOW_MICROS);
        if recent.len() == COMMAND_ID_MEMORY {
            recent.remove(0);
        }
        recent.push((command_id.into(), now));
    }

    /// The call's status; `queue` and `bridged_with` are the names its link points to.
    pub(crate) fn snapshot(
        &self,
        now: Timestamp,
        queue: Option<&str>,
        bridged_with: Option<&str>,
    ) -> CallInfo {
        let id = &self.ident;
        let until = self.end_time().unwrap_or(now);
        CallInfo {
            record_type: "call",
            call_control_id: id.call_control_id.to_string(),
            call_leg_id: id.call_leg_id,
            call_session_id: id.call_session_id,
            connection_id: id.connection_id.to_string(),
            from: id.from.to_string(),
            to: id.to.to_string(),
            client_state: self.client_state.as_deref().map(str::to_owned),
            state: self.state(),
            is_alive: !self.is_ended(),
            start_time: id.start_time,
            end_time: self.end_time(),
            call_duration: until.secs_since(id.start_time),
            queue: queue.map(str::to_owned),
            bridged_with: bridged_with.map(str::to_owned),
        }
    }
}

/// A call's status, as read by `GET /v2/calls/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CallInfo {
    /// Always `"call"`.
    pub record_type: &'static str,
    /// The call's id.
    pub call_control_id: String,
    /// Unique id of the leg.
    pub call_leg_id: Uuid,
    /// Id of the session.
    pub call_session_id: Uuid,
    /// The connection (Call Control application).
    pub connection_id: String,
    /// The calling party.
    pub from: String,
    /// The called party.
    pub to: String,
    /// The last client state supplied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_state: Option<String>,
    /// \[ext\] Lifecycle state.
    pub state: CallState,
    /// Not yet hung up.
    pub is_alive: bool,
    /// When the call started.
    pub start_time: Timestamp,
    /// When the call ended; only for ended calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Timestamp>,
    /// Whole seconds from start to end (or to now while alive).
    pub call_duration: u64,
    /// \[ext\] The queue the call is in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// \[ext\] The call this one is bridged with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bridged_with: Option<String>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An identity with the id `id`: the engine's (inline) if it has an engine id's length
    /// and no hash.
    pub(crate) fn identity(id: &str, id_hash: Option<u64>) -> Arc<CallIdentity> {
        let id = match (id_hash, <[u8; ID_LEN]>::try_from(id.as_bytes())) {
            (None, Ok(bytes)) => CallId(Id::Engine(bytes)),
            (hash, _) => CallId::client(id, hash.unwrap_or_default()),
        };
        Arc::new(CallIdentity {
            call_control_id: id,
            call_leg_id: Uuid::nil(),
            call_session_id: Uuid::nil(),
            connection_id: "c".into(),
            from: "a".into(),
            to: "b".into(),
            start_time: Timestamp::EPOCH,
            webhook_url: None,
        })
    }

    fn record() -> CallRecord {
        CallRecord::new(identity("x", None), None)
    }

    /// A million queued calls hold a million records: keep them small.
    #[test]
    fn records_stay_small() {
        assert_eq!(size_of::<Membership>(), 32);
        assert_eq!(size_of::<Link>(), 32);
        // 72 bytes, the 40 of the id's tail (which spare a cache miss, two at times, on
        // every lookup by id) and the events' hint (4 and padding).
        assert_eq!(size_of::<CallRecord>(), 120);
        // An engine id inline (43 bytes and the variant) instead of a pointer to a 43-byte
        // allocation and an optional hash.
        assert_eq!(size_of::<CallId>(), 48);
        assert_eq!(size_of::<CallIdentity>(), 152);
    }

    #[test]
    fn compact_times_round_trip() {
        for t in [None, Some(Timestamp::EPOCH), Some(Timestamp::from_secs(1_767_225_600))] {
            assert_eq!(expand(compact(t)), t);
        }
        let mut rec = record();
        assert_eq!((rec.end_time(), rec.is_ended()), (None, false));
        rec.end(Timestamp::from_secs(5));
        assert_eq!((rec.end_time(), rec.is_ended()), (Some(Timestamp::from_secs(5)), true));
        assert!(!rec.saw_command("c1", Timestamp::EPOCH));
        rec.remember_command("c1", Timestamp::EPOCH);
        assert!(rec.saw_command("c1", Timestamp::EPOCH));
    }

    /// The tail a record keeps for the engine id `id`.
    fn tail_of(id: &str) -> IdTail {
        CallRecord::new(identity(id, None), None).id_tail
    }

    #[test]
    fn ids_match_their_tail_only_when_every_byte_is_equal() {
        let mut id = new_call_control_id(Uuid::new_v4);
        stamp_slot(&mut id, Handle { ix: 3, generation: 9 });
        assert_eq!(id.len(), ID_LEN);
        let tail = tail_of(&id);
        assert_ne!(tail, IdTail::NONE);
        assert!(tail.matches(&id));
        // One byte off, at every position after the prefix (each of the five words).
        for i in ID_PREFIX.len()..ID_LEN {
            let mut other = id.as_bytes().to_vec();
            other[i] = if other[i] == b'A' { b'B' } else { b'A' };
            assert!(!tail.matches(std::str::from_utf8(&other).unwrap_or_default()), "byte {i}");
        }
        // The same difference in every byte of the last two words: or-ing differences must
        // not let equal differences cancel out.
        let a = "v3:".to_owned() + &"A".repeat(ID_LEN - 3);
        let b = "v3:".to_owned() + &"A".repeat(27) + &"B".repeat(ID_LEN - 30);
        assert!(!tail_of(&a).matches(&b));
        assert!(tail_of(&a).matches(&a));
        // The same difference at the same place of two words: it cancels out if differences
        // are combined with xor instead of or.
        let two = |i: usize, j: usize| {
            let mut other = a.clone().into_bytes();
            other[i] = b'B';
            other[j] = b'B';
            String::from_utf8(other).unwrap_or_default()
        };
        for (i, j) in [(3, 11), (10, 34), (3, 35)] {
            assert!(!tail_of(&a).matches(&two(i, j)), "bytes {i} and {j}");
        }
        // Other lengths never match.
        assert!(!tail.matches(&id[..ID_LEN - 1]));
        assert!(!tail.matches(&format!("{id}A")));
        assert!(!tail.matches("v3:"));
        // A client's id has no tail: nothing matches it, not even its own id.
        let client = CallRecord::new(identity(&id, Some(1)), None).id_tail;
        assert_eq!(client, IdTail::NONE);
        assert!(!client.matches(&id));
        assert_eq!(IdTail::of("short"), IdTail::NONE);
    }

    #[test]
    fn ids_of_another_shape_name_no_slot_and_other_spellings_do_not_match() {
        let mut id = new_call_control_id(Uuid::new_v4);
        let slot = Handle { ix: 77, generation: 5 };
        stamp_slot(&mut id, slot);
        assert_eq!(engine_slot(&id), Some(slot));
        let with = |i: usize, c: &str| {
            let mut other = id.to_string();
            other.replace_range(i..=i, c);
            other
        };
        // The prefix and the length.
        assert_eq!(engine_slot(&with(0, "V")), None);
        assert_eq!(engine_slot(&with(1, "4")), None);
        assert_eq!(engine_slot(&with(2, ";")), None);
        assert_eq!(engine_slot(&id[..ID_LEN - 1]), None);
        assert_eq!(engine_slot(&format!("{id}A")), None);
        // Spellings outside the alphabet, or with the top 2 of the 66 bits set, decode to the
        // same slot but are other ids: the record's tail tells them apart.
        let tail = tail_of(&id);
        let zeros = (ID_PREFIX.len()..SECRET_START).filter(|&i| &id[i..=i] == "A"); // value 0
        let spellings = zeros.map(|i| with(i, "=")).chain([with(3, "Q")]); // "=" decodes to 0
        for other in spellings {
            assert_eq!(engine_slot(&other), Some(slot), "{other}");
            assert!(!tail.matches(&other), "{other}");
        }
    }

    /// A lookup decodes only the slot's index: an id of an earlier call in the slot (the
    /// same secret even, with another generation) names the same index but does not match
    /// the record's tail.
    #[test]
    fn an_earlier_generation_of_a_slot_does_not_match() {
        let secret = Uuid::new_v4();
        let id_in = |generation| {
            let mut id = new_call_control_id(|| secret);
            stamp_slot(&mut id, Handle { ix: 5, generation });
            id
        };
        for (earlier, now) in [(0, 1), (7, 1 << 31), (u32::MAX, 0)] {
            let (old, new) = (id_in(earlier), id_in(now));
            assert_eq!(engine_ix(&old), engine_ix(&new));
            assert!(tail_of(&new).matches(&new) && !tail_of(&new).matches(&old), "{old} {new}");
        }
    }

    #[test]
    fn secrets_are_random_in_every_character() {
        let secret = |id: &str| id[ID_PREFIX.len() + SLOT_CHARS..].to_owned();
        let (a, b) = (secret(&new_call_control_id(Uuid::new_v4)), secret(&new_call_control_id(Uuid::new_v4)));
        assert_eq!(a.len(), SECRET_CHARS);
        // 29 characters drawn from 64: equal runs or few distinct characters mean bits were
        // lost (the chance of fewer than 12 distinct is below 1e-9).
        let distinct = |s: &str| s.bytes().collect::<std::collections::BTreeSet<_>>().len();
        assert!(distinct(&a) >= 12 && distinct(&b) >= 12, "{a} {b}");
        assert!(a.bytes().zip(b.bytes()).filter(|(x, y)| x != y).count() >= 15, "{a} {b}");
    }

    #[test]
    fn states_have_their_wire_names() {
        let names = [CallState::Active, CallState::Queued, CallState::Bridged, CallState::Ended]
            .map(CallState::as_str);
        assert_eq!(names, ["active", "queued", "bridged", "ended"]);
    }

    #[test]
    fn the_latest_time_is_still_a_time() {
        let latest = Some(Timestamp::from_micros(u64::MAX));
        assert_eq!(compact(latest), NONE - 1);
        assert!(expand(compact(latest)).is_some());
    }

    #[test]
    fn command_ids_of_one_instant_are_all_remembered() {
        let mut rec = record();
        let now = Timestamp::from_secs(10);
        for i in 0..COMMAND_ID_MEMORY {
            rec.remember_command(&format!("c{i}"), now);
        }
        assert!((0..COMMAND_ID_MEMORY).all(|i| rec.saw_command(&format!("c{i}"), now)));
        rec.remember_command("one more", now);
        assert!(!rec.saw_command("c0", now), "the oldest goes first");
        assert!(rec.saw_command("c1", now) && rec.saw_command("one more", now));
    }

    #[test]
    fn secrets_use_only_the_random_bits_of_uuids() {
        // All 122 random bits set, version 4 and variant RFC: every packed bit is set and
        // nothing above bit 122.
        let u = Uuid::from_u128((!(0xf << 76) & !(0b11 << 62)) | (0x4 << 76) | (0b10 << 62));
        assert_eq!(uuid_random_bits(u), (1 << 122) - 1);
        assert_eq!(uuid_random_bits(Uuid::from_u128((0x4 << 76) | (0b10 << 62))), 0);
    }

    #[test]
    fn only_ids_of_an_engine_id_shape_are_read_back_as_engine_ids() {
        let mut id = new_call_control_id(Uuid::new_v4);
        stamp_slot(&mut id, Handle { ix: 9, generation: 2 });
        assert_eq!(CallId::engine(&id).map(|c| c.to_string()), Some(id.to_string()));
        for bad in [id[..ID_LEN - 1].to_owned(), format!("{id}A"), format!("v4{}", &id[2..])] {
            assert!(CallId::engine(&bad).is_none(), "{bad}");
        }
        for c in ["=", "+", "/", " ", "\u{7f}"] {
            let mut other = id.to_string();
            other.replace_range(20..21, c);
            assert!(CallId::engine(&other).is_none(), "{other}");
        }
        assert!(ALPHABET.iter().all(|&c| IN_ALPHABET[c as usize]));
        assert_eq!(IN_ALPHABET.iter().filter(|&&x| x).count(), 64);
    }

    #[test]
    fn engine_ids_encode_their_slot() {
        for (ix, generation) in [(0, 0), (1, 7), (u32::MAX, u32::MAX), (123_456, 1 << 31)] {
            let slot = Handle { ix, generation };
            let mut id = new_call_control_id(Uuid::new_v4);
            stamp_slot(&mut id, slot);
            assert_eq!(id.len(), 43);
            assert!(id.starts_with("v3:"));
            assert!(id[3..].bytes().all(|c| ALPHABET.contains(&c)));
            assert_eq!(engine_slot(&id), Some(slot));
            assert_eq!(engine_ix(&id), Some(ix));
        }
        assert_eq!(engine_ix("v3:short"), None);
        let a = new_call_control_id(Uuid::new_v4);
        let b = new_call_control_id(Uuid::new_v4);
        assert_ne!(a[14..], b[14..], "the secrets differ");
        assert_eq!(engine_slot("v3:short"), None);
        let id = "v3:AAAAAAAAAAAabcdefghijklmnopqrstuvwxyz012";
        assert_eq!(engine_slot(id), Some(Handle { ix: 0, generation: 0 }));
        let tail = tail_of(id);
        for i in 0..id.len() {
            let mut other = id.to_owned();
            other.replace_range(i..=i, if &id[i..=i] == "x" { "y" } else { "x" });
            let found = engine_slot(&other) == Some(Handle { ix: 0, generation: 0 }) && tail.matches(&other);
            assert!(!found, "a difference at {i}");
        }
        assert!(tail.matches(id));
    }
}
