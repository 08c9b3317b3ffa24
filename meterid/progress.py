"""Progress of long loops: a tqdm bar on a terminal; elsewhere (a Prefect worker's log, CI, a
file) a log line every ``every_s`` seconds and one at the end, instead of carriage returns."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

log = logging.getLogger(__name__)
T = TypeVar("T")

EVERY_S = 30.0


def _status(done: int, total: int | None, unit: str, elapsed: float) -> str:
    rate = f"{done / elapsed:.1f} {unit}/s" if elapsed > 0 else ""
    share = f" ({done / total:.0%})" if total else ""
    return f"{done}{f'/{total}' if total else ''} {unit}{share}, {elapsed:.0f} s, {rate}"


def progress(items: Iterable[T], desc: str, unit: str, total: int | None = None,
             initial: int = 0, every_s: float = EVERY_S) -> Iterator[T]:
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if sys.stderr.isatty():
        yield from tqdm(items, desc=desc, unit=unit, total=total, initial=initial,
                        mininterval=0.5, file=sys.stderr)
        return
    start = last = time.monotonic()
    done = initial
    for item in items:
        yield item
        done += 1
        if time.monotonic() - last >= every_s:
            last = time.monotonic()
            log.info("%s: %s", desc, _status(done, total, unit, last - start))
    log.info("%s: %s, finished", desc, _status(done, total, unit, time.monotonic() - start))
