"""Training flow: validate -> split -> train (phase 1, phase 2) -> evaluate -> register, each
stage versioned in DVC as it ends."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from meterid.config import Params
from meterid.flows.data_preparation import data_preparation
from meterid.flows.run_logs import show_meterid_logs_in_runs
from meterid.pipeline import stage_names
from meterid.stores import open_project
from meterid.tasks.training import evaluate_and_register, train_model
from meterid.tasks.versioning import record_stages


def with_overrides(params: Params, backbone: str | None, phase1_epochs: int | None,
                   phase2_epochs: int | None, auto_promote: bool | None) -> Params:
    """params.yaml with the flow run's optional overrides (the Prefect UI's form fields)."""
    train = params.train
    if backbone is not None:
        train = train.model_copy(update={"backbone": backbone})
    if phase1_epochs is not None:
        train = train.model_copy(update={"phase1": train.phase1.model_copy(
            update={"epochs": phase1_epochs})})
    if phase2_epochs is not None:
        train = train.model_copy(update={"phase2": train.phase2.model_copy(
            update={"epochs": phase2_epochs})})
    register = params.register_
    if auto_promote is not None:
        register = register.model_copy(update={"auto_promote": auto_promote})
    return params.model_copy(update={"train": train, "register_": register})


@flow(name="training")
def training(
    params_file: str = "params.yaml",
    backbone: str | None = None,
    phase1_epochs: int | None = None,
    phase2_epochs: int | None = None,
    auto_promote: bool | None = None,
) -> dict:
    """Prepare the data, train, evaluate and register a model version."""
    show_meterid_logs_in_runs()
    params = with_overrides(open_project(params_file), backbone, phase1_epochs, phase2_epochs,
                            auto_promote)
    data_summary = data_preparation(params_file=params_file, demo_if_missing=True)
    trained = train_model(params, Path.cwd())
    outcome = evaluate_and_register(params)
    overrides = {name: value for name, value in (
        ("backbone", backbone), ("phase1_epochs", phase1_epochs),
        ("phase2_epochs", phase2_epochs), ("auto_promote", auto_promote)) if value is not None}
    if overrides:  # dvc.lock records params.yaml's values: it would misstate this run
        get_run_logger().warning("not recorded in dvc.lock: this run overrode params.yaml (%s)",
                                 overrides)
    else:
        record_stages(list(stage_names("train", "evaluate")))
    return {"data": data_summary, "training": trained, "version": outcome["version"],
            "aliases": outcome["aliases"], "decision": outcome["decision"],
            "metrics": outcome["metrics"]}
