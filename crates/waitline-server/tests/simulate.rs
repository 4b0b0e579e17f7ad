//! `waitline simulate` from the command line: a sweep prints one row per agent count with
//! the formula beside it, draws the SVG, and bad flags are refused with a clear message.

use std::process::Command;

fn simulate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_waitline")).arg("simulate").args(args).output().expect("runs the binary")
}

#[test]
fn a_sweep_prints_a_row_per_agent_count_and_draws_the_svg() {
    let dir = tempfile::tempdir().expect("temp dir");
    let svg = dir.path().join("plan.svg");
    let out = simulate(&[
        "--calls-per-hour",
        "180",
        "--agents",
        "10..12",
        "--callers",
        "5000",
        "--svg",
        svg.to_str().expect("utf-8 path"),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).expect("utf-8");
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| 1")).collect();
    assert_eq!(rows.len(), 3, "{table}");
    for (row, agents) in rows.iter().zip(["10", "11", "12"]) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells[1], agents, "{row}");
        assert!(cells[11].ends_with('%'), "Erlang C's service level is shown: {row}");
    }
    assert!(table.contains("Erlang C: service level"), "{table}");
    let drawn = std::fs::read_to_string(&svg).expect("the SVG was written");
    assert!(
        drawn.starts_with("<svg") && drawn.contains("Service level") && drawn.contains("Erlang C"),
        "{drawn:.300}"
    );
}

#[test]
fn patience_compares_with_erlang_a_and_lognormal_with_nothing() {
    let out =
        simulate(&["--calls-per-hour", "220", "--agents", "10", "--patience", "120", "--callers", "3000"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Erlang A"));
    let out = simulate(&[
        "--calls-per-hour",
        "100",
        "--agents",
        "6",
        "--handle-distribution",
        "log-normal",
        "--callers",
        "1000",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no closed formula"));
}

#[test]
fn bad_flags_are_refused_with_a_message() {
    for (args, says) in [
        (&["--calls-per-hour", "100", "--agents", "0"][..], "agents"),
        (&["--calls-per-hour", "100", "--agents", "9..3"][..], "agents"),
        (&["--calls-per-hour=-5"][..], "calls_per_hour"),
        (&["--calls-per-hour", "100", "--priority", "12:1"][..], "priority"),
        (&["--calls-per-hour", "100", "--max-wait", "100000", "--callers", "10"][..], "max_wait_time_secs"),
    ] {
        let out = simulate(args);
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
