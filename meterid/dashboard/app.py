"""The meterid dashboard: identify a meter now, and see the model, the nightly scoring and the
weekly clusters. Run it with `meterid dashboard` (Streamlit on 127.0.0.1).

Reads the project's outputs through ``meterid.dashboard.data``; the only work done here is
real-time inference, through the nightly pipeline's own scorer.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import streamlit as st

from meterid.config import Params, load_params
from meterid.core import OK, ScoredRow
from meterid.dashboard import data
from meterid.evaluation.steps import export_champion
from meterid.inference.bundle import ModelBundle
from meterid.inference.fetch import Fetcher
from meterid.inference.predictor import Predictor
from meterid.inference.quality import gate_limits
from meterid.registry import (
    CHAMPION,
    AliasMovedError,
    list_versions,
    load_classifier,
    model_uri,
    promote,
    resolve_model_uri,
)
from meterid.review.store import (
    VERDICTS,
    LabelStore,
    QueuedPhoto,
    known_classes,
    open_store,
)
from meterid.scoring.pipeline import BatchScorer
from meterid.stores import configure_stores, project_root


def _params_file() -> str:
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--params", default="params.yaml")
    return parser.parse_known_args(sys.argv[1:])[0].params


@st.cache_resource(show_spinner="loading the model")
def _bundle(uri: str) -> ModelBundle:
    return load_classifier(uri)


@st.cache_resource(show_spinner=False)
def _predictor(params_file: str, uri: str) -> Predictor:
    params = load_params(params_file)
    return Predictor(_bundle(uri), None, params.score.engine, params.paths.onnx_cache)


@contextlib.contextmanager
def _scorer(params: Params, predictor: Predictor) -> Iterator[BatchScorer]:
    """A scorer per request (its result caches are not shared between browser sessions);
    its download session is closed afterwards."""
    cfg = params.score
    fetcher = Fetcher(cfg.fetch, pool_size=cfg.concurrency)
    try:
        yield BatchScorer(predictor, fetcher, cfg.quality, params.validate_.max_pixels,
                          cfg.batch_size, cfg.concurrency)
    finally:
        fetcher.close()


@st.cache_data(ttl=60, show_spinner=False)
def _scoring_history(params_file: str) -> pd.DataFrame:
    """Re-read at most once a minute: every widget click reruns the whole page."""
    return data.scoring_history(load_params(params_file))


def _show_prediction(row: ScoredRow) -> None:
    if row.status != OK:
        st.error(f"{row.url}: {row.error}")
        return
    note = f" ({row.quality_issue})" if row.quality_issue else ""
    st.subheader(f"{row.label}{note}")
    if row.auto_accepted:
        st.success("auto-accepted (within the model's certified error bound)")
    elif row.prediction_set is not None:
        why = (" (a grayscale photo: no error bound is certified for grayscale photos)"
               if row.grayscale else "")
        st.warning(f"to review{why}; candidates: " + " | ".join(row.prediction_set))
    version = row.model_version
    st.caption(f"{row.url} · " + (f"model v{version}" if version else "exported model"))
    st.bar_chart(data.top3(row), x="label", y="confidence", horizontal=True)
    st.dataframe(data.top3(row), hide_index=True)


def identify_tab(params: Params, params_file: str) -> None:
    st.write("Top-3 with calibrated confidences; UNKNOWN by the model's evaluated open-set rule, "
             "auto-accepted when its certified bound allows, otherwise the candidates to review.")
    model = st.text_input("Model (alias, URI or exported folder)", params.score.model,
                          key="model")
    threshold = None
    if st.checkbox("Replace the model's UNKNOWN rule by a confidence threshold"):
        threshold = st.slider("UNKNOWN under this top-1 confidence", 0.0, 1.0,
                              params.evaluate.threshold, 0.05)
    try:
        # The alias is read on every rerun (a promotion shows at once); a version loads once.
        pinned = resolve_model_uri(model_uri(model, params.score.model))
        predictor = _predictor(params_file, pinned).with_threshold(threshold)
        st.caption(f"UNKNOWN rule: {predictor.policy.open_set.label} < "
                   f"{predictor.policy.open_set.threshold:.4g} "
                   f"({predictor.policy.open_set.operating_point}); quality gate: "
                   + gate_limits(predictor.bundle.quality_limits, params.score.quality).describe())
    except Exception as error:  # noqa: BLE001 - any load failure is shown, the page stays up
        st.error(f"cannot load model {model!r}: {error}. An exported model works without a "
                 "registry: models/champion")
        return
    upload = st.file_uploader("Photo", type=["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"])
    if upload is not None:
        st.image(upload.getvalue(), width=320)
        with _scorer(params, predictor) as scorer:
            _show_prediction(data.identify_upload(scorer, upload.name, upload.getvalue()))
    sources = st.text_area("Or image URLs / paths, one per line")
    lines = [line.strip() for line in sources.splitlines() if line.strip()]
    if lines and st.button("Identify"):
        with _scorer(params, predictor) as scorer:
            rows = scorer.score_in_order(lines)
        for row in rows:
            _show_prediction(row)


def review_tab(params: Params) -> None:
    st.write("The photos the product could not settle. Say what each one is: your label goes "
             "back into training and measures the model in the field.")
    reviewer = st.text_input("Your name (kept with each label)", key="reviewer").strip()
    if not reviewer:
        st.info("Enter your name to start reviewing.")
        return
    try:
        store = open_store(params)
    except Exception as error:  # noqa: BLE001 - a store that cannot open is said, not raised
        st.error(f"cannot open the label store: {error}")
        return
    pending, total = store.queue(reviewer=reviewer), len(store.queue())
    if total:
        st.progress((total - len(pending)) / total,
                    text=f"{total - len(pending)} of {total} photos labelled by you")
    if not pending:
        st.success("Nothing waits for you." if total else
                   "No photo waits for review: scoring runs fill this queue.")
    else:
        _review_photo(store, pending[0], reviewer, known_classes(params))
    conflicts = store.conflicts()
    if conflicts:
        with st.expander(f"{len(conflicts)} photos where reviewers disagree"):
            st.dataframe([{"photo": c.sha256[:12], **c.verdicts} for c in conflicts],
                         hide_index=True)


def _review_photo(store: LabelStore, photo: QueuedPhoto, reviewer: str,
                  classes: list[str]) -> None:
    left, right = st.columns([2, 3])
    if Path(photo.url).is_file() or photo.url.startswith(("http://", "https://")):
        left.image(photo.url, width=320)
    left.caption(photo.url)
    right.subheader(photo.in_words())
    choices = [c for c in (photo.prediction_set or photo.top_labels) if c in classes]
    picked = None
    for column, choice in zip(right.columns(max(len(choices), 1)), choices, strict=False):
        if column.button(choice, key=f"pick-{choice}", width="stretch"):
            picked = choice
    other = right.selectbox("Another class", classes, index=None, placeholder="a class")
    if right.button("Label as this class", disabled=other is None):
        picked = other
    for column, verdict in zip(right.columns(len(VERDICTS)), VERDICTS, strict=True):
        if column.button(verdict, key=f"verdict-{verdict}", width="stretch"):
            picked = verdict
    if picked is not None:
        store.label(photo.sha256, reviewer, picked, classes)
        st.rerun()


def model_tab(params: Params) -> None:
    versions = list_versions()
    if versions:
        st.dataframe(versions, hide_index=True)
        _promote(params, versions)
    else:
        st.info("No registered model yet: run `meterid flow train`.")
    view = data.evaluation(params)
    if view.metrics is None:
        st.info("No evaluation report yet: run `meterid evaluate`.")
        return
    keys = ("accuracy", "macro_recall", "ece", "known_flagged_share",
            "unknown_flagged_share_report", "auto_accept_share")
    for column, key in zip(st.columns(len(keys)), keys, strict=True):
        value = view.metrics.get(key)
        column.metric(key, "n/a" if value is None else f"{value:.3f}")
    if view.open_set:
        st.image(str(view.open_set), caption="open-set scores and the UNKNOWN threshold: known "
                 "test photos, the two halves of the held-out brands, non-meter scenes")
    if view.confusion_matrix:
        st.image(str(view.confusion_matrix), caption="confusion matrix (test split)")
    if view.per_class is not None:
        st.dataframe(view.per_class, hide_index=True)
    if view.class_balance:
        st.image(str(view.class_balance), caption="class balance and split")


def _promote(params: Params, versions: list[dict]) -> None:
    """Promote a version to champion: chosen, confirmed, recorded with who and when; refused
    when the champion moved since the page was read."""
    champion = next((v["version"] for v in versions if CHAMPION in v["aliases"]), None)
    others = [v["version"] for v in versions if v["version"] != champion]
    if not others:
        return
    with st.expander("Promote a version to champion"):
        chosen = st.selectbox("Version", others, key="promote-version")
        who = st.text_input("Your name (kept in the version's tags)", key="promote-by").strip()
        if st.button(f"Promote version {chosen}", disabled=not who):
            st.session_state["confirm-promote"] = (chosen, champion)
        pending = st.session_state.get("confirm-promote")
        if pending is None:
            return
        version, expected = pending
        st.warning(f"Scoring will use version {version} from its next run, instead of "
                   f"version {expected}. Sure?")
        if st.button("Yes, promote", key="promote-confirm"):
            del st.session_state["confirm-promote"]
            try:
                promote(version, by=who, expected_champion=expected)
            except AliasMovedError as error:
                st.error(str(error))
                return
            st.success(f"version {version} is champion; exported to {export_champion(params)}")


def scoring_tab(params: Params, params_file: str) -> None:
    history = _scoring_history(params_file)
    if history.empty:
        st.info("No scoring run yet: run `meterid score` or the nightly deployment.")
        return
    st.line_chart(history.sort_values("scored"), x="scored",
                  y=["unknown_share", "mean_confidence"])
    st.dataframe(history, hide_index=True)
    output = st.selectbox("Labels of", history["output"])
    st.bar_chart(data.label_counts(params, output))


def clusters_tab(params: Params) -> None:
    view = data.latest_clusters(params)
    if view.folder is None:
        st.info("No clustering run yet: run `meterid cluster` or the weekly deployment.")
        return
    st.caption(f"{view.folder}; review with `meterid candidates export|add|reject`")
    if view.cluster_map:
        st.image(str(view.cluster_map), caption="clusters (-1: noise)")
    if view.summary is not None:
        st.dataframe(view.summary, hide_index=True)
    if view.sheets:
        sheet = st.selectbox("Contact sheet", list(view.sheets))
        st.image(str(view.sheets[sheet]))


def main() -> None:
    st.set_page_config(page_title="meterid", layout="wide")
    params_file = _params_file()
    params = load_params(params_file)
    # MLFLOW_TRACKING_URI (a server) when set, else params.yaml's store; not checked here: a
    # tab without a store still shows what it can.
    configure_stores(params.stores, project_root(params_file), check=False)
    st.title("meterid")
    review, identify, model, scoring, clusters = st.tabs(
        ["Review", "Identify", "Model", "Scoring", "Clusters"])
    with review:
        review_tab(params)
    with identify:
        identify_tab(params, params_file)
    with model:
        model_tab(params)
    with scoring:
        scoring_tab(params, params_file)
    with clusters:
        clusters_tab(params)


# Streamlit runs this file as __main__; a worker process that re-imports it (spawn,
# forkserver) sees __mp_main__ and must not start the app.
if __name__ == "__main__":
    main()
