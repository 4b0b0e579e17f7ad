//! # waitline-sim
//!
//! Capacity planning for a contact center, on the real engine: callers arrive at random
//! (Poisson), wait in a waitline queue, give up when their patience runs out or leave when
//! their `max_wait_time_secs` passes, and agents take the head of the queue and handle each
//! call for a random time. The engine runs on a manual clock moved from event to event, so a
//! simulated day takes as long as its commands, not a day; it decides who is at the head,
//! priorities and time-outs exactly as it does in service.
//!
//! Beside each simulation, the closed formula for the same inputs: Erlang C when callers wait
//! forever, Erlang A when they give up after an exponential patience ([`erlang`]).
//!
//! ```
//! use waitline_sim::{Distribution, Scenario, simulate};
//!
//! let scenario = Scenario {
//!     calls_per_hour: 120.0,
//!     agents: 5,
//!     handle_time: Distribution::Exponential { mean: 120.0 },
//!     callers: 2_000,
//!     ..Scenario::default()
//! };
//! let report = simulate(&scenario)?;
//! assert_eq!(report.answered, 2_000);
//! assert!(report.prediction.is_some_and(|p| p.model == "Erlang C"));
//! # Ok::<(), waitline_sim::SimError>(())
//! ```

mod dist;
pub mod erlang;
mod run;

use std::time::Duration;

pub use dist::Distribution;
pub use erlang::Prediction;
pub use run::simulate;

/// What to simulate.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Mean arrival rate of callers (a Poisson process), per hour.
    pub calls_per_hour: f64,
    /// Agents on duty.
    pub agents: u32,
    /// How long an agent spends on a call once answered.
    pub handle_time: Distribution,
    /// How long a caller is willing to wait before hanging up; `None`: forever.
    pub patience: Option<Distribution>,
    /// The queue's `max_wait_time_secs` for every caller; `None`: no limit.
    pub max_wait: Option<Duration>,
    /// Priority bands (0-9, higher served first) and the share of callers in each; empty:
    /// every caller at the default priority.
    pub priorities: Vec<(u8, f64)>,
    /// How many callers arrive in the run.
    pub callers: u64,
    /// The seed of every random draw: the same scenario and seed give the same report.
    pub seed: u64,
    /// The service-level threshold: answered within this many seconds counts as served in
    /// time (20 s is the contact-center custom, "80/20").
    pub service_level_secs: f64,
    /// The queue's `max_size`; callers who find it full are refused (counted as blocked).
    pub queue_max_size: u32,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            calls_per_hour: 100.0,
            agents: 10,
            handle_time: Distribution::Exponential { mean: 180.0 },
            patience: None,
            max_wait: None,
            priorities: Vec::new(),
            callers: 100_000,
            seed: 1,
            service_level_secs: 20.0,
            queue_max_size: 1_000_000,
        }
    }
}

impl Scenario {
    /// The closed-formula prediction for these inputs, when one applies: Erlang C with
    /// exponential handle times and no patience or time limit (and a stable load), Erlang A
    /// with exponential handle times and patience and no time limit. Priorities do not change
    /// these figures (they are taken over all callers).
    #[must_use]
    pub fn prediction(&self) -> Option<Prediction> {
        let Distribution::Exponential { mean: handle } = self.handle_time else { return None };
        if self.max_wait.is_some() {
            return None;
        }
        let rate = self.calls_per_hour / 3600.0;
        match self.patience {
            None => erlang::erlang_c(self.agents, rate, handle, self.service_level_secs),
            Some(Distribution::Exponential { mean }) => erlang::erlang_a(self.agents, rate, handle, mean),
            Some(_) => None,
        }
    }

    fn validate(&self) -> Result<(), SimError> {
        let invalid = |what, why| Err(SimError::Invalid { what, why });
        if !(self.calls_per_hour.is_finite() && self.calls_per_hour > 0.0) {
            return invalid("calls_per_hour", "must be positive and finite");
        }
        if self.agents == 0 {
            return invalid("agents", "must be at least 1");
        }
        if self.callers == 0 {
            return invalid("callers", "must be at least 1");
        }
        if !(self.service_level_secs.is_finite() && self.service_level_secs >= 0.0) {
            return invalid("service_level_secs", "must be zero or more");
        }
        self.handle_time.validate("handle_time")?;
        if let Some(p) = &self.patience {
            p.validate("patience")?;
        }
        if self.priorities.iter().any(|&(band, share)| band > 9 || !(share.is_finite() && share > 0.0)) {
            return invalid("priorities", "each band must be 0-9 with a positive share");
        }
        Ok(())
    }
}

/// What a simulation measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Agents on duty.
    pub agents: u32,
    /// Callers who arrived.
    pub offered: u64,
    /// Callers an agent answered.
    pub answered: u64,
    /// Callers who hung up while waiting (their patience ran out).
    pub abandoned: u64,
    /// Callers whose `max_wait_time_secs` ran out (the engine took them out of the queue).
    pub timed_out: u64,
    /// Callers refused because the queue was full.
    pub blocked: u64,
    /// Share of offered callers answered within the threshold.
    pub service_level: f64,
    /// Share of offered callers who waited at all.
    pub probability_of_waiting: f64,
    /// Mean time in queue over every queued caller, answered or not (seconds).
    pub mean_wait_secs: f64,
    /// Mean wait of the answered callers, the "average speed of answer" (seconds).
    pub mean_answered_wait_secs: f64,
    /// Median wait of the answered callers (seconds).
    pub p50_answered_wait_secs: f64,
    /// 90th percentile wait of the answered callers (seconds).
    pub p90_answered_wait_secs: f64,
    /// 95th percentile wait of the answered callers (seconds).
    pub p95_answered_wait_secs: f64,
    /// Share of offered callers who abandoned.
    pub abandonment: f64,
    /// Share of agent time spent on calls, from the first arrival to the last call's end.
    pub occupancy: f64,
    /// Simulated time from the first arrival to the end of the last call (seconds).
    pub simulated_secs: f64,
    /// Waits of the answered callers, counted in buckets of `histogram_bucket_secs`: bucket
    /// `i` holds the waits in `[i * w, (i + 1) * w)`, the last one everything above.
    pub wait_histogram: Vec<u64>,
    /// Width of a histogram bucket (seconds).
    pub histogram_bucket_secs: f64,
    /// Engine commands the run sent.
    pub commands: u64,
    /// The closed formula for the same inputs, when one applies ([`Scenario::prediction`]).
    pub prediction: Option<Prediction>,
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// An input is out of range.
    #[error("{what} {why}")]
    Invalid {
        /// The input's name.
        what: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The engine refused a command the scenario needs (for example a `max_wait` out of
    /// the engine's range).
    #[error("the engine refused a command: {0}")]
    Engine(#[from] waitline::Error),
    /// The engine did something the simulation cannot account for: a bug, reported rather
    /// than hidden in the figures.
    #[error("the engine disagrees with the simulation: {0}")]
    Inconsistent(String),
}
