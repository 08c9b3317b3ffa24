"""Data: the dataset as the last validate and split left it: photos per class and split, the
class balance, the validation rules that failed with their files, and the Data Docs."""

from __future__ import annotations

import streamlit as st

from meterid.config import Params
from meterid.dashboard import data
from meterid.dashboard.common import project


def page(params: Params) -> None:
    st.header("Data")
    view = data.dataset(params)
    if view.validation is None:
        st.info("No validation yet: run `meterid validate` (or `meterid flow data`).")
    else:
        _validation(view.validation)
        if view.data_docs is not None:
            st.markdown(f"Great Expectations Data Docs: [{view.data_docs}]"
                        f"({view.data_docs.resolve().as_uri()}) (open the file on this machine)")
    if view.split_table is None:
        st.info("No split yet: run `meterid split`.")
        return
    left, right = st.columns([2, 3])
    left.subheader("Photos per class and split")
    left.dataframe(view.split_table)
    if view.class_balance is not None:
        right.image(str(view.class_balance), caption="class balance and split")


def _validation(validation: dict) -> None:
    errors, warnings = validation["errors"], validation["warnings"]
    said = f"{validation['n_files']} photos checked"
    if errors:
        st.error(f"Validation failed: {', '.join(errors)} ({said}). Fix the files below, "
                 "then `meterid validate`.")
    elif warnings:
        st.warning(f"Validation passed with warnings: {', '.join(warnings)} ({said}).")
    else:
        st.success(f"Validation passed: every rule holds ({said}).")
    if errors or warnings:
        st.dataframe(data.failed_rules(validation), hide_index=True)


if __name__ == "__main__":
    page(project().params)
