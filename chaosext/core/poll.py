"""One poll loop for every "wait until ... or a deadline" in chaosext."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["retry_until"]

T = TypeVar("T")


def retry_until(check: Callable[[], T], done: Callable[[T], bool], deadline: float, interval: float) -> T:
    """Run ``check`` until ``done(result)`` or ``deadline`` (unix seconds) has passed; the last result. Runs once
    when the deadline is already over."""
    while True:
        result = check()
        if done(result) or time.time() >= deadline:
            return result
        time.sleep(interval)
