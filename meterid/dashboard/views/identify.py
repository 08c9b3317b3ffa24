"""Identify: a photo now (uploaded or listed), through the nightly pipeline's own scorer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import streamlit as st

from meterid.config import Params, load_params
from meterid.core import OK, ScoredRow
from meterid.dashboard import data
from meterid.dashboard.common import Project, project
from meterid.inference.bundle import ModelBundle
from meterid.inference.fetch import Fetcher
from meterid.inference.predictor import Predictor
from meterid.inference.quality import gate_limits
from meterid.registry import load_classifier, model_uri, resolve_model_uri
from meterid.scoring.pipeline import BatchScorer

UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"]


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
        st.warning(f"needs a person{why}; candidates: " + " | ".join(row.prediction_set))
    version = row.model_version
    st.caption(f"{row.url} · " + (f"model v{version}" if version else "exported model"))
    st.bar_chart(data.top3(row), x="label", y="confidence", horizontal=True)
    st.dataframe(data.top3(row), hide_index=True)


def _load(app: Project) -> Predictor | None:
    params = app.params
    model = st.text_input("Model (alias, URI or exported folder)", params.score.model,
                          key="model")
    threshold = None
    with st.expander("How the product decides"):
        if st.checkbox("Replace the model's UNKNOWN rule by a confidence threshold"):
            threshold = st.slider("UNKNOWN under this top-1 confidence", 0.0, 1.0,
                                  params.evaluate.threshold, 0.05)
        try:
            # The alias is read on every rerun (a promotion shows at once); a version loads once.
            pinned = resolve_model_uri(model_uri(model, params.score.model))
            predictor = _predictor(app.params_file, pinned).with_threshold(threshold)
        except Exception as error:  # noqa: BLE001 - any load failure is shown, the page stays up
            st.error(f"cannot load model {model!r}: {error}. An exported model works without "
                     "a registry: models/champion")
            return None
        st.caption(f"UNKNOWN rule: {predictor.policy.open_set.label} < "
                   f"{predictor.policy.open_set.threshold:.4g} "
                   f"({predictor.policy.open_set.operating_point}); quality gate: "
                   + gate_limits(predictor.bundle.quality_limits, params.score.quality)
                   .describe())
    return predictor


def page(app: Project) -> None:
    st.header("Identify")
    st.write("Drop a photo: the product says which meter it is, \"auto-accepted\" when its "
             "certified error bound allows, otherwise the candidates a person should check, "
             "and \"UNKNOWN\" for a type it was not trained on. The top-3 is always shown.")
    predictor = _load(app)
    if predictor is None:
        return
    params = app.params
    upload = st.file_uploader("Photo", type=UPLOAD_TYPES,
                              max_upload_size=params.score.fetch.max_bytes // 2**20 or 1)
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


if __name__ == "__main__":
    page(project())
