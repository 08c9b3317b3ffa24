"""Batch scoring against a local HTTP server (its own process, on 127.0.0.1) serving the demo
photos, side by side:

- ``meterid score``'s pipeline vs a naive loop (requests.get, PIL open, the model on one image);
- the pipeline vs the model's own throughput on pre-decoded tensors at the same batch size;
- the model alone under PyTorch (channels_last), ONNX Runtime fp32 (equal predictions checked)
  and the bundle's int8 graph (top-1 agreement printed; a fallback is named);
- the pipeline on the demo's 480x640 photos and on 720x1280 and 1000x1333 phone photos stored
  turned with an EXIF orientation tag;
- peak RSS of whole scoring runs (list -> Parquet) over 2,000 and 20,000 *distinct* photos, each
  in a fresh process (the demo photos with a few bytes appended after the JPEG end, see
  ``photo_server``: every photo is downloaded, decoded and inferred).

Uses the exported champion (``models/champion``) when there is one, else an untrained
classifier of the same backbone (same compute). Needs the demo photos (``make demo``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
import torch
import urllib3
from PIL import Image

from benchmarks.scaled_decode import phone_jpeg
from meterid.config import Params, load_params
from meterid.core import OK
from meterid.decision.policy import DecisionPolicy
from meterid.inference.bundle import ModelBundle
from meterid.inference.engines import ENGINES, OnnxEngine, engine_threads
from meterid.inference.fetch import Fetcher
from meterid.inference.predictor import Predictor
from meterid.inference.quality import measure_quality
from meterid.model.presets import eval_preset
from meterid.photos.images import load_rgb, rgb_from_bytes
from meterid.registry import load_classifier
from meterid.scoring.demo import url_for
from meterid.scoring.pipeline import BatchScorer

N_URLS = 2000
NAIVE_URLS = 150
RSS_SIZES = (2000, 20000)
PHONE_SIZES = ((720, 1280), (1000, 1333))
PHONE_PHOTOS = 300


def load_model(params: Params) -> ModelBundle:
    exported = params.paths.models_dir / "champion"
    if exported.is_dir():
        return load_classifier(str(exported))
    from meterid.model.backbones import build_backbone
    from meterid.model.classifier import MeterClassifier

    model = MeterClassifier(build_backbone(params.train.backbone, params.train.weights),
                            [f"class{i}" for i in range(params.demo.n_classes)]).eval()
    return ModelBundle.of(model, policy=DecisionPolicy.untested(0.5))


def predictor(params: Params, engine: str) -> Predictor:
    return Predictor(load_model(params), None, engine, params.paths.onnx_cache)


def photos(params: Params) -> tuple[Path, list[Path]]:
    root = Path(os.path.commonpath([params.paths.raw_dir.resolve(),
                                    params.paths.unknown_dir.resolve()]))
    found = sorted(params.paths.raw_dir.rglob("*.jpg")) + sorted(
        params.paths.unknown_dir.rglob("*.jpg"))
    if len(found) < N_URLS:
        raise SystemExit(f"the scoring benchmark needs {N_URLS} demo photos, found {len(found)}:"
                         " run `make demo` (or `meterid data demo`) first")
    return root, found[:N_URLS]


def raw_model_rate(predictor: Predictor, urls: list[str], batch_size: int,
                   passes: int = 3) -> tuple[float, float]:
    """Images/s of inference alone and the CPU it spent (core-ms a photo, every thread): tensors
    decoded beforehand, same batch size; the best of ``passes`` passes over 8 batches (this
    machine's neighbours make single passes noisy)."""
    tensors = []
    for url in urls[: 8 * batch_size]:
        image = Image.open(io.BytesIO(requests.get(url, timeout=10).content)).convert("RGB")
        tensors.append(predictor.preprocess(image))
    batches = torch.stack(tensors).split(batch_size)
    predictor.predict(batches[0])  # warm-up
    passes_run = []
    for _ in range(passes):
        cpu, start = time.process_time(), time.perf_counter()
        for batch in batches:
            predictor.predict(batch)
        passes_run.append((len(tensors) / (time.perf_counter() - start),
                           1000 * (time.process_time() - cpu) / len(tensors)))
    return max(passes_run)


def naive_rate(loaded: ModelBundle, urls: list[str]) -> float:
    """What one would write first: get, open, preprocess, the PyTorch model on one image."""
    transform = eval_preset(loaded.preprocessing.image_size, loaded.preprocessing.mean,
                            loaded.preprocessing.std)
    with requests.Session() as session, torch.inference_mode():
        start = time.perf_counter()
        for url in urls:
            image = Image.open(io.BytesIO(session.get(url, timeout=10).content)).convert("RGB")
            loaded.model(transform(image)[None]).softmax(dim=1).topk(3)
    return len(urls) / (time.perf_counter() - start)


def _top1(predictor: Predictor, urls: list[str]) -> list[str]:
    batch = torch.stack([predictor.preprocess(rgb_from_bytes(
        requests.get(url, timeout=10).content, 10**9, predictor.image_size)) for url in urls])
    return [p.top_labels[0] for p in predictor.predict(batch)]


def top1_agreement(a: Predictor, b: Predictor, urls: list[str]) -> float:
    first, second = _top1(a, urls[:256]), _top1(b, urls[:256])
    return sum(x == y for x, y in zip(first, second, strict=True)) / len(first)


def same_predictions(a: Predictor, b: Predictor, urls: list[str]) -> float:
    """Max confidence difference of two engines on real photos; their top-3 must match."""
    batch = torch.stack([a.preprocess(Image.open(io.BytesIO(requests.get(url, timeout=10)
                                                            .content)).convert("RGB"))
                         for url in urls])
    first, second = a.predict(batch), b.predict(batch)
    assert [p.top_labels for p in first] == [p.top_labels for p in second]
    return max(abs(x - y) for p, q in zip(first, second, strict=True)
               for x, y in zip(p.top_confidences, q.top_confidences, strict=True))


@dataclass(frozen=True)
class PipelineRun:
    rate: float            # images/s, first source to last row
    scorer_core_ms: float  # CPU of the scoring process a photo (every thread: decode, engine)
    server_core_ms: float  # CPU of the photo server a photo (0 for local paths)

    def describe(self) -> str:
        server = f", photo server {self.server_core_ms:.1f}" if self.server_core_ms else ""
        return f"{self.rate:6.1f} img/s (core-ms a photo: scorer {self.scorer_core_ms:.1f}{server})"


def pipeline_rate(predictor: Predictor, params: Params, sources: list[str],
                  server: PhotoServer | None = None) -> PipelineRun:
    """``meterid score``'s streaming scorer over ``sources`` (URLs or local paths), with the CPU
    time each side spent: on two cores a server on the same machine takes the scorer's cores."""
    cfg = params.score
    scorer = BatchScorer(predictor, Fetcher(cfg.fetch, cfg.concurrency), cfg.quality,
                         params.validate_.max_pixels, cfg.batch_size, cfg.concurrency)
    server_start = server.cpu_seconds() if server else 0.0
    cpu_start, start = time.process_time(), time.perf_counter()
    rows = list(scorer.score(enumerate(sources)))
    elapsed = time.perf_counter() - start
    scorer_cpu = time.process_time() - cpu_start
    server_cpu = server.cpu_seconds() - server_start if server else 0.0
    assert len(rows) == len(sources) and all(row.status == OK for row in rows)
    n = len(sources)
    return PipelineRun(n / elapsed, 1000 * scorer_cpu / n, 1000 * server_cpu / n)


def peak_rss_of_run(urls: list[str]) -> dict:
    """A whole ``score_list`` run (list file -> Parquet) in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        url_file = Path(tmp) / "urls.txt"
        url_file.write_text("\n".join(urls) + "\n")
        result = subprocess.run([sys.executable, "-m", "benchmarks.scoring", "--rss-child",
                                 str(url_file), tmp], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _rss_child(url_file: Path, out_dir: Path) -> None:
    from meterid.scoring.steps import score_list
    from meterid.stores import configure_stores

    params = load_params()
    configure_stores(params.stores, Path.cwd(), check=False)
    paths = params.paths.model_copy(update={"scoring_reports": out_dir})
    params = params.model_copy(update={"paths": paths})
    cfg = params.score.model_copy(update={"store_unknown": False})
    start = time.perf_counter()
    outcome = score_list(params, cfg, predictor(params, params.score.engine), url_file,
                         out_dir / "out.parquet")
    print(json.dumps({"rows": outcome.summary["rows"], "ok": outcome.summary["ok"],
                      "seconds": time.perf_counter() - start,
                      "peak_rss_mb": _peak_rss_mb()}))


def _peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM). Not ``getrusage``: Linux carries ``ru_maxrss``
    across fork and exec, so a child started by a 5 GB benchmark reported 5 GB whatever it
    did (the 2,447 MB "flat" figure of earlier READMEs was the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


@dataclass(frozen=True)
class PhotoServer:
    base: str  # http://127.0.0.1:PORT
    pid: int

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far (user + system, all threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def photo_server(root: Path, protocol: str = "HTTP/1.1") -> Iterator[PhotoServer]:
    """The photos served by a separate process on 127.0.0.1, as a field server would be: in
    this process, the server's Python would compete with the scorer for the GIL. On these two
    cores it competes for the CPU all the same: ``pipeline_rate`` measures its share."""
    server = subprocess.Popen([sys.executable, "-u", "-m", "benchmarks.photo_server", str(root),
                               protocol],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert server.stdout is not None  # stdout=PIPE
    try:
        banner = server.stdout.readline()  # "port N"
        port = re.search(r"port (\d+)", banner)
        if port is None:
            raise RuntimeError(f"the photo server did not start: {banner!r}")
        yield PhotoServer(f"http://127.0.0.1:{port[1]}", server.pid)
    finally:
        server.terminate()
        server.wait(timeout=10)


def _model_rates(engines: dict[str, Predictor], urls: list[str], batch: int) -> dict:
    rates = {}
    for name, engine in engines.items():
        rates[name], rates[f"{name}_core_ms"] = raw_model_rate(engine, urls, batch)
        in_use = "" if engine.engine.name == name else f" (fell back to {engine.engine.name})"
        print(f"model alone, {name:16s} (batch {batch}, pre-decoded): "
              f"{rates[name]:6.1f} img/s, {rates[f'{name}_core_ms']:.1f} core-ms a photo{in_use}")
    agree = same_predictions(engines["torch"], engines["onnxruntime"], urls[:64])
    print(f"onnxruntime vs torch: {rates['onnxruntime'] / rates['torch']:.1f}x, "
          f"max |confidence difference| {agree:.1e} on 64 photos (same top-3)")
    agreement = top1_agreement(engines["onnxruntime"], engines["onnxruntime-int8"], urls)
    print(f"onnxruntime-int8 vs onnxruntime: "
          f"{rates['onnxruntime-int8'] / rates['onnxruntime']:.2f}x (target >= 1.8x), top-1 "
          f"agreement {agreement:.1%} on {len(urls[:256])} photos")
    return rates


def _phone_photos(sources: list[Path], folder: Path) -> dict[str, list[Path]]:
    """The first demo photos at two phone sizes, stored turned with an EXIF orientation tag."""
    out: dict[str, list[Path]] = {}
    for size in PHONE_SIZES:
        name = f"{size[0]}x{size[1]}"
        (folder / name).mkdir()
        out[name] = []
        for i, source in enumerate(sources):
            out[name].append(folder / name / f"{i:04d}.jpg")
            out[name][-1].write_bytes(phone_jpeg(load_rgb(source, 10**9), size))
    return out


def _spinning(ours: Predictor, params: Params, urls: list[str], batch: int, pipeline: float,
              engine: float) -> dict:
    """The same engine with ONNX Runtime's busy-waiting intra-op threads (its default) against
    ours, which sleep between operators: alone and in the pipeline."""
    if not isinstance(ours.engine, OnnxEngine):
        return {}
    spinning = copy.copy(ours)
    spinning.engine = OnnxEngine(ours.engine.graph, engine_threads(), ours.engine.name,
                                 spinning=True)
    alone, _ = raw_model_rate(spinning, urls, batch)
    piped = pipeline_rate(spinning, params, urls).rate
    print(f"ONNX Runtime threads spinning (its default) vs sleeping (ours): engine alone "
          f"{alone:6.1f} vs {engine:6.1f} img/s, pipeline {piped:6.1f} vs {pipeline:6.1f} img/s "
          f"({piped / alone:.0%} vs {pipeline / engine:.0%} of the engine alone)")
    return {"engine_spinning": alone, "pipeline_spinning": piped}


def _core_ms(work, items: list, passes: int = 5) -> float:
    """CPU (every thread of this process) a call of ``work`` costs, best of ``passes`` passes
    over ``items``, in core-ms."""
    best = float("inf")
    for _ in range(passes):
        start = time.process_time()
        for item in items:
            work(item)
        best = min(best, time.process_time() - start)
    return 1000 * best / len(items)


def _preparation_costs(ours: Predictor, params: Params, paths: list[Path], urls: list[str],
                       engine_core_ms: float) -> dict:
    """What each photo costs around the engine, one step at a time, and the share of the engine
    that a pipeline doing nothing else could reach on any number of cores shared with it."""
    max_pixels, size, batch = params.validate_.max_pixels, ours.image_size, params.score.batch_size
    blobs = [path.read_bytes() for path in paths[:256]]
    images = [rgb_from_bytes(blob, max_pixels, size) for blob in blobs]
    tensors = [ours.preprocess(image) for image in images]
    batches = [tensors[i:i + batch] for i in range(0, len(tensors), batch)]
    stacked = [torch.stack(group) for group in batches]
    costs = {
        "decode": _core_ms(lambda blob: rgb_from_bytes(blob, max_pixels, size), blobs),
        "resize": _core_ms(ours.preprocess, images),
        "quality_gate": _core_ms(measure_quality, images),
        "stack": _core_ms(torch.stack, batches) / batch,
        "normalise": _core_ms(ours.normalize, stacked) / batch,
    }
    ceiling = engine_core_ms / (engine_core_ms + sum(costs.values()))
    print("around the engine, core-ms a photo (480x640 demo JPEG): " + ", ".join(
        f"{name} {value:.2f}" for name, value in costs.items()) + f"; with the engine's "
        f"{engine_core_ms:.1f}, a pipeline doing nothing else reaches {ceiling:.0%} of it")
    fetcher, pool = Fetcher(params.score.fetch, 1), urllib3.PoolManager()
    clients = {"http_fetcher": _core_ms(fetcher.fetch, urls[:500], passes=1),
               "http_urllib3": _core_ms(lambda url: pool.request("GET", url).data, urls[:500],
                                        passes=1)}
    print(f"HTTP client, core-ms a photo (keep-alive, one at a time): meterid's Fetcher "
          f"(requests, address checks) {clients['http_fetcher']:.2f}, urllib3 alone "
          f"{clients['http_urllib3']:.2f}")
    return {**{f"prepare_{k}_core_ms": v for k, v in costs.items()}, **clients,
            "pipeline_ceiling": ceiling}


def _pipelines(ours: Predictor, params: Params, root: Path, paths: list[Path],
               server: PhotoServer, model: float, naive: float) -> dict:
    """The pipeline over the demo photos served with keep-alive (the headline), served by a
    server that closes every connection, and read from local paths (no server at all)."""
    urls = [url_for(server.base, root, path) for path in paths]
    runs = {"pipeline": pipeline_rate(ours, params, urls, server)}
    print(f"meterid score pipeline ({ours.engine.name}), {len(urls)} demo URLs, keep-alive: "
          f"{runs['pipeline'].describe()} = {runs['pipeline'].rate / naive:.1f}x naive (target "
          f">= 5x), {runs['pipeline'].rate / model:.0%} of its engine alone (target >= 80%)")
    with photo_server(root, "HTTP/1.0") as closing:
        runs["pipeline_http10"] = pipeline_rate(
            ours, params, [url_for(closing.base, root, path) for path in paths], closing)
    print(f"  the same, a server closing every connection (HTTP/1.0): "
          f"{runs['pipeline_http10'].describe()}")
    runs["pipeline_local"] = pipeline_rate(ours, params, [str(path) for path in paths])
    print(f"  the same photos as local paths (no server): {runs['pipeline_local'].describe()} = "
          f"{runs['pipeline_local'].rate / model:.0%} of its engine alone")
    results = {name: run.rate for name, run in runs.items()}
    results.update({f"{name}_scorer_core_ms": run.scorer_core_ms for name, run in runs.items()})
    results.update({f"{name}_server_core_ms": run.server_core_ms for name, run in runs.items()})
    return results


def run() -> dict:
    params = load_params()
    root, paths = photos(params)
    batch = params.score.batch_size
    engines = {name: predictor(params, name) for name in ENGINES}
    ours = engines[params.score.engine]
    with photo_server(root) as server:
        urls = [url_for(server.base, root, path) for path in paths]
        results = _model_rates(engines, urls, batch)
        model = results[params.score.engine]
        results["naive"] = naive_rate(ours.bundle, urls[:NAIVE_URLS])
        print(f"naive loop (get, open, 1 image):          {results['naive']:6.1f} img/s "
              f"(first {NAIVE_URLS} URLs)")
        results.update(_pipelines(ours, params, root, paths, server, model, results["naive"]))
        results.update(_preparation_costs(ours, params, paths, urls,
                                          results[f"{params.score.engine}_core_ms"]))
        results.update(_spinning(ours, params, urls, batch, results["pipeline"], model))
        for size in RSS_SIZES:  # every URL a distinct photo: no sha256 repeats
            rss = peak_rss_of_run([f"{urls[i % len(urls)]}?copy={i}" for i in range(size)])
            results[f"rss_{size}"] = rss["peak_rss_mb"]
            print(f"whole run, {size:6d} distinct photos: peak RSS {rss['peak_rss_mb']:7.0f} MB, "
                  f"{rss['seconds']:5.0f} s, {rss['ok']} ok")
    with tempfile.TemporaryDirectory() as tmp:
        phones = _phone_photos(paths[:PHONE_PHOTOS], Path(tmp))
        with photo_server(Path(tmp)) as server:
            for name, files in phones.items():
                piped = pipeline_rate(ours, params, [url_for(server.base, Path(tmp), f)
                                                     for f in files], server)
                results[f"pipeline_{name}"] = piped.rate
                print(f"meterid score pipeline, {len(files)} {name} EXIF-rotated phone photos: "
                      f"{piped.describe()} = {piped.rate / model:.0%} of its engine alone")
    ratio = results[f"rss_{RSS_SIZES[1]}"] / results[f"rss_{RSS_SIZES[0]}"]
    print(f"peak RSS {RSS_SIZES[1]} vs {RSS_SIZES[0]} distinct photos: {ratio:.2f}x "
          "(target: flat, ~1.0x)")
    return results


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--rss-child":
        _rss_child(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        run()
