"""Starting a deployment of prefect.yaml on the configured Prefect server (PREFECT_API_URL), as
the Prefect UI's "Quick run" does, and reading its flow run's state back: the dashboard's
Retrain page."""

from __future__ import annotations

import os
import uuid
from contextlib import AbstractContextManager
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


def start_deployment(api_url: str, name: str = TRAINING) -> FlowRunState:
    """A new flow run of deployment ``name`` on the server at ``api_url``, for its worker to
    pick up now."""
    from prefect.deployments import run_deployment

    with _server(api_url):
        return _state(run_deployment(name, timeout=0, as_subflow=False))


def flow_run_state(api_url: str, flow_run_id: str) -> FlowRunState:
    from prefect.client.orchestration import get_client

    with _server(api_url), get_client(sync_client=True) as client:
        return _state(client.read_flow_run(uuid.UUID(flow_run_id)))


def _server(api_url: str) -> AbstractContextManager:
    """Prefect's client pointed at ``api_url``: the server the page names, whatever settings
    context the process is in."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: api_url})


def _state(flow_run: object) -> FlowRunState:
    state = flow_run.state  # type: ignore[attr-defined]
    return FlowRunState(str(flow_run.id), flow_run.name,  # type: ignore[attr-defined]
                        state.name if state else "Unknown", bool(state and state.is_final()))
