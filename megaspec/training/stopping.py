"""Ending a training run early: on a signal (Ctrl-C, ``kill``) or at a non-finite loss."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class NonFiniteLossError(ArithmeticError):
    """Training reached a NaN or infinite loss (or gradient norm) and stopped.

    Attributes:
        step: the 1-based step whose loss was not finite; its update was not applied.
        what: ``"loss"`` or ``"gradient norm"``.
        value: the non-finite value.
    """

    def __init__(self, step: int, what: str, value: float) -> None:
        super().__init__(
            f"step {step}: the {what} is {value}; stopped training without saving "
            f"(a smaller training.learning_rate or training.grad_clip may help)"
        )
        self.step, self.what, self.value = step, what, value


class StopRequest:
    """Records the first SIGINT or SIGTERM received while :func:`stop_on_signals` is active.

    Attributes:
        signal_number: the signal received, or ``None``.
    """

    def __init__(self) -> None:
        self.signal_number: int | None = None

    @property
    def requested(self) -> bool:
        """Whether a signal asked the run to stop."""
        return self.signal_number is not None

    @property
    def signal_name(self) -> str | None:
        """``"SIGINT"``, ``"SIGTERM"`` or ``None``."""
        if self.signal_number is None:
            return None
        return signal.Signals(self.signal_number).name


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """While active, SIGINT and SIGTERM set the yielded :class:`StopRequest` instead of
    killing the process, so the loop can finish its step and save.

    The first signal restores the previous handlers, so a second Ctrl-C interrupts at once
    (a user who does not want to wait is not stuck). Outside the main thread signals cannot
    be caught, and the request simply never fires.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {number: signal.getsignal(number) for number in _SIGNALS}

    def restore() -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)

    def handle(number: int, frame: FrameType | None) -> None:
        request.signal_number = number
        restore()

    for number in _SIGNALS:
        signal.signal(number, handle)
    try:
        yield request
    finally:
        restore()
