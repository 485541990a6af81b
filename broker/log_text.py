"""Refused attempts in the log, bounded (device strings in log lines: store.device_text)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any


class Refusals:
    """Refused attempts in the log without letting a flood write the log full: each refusal has its own line,
    up to ``per_second`` a second; beyond that one line a second says how many more there were. ``later``
    schedules the summary (asyncio's ``loop.call_later``), so it comes even when the flood stops. Lines go to
    ``log`` at INFO: a refusal is the registry working, not a problem."""

    def __init__(self, log: logging.Logger, later: Callable[[float, Callable[[], None]], Any], *,
                 per_second: int = 20, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.later = later
        self.per_second = per_second
        self.clock = clock
        self._second = -1
        self._count = 0
        self._more = 0

    def __call__(self, line: str) -> None:
        second = int(self.clock())
        if second != self._second:
            self._second, self._count = second, 0
        self._count += 1
        if self._count <= self.per_second:
            self.log.info(line)
            return
        if not self._more:
            self.later(1.0, self.summarise)
        self._more += 1

    def summarise(self) -> None:
        if self._more:
            self.log.info(f"mqtt refuse: {self._more} more refused attempts in the last second, not logged one by one")
            self._more = 0
