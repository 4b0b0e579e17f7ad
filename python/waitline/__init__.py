"""waitline: an in-process call-queue engine with the semantics of the Telnyx Call Queue API.

>>> import waitline
>>> engine = waitline.Engine(manual_clock=True)
>>> caller = engine.dial(to="+15550001", from_="+15550002")
>>> caller.enqueue("support")
>>> engine.queue("support").current_size
1
"""

from __future__ import annotations

from .errors import (
    AlreadyInQueueError,
    CallEndedError,
    CallExistsError,
    CallNotFoundError,
    InvalidParameterError,
    StoreError,
    LimitReachedError,
    NotInQueueError,
    QueueCallNotFoundError,
    QueueEmptyError,
    QueueExistsError,
    QueueFullError,
    QueueNotEmptyError,
    QueueNotFoundError,
    WaitlineError,
)
from ._native import Call, Engine, Event, EventIterator, Queue, QueueCall
from .simulation import Prediction, SimulationReport, plot, simulate

from . import errors as _errors

__all__ = [
    "Engine", "Call", "Queue", "QueueCall", "Event", "EventIterator",
    "simulate", "SimulationReport", "Prediction", "plot", *_errors.__all__,
]
