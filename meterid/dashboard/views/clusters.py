"""Clusters: the weekly run's groups of UNKNOWN photos, a card each, and what a person decides
of them: export for pruning, add as a class, reject (the calls of `meterid candidates`)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from meterid.clustering.candidates import (
    LABEL,
    CandidateError,
    add_cluster,
    check_status,
    default_folder,
    export_cluster,
    reject_cluster,
)
from meterid.config import Params
from meterid.dashboard import data
from meterid.dashboard.common import project

CONFIRM, OUTCOME = "confirm-cluster", "cluster-outcome"
MARKS = {"added": "added as a class", "rejected": "rejected", "exported": "exported for pruning",
         "candidate": "new type candidate"}


def page(params: Params) -> None:
    st.header("Clusters")
    view = data.latest_clusters(params)
    if view.folder is None or view.summary is None:
        st.info("No clustering run yet: run `meterid cluster` or the weekly deployment.")
        return
    st.write("Each week the photos flagged as a new type are grouped by look. A group of one "
             "meter type is a class the model does not know yet: add it (the photos are copied "
             "into the dataset, validated and versioned; the next training learns it), or "
             "reject it so later weeks stop proposing it.")
    st.caption(f"run {view.folder}")
    if view.cluster_map:
        with st.expander("Map of the run (-1: noise)"):
            st.image(str(view.cluster_map))
    _outcome()
    _confirmation(params, view.folder)
    for row in view.summary[view.summary["cluster_id"] >= 0].itertuples():
        _card(row, view.sheets.get(Path(str(row.sheet)).stem))


def _card(row: object, sheet: Path | None) -> None:
    cluster_id, status = int(row.cluster_id), str(row.status)  # type: ignore[attr-defined]
    with st.container(border=True):
        left, right = st.columns([3, 2])
        if sheet is not None:
            left.image(str(sheet))
        right.subheader(f"Cluster {cluster_id} · {MARKS.get(status, status)}")
        right.write(f"{row.size} photos; closest known classes: "  # type: ignore[attr-defined]
                    f"{row.close_to}")  # type: ignore[attr-defined]
        if status in ("added", "rejected"):
            return
        label = right.text_input("Class name", key=f"label-{cluster_id}",
                                 placeholder="e.g. ACME-E350").strip()
        export, add, reject = right.columns(3)
        if export.button("Export", key=f"export-{cluster_id}",
                         help="copy its photos into a folder to prune by hand"):
            st.session_state[CONFIRM] = ("export", cluster_id, status, "")
            st.rerun()
        if add.button("Add as class", key=f"add-{cluster_id}", disabled=not label):
            st.session_state[CONFIRM] = ("add", cluster_id, status, label)
            st.rerun()
        if reject.button("Reject", key=f"reject-{cluster_id}"):
            st.session_state[CONFIRM] = ("reject", cluster_id, status, "")
            st.rerun()


def _confirmation(params: Params, run_dir: Path) -> None:
    pending = st.session_state.get(CONFIRM)
    if pending is None:
        return
    action, cluster_id, seen, label = pending
    folder = default_folder(params, cluster_id)
    question = {"export": f"Copy cluster {cluster_id}'s photos into {folder}?",
                "add": f"Add cluster {cluster_id} as class {label!r}"
                       + (f" (the photos left in {folder})" if folder.is_dir() else "") + "?",
                "reject": f"Reject cluster {cluster_id}: not a new meter type?"}[action]
    with st.container(border=True):
        st.warning(question)
        yes, no = st.columns(2)
        if no.button("Cancel", key="cluster-cancel"):
            del st.session_state[CONFIRM]
            st.rerun()
        if not yes.button(f"Yes, {action}", key="cluster-confirm", type="primary"):
            return
    del st.session_state[CONFIRM]
    try:
        st.session_state[OUTCOME] = (True, _act(params, run_dir, action, cluster_id, seen,
                                                label))
    except (CandidateError, KeyError) as error:
        st.session_state[OUTCOME] = (False, str(error.args[0] if isinstance(error, KeyError)
                                                else error))
    st.rerun()  # the cards show the new status


def _outcome() -> None:
    """The last action's result, shown once after the rerun that updated the cards."""
    done = st.session_state.pop(OUTCOME, None)
    if done is not None:
        (st.success if done[0] else st.error)(done[1])


def _act(params: Params, run_dir: Path, action: str, cluster_id: int, seen: str,
         label: str) -> str:
    check_status(params, cluster_id, seen)
    if action == "export":
        folder = default_folder(params, cluster_id)
        copied = export_cluster(params, run_dir, cluster_id, folder)
        return (f"{len(copied)} photos in {folder}: delete the wrong ones, then add the "
                "cluster here")
    if action == "add":
        if not LABEL.match(label):
            raise CandidateError(f"class name {label!r}: use letters, digits, '-', '_' or '.'")
        added, _ = add_cluster(params, run_dir, cluster_id, label)
        return (f"added {added} photos as {label}; validation passed. Train to learn it "
                "(Retrain page)")
    reject_cluster(params, cluster_id, "rejected in the dashboard")
    return f"cluster {cluster_id} rejected: later weeks flag it instead of proposing it"


if __name__ == "__main__":
    page(project().params)
