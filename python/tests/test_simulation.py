"""waitline.simulate: the engine-driven simulation from Python, against the closed formulas."""

from __future__ import annotations

import doctest

import pytest

import waitline
import waitline.simulation


def test_mmc_matches_erlang_c() -> None:
    report = waitline.simulate(calls_per_hour=140, agents=10, handle_time=180, callers=30_000, seed=7)
    assert isinstance(report, waitline.SimulationReport)
    assert report.offered == report.answered == 30_000
    c = report.prediction
    assert c is not None and c.model == "Erlang C"
    assert abs(report.service_level - c.service_level) < 0.03
    assert abs(report.occupancy - c.occupancy) < 0.02
    assert sum(report.wait_histogram) == report.answered


def test_patience_matches_erlang_a_and_is_reproducible() -> None:
    args = dict(calls_per_hour=220, agents=10, handle_time=180, patience=120, callers=20_000, seed=3)
    report = waitline.simulate(**args)
    a = report.prediction
    assert a is not None and a.model == "Erlang A"
    assert abs(report.abandonment - a.abandonment) < 0.03
    assert report.answered + report.abandoned == report.offered
    assert waitline.simulate(**args) == report, "the same seed gives the same figures"
    assert report.to_dict()["prediction"]["model"] == "Erlang A"


def test_max_wait_times_callers_out_and_has_no_formula() -> None:
    report = waitline.simulate(calls_per_hour=400, agents=5, handle_time=180, max_wait=60, callers=5_000)
    assert report.prediction is None
    assert report.timed_out > 0
    assert report.answered + report.timed_out == report.offered
    assert report.p95_answered_wait_secs <= 60


def test_priorities_and_distributions() -> None:
    for kind in ("fixed", "lognormal"):
        report = waitline.simulate(calls_per_hour=100, agents=6, handle_time=180, handle_distribution=kind,
                                   priorities=[(0, 0.8), (5, 0.2)], callers=3_000)
        assert report.answered == 3_000
        assert report.prediction is None, "Erlang C assumes exponential handle times"


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="agents"):
        waitline.simulate(calls_per_hour=100, agents=0)
    with pytest.raises(ValueError, match="handle_distribution"):
        waitline.simulate(calls_per_hour=100, agents=1, handle_distribution="uniform")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="calls_per_hour"):
        waitline.simulate(calls_per_hour=-1, agents=1)
    with pytest.raises(waitline.InvalidParameterError, match="max_wait_time_secs"):
        waitline.simulate(calls_per_hour=100, agents=1, max_wait=100_000, callers=10)


def test_plot_draws_when_matplotlib_is_there(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    reports = [waitline.simulate(calls_per_hour=180, agents=n, callers=2_000) for n in (10, 11, 12)]
    path = tmp_path / "plan.png"
    waitline.plot(reports, str(path))
    assert path.stat().st_size > 1000


def test_module_docstring_runs() -> None:
    failures, tried = doctest.testmod(waitline.simulation)
    assert tried > 0 and failures == 0
