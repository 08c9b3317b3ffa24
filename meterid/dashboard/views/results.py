"""Nightly results: what each scoring run decided, over time and photo by photo."""

from __future__ import annotations

import streamlit as st

from meterid.config import Params
from meterid.dashboard import data
from meterid.dashboard.common import Project, project, scoring_history
from meterid.review.store import open_store

MAX_THUMBNAILS = 200  # a photo is read and shrunk for each row shown with its thumbnail
# The chart's bars: data.DECISIONS, then the photos reviewers labelled. Green for
# settled, blue for a person's work, orange and grey for what the product could not read, red
# for failures.
DECISION_COLOURS = {"auto-accepted": "#2e9e4f", "needs a person": "#3d7fd9",
                    "new type?": "#f28e2b", "unreadable?": "#9c9c9c", "error": "#d62728",
                    "reviewed": "#1b4f72"}


def _verdicts(params: Params) -> dict[str, str]:
    """What reviewers said of each labelled photo: their verdict, or "conflict"."""
    store = open_store(params)
    said = {c.sha256: "conflict" for c in store.conflicts()}
    return {**store.agreed(), **said}


def page(app: Project) -> None:
    st.header("Nightly results")
    verdicts = _verdicts(app.params)
    history = scoring_history(app.params_file, frozenset(verdicts))
    if history.empty:
        st.info("No scoring run yet: run `meterid score` or the nightly deployment.")
        return
    st.write("Each scoring run: how many photos were auto-accepted, sent to a person, "
             "flagged as a new type (UNKNOWN) or unreadable (POOR_QUALITY), or failed, and how "
             "many reviewers have labelled.")
    # One group of bars per run, oldest first (the label sorts as the time does).
    runs = history.assign(run=history["scored"].dt.strftime("%m-%d %H:%M ") + history["output"])
    st.bar_chart(runs, x="run", y=list(DECISION_COLOURS), stack=False, x_label="scoring run",
                 y_label="photos", color=list(DECISION_COLOURS.values()))
    with st.expander("Runs, in numbers"):
        st.dataframe(history, hide_index=True)
    output = st.selectbox("Run", history["output"], key="results-run")
    _rows(app.params, output, verdicts)


def _rows(params: Params, output: str, verdicts: dict[str, str]) -> None:
    labels = sorted(data.label_counts(params, output).index)
    left, middle, right = st.columns(3)
    keep = data.ResultsFilter(
        tuple(left.multiselect("Decision", data.DECISIONS, key="results-decision")),
        tuple(middle.multiselect("Label", labels, key="results-label")),
        right.text_input("URL or error contains", key="results-text").strip(),
        st.slider("Top-1 confidence at least", 0.0, 1.0, 0.0, 0.05, key="results-conf"))
    rows = data.scoring_results(params, output, verdicts, keep)
    st.caption(f"{len(rows)} photos")
    if len(rows) <= MAX_THUMBNAILS:
        rows.insert(0, "photo", [data.thumbnail(data.photo_source(params, url, sha))
                                 for url, sha in zip(rows["url"], rows["sha256"], strict=True)])
    else:
        st.caption(f"narrow the filter to {MAX_THUMBNAILS} photos or fewer to see thumbnails")
    st.dataframe(rows, hide_index=True, column_config={
        "photo": st.column_config.ImageColumn("photo"),
        "confidence": st.column_config.NumberColumn(format="%.3f")})
    st.download_button("Download these rows (CSV)", rows.drop(columns="photo", errors="ignore")
                       .to_csv(index=False), file_name=output.replace(".parquet", ".csv"),
                       mime="text/csv")


if __name__ == "__main__":
    page(project())
