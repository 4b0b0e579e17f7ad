//! The simulation against the closed formulas: where Erlang C or Erlang A applies exactly
//! (Poisson arrivals, exponential handle times and patience), the engine-driven simulation
//! must land within a stated tolerance of it. Seeds are fixed, so each case is a fixed
//! computation; the tolerances allow for the sampling error of the run's length.

use waitline_sim::{Distribution, Scenario, simulate};

const CALLERS: u64 = 60_000;

fn mmc(calls_per_hour: f64) -> Scenario {
    Scenario {
        calls_per_hour,
        agents: 10,
        handle_time: Distribution::Exponential { mean: 180.0 },
        callers: CALLERS,
        seed: 2026,
        ..Scenario::default()
    }
}

fn close(what: &str, got: f64, want: f64, tolerance: f64) {
    assert!(
        (got - want).abs() <= tolerance,
        "{what}: simulated {got:.4}, formula {want:.4}, tolerance {tolerance}"
    );
}

#[test]
fn mmc_at_70_percent_load_matches_erlang_c() {
    let report = simulate(&mmc(140.0)).expect("runs");
    let c = report.prediction.expect("Erlang C applies");
    assert_eq!(c.model, "Erlang C");
    assert_eq!((report.offered, report.answered, report.abandoned), (CALLERS, CALLERS, 0));
    close("P(wait)", report.probability_of_waiting, c.probability_of_waiting, 0.02);
    close("service level", report.service_level, c.service_level.expect("C"), 0.02);
    close("mean wait", report.mean_wait_secs, c.mean_wait_secs, 0.15 * c.mean_wait_secs);
    close("occupancy", report.occupancy, c.occupancy, 0.02);
}

#[test]
fn mmc_at_90_percent_load_matches_erlang_c() {
    let report = simulate(&mmc(180.0)).expect("runs");
    let c = report.prediction.expect("Erlang C applies");
    close("P(wait)", report.probability_of_waiting, c.probability_of_waiting, 0.04);
    close("service level", report.service_level, c.service_level.expect("C"), 0.04);
    close("mean wait", report.mean_wait_secs, c.mean_wait_secs, 0.2 * c.mean_wait_secs);
    close("occupancy", report.occupancy, c.occupancy, 0.02);
    assert!(report.p90_answered_wait_secs > report.p50_answered_wait_secs);
    assert!(report.p95_answered_wait_secs >= report.p90_answered_wait_secs);
}

#[test]
fn overload_with_patience_matches_erlang_a() {
    let scenario = Scenario { patience: Some(Distribution::Exponential { mean: 120.0 }), ..mmc(220.0) };
    let report = simulate(&scenario).expect("runs");
    let a = report.prediction.expect("Erlang A applies");
    assert_eq!(a.model, "Erlang A");
    assert_eq!(report.answered + report.abandoned, report.offered);
    close("abandonment", report.abandonment, a.abandonment, 0.02);
    close("P(wait)", report.probability_of_waiting, a.probability_of_waiting, 0.03);
    close("mean wait", report.mean_wait_secs, a.mean_wait_secs, 0.1 * a.mean_wait_secs);
    close("occupancy", report.occupancy, a.occupancy, 0.02);
}
