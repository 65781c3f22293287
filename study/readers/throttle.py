"""Limits on repeated failures and on noise, kept in the server's memory.

`Backoff` answers "may this key try again now?": a few free failures, then a wait that doubles
with each further failure (capped), cleared by a success or forgotten an hour after the last failure.
Login uses one per reader name (known or not, so a lockout says nothing about which names exist),
charged before the slow password check so concurrent guesses cannot share a free failure, and one
per client address, with more free failures (readers behind one NAT share an address) and not
cleared by a success (an attacker with an account of their own cannot reset it).

`NoiseLimiter` decides which unauthenticated events (failed logins, calls with a bad session) are
written to the audit log: a fixed number per key per window, the rest counted and reported in the
next row written, so a flood cannot grow the database without bound.

Both are per process and bounded in size (oldest keys dropped first): a restarted server forgets
its counters, which costs an attacker nothing they could not get by waiting out the backoff.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from engine.config import JsonConfig


@dataclass
class BackoffConfig(JsonConfig):
    free_failures: int = 5  # failures in a row before the first wait (the attempt after the 5th waits)
    first_wait_s: float = 1.0  # wait after the first failure beyond the free ones; doubles after each
    max_wait_s: float = 900.0
    forget_after_s: float = 3600.0  # a key's count starts again this long after its last failure
    max_keys: int = 10_000  # memory bound: least recently failed keys are forgotten first


class Backoff:
    def __init__(self, config: BackoffConfig | None = None, clock: Callable[[], float] = time.monotonic):
        self.config = config or BackoffConfig()
        self.clock = clock
        self._lock = threading.Lock()
        self._state: OrderedDict[str, tuple[int, float, float]] = OrderedDict()  # key → (failures, not before, last)

    def _get(self, key: str) -> tuple[int, float, float] | None:
        state = self._state.get(key)
        if state is not None and self.clock() - state[2] > self.config.forget_after_s:
            del self._state[key]
            return None
        return state

    def wait_s(self, key: str) -> float:
        """Seconds `key` must wait before its next attempt (0 when it may try now)."""
        with self._lock:
            state = self._get(key)
            return 0.0 if state is None else max(0.0, state[1] - self.clock())

    def charge(self, keys: list[str]) -> float:
        """Start an attempt: the longest wait among `keys` if any must wait (nothing is counted),
        else 0 after counting the attempt as a failure for every key, to be cleared by
        `succeeded`. Counting before the (slow) check means concurrent attempts cannot all slip
        through on the same free failure."""
        with self._lock:
            now = self.clock()
            states = [self._get(k) for k in keys]
            wait = max((max(0.0, st[1] - now) for st in states if st is not None), default=0.0)
            if wait > 0:
                return wait
            for key in keys:
                self._fail(key)
            return 0.0

    def failed(self, key: str) -> None:
        with self._lock:
            self._fail(key)

    def _fail(self, key: str) -> None:
        c = self.config
        failures = (self._get(key) or (0, 0.0, 0.0))[0] + 1
        self._state.pop(key, None)
        extra = failures - c.free_failures + 1
        wait = 0.0 if extra <= 0 else min(c.max_wait_s, c.first_wait_s * 2 ** (extra - 1))
        now = self.clock()
        self._state[key] = (failures, now + wait, now)
        while len(self._state) > c.max_keys:
            self._state.popitem(last=False)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._state.pop(key, None)

    def failures(self, key: str) -> int:
        with self._lock:
            return (self._get(key) or (0, 0.0, 0.0))[0]


class NoiseLimiter:
    def __init__(self, per_window: int = 20, window_s: float = 60.0, max_keys: int = 1_000,
                 clock: Callable[[], float] = time.monotonic):
        self.per_window = per_window
        self.window_s = window_s
        self.max_keys = max_keys
        self.clock = clock
        self._lock = threading.Lock()
        self._state: OrderedDict[str, list] = OrderedDict()  # key → [window start, written, suppressed]

    def admit(self, key: str) -> tuple[bool, int]:
        """(write this event?, events suppressed since the last written one, to note in it)."""
        now = self.clock()
        with self._lock:
            state = self._state.pop(key, None)
            if state is None or now - state[0] >= self.window_s:
                state = [now, 0, 0 if state is None else state[2]]
            self._state[key] = state
            while len(self._state) > self.max_keys:
                self._state.popitem(last=False)
            if state[1] < self.per_window:
                state[1] += 1
                suppressed, state[2] = state[2], 0
                return True, suppressed
            state[2] += 1
            return False, 0
