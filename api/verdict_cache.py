"""Serialized verdicts kept in memory for a short time: `GET …/verdict` is the hot path (CI
bots and report pages poll it), and a stored verdict changes only when an admin re-runs the
submission. Entries live `verdict_cache_ttl_s` seconds, so another API process's re-run shows
within that time; this process's own re-run/cancel evicts at once."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class CachedVerdict:
    body: bytes          # the JSON bytes, serialized once
    etag: str
    expires: float


class VerdictCache:
    def __init__(self, ttl_s: float, max_entries: int = 4096):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._items: OrderedDict[str, CachedVerdict] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, submission_id: str) -> CachedVerdict | None:
        item = self._items.get(submission_id)
        if item is None or item.expires < time.monotonic():
            return None
        return item

    def put(self, submission_id: str, body: bytes, etag: str) -> CachedVerdict:
        item = CachedVerdict(body, etag, time.monotonic() + self.ttl_s)
        if self.ttl_s <= 0:
            return item
        with self._lock:
            self._items[submission_id] = item
            self._items.move_to_end(submission_id)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
        return item

    def evict(self, submission_id: str) -> None:
        with self._lock:
            self._items.pop(submission_id, None)
