"""Retrain: start the on-demand training deployment on the Prefect server and follow it; without
a server, the command that trains here."""

from __future__ import annotations

import streamlit as st

from meterid.dashboard.common import project
from meterid.flows.deployments import TRAINING, flow_run_state, prefect_server, start_deployment

RUN = "retrain-run"


def page() -> None:
    st.header("Retrain")
    st.write("Train, evaluate and register a new model version on the current dataset (the "
             "photos added from reviews and clusters included). The new version is promoted "
             "only by the promotion rule or by a person on the Model page.")
    server = prefect_server()
    if server is None:
        st.info("No Prefect server is configured (PREFECT_API_URL). Start the stack with "
                "`meterid serve` and open the dashboard with PREFECT_API_URL and "
                "MLFLOW_TRACKING_URI set to its servers, or train here: `meterid flow train`")
        st.code("meterid flow train", language="bash")
        return
    st.caption(f"Prefect server: {server}; deployment {TRAINING}")
    if st.button("Start training", key="retrain-start", type="primary"):
        try:
            st.session_state[RUN] = start_deployment(server, TRAINING).id
        except Exception as error:  # noqa: BLE001 - the server's refusal is shown as it is
            st.error(f"cannot start {TRAINING} on {server}: {type(error).__name__}: {error}")
            return
    run_id = st.session_state.get(RUN)
    if run_id is not None:
        run = flow_run_state(server, run_id)
        (st.success if run.state == "Completed" else st.error if run.final else st.info)(
            f"flow run {run.name}: {run.state}")
        if not run.final:
            st.button("Refresh", key="retrain-refresh")


if __name__ == "__main__":
    project()
    page()
