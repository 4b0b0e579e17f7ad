//! Commands' events as they travel to subscribers: in batches, one per command, each
//! carrying its tenant, its sequence number and its instant once, with events as compact
//! records.
//!
//! A command writes its events straight into the `Batches` of its tenant's one listening
//! channel, lent to it (opened with [`Batches::open_lent`], closed with
//! [`Batches::close_lent`]), or else into its tenant's own [`Batches`] (kept from command to
//! command, so nothing is allocated in the steady state), which the publish appends to each
//! subscriber's `Batches` in a few block copies; the reader swaps the whole of it out and
//! reads the events in place, as [`EventRef`] views. Nothing in a record owns a reference
//! count: the calls' identities (shared with the calls' records) are held beside the
//! records, each once (however many events are about its call), and each event names its
//! call's by index; a queue's name of 4 to 16 bytes is copied into its
//! record, longer or shorter names and client states into the batch's text. Event ids are
//! derived when asked (see `event::event_id`).

use std::sync::Arc;

use uuid::Uuid;

use crate::call::{CallIdentity, RecordIdentity};
use crate::clock::Timestamp;
use crate::event::{CallSubject, Event, EventKind, Fact, Payload, event_id};
use crate::text;

/// A piece of a command's text: byte offsets from the start of the command's text (a
/// command's text is small: its client states and its queue names of under 4 or over 16
/// bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// No text: a call without a client state (no `Option` tag in every record).
    const NONE: Self = Self { start: u32::MAX, end: u32::MAX };
}

/// A queue's name in a record: in it when it is 4 to 16 bytes (as names usually are: then
/// neither the push nor the publish copies a text of variable length), else in the
/// command's text.
#[derive(Clone, Copy, Debug)]
enum Name {
    /// Its bytes, the first `len` of `bytes`.
    Inline {
        len: u8,
        bytes: NameBytes,
    },
    Text(Span),
}

/// A short name's bytes, aligned as two words (copied as such with their record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(8))]
struct NameBytes([u8; 16]);

impl Name {
    /// `name`'s bytes in a record, if it is 4 to 16 bytes long ([`text::packed`]: no call of
    /// `memcpy`).
    #[inline]
    fn inline(name: &str) -> Option<Self> {
        let bytes = text::packed(name.as_bytes())?;
        Some(Self::Inline { len: name.len() as u8, bytes: NameBytes(bytes.to_le_bytes()) })
    }
}

/// One event: what happened (about the call its index in the [`Batches`]' calls names). When
/// is its command's (see [`Header`]).
#[derive(Clone, Copy, Debug)]
struct Record {
    /// `Span::NONE`: none.
    client_state: Span,
    fact: Fact<Name>,
}

/// One command's events: where they and its text start in the [`Batches`], and
/// what they share (the tenant, the command's number and its instant: every event of a
/// command happens at the instant it runs at, a timer's firing at its own).
#[derive(Clone, Copy, Debug)]
struct Header {
    seq: u64,
    occurred_at: Timestamp,
    /// Where its text starts in the whole text (which an unread channel can grow past
    /// 4 GiB: offsets into it are `usize`).
    text: usize,
    records: u32,
    /// Its tenant: an index into the [`Batches`]' runs of one tenant (0 while staged).
    tenant: u32,
}

/// A tenant whose batches follow one another in a [`Batches`]: written by the publish once
/// for a run of batches of one tenant, so that a header names its tenant in 4 bytes.
#[derive(Clone, Copy, Debug)]
struct TenantRun {
    /// The tenant's part of the event ids.
    key: u64,
    /// Where its name is in the whole text.
    name: (usize, usize),
    /// The address of the tenant's name as the engine holds it: tenants live as long as
    /// their engine, so while it publishes, equal addresses are the same tenant (compared
    /// instead of the names).
    at: usize,
}

/// A queue event's call in [`Batches`]' calls: none.
const NO_CALL: u32 = u32::MAX;

/// The batches of one or more commands, in their order: a command's staging, and each
/// subscriber's queue of events.
#[derive(Debug, Default)]
pub(crate) struct Batches {
    headers: Vec<Header>,
    records: Vec<Record>,
    /// The call of each record, at the record's index: its identity's index in `held`
    /// ([`NO_CALL`]: a queue event).
    calls: Vec<u32>,
    /// The identities of the records' calls, each once: an event about a call whose
    /// identity is held already (the call's record says where, see [`Batches::push`]) clones
    /// no `Arc`, and a reader releases each once. An atomic count on the identity's own
    /// cache line, which the command does not otherwise read, twice an event (the push's
    /// clone, the reader's release) cost more time than its instructions said.
    held: Vec<Arc<CallIdentity>>,
    text: String,
    /// The tenants of the headers, one per run of batches of one tenant.
    tenants: Vec<TenantRun>,
    /// Where the open command (the one whose events are being written) starts.
    open: (u32, usize),
    /// The rank of the open command's last event, and whether one came before an event of
    /// a lower rank (then `close` sorts them): kept as they come, so that the usual command,
    /// whose events come in order, is not scanned again.
    last_rank: u8,
    unsorted: bool,
}

impl Batches {
    /// The number of events held.
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Whether it has room for records (tests: tells a buffer handed over from a new one).
    #[cfg(test)]
    pub(crate) fn has_room(&self) -> bool {
        self.records.capacity() > 0
    }

    /// Empties it, keeping its room (the identities are released).
    pub(crate) fn clear(&mut self) {
        self.headers.clear();
        self.records.clear();
        self.calls.clear();
        self.held.clear();
        self.text.clear();
        self.tenants.clear();
        self.open = (0, 0);
        self.last_rank = 0;
        self.unsorted = false;
    }

    /// Empties it, keeping at most `events` events' worth of room (a burst's room is not
    /// kept for ever).
    pub(crate) fn clear_to(&mut self, events: usize) {
        self.clear();
        self.headers.shrink_to(events);
        self.records.shrink_to(events);
        self.calls.shrink_to(events);
        self.held.shrink_to(events);
        self.text.shrink_to(events * 64);
        self.tenants.shrink_to(events);
    }

    /// Copies `s` into the open command's text.
    fn text_span(&mut self, s: &str) -> Span {
        let start = (self.text.len() - self.open.1) as u32;
        self.text.push_str(s);
        Span { start, end: start + s.len() as u32 }
    }

    /// Adds an event of the open command: about `call` (its identity, held as
    /// [`Batches::hold`] says) and its `client_state` if it is a call event (each its own
    /// argument, passed in registers). Out of line, as `close`: only a command someone
    /// listens to comes here.
    #[inline(never)]
    pub(crate) fn push(
        &mut self,
        call: Option<&RecordIdentity>,
        client_state: Option<&str>,
        fact: Fact<&str>,
    ) {
        let client_state = client_state.map_or(Span::NONE, |s| self.text_span(s));
        let call = call.map_or(NO_CALL, |ident| self.hold(ident));
        self.calls.push(call);
        let rank = fact.rank();
        self.unsorted |= rank < self.last_rank;
        self.last_rank = rank;
        let fact = fact.map(|queue| Name::inline(queue).unwrap_or_else(|| Name::Text(self.text_span(queue))));
        self.records.push(Record { client_state, fact });
    }

    /// The index of `ident` among the held identities: its `held_at`, the call record's hint,
    /// when these batches hold it there (the same allocation: a held identity is not freed,
    /// so its address is no other's), else a clone added, and the hint set to it. The hint
    /// may name another batches' index (the call's last event went elsewhere, or these were
    /// read and emptied since): the check finds another identity there, or none.
    #[inline]
    fn hold(&mut self, ident: &RecordIdentity) -> u32 {
        let at = ident.held_at.get();
        if self.held.get(at as usize).is_some_and(|held| Arc::ptr_eq(held, ident)) {
            return at;
        }
        self.hold_new(ident)
    }

    /// [`Batches::hold`] for an identity not held here yet. Out of line: the push of a
    /// call's second event on (in a batch, or in a channel's unread events) does not come
    /// here.
    #[cold]
    fn hold_new(&mut self, ident: &RecordIdentity) -> u32 {
        let at = self.held.len() as u32;
        self.held.push(Arc::clone(ident));
        ident.held_at.set(at);
        at
    }

    /// Ends the open command: its events, if any, become a batch with its number and the
    /// instant it ran at, in publishing order (docs/behaviour.md §4: by kind, stable within
    /// a kind).
    #[inline(never)]
    pub(crate) fn close(&mut self, seq: u64, occurred_at: Timestamp) {
        self.close_lent(seq, occurred_at, 0);
    }

    /// [`Batches::close`] for tenant run `tenant` (0 while staged), the end of a command
    /// opened by [`Batches::open_lent`] with the run it gave; whether it made a batch (the
    /// command had events).
    #[inline]
    pub(crate) fn close_lent(&mut self, seq: u64, occurred_at: Timestamp, tenant: u32) -> bool {
        let Some(header) = self.open_header(seq, occurred_at) else { return false };
        self.order_open();
        self.last_rank = 0;
        self.headers.push(Header { tenant, ..header });
        self.open = (self.records.len() as u32, self.text.len());
        true
    }

    /// Opens a command of `tenant` (the engine's copy of its name) whose event ids start
    /// with `key` at the end of these batches (a channel lent to the command, which writes
    /// its events here: nothing staged, nothing copied); returns its tenant's run, for
    /// [`Batches::close_lent`].
    #[inline]
    pub(crate) fn open_lent(&mut self, tenant: &str, key: u64) -> u32 {
        self.discard_unclosed();
        let run = self.run_of(tenant, key, tenant.as_ptr() as usize);
        self.open = (self.records.len() as u32, self.text.len());
        run
    }

    /// Ends a command opened by [`Batches::open_lent`] that made no batch (a read, a refused
    /// command, a command that changed nothing): forgets its events, if any, and the run of
    /// its tenant if the command added it (no batch names it), so that commands of several
    /// tenants sharing an idle channel leave nothing behind.
    #[cold]
    pub(crate) fn end_lent_without_batch(&mut self, run: u32) {
        self.discard_unclosed();
        let named = self.headers.last().is_some_and(|h| h.tenant == run);
        if !named
            && run as usize + 1 == self.tenants.len()
            && let Some(added) = self.tenants.pop()
        {
            self.text.truncate(added.name.0);
            self.open = (self.records.len() as u32, self.text.len());
        }
    }

    /// What the batches hold besides their events: (tenant runs, text bytes) (tests).
    #[cfg(test)]
    pub(crate) fn footprint(&self) -> (usize, usize) {
        (self.tenants.len(), self.text.len())
    }

    /// Forgets the events of a command opened by [`Batches::open_lent`] that did not end
    /// (it panicked, and its lent channel was unlocked as the stack unwound), so that no
    /// event is read without its batch. Where no command writes, the open command starts
    /// where the events end: kept so by everything that adds batches.
    #[inline]
    pub(crate) fn discard_unclosed(&mut self) {
        if self.open != (self.records.len() as u32, self.text.len()) {
            self.discard_open();
        }
    }

    /// Forgets the open command's events, and the identities held for them alone (added
    /// last: an idle channel holds no call alive after a command that panicked).
    #[cold]
    pub(crate) fn discard_open(&mut self) {
        let (records, text) = self.open;
        self.records.truncate(records as usize);
        self.calls.truncate(records as usize);
        let named = self.calls.iter().filter(|&&c| c != NO_CALL).max().map_or(0, |&c| c as usize + 1);
        self.held.truncate(named);
        self.text.truncate(text);
        self.last_rank = 0;
        self.unsorted = false;
    }

    /// The header of the open command's events as the batch of `seq` at `occurred_at`
    /// (tenant 0, as staged), or `None` when it has none.
    #[inline]
    fn open_header(&self, seq: u64, occurred_at: Timestamp) -> Option<Header> {
        let (records, text) = self.open;
        (self.records.len() > records as usize).then_some(Header {
            seq,
            occurred_at,
            text,
            records,
            tenant: 0,
        })
    }

    /// Puts the open command's events in publishing order (see [`Batches::close`]), for a
    /// publish that writes their header where it copies them.
    #[inline]
    pub(crate) fn order_open(&mut self) {
        if std::mem::take(&mut self.unsorted) {
            self.sort_open(self.open.0 as usize);
        }
    }

    /// Sorts the open command's events (from record `first` on) by kind, stable within a
    /// kind, their calls with them. Out of line: a command's events rarely come out of order.
    #[cold]
    fn sort_open(&mut self, first: usize) {
        let mut open: Vec<(Record, u32)> =
            self.records.drain(first..).zip(self.calls.drain(first..)).collect();
        open.sort_by_key(|(r, _)| r.fact.rank());
        for (record, call) in open {
            self.records.push(record);
            self.calls.push(call);
        }
    }

    /// Appends the batches of `from`, all of tenant `tenant` (the engine's copy of its
    /// name) whose event ids start with `key`, its identities moved with `take` (the last
    /// use of `from`, which is to be cleared), else shared; then `from`'s open command's
    /// events, in publishing order ([`Batches::order_open`]), as the batch of the number
    /// and instant `open` gives, if any (its header written here: `from` is not closed
    /// first). The tenant's name is written once for a run of its batches. Into an empty
    /// one with `take`, nothing is copied: the two swap their contents (`from` then holds
    /// this one's emptied room), and only the tenant's name is written.
    pub(crate) fn append(
        &mut self,
        from: &mut Self,
        open: Option<(u64, Timestamp)>,
        tenant: &str,
        key: u64,
        take: bool,
    ) {
        debug_assert!(
            open.is_some() || from.records.len() == from.open.0 as usize,
            "an open command's events are appended with their header"
        );
        self.discard_unclosed();
        let at = tenant.as_ptr() as usize;
        if take && self.headers.is_empty() {
            if let Some((seq, occurred_at)) = open {
                from.close(seq, occurred_at);
            }
            self.take_whole(from, tenant, key, at);
            return;
        }
        let run = self.run_of(tenant, key, at);
        let (records, text) = (self.records.len() as u32, self.text.len());
        // Usually none: closed batches come before a command's own only when timers fired.
        if !from.headers.is_empty() {
            self.headers.extend(from.headers.iter().map(|h| Header {
                records: h.records + records,
                text: h.text + text,
                tenant: run,
                ..*h
            }));
        }
        if let Some(h) = open.and_then(|(seq, occurred_at)| from.open_header(seq, occurred_at)) {
            self.headers.push(Header { records: h.records + records, text: h.text + text, tenant: run, ..h });
        }
        self.records.extend_from_slice(&from.records);
        // `from`'s identities follow these ones': its records name them past those.
        let held = self.held.len() as u32;
        self.calls.extend(from.calls.iter().map(|&call| if call == NO_CALL { call } else { call + held }));
        if take {
            self.held.append(&mut from.held);
        } else {
            self.held.extend_from_slice(&from.held);
        }
        // Usually none: short queue names are in their records.
        if !from.text.is_empty() {
            self.text.push_str(&from.text);
        }
        self.open = (self.records.len() as u32, self.text.len());
    }

    /// Into this empty one, `from` whole (their contents swapped: `from` keeps this one's
    /// room, emptied). Out of line: the usual publish appends.
    #[inline(never)]
    fn take_whole(&mut self, from: &mut Self, tenant: &str, key: u64, at: usize) {
        from.add_run(tenant, key, at);
        std::mem::swap(self, from);
        self.open = (self.records.len() as u32, self.text.len());
        from.clear();
    }

    /// The run of tenant `tenant` (at address `at`) for batches that follow: the last one if
    /// it is this tenant's, else a new one.
    #[inline]
    fn run_of(&mut self, tenant: &str, key: u64, at: usize) -> u32 {
        match self.tenants.last() {
            Some(r) if r.at == at => self.tenants.len() as u32 - 1,
            _ => self.add_run(tenant, key, at) as u32,
        }
    }

    /// Writes the name of a tenant whose batches follow; returns its run's index.
    #[cold]
    fn add_run(&mut self, tenant: &str, key: u64, at: usize) -> usize {
        let start = self.text.len();
        self.text.push_str(tenant);
        self.tenants.push(TenantRun { key, name: (start, self.text.len()), at });
        self.tenants.len() - 1
    }
}

/// Where a reader is in the [`Batches`] it holds (which only grow by whole batches while it
/// reads them, if they change at all: the bus swaps a read buffer out and resets).
#[derive(Debug)]
pub(crate) struct Cursor {
    /// The header of the last event read (`u32::MAX` before the first).
    header: u32,
    index: u32,
    /// Where the batch after `header` starts (if there was none, where the events ended
    /// when it was read: a batch appended later starts there): an event before it is in the
    /// same batch as the last one, found without a look at the headers.
    next_batch: u32,
}

impl Default for Cursor {
    fn default() -> Self {
        Self { header: u32::MAX, index: 0, next_batch: 0 }
    }
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
        while index >= self.next_batch {
            self.header = self.header.wrapping_add(1);
            let end = batches.records.len() as u32;
            self.next_batch = batches.headers.get(self.header as usize + 1).map_or(end, |h| h.records);
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
    /// The last queue's name as its record held it, when it held it whole: a record
    /// holding the same bytes has the same name, found without reading them as text.
    queue_inline: Option<(u8, NameBytes)>,
}

impl Names {
    /// `name` as an `Arc`: the one in `last` if equal, else a new one, kept there.
    fn shared(last: &mut Option<Arc<str>>, name: &str) -> Arc<str> {
        match last {
            Some(l) if **l == *name => l.clone(),
            _ => last.insert(name.into()).clone(),
        }
    }

    /// A queue's name as an `Arc`, `name` as its record holds it and `read` reading it:
    /// the last one when the record holds the same bytes, else as [`Names::shared`] gives it.
    fn queue<'a>(&mut self, name: &Name, read: impl FnOnce() -> &'a str) -> Arc<str> {
        let inline = match *name {
            Name::Inline { len, bytes } => Some((len, bytes)),
            Name::Text(_) => None,
        };
        if let (Some(last), Some(queue)) = (&self.queue_inline, &self.queue)
            && inline.as_ref() == Some(last)
        {
            return queue.clone();
        }
        self.queue_inline = inline;
        Self::shared(&mut self.queue, read())
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

    fn tenant_run(self) -> &'a TenantRun {
        &self.batches.tenants[self.header().tenant as usize]
    }

    /// The event's id (see [`Event::id`]): the same as the [`Event`] made from it.
    #[must_use]
    pub fn id(self) -> Uuid {
        let h = self.header();
        event_id(self.tenant_run().key, h.seq, (self.index - h.records) as usize)
    }

    /// When the change happened.
    #[must_use]
    pub fn occurred_at(self) -> Timestamp {
        self.header().occurred_at
    }

    /// The tenant whose call or queue changed.
    #[must_use]
    pub fn tenant(self) -> &'a str {
        let (start, end) = self.tenant_run().name;
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
        let call = self.batches.calls[self.index as usize];
        (call != NO_CALL).then(|| &self.batches.held[call as usize])
    }

    /// The call's client state when the event happened (a call event of a call that has one).
    #[must_use]
    pub fn client_state(self) -> Option<&'a str> {
        let span = self.record().client_state;
        (span != Span::NONE).then(|| self.text(span))
    }

    /// Whether the event goes to webhooks (the Telnyx ones) or only to streams (\[ext\]).
    #[must_use]
    pub fn is_webhook_event(self) -> bool {
        self.batches.calls[self.index as usize] != NO_CALL
    }

    /// A queue's name in its record or its command's text.
    fn name(self, name: &'a Name) -> &'a str {
        match name {
            // Copied from a `str` whole: valid UTF-8 (never the empty default).
            Name::Inline { len, bytes } => {
                let name = std::str::from_utf8(&bytes.0[..usize::from(*len)]);
                debug_assert!(name.is_ok(), "a record's name is a str's bytes");
                name.unwrap_or_default()
            }
            Name::Text(span) => self.text(*span),
        }
    }

    /// What the event says besides its call, its names read from the batch.
    fn fact(self) -> Fact<&'a str> {
        self.record().fact.as_ref().map(|name| self.name(name))
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
            kind: EventKind::new(subject, self.owned_fact(names)),
            seq: self.seq(),
        }
    }

    /// What the event says besides its call, its queue's name an `Arc` from `names` (see
    /// [`Names::queue`]).
    fn owned_fact(self, names: &mut Names) -> Fact<Arc<str>> {
        self.record().fact.as_ref().map(|name| names.queue(name, || self.name(name)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::CallRecord;

    /// A command of queue events of the given kinds (queue "q"), closed as number `seq` at
    /// second `seq`.
    fn command(b: &mut Batches, seq: u64, facts: &[Fact<&str>]) {
        for &fact in facts {
            b.push(None, None, fact);
        }
        b.close(seq, Timestamp::from_secs(seq));
    }

    const CREATED: Fact<&str> = Fact::QueueCreated { queue: "q", queue_id: Uuid::nil() };
    const DELETED: Fact<&str> = Fact::QueueDeleted {
        queue: "q",
        queue_id: Uuid::nil(),
        reason: crate::event::QueueDeletedReason::Idle,
    };

    #[test]
    fn events_in_order_are_not_sorted_again_and_others_are() {
        let mut b = Batches::default();
        // Equal kinds, then rising ranks: in order.
        b.push(None, None, CREATED);
        b.push(None, None, CREATED);
        assert!(!b.unsorted);
        b.close(1, Timestamp::from_secs(1));
        b.push(None, None, DELETED);
        b.push(None, None, CREATED);
        assert!(!b.unsorted);
        b.close(2, Timestamp::from_secs(2));
        b.push(None, None, CREATED);
        b.push(None, None, DELETED);
        assert!(b.unsorted, "a deletion after a creation ranks lower");
        b.close(3, Timestamp::from_secs(3));
        assert!(!b.unsorted);
        let kinds: Vec<&str> = b.records[4..].iter().map(|r| r.fact.event_type()).collect();
        assert_eq!(kinds, ["queue.deleted", "queue.created"]);
    }

    fn identity(id: &str) -> Arc<CallIdentity> {
        crate::call::tests::identity(id, Some(0))
    }

    #[test]
    fn sorted_events_keep_their_calls_and_copies_share_them() {
        let (a, b) = (identity("call-a"), identity("call-b"));
        let mut staged = Batches::default();
        staged.push(None, None, CREATED);
        let (a_rec, b_rec) = (CallRecord::new(a.clone(), None), CallRecord::new(b, None));
        staged.push(
            Some(&a_rec.ident),
            Some("state-a"),
            Fact::CallEnqueued { queue: "q", current_position: 1, queue_avg_wait_time_secs: 0 },
        );
        staged.push(
            Some(&b_rec.ident),
            None,
            Fact::CallDequeued {
                queue: "q",
                queue_position: 1,
                reason: crate::event::DequeueReason::Bridged,
                wait_time_secs: 0,
            },
        );
        staged.close(1, Timestamp::from_secs(1));
        drop((a_rec, b_rec));
        let read = |batches: &Batches| {
            let mut cursor = Cursor::default();
            std::iter::from_fn(|| {
                cursor.next(batches).map(|e| {
                    let call = e.call().map(|c| c.call_control_id.to_string());
                    (e.event_type(), call, e.client_state().map(str::to_owned), e.is_webhook_event())
                })
            })
            .collect::<Vec<_>>()
        };
        let want = vec![
            ("call.dequeued", Some("call-b".to_owned()), None, true),
            ("queue.created", None, None, false),
            ("call.enqueued", Some("call-a".to_owned()), Some("state-a".to_owned()), true),
        ];
        assert_eq!(read(&staged), want);
        // A first channel (not empty, not the last listener) gets a copy that shares the
        // identities; the last one takes them.
        let tenant = String::from("t");
        let (mut first, mut last) = (Batches::default(), Batches::default());
        first.append(&mut batch_of_one(), None, &tenant, 0, false);
        last.append(&mut batch_of_one(), None, &tenant, 0, false);
        first.append(&mut staged, None, &tenant, 0, false);
        assert_eq!(Arc::strong_count(&a), 3, "the staging's and the copy's");
        last.append(&mut staged, None, &tenant, 0, true);
        assert_eq!(Arc::strong_count(&a), 3, "moved, not counted again");
        assert!(staged.held.is_empty());
        assert_eq!(read(&first)[1..], want[..]);
        assert_eq!(read(&last)[1..], want[..]);
        first.clear();
        assert_eq!(Arc::strong_count(&a), 2, "released when emptied");
    }

    /// The call ids of `batches`' events, in order (`None`: a queue event).
    fn call_ids(batches: &Batches) -> Vec<Option<String>> {
        let mut cursor = Cursor::default();
        std::iter::from_fn(|| cursor.next(batches).map(|e| e.call().map(|c| c.call_control_id.to_string())))
            .collect()
    }

    #[test]
    fn a_calls_identity_is_held_once_by_batches_whatever_its_events() {
        let (a, b) = (CallRecord::new(identity("call-a"), None), CallRecord::new(identity("call-b"), None));
        let bridged = Fact::CallBridged;
        let mut channel = Batches::default();
        channel.push(Some(&a.ident), None, bridged);
        channel.push(Some(&b.ident), None, bridged);
        channel.close(1, Timestamp::from_secs(1));
        channel.push(Some(&a.ident), None, bridged);
        channel.push(Some(&a.ident), None, bridged);
        channel.push(None, None, CREATED);
        channel.close(2, Timestamp::from_secs(2));
        assert_eq!(Arc::strong_count(&a.ident), 2, "the record's and one for three events");
        assert_eq!(Arc::strong_count(&b.ident), 2);
        let (a_id, b_id) = (Some("call-a".to_owned()), Some("call-b".to_owned()));
        assert_eq!(call_ids(&channel), [a_id.clone(), b_id.clone(), a_id.clone(), a_id.clone(), None]);
        // Their hints name indexes of `channel`: other batches (a staging, the channel after
        // its reader emptied it) hold other identities there, or none, and hold their own.
        let mut staged = Batches::default();
        staged.push(Some(&b.ident), None, bridged);
        staged.push(Some(&a.ident), None, bridged);
        staged.close(3, Timestamp::from_secs(3));
        assert_eq!(call_ids(&staged), [b_id.clone(), a_id.clone()]);
        channel.clear();
        assert_eq!(Arc::strong_count(&a.ident), 2, "released once, with the channel's events");
        channel.push(Some(&a.ident), None, bridged);
        channel.close(4, Timestamp::from_secs(4));
        assert_eq!(call_ids(&channel), std::slice::from_ref(&a_id));
        // Appended, the staging's events name its identities past the channel's.
        let tenant = String::from("t");
        channel.append(&mut staged, None, &tenant, 0, true);
        assert_eq!(call_ids(&channel), [a_id.clone(), b_id, a_id]);
        assert_eq!(channel.held.len(), 3);
        assert_eq!(Arc::strong_count(&a.ident), 3, "the channel's own and the staging's, moved");
    }

    fn batch_of_one() -> Batches {
        let mut b = Batches::default();
        command(&mut b, 0, &[CREATED]);
        b
    }

    #[test]
    fn queue_names_of_every_length_read_back_whole() {
        let tenant = String::from("t");
        let names: Vec<String> = [1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 255]
            .into_iter()
            .map(|n| (0..n).map(|i| char::from(b'a' + (i * 7 % 26) as u8)).collect())
            .chain(["é-queue-ü".to_owned(), "q\u{1F600}xyz".to_owned()])
            .collect();
        let mut staged = Batches::default();
        for (seq, name) in names.iter().enumerate() {
            command(&mut staged, seq as u64, &[Fact::QueueCreated { queue: name, queue_id: Uuid::nil() }]);
        }
        // Only the names under 4 or over 16 bytes are in the text.
        let in_text: usize = names.iter().map(String::len).filter(|n| !(4..=16).contains(n)).sum();
        assert_eq!(staged.text.len(), in_text);
        let mut channel = Batches::default();
        channel.append(&mut batch_of_one(), None, &tenant, 0, false);
        channel.append(&mut staged, None, &tenant, 0, false);
        let mut cursor = Cursor::default();
        cursor.next(&channel);
        let read: Vec<String> = std::iter::from_fn(|| {
            cursor.next(&channel).map(|e| match e.fact() {
                Fact::QueueCreated { queue, .. } => queue.to_owned(),
                other => panic!("{other:?}"),
            })
        })
        .collect();
        assert_eq!(read, names);
    }

    /// A queue's creation per name (each its own `Arc`, as the engine's queues), read back
    /// as owned events by one reader; whether each event's name is the one before it.
    fn owned_names_read_back(queues: &[&str]) -> Vec<bool> {
        let mut staged = Batches::default();
        for (seq, name) in queues.iter().enumerate() {
            let name: Arc<str> = (*name).into();
            command(&mut staged, seq as u64, &[Fact::QueueCreated { queue: &name, queue_id: Uuid::nil() }]);
        }
        let mut channel = Batches::default();
        channel.append(&mut staged, None, "t", 0, false);
        let (mut cursor, mut names) = (Cursor::default(), Names::default());
        let read: Vec<Arc<str>> = std::iter::from_fn(|| {
            cursor.next(&channel).map(|e| match e.to_event_with(&mut names).kind {
                EventKind::QueueCreated { queue, .. } => queue,
                other => panic!("{other:?}"),
            })
        })
        .collect();
        assert_eq!(read.iter().map(|q| &**q).collect::<Vec<_>>(), queues);
        read.windows(2).map(|w| Arc::ptr_eq(&w[0], &w[1])).collect()
    }

    #[test]
    fn owned_events_share_a_queues_name_with_the_event_before() {
        let long = "a-queue-name-longer-than-sixteen-bytes";
        let queues =
            ["alpha-queue", "alpha-queue", "beta-queue", long, long, "alpha-queue", "abc", "alpha-queue"];
        assert_eq!(owned_names_read_back(&queues), [true, false, false, true, false, false, false]);
    }

    #[test]
    fn owned_events_share_a_name_only_of_the_same_length() {
        // Names whose words are alike but whose lengths differ (a trailing NUL cannot come
        // from a client, whose names are checked, but the record must not depend on that).
        let queues = ["abcd", "abcd\0", "abcd", "abcdefghijklmnop", "abcdefghijklmnop\0", "abcdefghijklmnop"];
        assert_eq!(owned_names_read_back(&queues), [false; 5]);
    }

    #[test]
    fn a_cursor_reads_batches_appended_while_it_reads() {
        let tenant = String::from("t");
        let mut channel = Batches::default();
        let mut first = Batches::default();
        command(&mut first, 1, &[CREATED, DELETED]);
        channel.append(&mut first, None, &tenant, 0, false);
        let mut cursor = Cursor::default();
        let mut read = |channel: &Batches| cursor.next(channel).map(|e| (e.seq(), e.event_type()));
        assert_eq!(read(&channel), Some((1, "queue.deleted")));
        let mut second = Batches::default();
        command(&mut second, 2, &[CREATED]);
        channel.append(&mut second, None, &tenant, 0, false);
        assert_eq!(read(&channel), Some((1, "queue.created")));
        assert_eq!(read(&channel), Some((2, "queue.created")));
        assert_eq!(read(&channel), None);
        let mut third = Batches::default();
        command(&mut third, 3, &[DELETED]);
        channel.append(&mut third, None, &tenant, 0, false);
        assert_eq!(read(&channel), Some((3, "queue.deleted")));
        assert_eq!(read(&channel), None);
    }

    #[test]
    fn a_tenants_name_is_written_once_for_a_run_of_its_batches() {
        let (t, u) = (String::from("tenant-t"), String::from("tenant-u"));
        let mut channel = Batches::default();
        for (seq, tenant) in [(1, &t), (2, &t), (3, &u), (4, &t)] {
            let mut staged = Batches::default();
            command(&mut staged, seq, &[CREATED]);
            channel.append(&mut staged, None, tenant, seq, false);
        }
        assert_eq!(channel.text.matches("tenant-t").count(), 2, "{}", channel.text);
        assert_eq!(channel.tenants.len(), 3);
        let mut cursor = Cursor::default();
        let read: Vec<(String, u64, u64)> = std::iter::from_fn(|| {
            cursor.next(&channel).map(|e| (e.tenant().to_owned(), e.seq(), e.occurred_at().as_micros()))
        })
        .collect();
        let want = [("tenant-t", 1), ("tenant-t", 2), ("tenant-u", 3), ("tenant-t", 4)]
            .map(|(t, s)| (t.to_owned(), s, s * 1_000_000));
        assert_eq!(read, want);
    }

    #[test]
    fn an_open_command_is_published_as_its_batch_in_order() {
        let tenant = String::from("t");
        let mut staged = Batches::default();
        command(&mut staged, 3, &[CREATED]);
        // The command being published, left open, its events out of order.
        staged.push(None, None, CREATED);
        staged.push(None, None, DELETED);
        staged.order_open();
        let open = Some((4, Timestamp::from_secs(4)));
        let read = |b: &Batches| {
            let mut cursor = Cursor::default();
            std::iter::from_fn(|| {
                cursor.next(b).map(|e| (e.seq(), e.occurred_at().as_micros(), e.id(), e.event_type()))
            })
            .collect::<Vec<_>>()
        };
        let want = [
            (3, 3_000_000, event_id(0, 3, 0), "queue.created"),
            (4, 4_000_000, event_id(0, 4, 0), "queue.deleted"),
            (4, 4_000_000, event_id(0, 4, 1), "queue.created"),
        ];
        // Copied after a channel's events: its header written there.
        let mut channel = Batches::default();
        channel.append(&mut batch_of_one(), None, &tenant, 0, false);
        channel.append(&mut staged, open, &tenant, 0, false);
        assert_eq!(read(&channel)[1..], want);
        // Taken whole by an empty channel: closed first.
        let mut empty = Batches::default();
        empty.append(&mut staged, open, &tenant, 0, true);
        assert_eq!(read(&empty), want);
    }

    #[test]
    fn an_empty_channel_takes_the_last_listeners_batch_whole() {
        let tenant = String::from("t");
        let mut channel = Batches::default();
        let mut staged = Batches::default();
        command(&mut staged, 7, &[CREATED, DELETED]);
        let records = staged.records.as_ptr();
        channel.append(&mut staged, None, &tenant, 9, true);
        assert_eq!(channel.records.as_ptr(), records, "the records moved, not copied");
        assert!(staged.is_empty() && staged.headers.is_empty() && staged.text.is_empty());
        let mut cursor = Cursor::default();
        let ev = cursor.next(&channel).expect("an event");
        assert_eq!((ev.tenant(), ev.seq(), ev.id()), ("t", 7, event_id(9, 7, 0)));
        assert_eq!(cursor.next(&channel).map(|e| e.id()), Some(event_id(9, 7, 1)));
    }
}
