"""Batch scoring cut into shards, for worker processes (a Dask cluster): the pure shard logic.

The list is cut into shards of ``score.shard_rows`` consecutive input rows (a few hundred: one
task per image would swamp the orchestrator). Each shard is scored in one worker process into
one checkpoint part, ``part-rows-<start>-<stop>.parquet``, written atomically into the run's work
folder: the same folder, keyed by ``run_key``, that a single-process run checkpoints into. So a
run killed on either path resumes on either: planning leaves out the rows already in a part,
and a shard whose part exists is skipped whole. The parts are assembled in input order as a
single-process run's are (``steps.finish_run``: one output row per input row, checked).

Each worker process loads the model once (a cache by model source, engine and threads) with
PyTorch's and ONNX Runtime's compute threads set to the worker's threads, so N single-threaded
workers use N cores without oversubscribing them.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Sequence, Set
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from meterid.config import Params, ScoreConfig
from meterid.inference.predictor import Predictor, decision_policy
from meterid.inference.quality import gate_limits
from meterid.registry import load_classifier
from meterid.review.photos import ReviewPhotos
from meterid.scoring.checkpoint import Checkpoint
from meterid.scoring.sources import SOURCE
from meterid.scoring.steps import ScoringRun, field_audit, open_run, open_scorer
from meterid.scoring.store import UnknownStore

log = logging.getLogger(__name__)

SCALE_OUT_FORMS = ('"threads" (one process), "dask" (a local Dask cluster of score.dask_workers '
                   'processes), "dask:N" (N local worker processes, 1 thread each) or a Dask '
                   'scheduler address "tcp://host:8786"')


class ScaleOutError(ValueError):
    """A scale-out value that is none of the accepted forms; the message lists them."""


@dataclass(frozen=True)
class ScaleOut:
    """Where a run's shards go: ``workers`` local Dask processes or the scheduler at
    ``address``; neither: today's single process (downloads in threads)."""

    workers: int | None = None
    address: str | None = None

    @property
    def sharded(self) -> bool:
        return self.workers is not None or self.address is not None


def parse_scale_out(value: str, default_workers: int) -> ScaleOut:
    """``threads``, ``dask``, ``dask:N`` or ``tcp://host:port``; anything else is refused."""
    text = value.strip()
    if text == "threads":
        return ScaleOut()
    if text == "dask":
        return ScaleOut(workers=default_workers)
    if match := re.fullmatch(r"dask:([1-9][0-9]*)", text):
        return ScaleOut(workers=int(match[1]))
    if re.fullmatch(r"tcp://[^\s/:]+:[0-9]{1,5}", text):
        return ScaleOut(address=text)
    raise ScaleOutError(f"invalid scale-out {value!r}: use {SCALE_OUT_FORMS}")


@dataclass(frozen=True)
class Shard:
    """Input rows ``start`` to ``stop - 1``, and those of them still to score."""

    start: int
    stop: int
    todo: tuple[tuple[int, str], ...]  # (row, url)

    @property
    def part_name(self) -> str:
        return f"part-rows-{self.start:09d}-{self.stop:09d}.parquet"


@dataclass(frozen=True)
class ShardJob:
    """What every shard of one run needs, as plain values: it is pickled to the workers."""

    params: Params
    cfg: ScoreConfig
    model_source: str  # pinned: models:/meterid/N or an absolute folder, never an alias
    threshold: float | None
    run_id: str
    root: Path  # the project folder, where the stores are resolved (``configure_stores``)
    # Absolute, as the flow's process sees them: a worker's own working folder does not matter.
    work_dir: Path  # the run's checkpoint folder
    onnx_cache: Path
    unknown_store: Path | None  # None: UNKNOWN photos not kept
    review_photos: Path  # the photos a person will see
    auto_accept: bool  # False while the field audit stops it: every photo goes to a person


@dataclass(frozen=True)
class ShardedRun:
    run: ScoringRun
    job: ShardJob
    shards: list[Shard]


@dataclass(frozen=True)
class ShardResult:
    start: int
    stop: int
    scored: int  # rows scored by this call: 0 when the shard's part was already there


def plan_shards(urls: Sequence[str], done: Set[int], shard_rows: int) -> list[Shard]:
    """Shards of ``shard_rows`` consecutive input rows (``urls[i]`` is row ``i``), each with its
    rows not yet ``done``; a shard with nothing left to score is left out. The same list and
    size always give the same shards, so a part's name finds its shard again on a resume."""
    if shard_rows < 1:
        raise ValueError(f"shard_rows must be at least 1, not {shard_rows}")
    shards = []
    for start in range(0, len(urls), shard_rows):
        stop = min(start + shard_rows, len(urls))
        todo = tuple((row, urls[row]) for row in range(start, stop) if row not in done)
        if todo:
            shards.append(Shard(start, stop, todo))
    return shards


def plan_run(params: Params, cfg: ScoreConfig, threshold: float | None, input_path: Path,
             output: Path | None, column: str | None, root: Path) -> ShardedRun:
    """Open the run as a single-process run would (same key, same parts) and cut what is left
    into shards. Loads the classifier once here for its UNKNOWN rule (part of the run's key)."""
    loaded = load_classifier(cfg.model)
    run = open_run(params, cfg, loaded.source, decision_policy(loaded, threshold), input_path,
                   output, column, quality=gate_limits(loaded.quality_limits, cfg.quality),
                   audit=field_audit(params, loaded.version))
    folder = Path(loaded.source)  # a model folder (the key keeps it as given)
    source = str(folder.resolve()) if folder.is_dir() else loaded.source
    job = ShardJob(params, cfg, source, threshold, run.run_id, Path(root).resolve(),
                   run.checkpoint.work_dir.resolve(), params.paths.onnx_cache.resolve(),
                   params.paths.unknown_store.resolve() if cfg.store_unknown else None,
                   params.paths.review_photos.resolve(), run.audit.auto_accept)
    urls = run.sources[SOURCE].tolist()
    return ShardedRun(run, job, plan_shards(urls, run.done, cfg.shard_rows))


_load_lock = threading.Lock()


@functools.lru_cache(maxsize=2)
def _cached_predictor(source: str, engine: str, onnx_cache: Path, threads: int) -> Predictor:
    return Predictor(load_classifier(source), None, engine, onnx_cache)


def shard_predictor(job: ShardJob, threads: int | None = None) -> Predictor:
    """This process's predictor for the job's model, loaded on first use and kept; ``threads``
    (a Dask worker's) pins torch's and ONNX Runtime's compute threads."""
    if threads is not None:
        torch.set_num_threads(threads)  # before a session is built: ONNX Runtime takes this count
    with _load_lock:
        predictor = _cached_predictor(job.model_source, job.cfg.engine, job.onnx_cache,
                                      torch.get_num_threads())
    return predictor.with_threshold(job.threshold)


def score_shard(job: ShardJob, shard: Shard, threads: int | None = None) -> ShardResult:
    """Score one shard into its own checkpoint part (written whole or not at all); a shard
    whose part exists (a retried or resumed task) is skipped."""
    part = job.work_dir / shard.part_name
    if part.is_file():
        log.info("rows %d-%d: part already there, skipped", shard.start, shard.stop - 1)
        return ShardResult(shard.start, shard.stop, 0)
    predictor = shard_predictor(job, threads)
    store = UnknownStore(job.unknown_store) if job.unknown_store else None
    with open_scorer(predictor, job.cfg, job.params.validate_.max_pixels, store,
                     job.run_id, ReviewPhotos(job.review_photos), job.auto_accept) as scorer:
        rows = [replace(row, run_id=job.run_id).to_dict() for row in scorer.score(shard.todo)]
    Checkpoint(job.work_dir).write(rows, shard.part_name)
    log.info("rows %d-%d: %d scored into %s", shard.start, shard.stop - 1, len(rows), part.name)
    return ShardResult(shard.start, shard.stop, len(rows))
