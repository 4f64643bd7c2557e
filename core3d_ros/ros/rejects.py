"""Rejections counted by reason, each reason logged once loudly and then only at DEBUG, so a
per-frame fault never floods the log (the mapping node's frames and observations, the
perception node's frames)."""
from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class RejectLog:
    """``reject(reason, detail)`` counts and logs; ``counts()`` for /diagnostics."""

    def __init__(self, logger: Any, what: str):
        self._logger = logger
        self._what = what  # "frame", "observation"
        self._lock = threading.Lock()
        self._counts: Counter = Counter()

    def __call__(self, reason: str, detail: str = "") -> None:
        with self._lock:
            self._counts[reason] += 1
            first = self._counts[reason] == 1
        text = f"{self._what} rejected ({reason}): {detail or reason}"
        if first:
            log = self._logger.error if reason == "error" else self._logger.warning
            log(f"{text} (further ones are counted in /diagnostics)")
        else:
            self._logger.debug(text)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)
