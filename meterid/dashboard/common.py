"""What every dashboard page shares: the project's params (``--params``, after ``--`` on the
``streamlit run`` line) with the stores configured, and the cached readers."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import pandas as pd
import streamlit as st

from meterid.config import Params, load_params
from meterid.dashboard import data
from meterid.stores import configure_stores, project_root


@dataclass(frozen=True)
class Project:
    params: Params
    params_file: str


def project() -> Project:
    """The project the dashboard shows. MLFLOW_TRACKING_URI (a server) when set, else
    params.yaml's store; not checked here: a page without a store still shows what it can."""
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--params", default="params.yaml")
    params_file = parser.parse_known_args(sys.argv[1:])[0].params
    params = load_params(params_file)
    configure_stores(params.stores, project_root(params_file), check=False)
    return Project(params, params_file)


@st.cache_data(ttl=60, show_spinner=False)
def scoring_history(params_file: str, reviewed: frozenset[str]) -> pd.DataFrame:
    """Re-read at most once a minute (or when reviews change): every click reruns the page."""
    return data.scoring_history(load_params(params_file), reviewed)
