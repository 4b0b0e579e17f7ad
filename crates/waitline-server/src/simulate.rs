//! `waitline simulate`: capacity planning from the command line. Translates flags into a
//! [`waitline_sim::Scenario`], runs one simulation per agent count, prints a table with the
//! closed formula's figures beside the simulated ones, and draws them as SVG on request.

use std::fmt::Write as _;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use waitline_sim::{Distribution, Report, Scenario};

/// Flags of `waitline simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Mean arrival rate of callers, per hour (Poisson arrivals).
    #[arg(long)]
    pub calls_per_hour: f64,
    /// Agents on duty: a number, or a range `A..B` (inclusive) to sweep.
    #[arg(long, default_value = "10", value_parser = parse_agents)]
    pub agents: RangeInclusive<u32>,
    /// Mean handle time of a call, seconds.
    #[arg(long, default_value_t = 180.0)]
    pub handle_time: f64,
    /// Distribution of handle times.
    #[arg(long, value_enum, default_value_t = HandleDistribution::Exponential)]
    pub handle_distribution: HandleDistribution,
    /// Standard deviation of log-normal handle times, seconds [default: half the mean].
    #[arg(long)]
    pub handle_sd: Option<f64>,
    /// Mean patience of callers (exponential), seconds; without it callers wait forever.
    #[arg(long)]
    pub patience: Option<f64>,
    /// `max_wait_time_secs` of every caller.
    #[arg(long)]
    pub max_wait: Option<u64>,
    /// A priority band and its share of callers, `BAND:SHARE` (repeatable), e.g.
    /// `--priority 0:0.8 --priority 5:0.2`.
    #[arg(long = "priority", value_parser = parse_priority)]
    pub priorities: Vec<(u8, f64)>,
    /// Callers per simulation.
    #[arg(long, default_value_t = 100_000)]
    pub callers: u64,
    /// Seed of the random draws (the same seed gives the same figures).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Service-level threshold, seconds.
    #[arg(long, default_value_t = 20.0)]
    pub service_level_secs: f64,
    /// The queue's `max_size` (callers who find it full are blocked).
    #[arg(long, default_value_t = 1_000_000)]
    pub queue_max_size: u32,
    /// Also draw the wait-time distribution and the service level against agents here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

/// Handle-time distributions on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HandleDistribution {
    /// Exponential (what Erlang C and A assume).
    Exponential,
    /// Every call takes exactly the mean.
    Fixed,
    /// Log-normal with `--handle-sd`.
    LogNormal,
}

fn parse_agents(s: &str) -> Result<RangeInclusive<u32>, String> {
    let number = |t: &str| t.trim().parse::<u32>().map_err(|_| format!("{t:?} is not a number of agents"));
    let (low, high) = match s.split_once("..") {
        Some((a, b)) => (number(a)?, number(b.trim_start_matches('='))?),
        None => (number(s)?, number(s)?),
    };
    if low == 0 || high < low {
        return Err(format!("agents {s:?}: give N or A..B with 1 <= A <= B"));
    }
    Ok(low..=high)
}

fn parse_priority(s: &str) -> Result<(u8, f64), String> {
    let bad = || format!("priority {s:?}: give BAND:SHARE, BAND 0-9 and SHARE > 0");
    let (band, share) = s.split_once(':').ok_or_else(bad)?;
    let band = band.trim().parse::<u8>().map_err(|_| bad())?;
    let share = share.trim().parse::<f64>().map_err(|_| bad())?;
    if band > 9 || !(share.is_finite() && share > 0.0) {
        return Err(bad());
    }
    Ok((band, share))
}

impl SimulateArgs {
    /// The scenario for `agents` agents.
    #[must_use]
    pub fn scenario(&self, agents: u32) -> Scenario {
        let mean = self.handle_time;
        Scenario {
            calls_per_hour: self.calls_per_hour,
            agents,
            handle_time: match self.handle_distribution {
                HandleDistribution::Exponential => Distribution::Exponential { mean },
                HandleDistribution::Fixed => Distribution::Fixed { secs: mean },
                HandleDistribution::LogNormal => Distribution::log_normal(mean, self.handle_sd),
            },
            patience: self.patience.map(|mean| Distribution::Exponential { mean }),
            max_wait: self.max_wait.map(Duration::from_secs),
            priorities: self.priorities.clone(),
            callers: self.callers,
            seed: self.seed,
            service_level_secs: self.service_level_secs,
            queue_max_size: self.queue_max_size,
        }
    }
}

/// Runs every agent count and returns the printed table; draws the SVG when asked.
///
/// # Errors
/// An input the simulation or the engine refuses, or an SVG that cannot be written.
pub fn run(args: &SimulateArgs) -> Result<String, String> {
    let mut reports = Vec::new();
    for agents in args.agents.clone() {
        reports.push(waitline_sim::simulate(&args.scenario(agents)).map_err(|e| e.to_string())?);
    }
    if let Some(path) = &args.svg {
        draw(path, &reports, args.service_level_secs)?;
    }
    Ok(table(args, &reports))
}

fn percent(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn formula_cell(x: Option<f64>, show: fn(f64) -> String) -> String {
    x.map_or_else(|| "-".to_owned(), show)
}

/// The table: simulated figures, then the closed formula's for the same inputs.
#[must_use]
pub fn table(args: &SimulateArgs, reports: &[Report]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} callers per run, {:.1} calls/hour, handle time {:.0} s ({:?}), patience {}, max wait {}, service level within {} s",
        args.callers,
        args.calls_per_hour,
        args.handle_time,
        args.handle_distribution,
        args.patience.map_or_else(|| "none".to_owned(), |p| format!("{p:.0} s (exponential)")),
        args.max_wait.map_or_else(|| "none".to_owned(), |w| format!("{w} s")),
        args.service_level_secs,
    );
    let model = reports.iter().find_map(|r| r.prediction.map(|p| p.model)).unwrap_or("formula");
    let _ = writeln!(
        out,
        "| agents | service level | P(wait) | mean wait | ASA | p90 | p95 | abandoned | timed out | occupancy | {model}: service level | P(wait) | mean wait | abandoned | occupancy |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let secs = |x: f64| format!("{x:.1} s");
    for r in reports {
        let p = r.prediction;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.agents,
            percent(r.service_level),
            percent(r.probability_of_waiting),
            secs(r.mean_wait_secs),
            secs(r.mean_answered_wait_secs),
            secs(r.p90_answered_wait_secs),
            secs(r.p95_answered_wait_secs),
            percent(r.abandonment),
            percent(r.timed_out as f64 / r.offered.max(1) as f64),
            percent(r.occupancy),
            formula_cell(p.and_then(|p| p.service_level), percent),
            formula_cell(p.map(|p| p.probability_of_waiting), percent),
            formula_cell(p.map(|p| p.mean_wait_secs), secs),
            formula_cell(p.map(|p| p.abandonment), percent),
            formula_cell(p.map(|p| p.occupancy), percent),
        );
    }
    if reports.iter().all(|r| r.prediction.is_none()) {
        out.push_str(
            "(no closed formula for these inputs: Erlang C needs exponential handle times, no patience and no max wait, and a load below the agents; Erlang A exponential patience)\n",
        );
    }
    out
}

/// Two charts side by side: the wait distribution of the answered callers (for the largest
/// agent count), and the service level against agents, simulated and by formula.
fn draw(path: &Path, reports: &[Report], threshold: f64) -> Result<(), String> {
    use plotters::prelude::*;
    let fail = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let (left, right) = root.split_horizontally(600);
    let last = reports.last().ok_or_else(|| fail(&"nothing simulated"))?;
    let total = last.answered.max(1) as f64;
    let width = last.histogram_bucket_secs;
    let top = last.wait_histogram.iter().copied().max().unwrap_or(0) as f64 / total;
    let buckets = last.wait_histogram.len() as f64;
    let mut chart = ChartBuilder::on(&left)
        .caption(format!("Wait of answered callers, {} agents", last.agents), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(0.0..buckets * width, 0.0..(top * 1.1).max(0.01))
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("wait (s), last bar: everything above")
        .y_desc("share of answered")
        .draw()
        .map_err(|e| fail(&e))?;
    chart
        .draw_series(last.wait_histogram.iter().enumerate().map(|(i, &n)| {
            let x = i as f64 * width;
            Rectangle::new([(x, 0.0), (x + width, n as f64 / total)], BLUE.mix(0.6).filled())
        }))
        .map_err(|e| fail(&e))?;
    let agents = |r: &Report| f64::from(r.agents);
    let (lo, hi) = (agents(&reports[0]), agents(last));
    let mut chart = ChartBuilder::on(&right)
        .caption(format!("Service level (answered within {threshold} s)"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d((lo - 0.5)..(hi + 0.5), 0.0..1.0)
        .map_err(|e| fail(&e))?;
    chart.configure_mesh().x_desc("agents").y_desc("service level").draw().map_err(|e| fail(&e))?;
    chart
        .draw_series(LineSeries::new(
            reports.iter().map(|r| (agents(r), r.service_level)),
            RED.stroke_width(2),
        ))
        .map_err(|e| fail(&e))?
        .label("simulated")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    let formula: Vec<(f64, f64)> = reports
        .iter()
        .filter_map(|r| r.prediction.and_then(|p| p.service_level).map(|s| (agents(r), s)))
        .collect();
    if !formula.is_empty() {
        chart
            .draw_series(formula.iter().map(|&(x, y)| Circle::new((x, y), 4, BLACK.filled())))
            .map_err(|e| fail(&e))?
            .label("Erlang C")
            .legend(|(x, y)| Circle::new((x + 10, y), 4, BLACK.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_take_a_number_or_a_range() {
        assert_eq!(parse_agents("7"), Ok(7..=7));
        assert_eq!(parse_agents("5..15"), Ok(5..=15));
        assert_eq!(parse_agents("5..=6"), Ok(5..=6));
        assert!(parse_agents("0").is_err());
        assert!(parse_agents("9..3").is_err());
        assert!(parse_agents("x").is_err());
    }

    #[test]
    fn priorities_take_a_band_and_a_share() {
        assert_eq!(parse_priority("5:0.2"), Ok((5, 0.2)));
        assert!(parse_priority("10:1").is_err());
        assert!(parse_priority("1:0").is_err());
        assert!(parse_priority("1").is_err());
    }
}
