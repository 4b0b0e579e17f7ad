//! `waitline.simulate`: the capacity-planning simulation of `waitline-sim`, run with the GIL
//! released; the figures come back as a dict that `waitline.simulation` turns into a
//! dataclass.

use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use waitline_sim::{Distribution, Prediction, Report, Scenario};

use crate::errors::sim_err;

fn distribution_of(kind: &str, mean: f64, sd: Option<f64>) -> PyResult<Distribution> {
    match kind {
        "exponential" => Ok(Distribution::Exponential { mean }),
        "fixed" => Ok(Distribution::Fixed { secs: mean }),
        "lognormal" => Ok(Distribution::log_normal(mean, sd)),
        other => Err(PyValueError::new_err(format!(
            "handle_distribution must be 'exponential', 'fixed' or 'lognormal', not {other:?}"
        ))),
    }
}

fn prediction_dict<'py>(py: Python<'py>, p: &Prediction) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("model", p.model)?;
    d.set_item("probability_of_waiting", p.probability_of_waiting)?;
    d.set_item("service_level", p.service_level)?;
    d.set_item("mean_wait_secs", p.mean_wait_secs)?;
    d.set_item("mean_answered_wait_secs", p.mean_answered_wait_secs)?;
    d.set_item("abandonment", p.abandonment)?;
    d.set_item("occupancy", p.occupancy)?;
    Ok(d)
}

fn report_dict<'py>(py: Python<'py>, r: &Report) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("agents", r.agents)?;
    d.set_item("offered", r.offered)?;
    d.set_item("answered", r.answered)?;
    d.set_item("abandoned", r.abandoned)?;
    d.set_item("timed_out", r.timed_out)?;
    d.set_item("blocked", r.blocked)?;
    d.set_item("service_level", r.service_level)?;
    d.set_item("probability_of_waiting", r.probability_of_waiting)?;
    d.set_item("mean_wait_secs", r.mean_wait_secs)?;
    d.set_item("mean_answered_wait_secs", r.mean_answered_wait_secs)?;
    d.set_item("p50_answered_wait_secs", r.p50_answered_wait_secs)?;
    d.set_item("p90_answered_wait_secs", r.p90_answered_wait_secs)?;
    d.set_item("p95_answered_wait_secs", r.p95_answered_wait_secs)?;
    d.set_item("abandonment", r.abandonment)?;
    d.set_item("occupancy", r.occupancy)?;
    d.set_item("simulated_secs", r.simulated_secs)?;
    d.set_item("wait_histogram", r.wait_histogram.clone())?;
    d.set_item("histogram_bucket_secs", r.histogram_bucket_secs)?;
    d.set_item("commands", r.commands)?;
    d.set_item("prediction", r.prediction.as_ref().map(|p| prediction_dict(py, p)).transpose()?)?;
    Ok(d)
}

/// Runs one simulation (see `waitline.simulate`, which wraps this).
#[pyfunction]
#[pyo3(signature = (
    *, calls_per_hour, agents, handle_time = 180.0, handle_distribution = "exponential", handle_sd = None,
    patience = None, max_wait = None, priorities = None, callers = 100_000, seed = 1,
    service_level_secs = 20.0, queue_max_size = 1_000_000
))]
pub(crate) fn simulate<'py>(
    py: Python<'py>,
    calls_per_hour: f64,
    agents: u32,
    handle_time: f64,
    handle_distribution: &str,
    handle_sd: Option<f64>,
    patience: Option<f64>,
    max_wait: Option<u64>,
    priorities: Option<Vec<(u8, f64)>>,
    callers: u64,
    seed: u64,
    service_level_secs: f64,
    queue_max_size: u32,
) -> PyResult<Bound<'py, PyDict>> {
    let scenario = Scenario {
        calls_per_hour,
        agents,
        handle_time: distribution_of(handle_distribution, handle_time, handle_sd)?,
        patience: patience.map(|mean| Distribution::Exponential { mean }),
        max_wait: max_wait.map(Duration::from_secs),
        priorities: priorities.unwrap_or_default(),
        callers,
        seed,
        service_level_secs,
        queue_max_size,
    };
    let report = py.detach(|| waitline_sim::simulate(&scenario)).map_err(|e| sim_err(py, &e))?;
    report_dict(py, &report)
}
