"""The streaming scorer: sources in, one output row per input row out, in bounded memory.

Downloads, decoding, the quality gate and preprocessing run in a thread pool (``concurrency``
workers; requests, Pillow, OpenCV and torch release the GIL), at most ``window`` sources ahead of
the model, while the calling thread runs batched inference. So network, decode and compute
overlap, and memory holds at most ``window`` prepared images whatever the list's length.

The same source twice is fetched once (in flight: one shared future; later: a bounded cache of
finished rows), and the same image bytes under two URLs are inferred once (a cache by sha256).
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import torch

from meterid.config import QualityConfig
from meterid.core import ERROR, OK, POOR_QUALITY, ScoredRow
from meterid.inference.fetch import Fetcher, FetchError
from meterid.inference.predictor import Prediction, Predictor
from meterid.inference.quality import gate_limits, measure_quality, quality_issues
from meterid.photos.images import ImageError, rgb_from_bytes

log = logging.getLogger(__name__)

CACHE_ENTRIES = 20_000  # finished rows / predictions remembered for duplicates (~10 MB)


@dataclass
class Prepared:
    """One source after download, decode and quality gate; ``tensor`` is None on error."""

    columns: dict[str, object]
    tensor: torch.Tensor | None = None
    data: bytes | None = field(default=None, repr=False)  # kept until UNKNOWN is known


@dataclass
class _Pending:
    """An image waiting for its batch, and every input row that holds it."""

    prepared: Prepared
    rows: list[tuple[int, str]] = field(default_factory=list)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def error_columns(reason: str) -> dict[str, object]:
    return {"status": ERROR, "error": reason, "label": None, "is_unknown": None}


class BatchScorer:
    """Scores (row, source) pairs; ``on_unknown(bytes, row)`` receives each UNKNOWN photo,
    ``on_scored(bytes, row)`` every photo scored.
    The quality gate uses the limits the model carries (derived from its training photos), or
    ``quality``, the params' generic ones, for a model trained before them."""

    def __init__(self, predictor: Predictor, fetcher: Fetcher, quality: QualityConfig,
                 max_pixels: int, batch_size: int, concurrency: int,
                 on_unknown: Callable[[bytes, ScoredRow], object] | None = None,
                 on_scored: Callable[[bytes, ScoredRow], object] | None = None):
        self.predictor = predictor
        self.fetcher = fetcher
        self.quality = gate_limits(predictor.bundle.quality_limits, quality)
        self.max_pixels = max_pixels
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.window = max(2 * batch_size, 2 * concurrency)
        self.on_unknown = on_unknown
        self.on_scored = on_scored
        self._in_flight: dict[str, Future] = {}
        self._finished: OrderedDict[str, dict] = OrderedDict()  # source -> row columns
        self._by_sha: OrderedDict[str, dict] = OrderedDict()  # image sha256 -> scored columns

    # --- per source, in the worker threads ----------------------------------------------------

    def prepare(self, source: str) -> Prepared:
        """Fetch, decode, measure quality and preprocess; failures become an error row."""
        if not source:
            return Prepared(error_columns("empty url"))
        try:
            fetched = self.fetcher.fetch(source)
        except FetchError as error:
            return Prepared(error_columns(str(error)))
        data = fetched.data
        sha256 = hashlib.sha256(data).hexdigest()
        known = self._by_sha.get(sha256)
        if known is not None:  # the same photo under another URL: no decode, no inference
            return Prepared(dict(known), None, data)
        facts: dict[str, object] = {"sha256": sha256, "bytes": len(data)}
        try:
            image = rgb_from_bytes(data, self.max_pixels, self.predictor.image_size)
            quality = measure_quality(image)
            tensor = self.predictor.preprocess(image)
        except ImageError as error:
            return Prepared({**facts, **error_columns(str(error))})
        except Exception as error:  # a bad image must never stop the run: record and go on
            log.exception("unexpected failure preparing %s", source)
            return Prepared({**facts, **error_columns(f"internal error: {error!r}")})
        issues = quality_issues(quality, self.quality)
        facts.update(quality.to_dict(), quality_issue="; ".join(issues) or None,
                     image_format=_format_of(data))
        return Prepared(facts, tensor, data)

    # --- in the calling thread ------------------------------------------------------------------

    def score(self, rows: Iterable[tuple[int, str]]) -> Iterator[ScoredRow]:
        """Yields one row per input row (not necessarily in input order: errors come first)."""
        pending: dict[str, _Pending] = {}  # by sha256: copies of one image share one slot
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="meterid-fetch") as pool:
            window: deque[tuple[int, str, Future]] = deque()
            for row, source in rows:
                window.append((row, source, self._submit(pool, source)))
                if len(window) >= self.window:
                    yield from self._take(*window.popleft(), pending)
            while window:
                yield from self._take(*window.popleft(), pending)
            yield from self._infer(pending)

    def score_in_order(self, sources: list[str]) -> list[ScoredRow]:
        """A short list (``meterid predict``, the dashboard): one row per source, in order."""
        return sorted(self.score(enumerate(sources)), key=lambda scored: scored.row)

    def _submit(self, pool: ThreadPoolExecutor, source: str) -> Future:
        if source in self._finished:
            done: Future = Future()
            done.set_result(None)  # None: copy the finished row
            return done
        if source not in self._in_flight:
            self._in_flight[source] = pool.submit(self.prepare, source)
        return self._in_flight[source]

    def _take(self, row: int, source: str, future: Future,
              pending: dict[str, _Pending]) -> Iterator[ScoredRow]:
        prepared: Prepared | None = future.result()
        self._in_flight.pop(source, None)
        if prepared is None:
            self._finished.move_to_end(source)
            yield ScoredRow.of({**self._finished[source], "row": row, "url": source})
            return
        sha256 = str(prepared.columns.get("sha256"))
        known = self._by_sha.get(sha256)
        if known is not None and prepared.tensor is not None:  # a copy scored since it was fetched
            prepared = Prepared(dict(known), None, prepared.data)
        if prepared.tensor is None:
            yield self._finish(row, source, prepared, None)
            return
        pending.setdefault(sha256, _Pending(prepared)).rows.append((row, source))
        if len(pending) >= self.batch_size:
            yield from self._infer(pending)

    def _infer(self, pending: dict[str, _Pending]) -> Iterator[ScoredRow]:
        if not pending:
            return
        entries = list(pending.values())
        pending.clear()
        # only prepared photos with a tensor are pending (see _score)
        tensors = [e.prepared.tensor for e in entries if e.prepared.tensor is not None]
        predictions = self.predictor.predict(torch.stack(tensors))
        for entry, prediction in zip(entries, predictions, strict=True):
            for row, source in entry.rows:
                out = self._finish(row, source, entry.prepared, prediction)
                yield out
            _remember(self._by_sha, str(entry.prepared.columns["sha256"]),
                      {k: v for k, v in out.to_dict().items()
                       if k not in ("row", "url", "scored_at")})

    def _finish(self, row: int, source: str, prepared: Prepared,
                prediction: Prediction | None) -> ScoredRow:
        columns = dict(prepared.columns)
        if prediction is not None:
            columns.update(status=OK, error=None, **prediction.columns())
            if columns.get("quality_issue"):
                columns.update(label=POOR_QUALITY, auto_accepted=False)
        columns.update(model_version=self.predictor.version, scored_at=_now())
        _remember(self._finished, source, columns)
        out = ScoredRow.of({**columns, "row": row, "url": source})
        if self.on_unknown is not None and out.kept_as_unknown and prepared.data:
            self.on_unknown(prepared.data, out)
        if self.on_scored is not None and out.status == OK and prepared.data:
            self.on_scored(prepared.data, out)
        return out


def _remember(cache: OrderedDict, key: str, value: object) -> None:
    cache[key] = value
    cache.move_to_end(key)
    if len(cache) > CACHE_ENTRIES:
        cache.popitem(last=False)


_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG", "PNG"), (b"RIFF", "WEBP"), (b"GIF8", "GIF"),
          (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"BM", "BMP"))


def _format_of(data: bytes) -> str | None:
    """The container format by magic bytes (the decoded RGB copy no longer knows it)."""
    return next((name for magic, name in _MAGIC if data.startswith(magic)), None)
