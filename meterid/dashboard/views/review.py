"""Review: the photos the product could not settle, one at a time; a reviewer's label goes into
the label store, measures the model in the field and flows back into training."""

from __future__ import annotations

import streamlit as st

from meterid.config import Params
from meterid.dashboard import data
from meterid.dashboard.common import project
from meterid.review.store import VERDICTS, LabelStore, QueuedPhoto, known_classes, open_store

ALL_RUNS = "every run"
# One key per choice: the candidates by rank, the verdicts by initial.
CANDIDATE_KEYS = ("1", "2", "3", "4", "5")
VERDICT_KEYS = dict(zip(VERDICTS, ("n", "m", "u"), strict=True))


def page(params: Params) -> None:
    st.header("Review")
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
    chosen = st.selectbox("Scoring run", [ALL_RUNS, *store.runs()], key="review-run")
    run = None if chosen == ALL_RUNS else chosen
    pending, total = store.queue(run, reviewer=reviewer), len(store.queue(run))
    if total:
        st.progress((total - len(pending)) / total,
                    text=f"{total - len(pending)} of {total} photos labelled by you")
    if not pending:
        st.success("Nothing waits for you." if total else
                   "No photo waits for review: scoring runs fill this queue.")
    else:
        _review_photo(params, store, pending[0], reviewer, known_classes(params))
    conflicts = store.conflicts()
    if conflicts:
        with st.expander(f"{len(conflicts)} photos where reviewers disagree"):
            st.dataframe([{"photo": c.sha256[:12], **c.verdicts} for c in conflicts],
                         hide_index=True)


def _review_photo(params: Params, store: LabelStore, photo: QueuedPhoto, reviewer: str,
                  classes: list[str]) -> None:
    left, right = st.columns([2, 3])
    source = data.photo_source(params, photo.url, photo.sha256)
    if source is None:
        left.warning("The photo is no longer at its URL and no copy was kept.")
    else:
        left.image(source, width=320)
    left.caption(photo.url)
    right.subheader(photo.in_words())
    choices = [c for c in (photo.prediction_set or photo.top_labels) if c in classes]
    choices = choices[:len(CANDIDATE_KEYS)]
    picked = None
    for column, choice, key in zip(right.columns(max(len(choices), 1)), choices,
                                   CANDIDATE_KEYS, strict=False):
        if column.button(choice, key=f"pick-{choice}", width="stretch", shortcut=key,
                         help=f"key {key}"):
            picked = choice
    other = right.selectbox("Another class", classes, index=None, placeholder="a class")
    if right.button("Label as this class", disabled=other is None):
        picked = other
    for column, verdict in zip(right.columns(len(VERDICTS)), VERDICTS, strict=True):
        key = VERDICT_KEYS[verdict]
        if column.button(verdict, key=f"verdict-{verdict}", width="stretch", shortcut=key,
                         help=f"key {key}"):
            picked = verdict
    right.caption("Keys: " + ", ".join(f"{k} {c}" for k, c in zip(CANDIDATE_KEYS, choices,
                                                                 strict=False))
                  + ", " + ", ".join(f"{k} {v}" for v, k in VERDICT_KEYS.items()))
    if picked is not None:
        store.label(photo.sha256, reviewer, picked, classes)
        st.rerun()


if __name__ == "__main__":
    page(project().params)
