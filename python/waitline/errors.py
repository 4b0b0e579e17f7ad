"""The exception hierarchy of waitline.

Every engine refusal raises a subclass of :class:`WaitlineError` carrying the Telnyx values of
the waitline spec (section 6): ``code`` (digits, as text), ``title`` and ``detail``. Which
engine error becomes which class is decided in one place, the native module's error mapping,
and each engine error has a class of its own.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = [
    "WaitlineError",
    "CallNotFoundError",
    "CallExistsError",
    "CallEndedError",
    "QueueFullError",
    "AlreadyInQueueError",
    "NotInQueueError",
    "QueueEmptyError",
    "QueueNotFoundError",
    "QueueCallNotFoundError",
    "QueueNotEmptyError",
    "QueueExistsError",
    "LimitReachedError",
    "InvalidParameterError",
    "StoreError",
]


class WaitlineError(Exception):
    """A command the engine refused. A refused command changed nothing (except where the
    spec says so: a bridge to a queue whose head was dead removes that head)."""

    code: str
    title: str
    detail: str
    parameter: Optional[str]
    meta: Optional[dict[str, Any]]

    def __init__(self, detail: str, code: str = "", title: str = "", parameter: Optional[str] = None,
                 meta: Optional[dict[str, Any]] = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code
        self.title = title
        self.parameter = parameter
        self.meta = meta

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, title={self.title!r}, detail={self.detail!r})"


class CallNotFoundError(WaitlineError):
    """90015: no such call."""


class CallExistsError(WaitlineError):
    """90015: ``dial`` with a ``call_control_id`` that is already known. Telnyx gives it the
    code of an unknown call; it is not a :class:`CallNotFoundError`, since the call exists."""


class CallEndedError(WaitlineError):
    """90018: the call has ended. From a bridge to a queue whose head was kept after hangup,
    ``meta["call"]`` holds what is needed to call that head back."""


class QueueFullError(WaitlineError):
    """90036: the queue is at its ``max_size``."""


class AlreadyInQueueError(WaitlineError):
    """90038: the call is already in that queue."""


class NotInQueueError(WaitlineError):
    """95002: ``leave_queue`` on a call in no queue."""


class QueueEmptyError(WaitlineError):
    """95001: bridge to a queue that is unknown or has no member."""


class QueueNotFoundError(WaitlineError):
    """10005: unknown queue (and, through :class:`QueueCallNotFoundError`, a call that is not a
    member of that queue)."""


class QueueCallNotFoundError(QueueNotFoundError):
    """10005: the queue-call resource does not exist: the call is not a member of that queue.
    Telnyx answers both this and an unknown queue with one "Resource not found" (same code,
    HTTP 404), so it is also a :class:`QueueNotFoundError`: ``except QueueNotFoundError``
    catches every 10005, as it did before this class existed."""


class QueueNotEmptyError(WaitlineError):
    """90050: only an empty queue can be deleted."""


class QueueExistsError(WaitlineError):
    """95003: a queue of that name exists."""


class LimitReachedError(WaitlineError):
    """95004: a cap on live calls or queues."""


class InvalidParameterError(WaitlineError, ValueError):
    """10004 / 10032 / 10033: a missing, out-of-enumeration or out-of-range parameter;
    ``parameter`` names it as the Telnyx API does (e.g. ``max_wait_time_secs``)."""


class StoreError(Exception):
    """The data directory (``Engine(data_dir=...)``) could not be used: in use by another
    process, unreadable, damaged (the message names the file, tenant and record), or a change
    could not be kept. Not a :class:`WaitlineError`: no command was refused."""
