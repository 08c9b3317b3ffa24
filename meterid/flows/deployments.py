"""Starting a deployment of prefect.yaml on the configured Prefect server (PREFECT_API_URL), as
the Prefect UI's "Quick run" does, and reading its flow run's state back: the dashboard's
Retrain page."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

TRAINING = "training/on-demand"  # prefect.yaml's on-demand deployment of the training flow


@dataclass(frozen=True)
class FlowRunState:
    id: str
    name: str
    state: str          # Scheduled, Pending, Running, Completed, Failed, ...
    final: bool         # no further change


def prefect_server() -> str | None:
    """The Prefect server runs go to (``meterid serve`` prints it), None when not configured."""
    return os.environ.get("PREFECT_API_URL") or None


def start_deployment(name: str = TRAINING) -> FlowRunState:
    """A new flow run of deployment ``name``, for the server's worker to pick up now."""
    from prefect.deployments import run_deployment

    flow_run = run_deployment(name, timeout=0, as_subflow=False)
    return _state(flow_run)


def flow_run_state(flow_run_id: str) -> FlowRunState:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return _state(client.read_flow_run(uuid.UUID(flow_run_id)))


def _state(flow_run: object) -> FlowRunState:
    state = flow_run.state  # type: ignore[attr-defined]
    return FlowRunState(str(flow_run.id), flow_run.name,  # type: ignore[attr-defined]
                        state.name if state else "Unknown", bool(state and state.is_final()))
