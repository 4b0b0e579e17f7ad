//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::time::Duration;

use waitline::{
    Clock, CommandOptions, DialParams, Engine, Event, Journal, ManualClock, Subscription, Tenant, Timestamp,
};

/// 2026-01-01T00:00:00Z
pub const START: Timestamp = Timestamp::from_secs(1_767_225_600);

pub struct Fixture {
    pub engine: Engine,
    pub clock: ManualClock,
    pub t: Tenant,
    pub events: Subscription,
}

impl Fixture {
    pub fn new() -> Self {
        Self::with(Engine::builder())
    }

    pub fn with(builder: waitline::EngineBuilder) -> Self {
        let (clock, hand) = Clock::manual(START);
        let engine = builder.clock(clock).build();
        let events = engine.subscribe();
        let t = engine.default_tenant();
        Self { engine, clock: hand, t, events }
    }

    pub fn dial(&self) -> String {
        self.t.dial(&DialParams::new("+15550001", "+15550002", "conn")).unwrap().call_control_id
    }

    /// Calls `a` and `b` bridged together, and `c` waiting in queue `q`.
    pub fn bridged_pair_and_queued_call(&self) -> (String, String, String) {
        let (a, b, c) = (self.dial(), self.dial(), self.dial());
        self.t.bridge(&a, &waitline::BridgeParams::call(&b)).unwrap();
        self.t.enqueue(&c, &waitline::EnqueueParams::new("q")).unwrap();
        (a, b, c)
    }

    pub fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
        self.engine.run_pending_tasks();
    }

    /// Event types and call ids since the last call, ignoring dial events.
    pub fn take(&mut self) -> Vec<(String, Option<String>)> {
        self.events
            .drain()
            .into_iter()
            .filter(|e| e.kind.subject().is_some())
            .filter(|e| !matches!(e.event_type(), "call.initiated" | "call.answered"))
            .map(|e| {
                (e.event_type().to_owned(), e.kind.subject().map(|s| s.call.call_control_id.to_string()))
            })
            .collect()
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        self.events.drain()
    }

    pub fn check(&self) {
        self.engine.check_invariants().unwrap();
    }
}

pub fn none() -> CommandOptions {
    CommandOptions::default()
}

pub fn ev(kind: &str, id: &str) -> (String, Option<String>) {
    (kind.to_owned(), Some(id.to_owned()))
}

/// A journal that keeps every record with its number (of any tenant), for replays.
#[derive(Debug, Default)]
pub struct Recorded(pub std::sync::Mutex<Vec<(u64, Vec<u8>)>>);

impl Journal for Recorded {
    fn append(&self, _tenant: &str, seq: u64, record: &[u8]) {
        self.0.lock().unwrap().push((seq, record.to_vec()));
    }
}
