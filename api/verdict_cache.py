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

    def lookup(self, submission_id: str) -> tuple[CachedVerdict | None, bool]:
        """(entry, refresh): an expired entry is handed to exactly one caller with refresh=True
        (it reloads from the store) while everyone else keeps getting it for one more TTL —
        no stampede of identical queries when a hot entry expires."""
        item = self._items.get(submission_id)
        if item is None:
            return None, True
        now = time.monotonic()
        if item.expires >= now:
            return item, False
        with self._lock:
            current = self._items.get(submission_id)
            if current is item:
                self._items[submission_id] = CachedVerdict(item.body, item.etag, now + self.ttl_s)
                return item, True
        return current, False

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


class VerdictFastPath:
    """Pure ASGI front for the hot read: a public `GET /v1/submissions/{id}/verdict` whose
    serialized verdict is in the cache is answered here, without routing, dependency resolution
    or a thread hop. Everything else (cache miss, a token to check, private reports) goes through
    the normal FastAPI route, which fills the cache."""

    _PREFIX, _SUFFIX = "/v1/submissions/", "/verdict"

    def __init__(self, app, cache: VerdictCache, settings, observe=None):  # noqa: ANN001
        self.app, self.cache, self.settings, self.observe = app, cache, settings, observe

    async def __call__(self, scope, receive, send):  # noqa: ANN001
        if scope["type"] == "http" and scope["method"] == "GET" and self.settings.reports_public:
            path = scope["path"]
            if path.startswith(self._PREFIX) and path.endswith(self._SUFFIX):
                sid = path[len(self._PREFIX):-len(self._SUFFIX)]
                item, refresh = self.cache.lookup(sid) if "/" not in sid else (None, True)
                if item is not None and not refresh:
                    etag_match = False
                    for name, value in scope["headers"]:
                        if name == b"authorization":
                            item = None       # a token must be checked: the slow path
                            break
                        if name == b"if-none-match" and value.decode("latin-1") == item.etag:
                            etag_match = True
                    if item is not None:
                        start = time.perf_counter()
                        await self._answer(send, item, etag_match)
                        if self.observe is not None:
                            self.observe(time.perf_counter() - start, 304 if etag_match else 200)
                        return
        await self.app(scope, receive, send)

    @staticmethod
    async def _answer(send, item: CachedVerdict, not_modified: bool) -> None:  # noqa: ANN001
        etag = item.etag.encode("latin-1")
        if not_modified:
            await send({"type": "http.response.start", "status": 304,
                        "headers": [(b"etag", etag), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"etag", etag),
                                (b"content-length", str(len(item.body)).encode())]})
        await send({"type": "http.response.body", "body": item.body})
