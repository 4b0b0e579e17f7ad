//! Events: one per state change (docs/behaviour.md §4), their ids and their Telnyx JSON.
//! How they travel to subscribers is in `batch` (the records) and `bus` (the channels).

use std::sync::Arc;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use uuid::Uuid;

use crate::call::CallIdentity;
use crate::clock::Timestamp;

/// Why a call left a queue (typed removal cause).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DequeueReason {
    /// Bridged with another call (an agent's bridge to the queue, or a direct bridge).
    Bridged,
    /// Hung up while waiting (or found dead at the head, when kept after hangup).
    Hangup,
    /// `leave_queue`, a move to another queue, or removal through the queue API.
    Leave,
    /// `max_wait_time_secs` ran out.
    Timeout,
}

// Each reason at its own index in `ALL`.
const _: () = {
    let mut i = 0;
    while i < DequeueReason::COUNT {
        assert!(DequeueReason::ALL[i].index() == i);
        i += 1;
    }
};

impl DequeueReason {
    /// Every reason, at its [`DequeueReason::index`]: the order counts by reason are kept
    /// (and snapshotted) in.
    pub(crate) const ALL: [Self; 4] = [Self::Bridged, Self::Hangup, Self::Leave, Self::Timeout];

    /// How many reasons there are.
    pub(crate) const COUNT: usize = Self::ALL.len();

    /// The reason's place in counts kept by reason (the order of declaration): a count
    /// is then an index, not a branch per reason. Exhaustive, so that a new reason does not
    /// compile until it has its place in [`DequeueReason::ALL`].
    pub(crate) const fn index(self) -> usize {
        match self {
            Self::Bridged => 0,
            Self::Hangup => 1,
            Self::Leave => 2,
            Self::Timeout => 3,
        }
    }

    /// The reason's name on the wire.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Bridged => "bridged",
            Self::Hangup => "hangup",
            Self::Leave => "leave",
            Self::Timeout => "timeout",
        }
    }
}

/// Which party ended a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HangupSource {
    /// The call itself hung up (a hangup command).
    Caller,
    /// The other leg of its bridge went away (the unbridge rule, docs/behaviour.md §2.5).
    Callee,
}

/// Why a queue was deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueDeletedReason {
    /// By the delete call.
    Explicit,
    /// Empty and unchanged for `queue_idle_ttl`.
    Idle,
}

/// The call an event is about, with its client state at the time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallSubject {
    /// The call.
    pub call: Arc<CallIdentity>,
    /// Its client state when the event happened.
    pub client_state: Option<Arc<str>>,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// A call was created (dial or transfer).
    CallInitiated(CallSubject),
    /// A call was answered (at once, for dialed calls).
    CallAnswered(CallSubject),
    /// A call left a queue.
    CallDequeued {
        /// The call.
        subject: CallSubject,
        /// The queue's name.
        queue: Arc<str>,
        /// The position it had when it left.
        queue_position: usize,
        /// Why it left.
        reason: DequeueReason,
        /// Whole seconds waited.
        wait_time_secs: u64,
    },
    /// A call was bridged (one event per leg).
    CallBridged(CallSubject),
    /// A call hung up.
    CallHangup {
        /// The call.
        subject: CallSubject,
        /// Who ended it.
        source: HangupSource,
    },
    /// A call joined a queue.
    CallEnqueued {
        /// The call.
        subject: CallSubject,
        /// The queue's name.
        queue: Arc<str>,
        /// Its 1-based position.
        current_position: usize,
        /// The queue's average wait when it joined.
        queue_avg_wait_time_secs: u64,
    },
    /// \[ext\] A queue was created (stream subscribers only, never webhooks).
    QueueCreated {
        /// The queue's name.
        queue: Arc<str>,
        /// Its new id.
        queue_id: Uuid,
    },
    /// \[ext\] A queue was deleted (stream subscribers only, never webhooks).
    QueueDeleted {
        /// The queue's name.
        queue: Arc<str>,
        /// Its id.
        queue_id: Uuid,
        /// Why.
        reason: QueueDeletedReason,
    },
}

/// What an event says besides the call it is about, with a queue's name as `Q`: a `&str`
/// where events are made and read, its bytes in the record or a span of its batch's text
/// where they travel (`batch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fact<Q> {
    CallInitiated,
    CallAnswered,
    CallDequeued { queue: Q, queue_position: usize, reason: DequeueReason, wait_time_secs: u64 },
    CallBridged,
    CallHangup { source: HangupSource },
    CallEnqueued { queue: Q, current_position: usize, queue_avg_wait_time_secs: u64 },
    QueueCreated { queue: Q, queue_id: Uuid },
    QueueDeleted { queue: Q, queue_id: Uuid, reason: QueueDeletedReason },
}

impl<Q> Fact<Q> {
    /// The same fact with its queue name turned into an `R`.
    pub(crate) fn map<R>(self, f: impl FnOnce(Q) -> R) -> Fact<R> {
        match self {
            Self::CallInitiated => Fact::CallInitiated,
            Self::CallAnswered => Fact::CallAnswered,
            Self::CallDequeued { queue, queue_position, reason, wait_time_secs } => {
                Fact::CallDequeued { queue: f(queue), queue_position, reason, wait_time_secs }
            }
            Self::CallBridged => Fact::CallBridged,
            Self::CallHangup { source } => Fact::CallHangup { source },
            Self::CallEnqueued { queue, current_position, queue_avg_wait_time_secs } => {
                Fact::CallEnqueued { queue: f(queue), current_position, queue_avg_wait_time_secs }
            }
            Self::QueueCreated { queue, queue_id } => Fact::QueueCreated { queue: f(queue), queue_id },
            Self::QueueDeleted { queue, queue_id, reason } => {
                Fact::QueueDeleted { queue: f(queue), queue_id, reason }
            }
        }
    }

    /// The same fact with its queue name borrowed.
    pub(crate) const fn as_ref(&self) -> Fact<&Q> {
        match self {
            Self::CallInitiated => Fact::CallInitiated,
            Self::CallAnswered => Fact::CallAnswered,
            Self::CallDequeued { queue, queue_position, reason, wait_time_secs } => Fact::CallDequeued {
                queue,
                queue_position: *queue_position,
                reason: *reason,
                wait_time_secs: *wait_time_secs,
            },
            Self::CallBridged => Fact::CallBridged,
            Self::CallHangup { source } => Fact::CallHangup { source: *source },
            Self::CallEnqueued { queue, current_position, queue_avg_wait_time_secs } => Fact::CallEnqueued {
                queue,
                current_position: *current_position,
                queue_avg_wait_time_secs: *queue_avg_wait_time_secs,
            },
            Self::QueueCreated { queue, queue_id } => Fact::QueueCreated { queue, queue_id: *queue_id },
            Self::QueueDeleted { queue, queue_id, reason } => {
                Fact::QueueDeleted { queue, queue_id: *queue_id, reason: *reason }
            }
        }
    }

    /// The `event_type` on the wire.
    pub(crate) const fn event_type(&self) -> &'static str {
        match self {
            Self::CallInitiated => "call.initiated",
            Self::CallAnswered => "call.answered",
            Self::CallDequeued { .. } => "call.dequeued",
            Self::CallBridged => "call.bridged",
            Self::CallHangup { .. } => "call.hangup",
            Self::CallEnqueued { .. } => "call.enqueued",
            Self::QueueCreated { .. } => "queue.created",
            Self::QueueDeleted { .. } => "queue.deleted",
        }
    }

    /// The order of kinds within one command (docs/behaviour.md §4: dequeued, bridged, hangup,
    /// enqueued; a call is created before anything happens to it, a queue before a call
    /// joins it).
    pub(crate) const fn rank(&self) -> u8 {
        match self {
            Self::CallInitiated => 0,
            Self::CallAnswered => 1,
            Self::CallDequeued { .. } => 2,
            Self::QueueDeleted { .. } => 3,
            Self::CallBridged => 4,
            Self::CallHangup { .. } => 5,
            Self::QueueCreated { .. } => 6,
            Self::CallEnqueued { .. } => 7,
        }
    }
}

impl EventKind {
    /// The kind of a fact about `subject` (`Some` exactly for the facts about a call).
    pub(crate) fn new(subject: Option<CallSubject>, fact: Fact<Arc<str>>) -> Self {
        let mut subject = subject;
        let mut subject = || subject.take().expect("a call event has its call");
        match fact {
            Fact::CallInitiated => Self::CallInitiated(subject()),
            Fact::CallAnswered => Self::CallAnswered(subject()),
            Fact::CallDequeued { queue, queue_position, reason, wait_time_secs } => {
                Self::CallDequeued { subject: subject(), queue, queue_position, reason, wait_time_secs }
            }
            Fact::CallBridged => Self::CallBridged(subject()),
            Fact::CallHangup { source } => Self::CallHangup { subject: subject(), source },
            Fact::CallEnqueued { queue, current_position, queue_avg_wait_time_secs } => {
                Self::CallEnqueued { subject: subject(), queue, current_position, queue_avg_wait_time_secs }
            }
            Fact::QueueCreated { queue, queue_id } => Self::QueueCreated { queue, queue_id },
            Fact::QueueDeleted { queue, queue_id, reason } => Self::QueueDeleted { queue, queue_id, reason },
        }
    }

    /// What the event says besides its call.
    pub(crate) fn fact(&self) -> Fact<&str> {
        match self {
            Self::CallInitiated(_) => Fact::CallInitiated,
            Self::CallAnswered(_) => Fact::CallAnswered,
            Self::CallDequeued { queue, queue_position, reason, wait_time_secs, .. } => Fact::CallDequeued {
                queue,
                queue_position: *queue_position,
                reason: *reason,
                wait_time_secs: *wait_time_secs,
            },
            Self::CallBridged(_) => Fact::CallBridged,
            Self::CallHangup { source, .. } => Fact::CallHangup { source: *source },
            Self::CallEnqueued { queue, current_position, queue_avg_wait_time_secs, .. } => {
                Fact::CallEnqueued {
                    queue,
                    current_position: *current_position,
                    queue_avg_wait_time_secs: *queue_avg_wait_time_secs,
                }
            }
            Self::QueueCreated { queue, queue_id } => Fact::QueueCreated { queue, queue_id: *queue_id },
            Self::QueueDeleted { queue, queue_id, reason } => {
                Fact::QueueDeleted { queue, queue_id: *queue_id, reason: *reason }
            }
        }
    }

    /// The `event_type` on the wire.
    #[must_use]
    pub fn event_type(&self) -> &'static str {
        self.fact().event_type()
    }

    /// The call the event is about, if it is a call event.
    #[must_use]
    pub const fn subject(&self) -> Option<&CallSubject> {
        match self {
            Self::CallInitiated(s) | Self::CallAnswered(s) | Self::CallBridged(s) => Some(s),
            Self::CallDequeued { subject, .. }
            | Self::CallHangup { subject, .. }
            | Self::CallEnqueued { subject, .. } => Some(subject),
            Self::QueueCreated { .. } | Self::QueueDeleted { .. } => None,
        }
    }

    /// Whether the event goes to webhooks (the Telnyx ones) or only to streams (\[ext\]).
    #[must_use]
    pub const fn is_webhook_event(&self) -> bool {
        self.subject().is_some()
    }
}

/// The stable 64-bit key of a tenant in its event ids: FNV-1a (64-bit) of the tenant's name.
/// A fixed, documented function, so that event ids come out the same in every process.
pub(crate) fn tenant_event_key(tenant: &str) -> u64 {
    tenant.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The id of an event, derived (not drawn at random) from where the event stands: its
/// tenant, the sequence number of the command that made it, and its index among that
/// command's events (in publishing order). The same change gets the same id in every
/// process, so a journal replayed after a restart reproduces its events' ids. A UUID of
/// version 8 (RFC 9562, custom layout), big-endian:
///
/// ```text
///  bits   0..48   the top 48 bits of the tenant's key (FNV-1a 64 of its name)
///  bits  48..52   version: 8
///  bits  52..64   the event's index within its command (12 bits)
///  bits  64..66   variant: 0b10
///  bits  66..128  the command's sequence number (62 bits)
/// ```
///
/// Within a tenant the ids are unique (a sequence number never repeats, and a command makes
/// far fewer than 4096 events); tenants whose keys share their top 48 bits would share ids.
pub(crate) fn event_id(tenant_key: u64, seq: u64, index: usize) -> Uuid {
    let index = (index as u64) & 0xfff;
    let high = (tenant_key & !0xffff) | (0x8 << 12) | index;
    let low = (0b10 << 62) | (seq & ((1 << 62) - 1));
    Uuid::from_u64_pair(high, low)
}

/// One event, serialised as the `data` object of the Telnyx envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Unique id of the event: a UUID of version 8 derived from the tenant, the sequence
    /// number and the event's index within its command (the same in every process).
    pub id: Uuid,
    /// When the change happened (for a timeout: the deadline itself).
    pub occurred_at: Timestamp,
    /// The tenant whose call or queue changed.
    pub tenant: Arc<str>,
    /// What happened.
    pub kind: EventKind,
    /// The tenant's sequence number of the command that made the event (see
    /// [`Event::seq`]). Not part of the Telnyx JSON.
    pub(crate) seq: u64,
}

impl Event {
    /// The number the tenant's sequence gave the command (or timer firing) that made this
    /// event: every event of one command carries the same number, and the numbers of a
    /// tenant's state-changing commands are dense and increasing (see
    /// [`Tenant::last_seq`](crate::Tenant::last_seq)).
    #[must_use]
    pub const fn seq(&self) -> u64 {
        self.seq
    }

    /// The `event_type` on the wire.
    #[must_use]
    pub fn event_type(&self) -> &'static str {
        self.kind.event_type()
    }

    /// The payload object alone (docs/behaviour.md §4).
    #[must_use]
    pub fn payload(&self) -> Payload<'_> {
        let subject = self.kind.subject().map(|s| (&*s.call, s.client_state.as_deref()));
        Payload::new(subject, self.kind.fact())
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_event(s, self.event_type(), self.id, self.occurred_at, &self.payload())
    }
}

/// The `data` object of the Telnyx envelope, of an [`Event`] or an
/// [`EventRef`](crate::EventRef).
pub(crate) fn serialize_event<S: Serializer>(
    s: S,
    event_type: &str,
    id: Uuid,
    occurred_at: Timestamp,
    payload: &Payload<'_>,
) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(5))?;
    m.serialize_entry("record_type", "event")?;
    m.serialize_entry("event_type", event_type)?;
    m.serialize_entry("id", &id)?;
    m.serialize_entry("occurred_at", &occurred_at)?;
    m.serialize_entry("payload", payload)?;
    m.end()
}

/// The `payload` object of an event: its call (with its client state), if it is about one,
/// and what it says.
#[derive(Debug, Clone, Copy)]
pub struct Payload<'a> {
    subject: Option<(&'a CallIdentity, Option<&'a str>)>,
    fact: Fact<&'a str>,
}

impl<'a> Payload<'a> {
    pub(crate) const fn new(
        subject: Option<(&'a CallIdentity, Option<&'a str>)>,
        fact: Fact<&'a str>,
    ) -> Self {
        Self { subject, fact }
    }
}

impl Serialize for Payload<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some((c, client_state)) = self.subject {
            m.serialize_entry("call_control_id", &*c.call_control_id)?;
            m.serialize_entry("call_leg_id", &c.call_leg_id)?;
            m.serialize_entry("call_session_id", &c.call_session_id)?;
            m.serialize_entry("connection_id", &*c.connection_id)?;
            // Telnyx's schemas type client_state as a string: absent, it is left out (no null).
            if let Some(state) = client_state {
                m.serialize_entry("client_state", state)?;
            }
            match self.fact {
                Fact::CallInitiated | Fact::CallAnswered | Fact::CallBridged | Fact::CallHangup { .. } => {
                    m.serialize_entry("from", &*c.from)?;
                    m.serialize_entry("to", &*c.to)?;
                }
                _ => {}
            }
        }
        let start_time = self.subject.map(|(c, _)| c.start_time);
        match self.fact {
            Fact::CallInitiated => {
                m.serialize_entry("direction", "outgoing")?;
                m.serialize_entry("state", "bridging")?;
            }
            Fact::CallAnswered => {
                m.serialize_entry("start_time", &start_time)?;
                m.serialize_entry("state", "answered")?;
            }
            Fact::CallDequeued { queue, queue_position, reason, wait_time_secs } => {
                m.serialize_entry("queue", queue)?;
                m.serialize_entry("queue_position", &queue_position)?;
                m.serialize_entry("reason", &reason)?;
                m.serialize_entry("wait_time_secs", &wait_time_secs)?;
            }
            Fact::CallBridged => {}
            Fact::CallHangup { source } => {
                m.serialize_entry("start_time", &start_time)?;
                m.serialize_entry("hangup_cause", "normal_clearing")?;
                m.serialize_entry("hangup_source", &source)?;
                m.serialize_entry("sip_hangup_cause", "unspecified")?;
                m.serialize_entry("state", "hangup")?;
            }
            Fact::CallEnqueued { queue, current_position, queue_avg_wait_time_secs } => {
                m.serialize_entry("queue", queue)?;
                m.serialize_entry("current_position", &current_position)?;
                m.serialize_entry("queue_avg_wait_time_secs", &queue_avg_wait_time_secs)?;
            }
            Fact::QueueCreated { queue, queue_id } => {
                m.serialize_entry("queue", queue)?;
                m.serialize_entry("queue_id", &queue_id)?;
            }
            Fact::QueueDeleted { queue, queue_id, reason } => {
                m.serialize_entry("queue", queue)?;
                m.serialize_entry("queue_id", &queue_id)?;
                m.serialize_entry("reason", &reason)?;
            }
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout is a promise to journals: these values must never change.
    #[test]
    fn event_ids_have_a_fixed_layout() {
        assert_eq!(tenant_event_key(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(tenant_event_key("a"), 0xaf63_dc4c_8601_ec8c);
        let key = tenant_event_key("default");
        let id = event_id(key, 7, 2);
        assert_eq!(id.get_version_num(), 8);
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        let (high, low) = id.as_u64_pair();
        assert_eq!(high >> 16, key >> 16);
        assert_eq!(high & 0xfff, 2);
        assert_eq!(low & ((1 << 62) - 1), 7);
        assert_ne!(event_id(key, 7, 3), id);
        assert_ne!(event_id(key, 8, 2), id);
        assert_ne!(event_id(tenant_event_key("other"), 7, 2), id);
        assert_eq!(id.to_string(), event_id(tenant_event_key("default"), 7, 2).to_string());
    }
}
