"""Prefect tasks for training and evaluation: thin wrappers adding logging and artifacts."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from meterid.config import Params
from meterid.evaluation.metrics import HEADLINE_METRICS
from meterid.evaluation.steps import evaluate_candidate
from meterid.training.steps import train_candidate


@task(name="train-model")
def train_model(params: Params, repo: Path) -> dict:
    summary = train_candidate(params, repo)
    get_run_logger().info("trained: %s", summary)
    return summary


@task(name="evaluate-and-register")
def evaluate_and_register(params: Params) -> dict:
    outcome = evaluate_candidate(params)
    metrics = outcome["metrics"]
    create_table_artifact(
        table=[{"metric": k, "value": round(float(metrics[k]), 4)} for k in HEADLINE_METRICS
               if k in metrics],
        key="evaluation-metrics", description=f"meterid version {outcome['version']}")
    matrix = Path(outcome["reports"]["confusion_matrix"]).resolve()
    create_markdown_artifact(
        key="evaluation-report",
        markdown=(f"# meterid version {outcome['version']} ({', '.join(outcome['aliases'])})\n\n"
                  f"Open-set rule: `{outcome['open_set_rule']}`, "
                  f"{outcome['decision']['open_set']['operating_point']}\n\n"
                  f"- confusion matrix: [{matrix.name}]({matrix.as_uri()})\n"
                  f"- open-set scores: `{outcome['reports']['open_set_plot']}`\n"
                  f"- audit: `{outcome['reports']['audit']}`\n"
                  f"- per-class metrics: `{outcome['reports']['per_class']}`\n"))
    get_run_logger().info("registered version %s with aliases %s", outcome["version"],
                          outcome["aliases"])
    return outcome
