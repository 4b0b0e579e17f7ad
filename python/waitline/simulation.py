"""Capacity planning: how many agents does a queue need?

:func:`simulate` drives the real engine on a simulated clock (no sleeping): callers arrive at
random (Poisson), wait, give up when their patience runs out or leave at ``max_wait``, and
agents take the head of the queue for a random handle time. Beside the simulated figures
comes the closed formula for the same inputs when one applies: Erlang C (callers wait
forever) or Erlang A (exponential patience).

>>> import waitline
>>> report = waitline.simulate(calls_per_hour=120, agents=5, handle_time=120, callers=2000)
>>> report.answered
2000
>>> report.prediction.model
'Erlang C'
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Iterable, Literal, Optional, Sequence

from . import _native

__all__ = ["Prediction", "SimulationReport", "simulate", "plot"]


@dataclass(frozen=True)
class Prediction:
    """What a closed formula predicts for the same inputs (shares are fractions of 1)."""

    model: str
    probability_of_waiting: float
    service_level: Optional[float]
    mean_wait_secs: float
    mean_answered_wait_secs: Optional[float]
    abandonment: float
    occupancy: float


@dataclass(frozen=True)
class SimulationReport:
    """What one simulation measured (shares are fractions of 1, times in seconds).

    ``service_level`` is the share of offered callers answered within the threshold;
    ``mean_wait_secs`` is the time in queue over every queued caller, answered or not;
    the percentiles are over answered callers; ``wait_histogram[i]`` counts answered waits in
    ``[i * histogram_bucket_secs, (i + 1) * histogram_bucket_secs)``, the last bucket
    everything above.
    """

    agents: int
    offered: int
    answered: int
    abandoned: int
    timed_out: int
    blocked: int
    service_level: float
    probability_of_waiting: float
    mean_wait_secs: float
    mean_answered_wait_secs: float
    p50_answered_wait_secs: float
    p90_answered_wait_secs: float
    p95_answered_wait_secs: float
    abandonment: float
    occupancy: float
    simulated_secs: float
    wait_histogram: list[int]
    histogram_bucket_secs: float
    commands: int
    prediction: Optional[Prediction]

    def to_dict(self) -> dict[str, Any]:
        """The figures as plain values (the prediction as a dict, or ``None``)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.prediction is not None:
            out["prediction"] = {f.name: getattr(self.prediction, f.name) for f in fields(self.prediction)}
        return out


def simulate(
    *,
    calls_per_hour: float,
    agents: int,
    handle_time: float = 180.0,
    handle_distribution: Literal["exponential", "fixed", "lognormal"] = "exponential",
    handle_sd: Optional[float] = None,
    patience: Optional[float] = None,
    max_wait: Optional[int] = None,
    priorities: Optional[Sequence[tuple[int, float]]] = None,
    callers: int = 100_000,
    seed: int = 1,
    service_level_secs: float = 20.0,
    queue_max_size: int = 1_000_000,
) -> SimulationReport:
    """Simulates ``callers`` callers against ``agents`` agents and returns the figures.

    ``handle_time`` is the mean handle time (seconds); ``handle_sd`` the standard deviation
    of log-normal handle times (default half the mean); ``patience`` the mean of an
    exponential patience (``None``: callers wait forever); ``max_wait`` every caller's
    ``max_wait_time_secs``; ``priorities`` pairs of (band 0-9, share). The same inputs and
    ``seed`` give the same figures. Raises ``ValueError`` for inputs out of range, and the
    engine's own error (e.g. :class:`waitline.InvalidParameterError` for a ``max_wait`` of
    two days) when the engine refuses a command. The GIL is released while it runs.
    """
    raw = _native.simulate(
        calls_per_hour=calls_per_hour,
        agents=agents,
        handle_time=handle_time,
        handle_distribution=handle_distribution,
        handle_sd=handle_sd,
        patience=patience,
        max_wait=max_wait,
        priorities=list(priorities) if priorities is not None else None,
        callers=callers,
        seed=seed,
        service_level_secs=service_level_secs,
        queue_max_size=queue_max_size,
    )
    prediction = raw.pop("prediction")
    return SimulationReport(**raw, prediction=Prediction(**prediction) if prediction is not None else None)


def plot(reports: Iterable[SimulationReport], path: Optional[str] = None) -> Any:
    """Draws the wait distribution of the last report and the service level against agents
    (with Erlang C's where it applies) with matplotlib; saves to ``path`` when given and
    returns the figure. Raises ``ImportError`` when matplotlib is not installed."""
    try:
        import matplotlib

        if path is not None:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("waitline.plot needs matplotlib: pip install matplotlib") from e
    reports = list(reports)
    if not reports:
        raise ValueError("plot needs at least one report")
    last = reports[-1]
    fig, (waits, levels) = plt.subplots(1, 2, figsize=(12, 4.8))
    width = last.histogram_bucket_secs
    total = max(last.answered, 1)
    waits.bar([i * width for i in range(len(last.wait_histogram))],
              [n / total for n in last.wait_histogram], width=width, align="edge")
    waits.set(title=f"Wait of answered callers, {last.agents} agents", xlabel="wait (s)",
              ylabel="share of answered")
    levels.plot([r.agents for r in reports], [r.service_level for r in reports], "r-", label="simulated")
    formula = [(r.agents, r.prediction.service_level) for r in reports
               if r.prediction is not None and r.prediction.service_level is not None]
    if formula:
        levels.plot(*zip(*formula), "ko", label="Erlang C")
    levels.set(title="Service level", xlabel="agents", ylabel="answered within threshold", ylim=(0, 1))
    levels.legend()
    if path is not None:
        fig.savefig(path)
    return fig
