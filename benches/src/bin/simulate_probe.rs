//! Simulation speed: `waitline simulate`'s engine-driven simulation of N callers (default
//! 1,000,000; target under 10 s), in the three shapes it has: Erlang C inputs (callers wait
//! forever), Erlang A inputs (exponential patience), and a log-normal handle time with
//! priorities and a `max_wait`. Prints the wall time, callers and engine commands a second.
//!
//! `cargo run --release -p waitline-benches --bin simulate_probe -- [N]`

use std::time::{Duration, Instant};

use waitline_sim::{Distribution, Scenario, simulate};

fn main() {
    let callers: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let base = Scenario { calls_per_hour: 180.0, agents: 10, callers, ..Scenario::default() };
    let cases = [
        ("Erlang C inputs, 90% load", base.clone()),
        (
            "Erlang A inputs, 110% load",
            Scenario {
                calls_per_hour: 220.0,
                patience: Some(Distribution::Exponential { mean: 120.0 }),
                ..base.clone()
            },
        ),
        (
            "log-normal handle, 2 priorities, max wait 300 s",
            Scenario {
                handle_time: Distribution::LogNormal { mean: 180.0, sd: 90.0 },
                priorities: vec![(0, 0.8), (5, 0.2)],
                max_wait: Some(Duration::from_secs(300)),
                ..base
            },
        ),
    ];
    println!("| case | callers | wall time | callers/s | engine commands/s |");
    println!("|---|---:|---:|---:|---:|");
    for (name, scenario) in cases {
        let t = Instant::now();
        let report = simulate(&scenario).expect("the scenario runs");
        let wall = t.elapsed().as_secs_f64();
        println!(
            "| {name} | {} | {wall:.2} s | {:.0} | {:.0} |",
            report.offered,
            report.offered as f64 / wall,
            report.commands as f64 / wall
        );
    }
}
