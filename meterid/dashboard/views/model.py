"""Model: the registered versions side by side (test and field figures), the selected
version's confusion matrix and per-class recall, the field audit of auto-accept, and promotion
by a person."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from meterid.config import Params
from meterid.dashboard import data
from meterid.dashboard.common import project
from meterid.evaluation.steps import export_champion
from meterid.registry import (
    CHAMPION,
    AliasMovedError,
    list_versions,
    promote,
)
from meterid.review.audit import uncertified_reason
from meterid.review.field import field_report
from meterid.review.store import LabelStore, field_verdict, known_classes, open_store

# field_accuracy: `meterid evaluate`'s, on the field test set of the day it was evaluated;
# reviewed_accuracy: what it said at scoring time of the photos reviewers have labelled since;
# ece_if_calibrated_p95: an ECE under it is what a calibrated model reads on as few photos.
SIDE_BY_SIDE = ("version", "aliases", "accuracy", "macro_recall", "ece", "ece_if_calibrated_p95",
                "field_accuracy", "reviewed_accuracy", "reviewed", "data_version", "created",
                "promoted_by")


def page(params: Params) -> None:
    st.header("Model")
    versions = list_versions()
    if not versions:
        st.info("No registered model yet: run `meterid flow train`.")
        return
    store, classes = open_store(params), known_classes(params)
    table = _side_by_side(versions, store, classes)
    st.write("Each registered version: its test figures; its accuracy on the field test set "
             "when it was evaluated (field_accuracy); and how right it was on the photos "
             "reviewers have labelled since (reviewed_accuracy: the unsure ones and a random "
             "audit of the auto-accepted, harder than the field at large).")
    st.dataframe(table, hide_index=True, column_order=SIDE_BY_SIDE)
    _promote(params, versions)
    chosen = st.selectbox("Version", [row["version"] for row in versions], key="model-version")
    _audit(store, next(row for row in versions if row["version"] == chosen), params)
    left, right = st.columns(2)
    with left:
        _test_reports(chosen)
    with right:
        _field(store, chosen, classes)


def _side_by_side(versions: list[dict], store: LabelStore, classes: list[str]) -> pd.DataFrame:
    rows = []
    for row in versions:
        field = field_report(store, row["version"], classes)
        rows.append({"field_accuracy": None, "ece_if_calibrated_p95": None, **row,
                     "aliases": ", ".join(row["aliases"]), "reviewed_accuracy": field.accuracy,
                     "reviewed": field.reviewed})
    return pd.DataFrame(rows)


def _audit(store: LabelStore, version: dict, params: Params) -> None:
    uncertified = uncertified_reason(version, params.evaluate.max_accept_error)
    if uncertified:
        st.info(uncertified)
        return
    verdict = field_verdict(store, version["version"], params)
    bound = (f"Field error of auto-accepted photos at most {verdict.bound:.1%} "
             f"({verdict.confidence:.0%} confidence; {verdict.wrong} wrong of "
             f"{verdict.audited} audited)." if verdict.audited else
             f"No audited photo yet: {params.review.audit_share:.0%} of each run's "
             "auto-accepted photos reach the Review page.")
    if verdict.auto_accept:
        st.success(f"Auto-accept on: {verdict.reason}. {bound}")
    else:
        st.error(f"Auto-accept stopped: {verdict.reason}. {bound}")


@st.cache_data(show_spinner="reading the version's evaluation")
def _evaluation_of(version: int) -> data.VersionReports:
    return data.version_reports(version)  # a version's reports never change


def _test_reports(version: int) -> None:
    st.subheader("On the test split")
    reports = _evaluation_of(version)
    if reports.unreadable:
        st.error(f"cannot read version {version}'s evaluation reports from "
                 f"{reports.unreadable}")
    elif reports.confusion_matrix is None and reports.per_class is None:
        st.info(f"version {version} was registered without its evaluation reports")
    if reports.confusion_matrix is not None:
        st.image(reports.confusion_matrix, caption=f"confusion matrix of version {version}")
    if reports.per_class is not None:
        st.dataframe(reports.per_class, hide_index=True)
    if reports.open_set is not None:
        st.image(reports.open_set, caption="open-set scores and the UNKNOWN threshold: known "
                 "test photos, the two halves of the held-out brands, non-meter scenes")


def _field(store: LabelStore, version: int, classes: list[str]) -> None:
    st.subheader("In the field")
    field = field_report(store, version, classes)
    if not field.reviewed:
        st.info("No reviewed photo of this version yet: reviewers label on the Review page.")
        return
    st.metric("field accuracy (top-1)", f"{field.accuracy:.1%}",
              help=f"{field.correct} of {field.reviewed} reviewed photos of a known class")
    st.dataframe(field.per_class, hide_index=True)
    st.caption("What the product said (columns) of the photos reviewers labelled (rows)")
    st.dataframe(field.confusion)


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


if __name__ == "__main__":
    page(project().params)
