"""Training flow: validate -> split -> train (phase 1, phase 2) -> evaluate -> register."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.data_preparation import data_preparation
from meterid.config import load_params
from tasks.training import evaluate_and_register, train_model


@flow(name="training")
def training(
    params_file: str = "params.yaml",
    backbone: str | None = None,
    phase1_epochs: int | None = None,
    phase2_epochs: int | None = None,
    auto_promote: bool | None = None,
) -> dict:
    """Train and register a model; the optional parameters override params.yaml for this run."""
    params = load_params(params_file)
    train_cfg = params.train.model_copy(update={k: v for k, v in {
        "backbone": backbone,
        "phase1": params.train.phase1.model_copy(update={"epochs": phase1_epochs})
        if phase1_epochs is not None else None,
        "phase2": params.train.phase2.model_copy(update={"epochs": phase2_epochs})
        if phase2_epochs is not None else None,
    }.items() if v is not None})
    register_cfg = params.register_.model_copy(
        update={"auto_promote": auto_promote} if auto_promote is not None else {})
    params = params.model_copy(update={"train": train_cfg, "register_": register_cfg})
    data_summary = data_preparation(params_file=params_file, demo_if_missing=True)
    trained = train_model(params, Path(params_file), Path.cwd())
    outcome = evaluate_and_register(params)
    return {"data": data_summary, "training": trained, "version": outcome["version"],
            "aliases": outcome["aliases"], "rule": outcome["rule"], "metrics": outcome["metrics"]}
