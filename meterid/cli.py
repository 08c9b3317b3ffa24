"""The ``meterid`` command line. Heavy libraries are imported inside commands so ``--help`` is
instant; every input/output option defaults to its ``params.yaml`` value."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Annotated

import typer

from meterid.config import ConfigError, Params, load_params
from meterid.core import OK, PREDICT_KEYS
from meterid.runtime import quiet_chatty_loggers
from meterid.stores import TrackingStoreError, configure_stores, project_root

app = typer.Typer(help="Identify electricity meters from photos: data, training, scoring.",
                  no_args_is_help=True, pretty_exceptions_enable=False,
                  add_completion=False)
data_app = typer.Typer(help="Datasets: generate the demo meter dataset.", no_args_is_help=True)
candidates_app = typer.Typer(help="Clusters back into the dataset: export, add, reject.",
                             no_args_is_help=True)
flow_app = typer.Typer(help="Run the Prefect flows locally (ephemeral Prefect, no server needed).",
                       no_args_is_help=True)
review_app = typer.Typer(help="What scoring sent to a person: the queue, labels, conflicts and "
                         "the field audit of auto-accept.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(flow_app, name="flow")
app.add_typer(candidates_app, name="candidates")
app.add_typer(review_app, name="review")

ParamsOption = Annotated[Path, typer.Option("--params", help="Parameters file.")]
DataDir = Annotated[Path | None, typer.Option(
    "--data", help="Image folder (default: params paths.raw_dir).")]
ManifestFile = Annotated[Path | None, typer.Option(
    "--manifest", help="Manifest CSV, written by validate; split rebuilds it when stale "
    "(default: params paths.manifest).")]


# Commands that never touch MLflow skip the store check; `serve` starts the stores itself.
_NO_STORE_CHECK = frozenset({"data", "validate", "split", "predict", "dashboard", "review"})
_OWN_STORES = frozenset({"serve"})
_NO_PROJECT = frozenset({"init"})  # makes the project (and its params.yaml)


def _params(ctx: typer.Context) -> Params:
    return ctx.obj


@app.callback()
def _root(ctx: typer.Context, params: ParamsOption = Path("params.yaml")) -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_chatty_loggers()
    if ctx.invoked_subcommand in _NO_PROJECT:
        return
    try:
        ctx.obj = load_params(params)
    except ConfigError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    if ctx.invoked_subcommand in _OWN_STORES:
        return
    try:  # before Prefect is imported: it reads PREFECT_HOME once
        configure_stores(ctx.obj.stores, project_root(params),
                         check=ctx.invoked_subcommand not in _NO_STORE_CHECK)
    except TrackingStoreError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error


@data_app.command("demo")
def data_demo(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option(
        help="Image folder (default: params paths.raw_dir).")] = None,
    unknown_out: Annotated[Path | None, typer.Option(
        help="Folder for the held-out brands (default: params paths.unknown_dir).")] = None,
    seed: Annotated[int | None, typer.Option(
        help="Random seed (default: params demo.seed).")] = None,
    total: Annotated[int | None, typer.Option(
        help="Number of images (default: params demo.total_images).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace non-empty output folders.")] = False,
) -> None:
    """Generate the demo meter dataset: photo-like, imbalanced, deterministic for a seed."""
    from meterid.data.demo.generate import generate_demo

    params = _params(ctx)
    overrides = {k: v for k, v in {"seed": seed, "total_images": total}.items() if v is not None}
    cfg = params.demo.model_copy(update=overrides)
    out = out or params.paths.raw_dir
    unknown_out = unknown_out or params.paths.unknown_dir
    counts = generate_demo(cfg, out, unknown_out, overwrite=overwrite)
    known = sum(n for name, n in counts.items() if (out / name).is_dir())
    typer.echo(f"wrote {known} images of {cfg.n_classes} classes to {out}, "
               f"{sum(counts.values()) - known} held-out brand images to {unknown_out}")


@app.command()
def init(
    folder: Annotated[Path, typer.Argument(help="The new project folder (created if missing).")],
    photos: Annotated[Path | None, typer.Option(
        "--photos", help="A folder of class folders (<class>/<photo>) to copy into "
        "data/raw.")] = None,
) -> None:
    """Make a project folder for your own photos: params.yaml, dvc.yaml, prefect.yaml, data/raw,
    DVC with a local remote; then `meterid validate` and `meterid flow train` there."""
    from meterid.project import SOURCE_DIR, InitError, init_project

    try:
        project = init_project(folder, photos)
    except InitError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    typer.echo(f"project {project.folder}: {len(project.classes)} classes, {project.photos} "
               f"photos in data/raw" + ("" if project.classes else
                                        " (put class folders there: data/README.txt)"))
    if project.kept_files:
        typer.echo(f"kept beside the photos, not trained on: {SOURCE_DIR}/ "
                   f"({', '.join(project.kept_files)})")
    typer.echo(f"next: cd {project.folder} && meterid validate && meterid flow train")


@app.command()
def validate(
    ctx: typer.Context,
    data: DataDir = None,
    manifest: ManifestFile = None,
    report_dir: Annotated[Path | None, typer.Option(
        help="Report and Data Docs folder (default: params paths.validation_reports).")] = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Warnings block too (default: params validate.strict).")] = False,
) -> None:
    """Build the image manifest and validate it with Great Expectations; exit 1 on an error
    (rules whose severity is error; every failed rule with --strict)."""
    from meterid.data.steps import validate_dataset
    from meterid.data.validation import format_report

    params = _params(ctx)
    data = data or params.paths.raw_dir
    cfg = params.validate_.model_copy(update={"strict": strict or params.validate_.strict})
    report = validate_dataset(data, manifest or params.paths.manifest,
                              report_dir or params.paths.validation_reports, cfg)
    typer.echo(format_report(report, data))
    if not report.success:
        raise typer.Exit(1)


@app.command()
def split(
    ctx: typer.Context,
    data: DataDir = None,
    manifest: ManifestFile = None,
    out: Annotated[Path | None, typer.Option(
        help="Splits CSV to write (default: params paths.splits).")] = None,
    report_dir: Annotated[Path | None, typer.Option(
        help="Folder for the class-balance chart (default: params paths.split_reports).")] = None,
    given_csv: Annotated[Path | None, typer.Option(
        help="Keep the split this CSV gives each photo instead of the adaptive one "
        "(default: params split.given_csv).")] = None,
    given_column: Annotated[str | None, typer.Option(
        help="Its column of train | val | test (default: params split.given_column).")] = None,
    given_path_column: Annotated[str | None, typer.Option(
        help="Its column of photo paths, <class>/<photo> under the image folder "
        "(default: params split.given_path_column).")] = None,
) -> None:
    """Assign every image to train/val/test by its class size, keeping duplicates together; or
    keep the split a CSV gives (--given-csv). Exit 2 when the split cannot be made."""
    from meterid.data.split import SplitError, format_split_table, split_table
    from meterid.data.steps import split_dataset

    params = _params(ctx)
    overrides = {k: v for k, v in {"given_csv": given_csv, "given_column": given_column,
                                   "given_path_column": given_path_column}.items()
                 if v is not None}
    try:
        splits = split_dataset(data or params.paths.raw_dir, manifest or params.paths.manifest,
                               out or params.paths.splits,
                               report_dir or params.paths.split_reports, params.validate_,
                               params.split.model_copy(update=overrides))
    except SplitError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    typer.echo(format_split_table(split_table(splits)))


def _params_file(ctx: typer.Context) -> Path:
    return Path(ctx.find_root().params["params"])


@app.command()
def train(ctx: typer.Context) -> None:
    """Train the two-phase classifier on the split; writes models/candidate (tracked in MLflow)."""
    from meterid.training.steps import train_candidate

    summary = train_candidate(_params(ctx), Path.cwd())
    typer.echo(json.dumps(summary, indent=2))


@app.command()
def evaluate(ctx: typer.Context) -> None:
    """Evaluate models/candidate on the test split and held-out brands; register it in MLflow."""
    from meterid.evaluation.metrics import HEADLINE_METRICS
    from meterid.evaluation.steps import evaluate_candidate

    outcome = evaluate_candidate(_params(ctx))
    metrics = outcome["metrics"]
    typer.echo(f"registered meterid version {outcome['version']} with aliases "
               f"{', '.join(outcome['aliases'])}; open-set rule: {outcome['open_set_rule']} "
               f"({outcome['decision']['open_set']['operating_point']})")
    for key in HEADLINE_METRICS:
        typer.echo(f"  {key:30s} {metrics.get(key, float('nan')):.4f}")
    typer.echo(f"reports: {outcome['reports']['metrics']} and beside it")


@app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON list.")] = False,
) -> None:
    """List the registered meterid versions with aliases and headline metrics."""
    from meterid.registry import list_versions

    versions = list_versions()
    if as_json:
        typer.echo(json.dumps(versions, indent=2, default=str))
        return
    if not versions:
        typer.echo("no registered versions yet: run `meterid train` and `meterid evaluate`")
    for v in versions:
        typer.echo(f"v{v['version']:<4} {','.join(v['aliases']) or '-':22s} "
                   f"accuracy={v.get('accuracy')}  created={v.get('created')}")


@app.command()
def promote(
    ctx: typer.Context,
    version: Annotated[int, typer.Argument(help="Registered version to make champion.")],
    by: Annotated[str | None, typer.Option(
        help="Who decides, kept in the version's tags (default: $USER).")] = None,
) -> None:
    """Move the `champion` alias to VERSION and export it to models/champion."""
    import os

    from meterid.evaluation.steps import export_champion
    from meterid.registry import promote as promote_version

    promote_version(version, by=by or os.environ.get("USER", "unknown"))
    typer.echo(f"champion -> version {version}; exported to {export_champion(_params(ctx))}")


ModelOption = Annotated[str | None, typer.Option(
    "--model", help="An alias (champion, challenger), models:/meterid@champion (default: params "
    "score.model), models:/meterid/3, runs:/<id>/model, or an exported folder such as "
    "models/champion.")]
ThresholdOption = Annotated[float | None, typer.Option(
    "--threshold", min=0, max=1,
    help="Calibrated top-1 confidence under which a photo is UNKNOWN, in place of the model's "
    "evaluated open-set rule (default: the model's rule).")]


def _load_predictor(params: Params, model: str | None, threshold: float | None):  # noqa: ANN202
    from meterid.inference.bundle import BundleFormatError
    from meterid.registry import ModelNotFoundError, model_uri
    from meterid.scoring.steps import load_predictor

    model = model_uri(model, params.score.model)
    try:
        return load_predictor(params, model, threshold)
    except (ModelNotFoundError, BundleFormatError, TrackingStoreError, OSError) as error:
        typer.echo(f"error: cannot load model {model!r}: {error}. An exported model works "
                   "without a registry: --model models/champion", err=True)
        raise typer.Exit(2) from error


def _predict_line(row: dict) -> str:
    if row["status"] != OK:
        return f"{row['input']}: ERROR {row['error']}"
    tops = ", ".join(f"{row[f'top{k}_label']} {row[f'top{k}_conf']:.2f}" for k in (1, 2, 3)
                     if row.get(f"top{k}_label") is not None)
    quality = f" [{row['quality_issue']}]" if row.get("quality_issue") else ""
    review = ("auto-accepted" if row.get("auto_accepted")
              else f"review{' (grayscale)' if row.get('grayscale') else ''}: "
                   f"{' | '.join(row.get('prediction_set') or [])}")
    return (f"{row['input']}: {row['label']}{quality} ({review}; top-3: {tops}; "
            f"model v{row['model_version']})")


@app.command()
def predict(
    ctx: typer.Context,
    inputs: Annotated[list[str], typer.Argument(help="Image paths or http(s) URLs.")],
    model: ModelOption = None,
    threshold: ThresholdOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Identify the meter in each image; a failed input prints an error and the rest go on."""
    from meterid.inference.fetch import Fetcher
    from meterid.scoring.pipeline import BatchScorer

    params = _params(ctx)
    cfg = params.score
    predictor = _load_predictor(params, model, threshold)
    fetcher = Fetcher(cfg.fetch, pool_size=cfg.concurrency)
    scorer = BatchScorer(predictor, fetcher, cfg.quality, params.validate_.max_pixels,
                         cfg.batch_size, cfg.concurrency)
    rows = scorer.score_in_order(inputs)
    for scored in rows:
        values = {"input": scored.url, **scored.to_dict()}
        line = {key: values[key] for key in PREDICT_KEYS}
        typer.echo(json.dumps(line, default=str) if as_json else _predict_line(line))
    if any(scored.status != OK for scored in rows):
        raise typer.Exit(1)


@app.command()
def score(
    ctx: typer.Context,
    input_file: Annotated[Path, typer.Option(
        "--input", help="CSV/TSV, Excel (.xlsx) or text list of image URLs or paths.")],
    output: Annotated[Path | None, typer.Option(
        "--output", help="Parquet file (default: params paths.scoring_reports/<input>-<time>"
        ".parquet).")] = None,
    column: Annotated[str | None, typer.Option(
        help="Column holding the URLs, by name or 0-based index (default: 'url').")] = None,
    model: ModelOption = None,
    threshold: ThresholdOption = None,
    concurrency: Annotated[int | None, typer.Option(
        min=1, help="Downloads in flight (default: params score.concurrency).")] = None,
    batch_size: Annotated[int | None, typer.Option(
        min=1, help="Images per forward pass (default: params score.batch_size).")] = None,
) -> None:
    """Score a list of image URLs into Parquet: every row out, resumable after a kill."""
    from meterid.inference.quality import QualityLimits
    from meterid.registry import model_uri
    from meterid.scoring.sources import InputError
    from meterid.scoring.steps import record_run, score_list, with_overrides
    from meterid.tracking import use_experiment

    params = _params(ctx)
    cfg = with_overrides(params.score, model=model_uri(model, params.score.model),
                         concurrency=concurrency, batch_size=batch_size)
    use_experiment(cfg.monitor.experiment)  # a store that cannot log the run says so now
    predictor = _load_predictor(params, cfg.model, threshold)
    try:
        outcome = score_list(params, cfg, predictor, input_file, output, column)
    except InputError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    alerts = record_run(outcome, cfg.monitor)
    summary = outcome.summary
    typer.echo(f"wrote {summary['rows']} rows to {outcome.output}: {summary['ok']} scored "
               f"({summary['unknown']} UNKNOWN, {summary['poor_quality']} POOR_QUALITY), "
               f"{summary['errors']} errors")
    typer.echo("quality gate: "
               + QualityLimits.from_dict(summary["quality_limits"]).describe())
    for alert in alerts:
        typer.echo(f"DRIFT ALERT: {alert}", err=True)


SinceOption = Annotated[str | None, typer.Option(
    "--since", help="Stored UNKNOWN photos last seen within this window, e.g. 7d "
    "(default: params cluster.since_days).")]
ImagesOption = Annotated[Path | None, typer.Option(
    "--images", help="Cluster every image under this folder instead of the UNKNOWN store.")]
ScoresOption = Annotated[Path | None, typer.Option(
    "--scores", help="The UNKNOWN photos of one scoring output (Parquet).")]


def _since_days(since: str | None, default: int) -> int:
    if since is None:
        return default
    match = re.fullmatch(r"(\d+)d", since.strip())
    if not match or int(match[1]) < 1:
        raise typer.BadParameter(f"{since!r}: use a number of days such as 7d",
                                 param_hint="--since")
    return int(match[1])


def _photos(params: Params, since: str | None, images: Path | None, scores: Path | None):  # noqa: ANN202
    from meterid.clustering import steps

    if images is not None:
        if not images.is_dir():
            raise typer.BadParameter(f"{images}: no such folder", param_hint="--images")
        return steps.folder_photos(images)
    if scores is not None:
        return steps.scored_photos(params, scores)
    return steps.store_photos(params, _since_days(since, params.cluster.since_days))


@app.command()
def embed(
    ctx: typer.Context, since: SinceOption = None, images: ImagesOption = None,
    scores: ScoresOption = None, model: ModelOption = None,
) -> None:
    """Embed UNKNOWN photos with the champion's backbone (cached per photo and model)."""
    from meterid.clustering.embeddings import embed_photos, model_key

    params = _params(ctx)
    photos = _photos(params, since, images, scores)
    predictor = _load_predictor(params, model, None)
    vectors = embed_photos(photos, predictor, params.paths.embeddings, params.cluster.batch_size,
                           params.validate_.max_pixels)
    typer.echo(f"{len(vectors)} photos embedded ({vectors.shape[1] if vectors.ndim == 2 else 0}"
               f"-d) in {params.paths.embeddings / model_key(predictor)}")


@app.command()
def cluster(
    ctx: typer.Context, since: SinceOption = None, images: ImagesOption = None,
    scores: ScoresOption = None, model: ModelOption = None,
    out: Annotated[Path | None, typer.Option(
        help="Report folder (default: params paths.cluster_reports/<date>).")] = None,
) -> None:
    """Cluster UNKNOWN photos with HDBSCAN into candidate new meter types, with contact sheets."""
    from meterid.clustering.steps import cluster_photos, default_out_dir

    params = _params(ctx)
    photos = _photos(params, since, images, scores)
    if photos.empty:
        typer.echo("no photos to cluster (the UNKNOWN store has none in that window)")
        return
    predictor = _load_predictor(params, model, None)
    outcome = cluster_photos(params, predictor, photos, out or default_out_dir(params))
    typer.echo(outcome.summary.drop(columns=["sheet"]).to_string(index=False))
    typer.echo(f"clusters, sheets and map in {outcome.out_dir}")


@candidates_app.command("export")
def candidates_export(
    ctx: typer.Context,
    cluster_id: Annotated[int, typer.Argument(help="Cluster id from `meterid cluster`.")],
    to: Annotated[Path | None, typer.Option(
        help="Folder for review (default: params paths.candidates_dir/cluster_<id>).")] = None,
    run: Annotated[Path | None, typer.Option(
        help="Clustering run folder (default: the latest).")] = None,
) -> None:
    """Copy a cluster's photos into a folder for a person to review and label."""
    from meterid.clustering.candidates import CandidateError, default_folder, export_cluster
    from meterid.clustering.steps import latest_run

    params = _params(ctx)
    target = to or default_folder(params, cluster_id)
    try:
        copied = export_cluster(params, run or latest_run(params), cluster_id, target)
    except (CandidateError, FileNotFoundError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    typer.echo(f"{len(copied)} photos in {target}: delete the wrong ones, then "
               f"`meterid candidates add {target} --label NAME`")


@candidates_app.command("add")
def candidates_add(
    ctx: typer.Context,
    folder: Annotated[Path, typer.Argument(help="Reviewed photos of one meter type.")],
    label: Annotated[str, typer.Option(help="Class name (new or existing).")],
    cluster_id: Annotated[int | None, typer.Option(
        "--cluster", help="The cluster they came from (marked 'added').")] = None,
) -> None:
    """Add reviewed photos to the dataset as a class, re-validate, and `dvc add` the data."""
    from meterid.clustering.candidates import CandidateError, add_candidates

    params = _params(ctx)
    try:
        added, _ = add_candidates(params, folder, label, cluster_id)
    except CandidateError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    typer.echo(f"added {added} photos to {params.paths.raw_dir / label}; validation passed. "
               "Train to learn it: `meterid flow train`")
    if (params.paths.unknown_dir / label).is_dir():
        typer.echo(f"{params.paths.unknown_dir / label} holds it as a held-out brand too: "
                   "evaluation now leaves it out; move its photos into the class or away")


@candidates_app.command("reject")
def candidates_reject(
    ctx: typer.Context,
    cluster_id: Annotated[int, typer.Argument(help="Cluster id to stop proposing.")],
    note: Annotated[str, typer.Option(help="Why (shown in later reports).")] = "",
) -> None:
    """Mark a cluster as not a new meter type: later runs flag it instead of proposing it."""
    from meterid.clustering.candidates import reject_cluster

    try:
        reject_cluster(_params(ctx), cluster_id, note)
    except KeyError as error:
        typer.echo(f"error: {error.args[0]}", err=True)
        raise typer.Exit(2) from error
    typer.echo(f"cluster {cluster_id} rejected")


@review_app.command("queue")
def review_queue_command(
    ctx: typer.Context,
    run: Annotated[str | None, typer.Option(help="One scoring run's id (default: all).")] = None,
    reviewer: Annotated[str | None, typer.Option(
        help="Only the photos this reviewer has not labelled.")] = None,
) -> None:
    """The photos scoring sent to a person, oldest first, with what the product said."""
    from meterid.review.store import open_store

    photos = open_store(_params(ctx)).queue(run, reviewer)
    for photo in photos:
        typer.echo(f"{photo.sha256[:12]}  {photo.url}  {photo.in_words()}")
    typer.echo(f"{len(photos)} photos; label one with `meterid review label SHA VERDICT "
               "--reviewer NAME`", err=True)


@review_app.command("label")
def review_label(
    ctx: typer.Context,
    photo: Annotated[str, typer.Argument(help="The photo's sha256 (its first 12 characters do).")],
    verdict: Annotated[str, typer.Argument(
        help='A class of the dataset, "new type", "not a meter" or "unreadable".')],
    reviewer: Annotated[str, typer.Option(help="Your name, kept with the label.")],
) -> None:
    """Label a queued photo (labelling it again replaces your own earlier label)."""
    from meterid.review.store import ReviewError, known_classes, open_store

    params = _params(ctx)
    store = open_store(params)
    try:
        sha256 = store.find(photo)
        store.label(sha256, reviewer, verdict, known_classes(params))
    except ReviewError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    said = store.verdicts(sha256)
    disagree = {name: v for name, v in said.items() if v != verdict}
    typer.echo(f"{sha256[:12]}: {verdict} ({reviewer})"
               + (f"; conflict with {disagree}" if disagree else ""))


@review_app.command("conflicts")
def review_conflicts(ctx: typer.Context) -> None:
    """Photos whose reviewers disagree, with each one's label."""
    from meterid.review.store import open_store

    conflicts = open_store(_params(ctx)).conflicts()
    for conflict in conflicts:
        typer.echo(f"{conflict.sha256[:12]}  " + ", ".join(
            f"{name}: {verdict}" for name, verdict in sorted(conflict.verdicts.items())))
    typer.echo(f"{len(conflicts)} conflicts", err=True)


@review_app.command("export")
def review_export(ctx: typer.Context) -> None:
    """Add the reviewed field photos to their classes in the dataset (re-validated, `dvc add`):
    the next training learns the field."""
    from meterid.clustering.candidates import CandidateError, export_reviewed
    from meterid.review.store import open_store

    params = _params(ctx)
    try:
        added = export_reviewed(params, open_store(params))
    except CandidateError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    for label, count in added.items():
        typer.echo(f"{label}: {count} photos added")
    typer.echo(f"{sum(added.values())} reviewed photos added to {params.paths.raw_dir}", err=True)


@review_app.command("audit")
def review_audit(
    ctx: typer.Context,
    version: Annotated[int, typer.Argument(help="The registered model version.")],
) -> None:
    """The field audit of a model version's auto-accepted photos: may it auto-accept?"""
    from meterid.registry import list_versions
    from meterid.review.audit import uncertified_reason
    from meterid.review.store import field_verdict, open_store

    params = _params(ctx)
    row = next((v for v in list_versions() if v["version"] == version), {"version": version})
    typer.echo(uncertified_reason(row, params.evaluate.max_accept_error)
               or field_verdict(open_store(params), version, params).reason)


@flow_app.command("data")
def flow_data(
    ctx: typer.Context,
    demo_if_missing: Annotated[bool, typer.Option(
        help="Generate the demo dataset first when the image folder is empty.")] = True,
) -> None:
    """Run the data preparation flow: (demo data) -> validate -> split, with artifacts."""
    from meterid.flows.data_preparation import data_preparation

    summary = data_preparation(params_file=str(_params_file(ctx)),
                               demo_if_missing=demo_if_missing)
    typer.echo(json.dumps(summary, indent=2))


@flow_app.command("train")
def flow_train(ctx: typer.Context) -> None:
    """Run the training flow: validate -> split -> train -> evaluate -> register."""
    from meterid.flows.training import training

    typer.echo(json.dumps(training(params_file=str(_params_file(ctx))), indent=2, default=str))


@flow_app.command("score")
def flow_score(
    ctx: typer.Context,
    input_file: Annotated[Path, typer.Option("--input", help="List of image URLs or paths.")],
    output: Annotated[Path | None, typer.Option("--output", help="Parquet file.")] = None,
    model: Annotated[str | None, typer.Option(
        help="Alias (champion, challenger) or model URI (default: params score.model).")] = None,
    scale_out: Annotated[str, typer.Option(
        "--scale-out", help="threads (one process), dask or dask:N (a local Dask cluster of "
        "N worker processes, default params score.dask_workers) or a Dask scheduler address "
        "tcp://host:8786.")] = "threads",
) -> None:
    """Run the batch_scoring flow (what the nightly deployment runs) on one list."""
    from meterid.scoring.shards import ScaleOutError, parse_scale_out

    try:  # before Prefect and Dask start
        parse_scale_out(scale_out, _params(ctx).score.dask_workers)
    except ScaleOutError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    from meterid.flows.batch_scoring import batch_scoring

    result = batch_scoring(input=str(input_file), output=str(output) if output else None,
                           model=model, scale_out=scale_out, params_file=str(_params_file(ctx)))
    typer.echo(json.dumps(result, indent=2, default=str))


@flow_app.command("score-demo")
def flow_score_demo(ctx: typer.Context) -> None:
    """Serve the demo photos on 127.0.0.1 and score their URLs (test split, held-out brands,
    broken links) through the batch_scoring flow."""
    import os

    from meterid.flows.batch_scoring import batch_scoring
    from meterid.scoring.demo import demo_scoring_list, demo_test_photos, serve_folder

    paths = _params(ctx).paths
    root = Path(os.path.commonpath([paths.raw_dir.resolve(), paths.unknown_dir.resolve()]))
    list_file = paths.scoring_reports / "demo-list.csv"
    list_file.parent.mkdir(parents=True, exist_ok=True)
    with serve_folder(root) as base:
        photos = demo_test_photos(paths.splits, paths.raw_dir)
        demo_scoring_list(base, root, photos, paths.unknown_dir).to_csv(list_file, index=False)
        result = batch_scoring(input=str(list_file), output=str(paths.scoring_reports
                                                                 / "demo.parquet"),
                               params_file=str(_params_file(ctx)))
    summary = result["summary"]
    typer.echo(f"scored {summary['rows']} demo URLs into {result['output']}: "
               f"labels {summary['label_counts']}, errors {summary['error_reasons']}")


@flow_app.command("cluster")
def flow_cluster(
    ctx: typer.Context,
    since: SinceOption = None,
    images: ImagesOption = None,
) -> None:
    """Run the unknown_clustering flow (what the weekly deployment runs)."""
    from meterid.flows.unknown_clustering import unknown_clustering

    params = _params(ctx)
    result = unknown_clustering(since_days=_since_days(since, params.cluster.since_days),
                                images_dir=str(images) if images else None,
                                params_file=str(_params_file(ctx)))
    typer.echo(json.dumps(result, indent=2, default=str))


@flow_app.command("demo")
def flow_demo(ctx: typer.Context) -> None:
    """Run the training flow, score-demo and the clustering flow in one process (what
    `make demo` runs): one ephemeral Prefect server and one import of torch instead of three
    (~20 s each on 2 cores)."""
    flow_train(ctx)
    flow_score_demo(ctx)
    flow_cluster(ctx)


@app.command()
def dashboard(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port on 127.0.0.1.")] = 8501,
) -> None:
    """Open the Streamlit dashboard: identify photos now; model, scoring and cluster reports."""
    import os
    import sys

    app_file = Path(__file__).parent / "dashboard" / "app.py"
    command = [sys.executable, "-m", "streamlit", "run", str(app_file),
               "--server.address", "127.0.0.1", "--server.port", str(port),
               "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--client.toolbarMode", "viewer",  # no developer menu ("Deploy") for reviewers
               "--", "--params", str(_params_file(ctx))]
    typer.echo(f"dashboard on http://127.0.0.1:{port} (Ctrl-C stops it)", err=True)
    # Become the Streamlit server (no wrapper process): a stop signal reaches it directly.
    os.execv(sys.executable, command)


@app.command()
def serve(
    ctx: typer.Context,
    postgres: Annotated[str | None, typer.Option(
        "--postgres", help="postgresql://user:password@host:port/DB: the Prefect server's state "
        "in DB_prefect, MLflow's backend store in DB_mlflow and the reviewers' labels in "
        "DB_review (created when missing) instead of SQLite (default: params "
        "serve.postgres_url).")] = None,
    prefect_port: Annotated[int | None, typer.Option(
        min=1, max=65535, help="Prefect server and UI port (default: params serve.prefect_port)."
    )] = None,
    mlflow_port: Annotated[int | None, typer.Option(
        min=1, max=65535, help="MLflow server and UI port (default: params serve.mlflow_port)."
    )] = None,
) -> None:
    """Run the production stack on this machine: Prefect server + UI, MLflow server + UI, a
    process work pool with a worker, and prefect.yaml's deployments (nightly scoring, weekly
    clustering, on-demand training). Ctrl-C or SIGTERM stops every process it started."""
    from meterid.serve.plan import ServeError, StackPlan, plan_stack
    from meterid.serve.stack import Stack, run_until_stopped

    params = _params(ctx)
    overrides = {k: v for k, v in {"prefect_port": prefect_port,
                                   "mlflow_port": mlflow_port}.items() if v is not None}
    params = params.model_copy(update={"serve": params.serve.model_copy(update=overrides)})

    def ready(plan: StackPlan) -> None:
        typer.echo(f"Prefect UI: {plan.prefect_ui}\nMLflow UI:  {plan.mlflow_ui}\n"
                   "Use them from the CLI and the dashboard:\n"
                   + "".join(f"  export {k}={v}\n" for k, v in plan.client_env.items())
                   + "Ctrl-C stops the stack; schedules stay active for the next start.")

    try:
        plan = plan_stack(params, project_root(_params_file(ctx)), postgres)
        raise typer.Exit(run_until_stopped(Stack(plan), ready))
    except ServeError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error


def main() -> None:
    try:
        app()
    except TrackingStoreError as error:  # from any command, however deep: the store, named
        typer.echo(f"error: {error}", err=True)
        raise SystemExit(2) from error


if __name__ == "__main__":
    main()
