//! Commands' events as they travel to subscribers: in batches, one per command, each
//! carrying its tenant, its sequence number and the calls its events are about once, with
//! events as compact records that refer to them by index.
//!
//! A command writes its events into its tenant's [`Batches`] (kept from command to
//! command, so nothing is allocated in the steady state); the publish appends them to each
//! subscriber's `Batches` in a few block copies; the reader swaps the whole of it out and
//! reads the events in place, as [`EventRef`] views. Nothing in a record owns a reference
//! count: a call's identity is held once per batch (shared with the call's record, so its
//! count changes once per batch and call, not per event), and names and client states are
//! copied into the batch's text. Event ids are derived when asked (see `event::event_id`).

use std::sync::Arc;

use uuid::Uuid;

use crate::call::CallIdentity;
use crate::clock::Timestamp;
use crate::event::{CallSubject, Event, EventKind, Fact, Payload, event_id};

/// A piece of a command's text: byte offsets from the start of the command's text (a
/// command's text is small: its queue names and client states).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Span {
    start: u32,
    end: u32,
}

/// No call: the record of a queue event.
const NO_CALL: u32 = u32::MAX;

/// One event: what happened, when, about which of its command's calls (an index into them).
#[derive(Clone, Copy, Debug)]
struct Record {
    occurred_at: Timestamp,
    call: u32,
    client_state: Option<Span>,
    fact: Fact<Span>,
}

/// One command's events: where they, its calls and its text start in the [`Batches`], and
/// what they share (the tenant and the command's number).
#[derive(Clone, Copy, Debug)]
struct Header {
    seq: u64,
    /// The tenant's part of the event ids.
    tenant_key: u64,
    /// Where the tenant's name is in the whole text (which an unread channel can grow past
    /// 4 GiB: offsets into it are `usize`), written by the publish once for a run of batches
    /// of one tenant.
    tenant: (usize, usize),
    /// The address of the tenant's name as the engine holds it: tenants live as long as
    /// their engine, so while it publishes, equal addresses are the same tenant (compared
    /// instead of the names).
    tenant_at: usize,
    records: u32,
    calls: u32,
    text: usize,
}

/// The batches of one or more commands, in their order: a command's staging, and each
/// subscriber's queue of events.
#[derive(Debug, Default)]
pub(crate) struct Batches {
    headers: Vec<Header>,
    records: Vec<Record>,
    /// The calls of each command's events, each once per command.
    calls: Vec<Arc<CallIdentity>>,
    text: String,
    /// Where the open command (the one whose events are being written) starts.
    open: (u32, u32, usize),
}

impl Batches {
    /// The number of events held.
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Empties it, keeping its room (the identities are released).
    pub(crate) fn clear(&mut self) {
        self.headers.clear();
        self.records.clear();
        self.calls.clear();
        self.text.clear();
        self.open = (0, 0, 0);
    }

    /// Empties it, keeping at most `events` events' worth of room (a burst's room is not
    /// kept for ever).
    pub(crate) fn clear_to(&mut self, events: usize) {
        self.clear();
        self.headers.shrink_to(events);
        self.records.shrink_to(events);
        self.calls.shrink_to(events);
        self.text.shrink_to(events * 64);
    }

    /// Copies `s` into the open command's text.
    fn text_span(&mut self, s: &str) -> Span {
        let start = (self.text.len() - self.open.2) as u32;
        self.text.push_str(s);
        Span { start, end: start + s.len() as u32 }
    }

    /// Adds an event of the open command: about `call` (its identity and client state) if
    /// it is a call event. Out of line, as `close`: only a command someone listens to
    /// comes here.
    #[inline(never)]
    pub(crate) fn push(
        &mut self,
        occurred_at: Timestamp,
        call: Option<(&Arc<CallIdentity>, Option<&str>)>,
        fact: Fact<&str>,
    ) {
        let (call, client_state) = match call {
            None => (NO_CALL, None),
            Some((ident, state)) => {
                let open = &self.calls[self.open.1 as usize..];
                // A command's events are about one or two calls: a scan finds them.
                let found = open.iter().position(|c| Arc::ptr_eq(c, ident));
                let at = found.unwrap_or(open.len());
                if found.is_none() {
                    self.calls.push(ident.clone());
                }
                (at as u32, state.map(|s| self.text_span(s)))
            }
        };
        let fact = fact.map(|queue| self.text_span(queue));
        self.records.push(Record { occurred_at, call, client_state, fact });
    }

    /// Ends the open command: its events, if any, become a batch with its tenant's key and
    /// its number, in publishing order (docs/behaviour.md §4: by kind, stable within a
    /// kind).
    #[inline(never)]
    pub(crate) fn close(&mut self, tenant_key: u64, seq: u64) {
        let (records, calls, text) = self.open;
        let mine = &mut self.records[records as usize..];
        if mine.is_empty() {
            return;
        }
        if !mine.is_sorted_by_key(|r| r.fact.rank()) {
            mine.sort_by_key(|r| r.fact.rank());
        }
        self.headers.push(Header { seq, tenant_key, tenant: (0, 0), tenant_at: 0, records, calls, text });
        self.open = (self.records.len() as u32, self.calls.len() as u32, self.text.len());
    }

    /// Appends the batches of `from`, all of tenant `tenant` (the engine's copy of its
    /// name), its identities moved with `take` (the last use of `from`, which is to be
    /// cleared), else shared. The tenant's name is written once for a run of its batches.
    pub(crate) fn append(&mut self, from: &mut Self, tenant: &str, take: bool) {
        let tenant_at = tenant.as_ptr() as usize;
        let tenant = match self.headers.last() {
            Some(h) if h.tenant_at == tenant_at => h.tenant,
            _ => {
                let start = self.text.len();
                self.text.push_str(tenant);
                (start, self.text.len())
            }
        };
        let (records, calls, text) = (self.records.len() as u32, self.calls.len() as u32, self.text.len());
        self.headers.extend(from.headers.iter().map(|h| Header {
            tenant,
            tenant_at,
            records: h.records + records,
            calls: h.calls + calls,
            text: h.text + text,
            ..*h
        }));
        self.records.extend_from_slice(&from.records);
        if take {
            self.calls.append(&mut from.calls);
        } else {
            self.calls.extend_from_slice(&from.calls);
        }
        self.text.push_str(&from.text);
        self.open = (self.records.len() as u32, self.calls.len() as u32, self.text.len());
    }
}

/// Where a reader is in the [`Batches`] it holds.
#[derive(Debug, Default)]
pub(crate) struct Cursor {
    header: u32,
    index: u32,
}

impl Cursor {
    /// Whether every event of `batches` was read.
    #[inline]
    pub(crate) fn done(&self, batches: &Batches) -> bool {
        self.index as usize >= batches.records.len()
    }

    /// The next event of `batches`, if any is left, and steps past it.
    #[inline]
    pub(crate) fn next<'b>(&mut self, batches: &'b Batches) -> Option<EventRef<'b>> {
        if self.done(batches) {
            return None;
        }
        let index = self.index;
        while batches.headers.get(self.header as usize + 1).is_some_and(|h| h.records <= index) {
            self.header += 1;
        }
        self.index += 1;
        Some(EventRef { batches, header: self.header, index })
    }

    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }
}

/// The names of the last owned [`Event`] a reader made: the next ones share them (one
/// allocation a name, not one an event, for a reader of owned events).
#[derive(Debug, Default)]
pub(crate) struct Names {
    tenant: Option<Arc<str>>,
    queue: Option<Arc<str>>,
}

impl Names {
    /// `name` as an `Arc`: the one in `last` if equal, else a new one, kept there.
    fn shared(last: &mut Option<Arc<str>>, name: &str) -> Arc<str> {
        match last {
            Some(l) if **l == *name => l.clone(),
            _ => last.insert(name.into()).clone(),
        }
    }
}

/// One event as it was delivered: a view into its batch, read in place. It gives what an
/// [`Event`] holds ([`EventRef::to_event`] makes one) and serialises the same way.
#[derive(Clone, Copy, Debug)]
pub struct EventRef<'a> {
    batches: &'a Batches,
    header: u32,
    index: u32,
}

impl<'a> EventRef<'a> {
    fn header(self) -> &'a Header {
        &self.batches.headers[self.header as usize]
    }

    fn record(self) -> &'a Record {
        &self.batches.records[self.index as usize]
    }

    /// A piece of its command's text.
    fn text(self, span: Span) -> &'a str {
        let base = self.header().text;
        &self.batches.text[base + span.start as usize..base + span.end as usize]
    }

    /// The number the tenant's sequence gave the command that made the event (see
    /// [`Event::seq`]).
    #[must_use]
    pub fn seq(self) -> u64 {
        self.header().seq
    }

    /// The event's id (see [`Event::id`]): the same as the [`Event`] made from it.
    #[must_use]
    pub fn id(self) -> Uuid {
        let h = self.header();
        event_id(h.tenant_key, h.seq, (self.index - h.records) as usize)
    }

    /// When the change happened.
    #[must_use]
    pub fn occurred_at(self) -> Timestamp {
        self.record().occurred_at
    }

    /// The tenant whose call or queue changed.
    #[must_use]
    pub fn tenant(self) -> &'a str {
        let (start, end) = self.header().tenant;
        &self.batches.text[start..end]
    }

    /// The `event_type` on the wire.
    #[must_use]
    pub fn event_type(self) -> &'static str {
        self.record().fact.event_type()
    }

    /// The call the event is about, if it is a call event.
    #[must_use]
    pub fn call(self) -> Option<&'a Arc<CallIdentity>> {
        let call = self.record().call;
        if call == NO_CALL { None } else { self.batches.calls.get((self.header().calls + call) as usize) }
    }

    /// The call's client state when the event happened (a call event of a call that has one).
    #[must_use]
    pub fn client_state(self) -> Option<&'a str> {
        self.record().client_state.map(|s| self.text(s))
    }

    /// Whether the event goes to webhooks (the Telnyx ones) or only to streams (\[ext\]).
    #[must_use]
    pub fn is_webhook_event(self) -> bool {
        self.record().call != NO_CALL
    }

    /// What the event says besides its call, its names read from the batch.
    fn fact(self) -> Fact<&'a str> {
        self.record().fact.map(|s| self.text(s))
    }

    /// The payload object alone (docs/behaviour.md §4).
    #[must_use]
    pub fn payload(self) -> Payload<'a> {
        Payload::new(self.call().map(|c| (&**c, self.client_state())), self.fact())
    }

    /// The event as an owned [`Event`], its tenant's and queue's names those of `names`
    /// when equal (a reader's last ones, updated here).
    pub(crate) fn to_event_with(self, names: &mut Names) -> Event {
        let subject = self
            .call()
            .map(|c| CallSubject { call: c.clone(), client_state: self.client_state().map(Into::into) });
        Event {
            id: self.id(),
            occurred_at: self.occurred_at(),
            tenant: Names::shared(&mut names.tenant, self.tenant()),
            kind: EventKind::new(subject, self.fact().map(|q| Names::shared(&mut names.queue, q))),
            seq: self.seq(),
        }
    }

    /// The event as an owned [`Event`].
    #[must_use]
    pub fn to_event(self) -> Event {
        self.to_event_with(&mut Names::default())
    }
}

impl serde::Serialize for EventRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::event::serialize_event(s, self.event_type(), self.id(), self.occurred_at(), &self.payload())
    }
}
