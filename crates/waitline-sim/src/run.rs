//! The discrete-event loop: a heap of what happens next (an arrival, an agent finishing, a
//! caller's patience or deadline running out); the engine's manual clock is set to each
//! instant before the commands of that instant are sent.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use waitline::{
    AfterUnbridge, BridgeParams, Clock, CommandOptions, DialParams, Engine, EnqueueParams, Error, Tenant,
    Timestamp,
};

use crate::dist::Rng;
use crate::{Report, Scenario, SimError};

const QUEUE: &str = "simulated";
/// Where the manual clock starts: 2026-01-01T00:00:00Z.
const START: Timestamp = Timestamp::from_secs(1_767_225_600);
/// Buckets in the wait histogram.
const HISTOGRAM_BUCKETS: usize = 60;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Happening {
    Arrival,
    /// The agent finishes with its caller.
    CallEnds {
        agent: u32,
        caller: u32,
    },
    PatienceEnds(u32),
    DeadlinePasses(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Queued,
    Answered,
    Gone,
}

struct Caller {
    arrived: u64,
    fate: Fate,
}

fn caller_id(ix: u32) -> String {
    format!("caller-{ix}")
}

fn agent_id(ix: u32) -> String {
    format!("agent-{ix}")
}

fn micros(secs: f64) -> u64 {
    // Saturating float-to-int conversion; durations are validated finite and non-negative.
    (secs * 1e6).round() as u64
}

fn secs(micros: u64) -> f64 {
    micros as f64 / 1e6
}

struct Sim<'s> {
    scenario: &'s Scenario,
    tenant: Tenant,
    engine: Engine,
    clock: waitline::ManualClock,
    rng: Rng,
    agenda: BinaryHeap<Reverse<(u64, u64, Happening)>>,
    order: u64,
    callers: Vec<Caller>,
    idle: VecDeque<u32>,
    answered_waits: Vec<u64>,
    queued_wait_total: u64,
    queued: u64,
    waited: u64,
    abandoned: u64,
    timed_out: u64,
    blocked: u64,
    busy: u64,
    commands: u64,
    now: u64,
}

/// Runs the scenario on a fresh engine and reports what it measured.
///
/// # Errors
/// [`SimError::Invalid`] for inputs out of range, [`SimError::Engine`] when the engine
/// refuses a command the scenario needs, [`SimError::Inconsistent`] if the engine's state
/// ever contradicts the simulation (a bug).
pub fn simulate(scenario: &Scenario) -> Result<Report, SimError> {
    scenario.validate()?;
    let (clock, hand) = Clock::manual(START);
    let engine = Engine::builder()
        .clock(clock)
        .max_live_calls_per_tenant(usize::MAX)
        // Ended calls are never read again: keep as few as the engine allows.
        .ended_call_retention(Duration::ZERO)
        .max_ended_calls_per_tenant(1)
        .build();
    let tenant = engine.default_tenant();
    let mut sim = Sim {
        scenario,
        tenant,
        engine,
        clock: hand,
        rng: Rng::new(scenario.seed),
        agenda: BinaryHeap::new(),
        order: 0,
        callers: Vec::with_capacity(usize::try_from(scenario.callers).unwrap_or(0).min(1 << 24)),
        idle: (0..scenario.agents).collect(),
        answered_waits: Vec::new(),
        queued_wait_total: 0,
        queued: 0,
        waited: 0,
        abandoned: 0,
        timed_out: 0,
        blocked: 0,
        busy: 0,
        commands: 0,
        now: 0,
    };
    sim.open()?;
    sim.schedule(0, Happening::Arrival);
    while let Some(Reverse((at, _, what))) = sim.agenda.pop() {
        sim.now = at;
        sim.clock.set(Timestamp::from_micros(START.as_micros() + at));
        match what {
            Happening::Arrival => sim.arrive()?,
            Happening::CallEnds { agent, caller } => sim.end_call(agent, caller)?,
            Happening::PatienceEnds(caller) => sim.abandon(caller)?,
            Happening::DeadlinePasses(caller) => sim.check_deadline(caller)?,
        }
    }
    Ok(sim.report())
}

impl Sim<'_> {
    fn schedule(&mut self, at: u64, what: Happening) {
        self.order += 1;
        self.agenda.push(Reverse((at, self.order, what)));
    }

    fn open(&mut self) -> Result<(), SimError> {
        self.tenant.create_queue(QUEUE, Some(self.scenario.queue_max_size))?;
        for agent in 0..self.scenario.agents {
            let mut dial = DialParams::new("+15550000000", "+15550000001", "simulation");
            dial.call_control_id = Some(agent_id(agent));
            self.tenant.dial(&dial)?;
            self.commands += 1;
        }
        Ok(())
    }

    fn priority(&mut self) -> Option<u8> {
        let bands = &self.scenario.priorities;
        if bands.is_empty() {
            return None;
        }
        let total: f64 = bands.iter().map(|b| b.1).sum();
        let mut pick = self.rng.unit() * total;
        for &(band, share) in bands {
            if pick <= share {
                return Some(band);
            }
            pick -= share;
        }
        bands.last().map(|b| b.0)
    }

    fn arrive(&mut self) -> Result<(), SimError> {
        let ix = u32::try_from(self.callers.len())
            .map_err(|_| SimError::Invalid { what: "callers", why: "must be at most 4294967295" })?;
        self.callers.push(Caller { arrived: self.now, fate: Fate::Queued });
        if (self.callers.len() as u64) < self.scenario.callers {
            let gap = self.rng.exponential(3600.0 / self.scenario.calls_per_hour);
            self.schedule(self.now + micros(gap), Happening::Arrival);
        }
        let id = caller_id(ix);
        let mut dial = DialParams::new("+15550000002", "+15550000003", "simulation");
        dial.call_control_id = Some(id.clone());
        self.tenant.dial(&dial)?;
        let mut enqueue = EnqueueParams::new(QUEUE);
        enqueue.max_wait = self.scenario.max_wait;
        enqueue.priority = self.priority();
        self.commands += 2;
        match self.tenant.enqueue(&id, &enqueue) {
            Ok(()) => {}
            Err(Error::QueueFull) => {
                self.blocked += 1;
                self.callers[ix as usize].fate = Fate::Gone;
                return self.hang_up(&id);
            }
            Err(e) => return Err(e.into()),
        }
        self.queued += 1;
        if let Some(patience) = self.scenario.patience {
            let at = self.now + micros(patience.draw(&mut self.rng));
            self.schedule(at, Happening::PatienceEnds(ix));
        }
        if let Some(limit) = self.scenario.max_wait {
            let at = self.now + u64::try_from(limit.as_micros()).unwrap_or(u64::MAX);
            self.schedule(at, Happening::DeadlinePasses(ix));
        }
        match self.idle.pop_front() {
            Some(agent) => self.answer(agent),
            None => {
                self.waited += 1;
                Ok(())
            }
        }
    }

    /// The agent takes the head of the queue, or goes idle when the queue is empty.
    fn answer(&mut self, agent: u32) -> Result<(), SimError> {
        let id = agent_id(agent);
        let mut bridge = BridgeParams::queue(QUEUE);
        bridge.after_unbridge = AfterUnbridge::Park;
        self.commands += 1;
        match self.tenant.bridge(&id, &bridge) {
            Ok(()) => {}
            Err(Error::QueueEmpty) => {
                self.idle.push_back(agent);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        let partner = self.tenant.call(&id)?.bridged_with;
        let caller = partner
            .as_deref()
            .and_then(|p| p.strip_prefix("caller-"))
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|&c| self.callers.get(c as usize).is_some_and(|c| c.fate == Fate::Queued))
            .ok_or_else(|| {
                SimError::Inconsistent(format!("{id} was bridged with {partner:?}, not a waiting caller"))
            })?;
        let waited = self.now - self.callers[caller as usize].arrived;
        self.callers[caller as usize].fate = Fate::Answered;
        self.answered_waits.push(waited);
        self.queued_wait_total += waited;
        let handle = micros(self.scenario.handle_time.draw(&mut self.rng));
        self.busy += handle;
        self.schedule(self.now + handle, Happening::CallEnds { agent, caller });
        Ok(())
    }

    fn end_call(&mut self, agent: u32, caller: u32) -> Result<(), SimError> {
        self.callers[caller as usize].fate = Fate::Gone;
        self.hang_up(&caller_id(caller))?;
        self.answer(agent)
    }

    fn abandon(&mut self, caller: u32) -> Result<(), SimError> {
        if self.callers[caller as usize].fate != Fate::Queued {
            return Ok(());
        }
        self.leave(caller);
        self.abandoned += 1;
        self.hang_up(&caller_id(caller))
    }

    /// The engine's timer takes the caller out of the queue at its deadline; the simulation
    /// only checks that it did, then hangs the caller up (off to voicemail).
    fn check_deadline(&mut self, caller: u32) -> Result<(), SimError> {
        if self.callers[caller as usize].fate != Fate::Queued {
            return Ok(());
        }
        self.engine.run_pending_tasks();
        let id = caller_id(caller);
        let info = self.tenant.call(&id)?;
        if info.queue.is_some() || info.bridged_with.is_some() {
            return Err(SimError::Inconsistent(format!("{id} is still waiting past its max_wait_time_secs")));
        }
        self.leave(caller);
        self.timed_out += 1;
        self.hang_up(&id)
    }

    fn leave(&mut self, caller: u32) {
        let c = &mut self.callers[caller as usize];
        c.fate = Fate::Gone;
        self.queued_wait_total += self.now - c.arrived;
    }

    fn hang_up(&mut self, id: &str) -> Result<(), SimError> {
        self.commands += 1;
        self.tenant.hangup(id, &CommandOptions::default())?;
        Ok(())
    }

    fn report(mut self) -> Report {
        let offered = self.callers.len() as u64;
        let per_offered = |n: u64| if offered == 0 { 0.0 } else { n as f64 / offered as f64 };
        let threshold = micros(self.scenario.service_level_secs);
        let within = self.answered_waits.iter().filter(|&&w| w <= threshold).count() as u64;
        self.answered_waits.sort_unstable();
        let waits = &self.answered_waits;
        let percentile = |p: f64| {
            if waits.is_empty() {
                return 0.0;
            }
            let rank = ((p * waits.len() as f64).ceil() as usize).clamp(1, waits.len());
            secs(waits[rank - 1])
        };
        let answered = waits.len() as u64;
        let bucket = (percentile(0.99) / HISTOGRAM_BUCKETS as f64).ceil().max(1.0);
        let mut histogram = vec![0u64; HISTOGRAM_BUCKETS + 1];
        for &w in waits {
            let i = ((secs(w) / bucket) as usize).min(HISTOGRAM_BUCKETS);
            histogram[i] += 1;
        }
        let span = self.now;
        Report {
            agents: self.scenario.agents,
            offered,
            answered,
            abandoned: self.abandoned,
            timed_out: self.timed_out,
            blocked: self.blocked,
            service_level: per_offered(within),
            probability_of_waiting: per_offered(self.waited),
            mean_wait_secs: if self.queued == 0 {
                0.0
            } else {
                secs(self.queued_wait_total) / self.queued as f64
            },
            mean_answered_wait_secs: if answered == 0 {
                0.0
            } else {
                secs(waits.iter().sum::<u64>()) / answered as f64
            },
            p50_answered_wait_secs: percentile(0.5),
            p90_answered_wait_secs: percentile(0.9),
            p95_answered_wait_secs: percentile(0.95),
            abandonment: per_offered(self.abandoned),
            occupancy: if span == 0 {
                0.0
            } else {
                self.busy as f64 / (span as f64 * f64::from(self.scenario.agents))
            },
            simulated_secs: secs(span),
            wait_histogram: histogram,
            histogram_bucket_secs: bucket,
            commands: self.commands,
            prediction: self.scenario.prediction(),
        }
    }
}
