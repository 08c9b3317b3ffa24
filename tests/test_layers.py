"""The import directions of meterid's packages, checked on the source (every import, those
inside functions too): each package imports only packages of lower layers, no package or file
imports itself back through another, and the predictor imports without MLflow. The README's
"Layout" section draws the same layers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

from meterid.pipeline import imported_names
from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "meterid"

# Lowest first; a package imports only packages of lower layers.
LAYERS: list[set[str]] = [
    {"core", "config", "photos", "runtime", "files", "progress"},  # words, settings, pixels, I/O
    {"stores", "catalog"},  # where runs, models, data and each stage's files live
    {"tracking"},     # MLflow runs' context
    {"decision"},     # the product's rule: UNKNOWN, auto-accept, prediction sets
    {"model"},        # the network and its checkpoint
    {"inference"},    # engines, the quality gate, the predictor
    {"registry"},     # the MLflow model registry
    {"data"},         # manifest, validation, split, the demo generator
    {"training"},     # two phases, calibration, out-of-fold logits
    {"review"},       # the label store, what goes to a person, the field audit of auto-accept
    {"evaluation"},   # reads training's outputs, sets the decision policy, registers
    {"scoring"},      # batches of URLs under the policy (and the field audit's verdict)
    {"clustering"},   # the UNKNOWN photos of scoring
    {"serve", "project", "pipeline"},  # servers, `meterid init`, dvc.yaml
    {"tasks"},        # Prefect tasks: thin wrappers of the step functions
    {"flows"},        # Prefect flows: the pipeline as it reads, and starting deployments
    {"cli", "dashboard"},  # what people use: the command line and the dashboard
]
# Only the orchestration layers import Prefect: the ML logic runs and tests without it.
PREFECT_LAYERS = {"tasks", "flows"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_graph() -> nx.DiGraph:
    """meterid's modules, an edge for each import of another meterid module."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        for imported in imported_names(path):
            if imported.split(".")[0] == "meterid":
                # "from meterid.x import y": y is a module when it is one, else a name in x
                target = imported if imported in modules else imported.rsplit(".", 1)[0]
                if target in modules and target != name and target != "meterid":
                    graph.add_edge(name, target)
    return graph


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if parts[0] == "meterid" and len(parts) > 1 else parts[0]


def package_edges(graph: nx.DiGraph) -> set[tuple[str, str]]:
    return {(package_of(a), package_of(b)) for a, b in graph.edges
            if package_of(a) != package_of(b)}


def test_every_package_has_a_layer():
    layered = set().union(*LAYERS)
    packages = {package_of(m) for m in module_graph().nodes if m.startswith("meterid.")}
    assert packages <= layered, f"put {sorted(packages - layered)} in a layer of LAYERS"


def against_layers(edges: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (importer, imported) package edges that do not point to a lower layer."""
    layer = {package: i for i, names in enumerate(LAYERS) for package in names}
    return sorted((a, b) for a, b in edges
                  if layer.get(b, len(LAYERS)) >= layer[a])


def test_packages_import_only_lower_layers():
    wrong = against_layers(package_edges(module_graph()))
    assert not wrong, f"imports against the layers (importer, imported): {wrong}"


def test_only_tasks_and_flows_import_prefect():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    importers = {package_of(name) for name, path in modules.items()
                 if any(i.split(".")[0] == "prefect" for i in imported_names(path))}
    assert importers == PREFECT_LAYERS


def test_no_package_or_module_imports_itself_back():
    graph = module_graph()
    packages = nx.DiGraph(package_edges(graph))
    assert list(nx.simple_cycles(packages)) == []
    assert list(nx.simple_cycles(graph)) == []


@pytest.mark.parametrize("module", ["meterid.inference.predictor", "meterid.decision.policy",
                                    "meterid.core"])
def test_inference_and_the_decision_rule_import_without_mlflow(module: str):
    code = f"import sys, {module}; print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO_ROOT, check=True).stdout
    assert out.strip() == "False"


def test_the_checker_sees_a_back_edge_and_a_cycle():
    """Not vacuous: a model module importing evaluation is against the layers and a cycle."""
    graph = module_graph()
    graph.add_edge("meterid.model.classifier", "meterid.evaluation.evaluate")
    assert ("model", "evaluation") in against_layers(package_edges(graph))
    assert list(nx.simple_cycles(nx.DiGraph(package_edges(graph))))

