"""deploy/ checked without Docker: services and dependencies, every command against the installed
CLI's ``--help``, the database drivers, ports, shared volumes, secrets and the Dockerfile.

Compose's own interpolation (``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``, ``$$``) is
applied with deploy/.env.example's values, as ``docker compose`` would with a copy of it.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml

from meterid.stores import TELEMETRY_OFF
from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_S3 = DEPLOY / "compose.s3.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
INIT_SCRIPT = DEPLOY / "postgres" / "init-databases.sh"
BIN = Path(sys.executable).parent  # the venv's: the CLIs the image installs from pyproject.toml
STACK_TOOLS = ("prefect", "mlflow", "dask", "meterid")
EXPECTED = {"postgres", "prefect-server", "mlflow", "deployer", "prefect-worker",
            "dask-scheduler", "dask-worker"}
RUNS_FLOWS = ("deployer", "prefect-worker", "dask-worker")  # with the project mounted
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
SHELLS = ("sh", "bash")
SHELL_OPERATORS = {"&&", "||", ";", "|"}
LOOPBACK = {"127.0.0.1", "localhost"}
POSTGRES_PORT = 5432  # the postgres image's
_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
_ENV_LINE = re.compile(r"^#?\s*(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")
_WORD = re.compile(r"^[a-z][a-z0-9-]*$")
_URL = re.compile(r"[a-z][a-z0-9+]*://[^\s'\"]+")


# --- reading the files as Compose does -------------------------------------------------------

def env_example(optional: bool = False) -> dict[str, str]:
    """.env.example's variables; ``optional`` adds the commented-out ones (the S3 variant)."""
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = _ENV_LINE.match(line.strip())
        if match and (optional or not line.startswith("#")):
            values[match["name"]] = match["value"].strip()
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution; a required variable left empty in .env.example (a
    password) gets a stand-in value, as a user's .env would give it one."""
    def one(match: re.Match) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        value = env.get(name)
        if op in (":-", "-"):
            return arg if value is None or (op == ":-" and value == "") else value
        if op in (":?", "?") and not value:
            return f"test-{name.lower().replace('_', '-')}"
        return value or ""
    return _VAR.sub(one, text.replace("$$", "\0")).replace("\0", "$")


def interpolated(node: object, env: dict[str, str]) -> object:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolated(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolated(value, env) for key, value in node.items()}
    return node


def merge(base: dict, override: dict) -> dict:
    """Compose's merge of an override file: mappings merged key by key, the rest replaced."""
    out = dict(base)
    for key, value in override.items():
        out[key] = (merge(out[key], value) if isinstance(value, dict)
                    and isinstance(out.get(key), dict) else value)
    return out


def raw(path: Path = COMPOSE) -> dict:
    return yaml.safe_load(path.read_text())


def stack(s3: bool = False) -> dict:
    """The compose model after interpolation; ``s3``: with compose.s3.yaml over it."""
    model = raw()
    if s3:
        model = merge(model, raw(COMPOSE_S3))
    return interpolated(model, env_example(optional=s3))


def services(s3: bool = False) -> dict[str, dict]:
    return stack(s3)["services"]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def argv(service: dict) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def simple_commands(args: list[str]) -> list[list[str]]:
    """A command's simple commands: ``sh -c 'a || b && c'`` gives a, b and c."""
    if len(args) == 3 and args[0] in SHELLS and args[1] == "-c":
        lexer = shlex.shlex(args[2], posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        commands: list[list[str]] = [[]]
        for token in lexer:
            if token in SHELL_OPERATORS:
                commands.append([])
            else:
                commands[-1].append(token)
        return [command for command in commands if command]
    return [args] if args else []


def option_value(args: list[str], option: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


def runs_meterid_image(service: dict) -> bool:
    return service.get("build", {}).get("dockerfile") == "deploy/Dockerfile"


# --- the commands --------------------------------------------------------------------------

@dataclass(frozen=True)
class Invocation:
    """One call of a stack tool: ``prefect --no-prompt deploy --all`` is tool ``prefect``,
    global options (``--no-prompt``), words (``deploy``) and options (``--all``). The words are
    the subcommand and any argument before the first option (``work-pool create NAME``):
    ``--help`` after them still prints the subcommand's help, and fails on a wrong one."""

    service: str
    tool: str
    global_options: tuple[str, ...]
    words: tuple[str, ...]
    options: tuple[str, ...]

    @classmethod
    def parse(cls, service: str, args: list[str]) -> Invocation:
        tool, rest = args[0], args[1:]
        i = 0
        while i < len(rest) and rest[i].startswith("-"):
            i += 1
        global_options, rest = rest[:i], rest[i:]
        i = 0
        while i < len(rest) and _WORD.match(rest[i]):
            i += 1
        words, rest = rest[:i], rest[i:]
        options = tuple(a.split("=", 1)[0] for a in rest if a.startswith("-"))
        return cls(service, tool, tuple(global_options), tuple(words), options)

    def help_calls(self) -> Iterator[tuple[tuple[str, ...], tuple[str, ...]]]:
        """(``--help`` command, options its text must list)."""
        if self.global_options:
            yield (self.tool,), self.global_options
        yield (self.tool, *self.words), self.options


def invocations(s3: bool = False) -> list[Invocation]:
    found = []
    for name, service in services(s3).items():
        for command in simple_commands(argv(service)):
            if command[0] in STACK_TOOLS:
                found.append(Invocation.parse(name, command))
    return found


def run_help(command: tuple[str, ...], home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **TELEMETRY_OFF, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb",
           "PREFECT_HOME": str(home)}
    return subprocess.run([str(BIN / command[0]), *command[1:], "--help"], capture_output=True,
                          text=True, env=env, timeout=180, check=False)


def listed(option: str, help_text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text) is not None


# --- (a) services and their dependencies -----------------------------------------------------

def test_expected_services_exist():
    assert EXPECTED <= set(services())
    assert {"minio", "minio-init"} <= set(services(s3=True))


@pytest.mark.parametrize("s3", [False, True], ids=["compose", "with-s3"])
def test_dependencies_exist_and_can_be_met(s3: bool):
    model = services(s3)
    for name, service in model.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in model, f"{name} depends on {dependency}, not a service"
            condition = spec["condition"]
            assert condition in CONDITIONS, (name, dependency, condition)
            target = model[dependency]
            if condition == "service_healthy":
                assert target.get("healthcheck", {}).get("test"), (
                    f"{name} waits for {dependency} to be healthy; it has no health check")
            if condition == "service_completed_successfully":
                assert target.get("restart") == "no", f"{dependency} is a one-shot: restart no"


def test_long_running_services_have_health_checks():
    for name, service in services().items():
        if service.get("restart") != "no":
            assert service.get("healthcheck", {}).get("test"), name


# --- (b) every command is one this project's tools really have -----------------------------

def test_every_project_image_service_runs_a_stack_tool():
    for name, service in services().items():
        if runs_meterid_image(service):
            commands = simple_commands(argv(service))
            assert commands and all(c[0] in STACK_TOOLS for c in commands), (name, commands)
    tools = {(i.tool, i.words[:2]) for i in invocations()}
    assert {("prefect", ("server", "start")), ("mlflow", ("server",)),
            ("prefect", ("worker", "start")), ("prefect", ("deploy",)),
            ("dask", ("scheduler",)), ("dask", ("worker",))} <= tools


@pytest.mark.slow  # ~10 CLI starts (prefect ~1.5 s, mlflow ~4 s each): 10-30 s on 2 cores
def test_commands_and_options_match_the_installed_clis(tmp_path: Path):
    calls: dict[tuple[str, ...], set[str]] = {}
    users: dict[tuple[str, ...], set[str]] = {}
    for invocation in invocations(s3=True):
        for command, options in invocation.help_calls():
            calls.setdefault(command, set()).update(options)
            users.setdefault(command, set()).add(invocation.service)
    homes = [tmp_path / str(i) for i in range(len(calls))]  # a PREFECT_HOME each
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        results = dict(zip(calls, pool.map(run_help, calls, homes), strict=True))
    for command, options in calls.items():
        result = results[command]
        where = f"`{' '.join(command)} --help` (services {sorted(users[command])})"
        assert result.returncode == 0, (where, result.stdout[-2000:], result.stderr[-2000:])
        text = result.stdout + result.stderr
        missing = sorted(o for o in options if not listed(o, text))
        assert not missing, f"{where} lists no {missing}"


def test_work_pool_is_the_one_of_prefect_yaml(params):
    spec = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    pools = {d["work_pool"]["name"] for d in spec["deployments"]}
    assert pools == {params.serve.work_pool}
    used = set()
    for service in services().values():
        for args in simple_commands(argv(service)):
            if args[:3] == ["prefect", "work-pool", "create"]:
                assert option_value(args, "--type") == "process"
            if args[:2] == ["prefect", "work-pool"]:
                used.add(args[3])
            if args[:3] == ["prefect", "worker", "start"]:
                used.add(option_value(args, "--pool"))
                assert option_value(args, "--type") == "process"
    assert used == pools


def test_deployments_working_directory_is_the_workers():
    """prefect.yaml's pull step records the deployer's $PWD (set by its shell): the worker
    must run flows from that same folder."""
    spec = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    assert spec["pull"] == [{"prefect.deployments.steps.set_working_directory":
                             {"directory": "{{ $PWD }}"}}]
    model = services()
    assert argv(model["deployer"])[0] in SHELLS
    assert model["deployer"]["working_dir"] == model["prefect-worker"]["working_dir"]


def test_environment_names_are_settings_the_tools_read():
    import mlflow.environment_variables
    import prefect.settings

    mlflow_names = {getattr(v, "name", None) for v in vars(mlflow.environment_variables).values()}
    for name, service in services(s3=True).items():
        if not runs_meterid_image(service):  # postgres' PREFECT_DB_PASSWORD is its own
            continue
        for key in environment(service):
            if key.startswith("PREFECT_"):
                assert getattr(prefect.settings, key).name == key, (name, key)
            if key.startswith("MLFLOW_"):
                assert key in mlflow_names, f"{name}: MLflow reads no {key}"


def test_telemetry_is_off_in_every_project_process():
    for name, service in services().items():
        if runs_meterid_image(service):
            assert TELEMETRY_OFF.items() <= environment(service).items(), name
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for key, value in TELEMETRY_OFF.items():
        assert f"{key}={value}" in dockerfile


# --- (c) database URLs and drivers -----------------------------------------------------------

def written_password(url: str) -> str:
    """The password part of a URL as written (a ${VAR...} reference, not parseable as a URL)."""
    match = re.search(r"://\w+:(.*)@[\w.-]+:\d+/", url)
    assert match, f"{url}: no user:password@host:port/"
    return match[1]


def database_urls() -> dict[str, tuple[str, str]]:
    """Prefect's, MLflow's and the label store's database URLs: (as written, interpolated)."""
    written, model = raw()["services"], services()
    key, review = "PREFECT_API_DATABASE_CONNECTION_URL", "METERID_REVIEW_STORE"
    return {
        "prefect": (written["prefect-server"]["environment"][key],
                    environment(model["prefect-server"])[key]),
        "mlflow": (option_value([str(a) for a in written["mlflow"]["command"]],
                                "--backend-store-uri"),
                   option_value(argv(model["mlflow"]), "--backend-store-uri")),
        "review": (raw()["x-clients"][review], environment(model["prefect-worker"])[review]),
    }


@pytest.mark.parametrize("tool, driver", [("prefect", "asyncpg"), ("mlflow", "psycopg2"),
                                          ("review", "psycopg2")])
def test_database_urls_use_installed_drivers(tool: str, driver: str):
    from sqlalchemy.engine import make_url

    url = make_url(database_urls()[tool][1])
    assert url.drivername == f"postgresql+{driver}"
    importlib.import_module(driver)
    url.get_dialect().import_dbapi()  # what SQLAlchemy will import in the container
    assert (url.host, url.port) == ("postgres", POSTGRES_PORT)


@pytest.mark.parametrize("tool", ["prefect", "mlflow", "review"])
def test_database_role_and_password_come_from_the_init_script(tool: str):
    """The URL's role and database are created by the init script, with the password the
    postgres service hands it from the same .env variable."""
    from sqlalchemy.engine import make_url

    written, value = database_urls()[tool]
    url = make_url(value)
    script = INIT_SCRIPT.read_text()
    role = re.search(rf"CREATE ROLE {url.username} LOGIN PASSWORD :'(\w+)';", script)
    assert role, f"the init script creates no role {url.username}"
    assert f"CREATE DATABASE {url.database} OWNER {url.username};" in script
    script_env = re.search(rf'-v {role[1]}="\$(\w+)"', script)[1]
    password_var = _VAR.fullmatch(written_password(written))["name"]
    postgres_env = raw()["services"]["postgres"]["environment"]
    assert _VAR.search(postgres_env[script_env])["name"] == password_var


def test_prefects_database_gets_pg_trgm():
    script = INIT_SCRIPT.read_text()
    database = urlsplit(database_urls()["prefect"][1]).path.lstrip("/")
    assert re.search(rf"\\connect {database}\s+CREATE EXTENSION IF NOT EXISTS pg_trgm;", script)


# --- (d) ports -------------------------------------------------------------------------------

def listen_ports(service: dict) -> set[int]:
    """The ports a service's processes listen on, from its command and environment."""
    args, ports = argv(service), set()
    for option in ("--port", "--dashboard-address", "--address", "--console-address"):
        if (value := option_value(args, option)) is not None:
            ports.add(int(value.rsplit(":", 1)[-1]))
    if port := environment(service).get("PREFECT_WORKER_WEBSERVER_PORT"):
        ports.add(int(port))
    if str(service.get("image", "")).startswith("postgres:"):
        ports.add(POSTGRES_PORT)
    return ports


def urls_in(service: dict) -> list[str]:
    texts = [*environment(service).values(), *argv(service)]
    return [url for text in texts for url in _URL.findall(text)]


def health_check_ports(service: dict) -> list[int]:
    test = [str(a) for a in service.get("healthcheck", {}).get("test", [])]
    ports = [urlsplit(url).port for text in test for url in _URL.findall(text)
             if urlsplit(url).hostname in LOOPBACK]
    if test[1:2] == ["pg_isready"]:
        ports.append(int(option_value(test, "--port")))
    return ports


def published(service: dict) -> dict[int, int]:
    """container port -> host port."""
    pairs = (str(p).rsplit(":", 2)[-2:] for p in service.get("ports", []))
    return {int(container): int(host) for host, container in pairs}


@pytest.mark.parametrize("s3", [False, True], ids=["compose", "with-s3"])
def test_urls_reach_the_port_their_server_listens_on(s3: bool):
    model = services(s3)
    checked = 0
    for name, service in model.items():
        for url in urls_in(service):
            parts = urlsplit(url)
            if parts.hostname in model:
                assert parts.port, f"{name}: {url} names no port"
                assert parts.port in listen_ports(model[parts.hostname]), (name, url)
                checked += 1
    assert checked >= 8


def test_health_checks_and_published_ports_are_the_services_own():
    for name, service in services(s3=True).items():
        own = listen_ports(service)
        for port in health_check_ports(service):
            assert port in own, f"{name}'s health check asks port {port}; it listens on {own}"
        for container_port in published(service):
            assert container_port in own, (name, container_port, own)


def test_prefect_ui_api_url_is_the_published_api():
    model = services()
    server = model["prefect-server"]
    ui = urlsplit(environment(server)["PREFECT_UI_API_URL"])
    port = int(option_value(argv(server), "--port"))
    assert ui.hostname == env_example()["STACK_HOST"]
    assert (ui.port, ui.path) == (published(server)[port], "/api")
    for name in RUNS_FLOWS:
        assert urlsplit(environment(model[name])["PREFECT_API_URL"]).path == "/api", name


def test_mlflow_accepts_the_host_headers_clients_send():
    from mlflow.server.security_utils import is_allowed_host_header

    model = services()
    server = model["mlflow"]
    allowed = option_value(argv(server), "--allowed-hosts").split(",")
    clients = [environment(s)["MLFLOW_TRACKING_URI"] for s in model.values()
               if "MLFLOW_TRACKING_URI" in environment(s)]
    port = int(option_value(argv(server), "--port"))
    external = f"http://{env_example()['STACK_HOST']}:{published(server)[port]}"
    assert len(clients) >= 3
    for url in [*clients, external]:
        assert is_allowed_host_header(allowed, urlsplit(url).netloc), (url, allowed)
    assert not is_allowed_host_header(allowed, "elsewhere.example:5000")


# --- volumes: what flows write is shared, the project is where the deployments say -----------

def mounts(service: dict) -> dict[PurePosixPath, str]:
    """container path -> source (a volume name or a host path)."""
    out = {}
    for spec in service.get("volumes", []):
        source, target = str(spec).split(":")[:2]
        out[PurePosixPath(target)] = source
    return out


def test_flow_state_is_on_volumes_shared_by_the_worker_and_dask_workers(params):
    model = stack()
    named = set(model["volumes"])
    worker, dask_worker = (model["services"][n] for n in ("prefect-worker", "dask-worker"))
    root = PurePosixPath(worker["working_dir"])
    assert dask_worker["working_dir"] == str(root)  # params.yaml is read from the same folder
    for name, path in params.paths.model_dump().items():
        target = root / PurePosixPath(path)
        homes = [t for t, s in mounts(worker).items() if s in named and target.is_relative_to(t)]
        assert homes, f"params.yaml paths.{name} ({target}) is on no shared volume"
        assert mounts(dask_worker).get(homes[0]) == mounts(worker)[homes[0]], name


def test_project_is_mounted_where_flows_run():
    for name in RUNS_FLOWS:
        service = stack()["services"][name]
        source = mounts(service)[PurePosixPath(service["working_dir"])]
        assert (DEPLOY / source).resolve() == REPO_ROOT, (name, source)


def test_mlflow_artifacts_live_on_their_volume():
    model = stack()
    server = model["services"]["mlflow"]
    destination = urlsplit(option_value(argv(server), "--artifacts-destination"))
    assert destination.scheme == "file"
    assert mounts(server)[PurePosixPath(destination.path)] in model["volumes"]


def test_bind_mounts_exist():
    for name, service in stack(s3=True)["services"].items():
        for source in mounts(service).values():
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), (name, source)


# --- secrets, variables ------------------------------------------------------------------

def compose_variables() -> dict[str, str | None]:
    """Every variable the compose files use -> its operator (None, ':-', ':?', ...)."""
    found: dict[str, str | None] = {}
    for path in (COMPOSE, COMPOSE_S3):
        for match in _VAR.finditer(path.read_text()):
            found.setdefault(match["name"], match["op"])
    return found


def test_every_variable_is_documented_in_env_example():
    used, documented = compose_variables(), env_example(optional=True)
    assert set(used) == set(documented), (sorted(set(used) - set(documented)),
                                          sorted(set(documented) - set(used)))


def test_no_secret_is_committed():
    required = {name for name, op in compose_variables().items() if op == ":?"}
    secrets = {"POSTGRES_PASSWORD", "PREFECT_DB_PASSWORD", "MLFLOW_DB_PASSWORD",
               "REVIEW_DB_PASSWORD", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"}
    assert required == secrets
    assert all(env_example(optional=True)[name] == "" for name in secrets)
    for path in (COMPOSE, COMPOSE_S3):
        for name, service in raw(path)["services"].items():
            for key, value in (service.get("environment") or {}).items():
                if re.search(r"PASSWORD|SECRET|ACCESS_KEY", key):
                    assert _VAR.fullmatch(str(value)), f"{path.name} {name}: {key} is literal"
    for written, _ in database_urls().values():
        assert _VAR.fullmatch(written_password(written)), written
    assert ".env" in (DEPLOY / ".gitignore").read_text().split()


# --- the S3 variant ------------------------------------------------------------------------

def test_s3_variant_points_mlflow_at_the_bucket():
    model, env = services(s3=True), env_example(optional=True)
    mlflow_env = environment(model["mlflow"])
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(mlflow_env)
    assert urlsplit(mlflow_env["MLFLOW_S3_ENDPOINT_URL"]).hostname == "minio"
    destination = urlsplit(option_value(argv(model["mlflow"]), "--artifacts-destination"))
    assert destination.scheme == "s3"
    assert f"mb --ignore-existing store/{destination.hostname}" in argv(model["minio-init"])[0]
    assert "boto3" in env["METERID_EXTRA_PACKAGES"].split()
    assert model["mlflow"]["build"]["args"]["EXTRA_PACKAGES"] == env["METERID_EXTRA_PACKAGES"]


# --- (e) the Dockerfile --------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    lines = (line.strip() for line in text.splitlines())
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def copied_sources() -> list[str]:
    sources = []
    for instruction, args in dockerfile_instructions():
        if instruction in ("COPY", "ADD"):
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            sources.extend(words[:-1])
    return sources


def ignored(name: str) -> bool:
    """deploy/Dockerfile.dockerignore's verdict on a top-level path (the last match wins)."""
    verdict = False
    for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        if fnmatch.fnmatch(name, pattern.removeprefix("!")):
            verdict = not negated
    return verdict


def test_every_service_of_the_project_builds_the_same_image():
    images = {(s["image"], s["build"]["context"], s["build"]["dockerfile"])
              for s in services().values() if "build" in s}
    assert len(images) == 1
    _, context, dockerfile = images.pop()
    assert (DEPLOY / context).resolve() == REPO_ROOT
    assert (REPO_ROOT / dockerfile).is_file()
    assert {n for n, s in services().items() if runs_meterid_image(s)} == EXPECTED - {"postgres"}


def test_dockerfile_copies_what_exists_and_what_pip_install_needs():
    import tomllib

    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    sources = copied_sources()
    for source in sources:
        assert (REPO_ROOT / source).exists(), f"the Dockerfile copies {source}: no such path"
        assert not ignored(source), f"{source} is copied but Dockerfile.dockerignore drops it"
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in packages:
        assert any(fnmatch.fnmatch(s, pattern) for s in sources), f"no package {pattern} copied"
    assert {"pyproject.toml", project["project"]["readme"]} <= set(sources)
    runs = [args for instruction, args in instructions if instruction == "RUN"]
    assert any(re.search(r"pip install .* \.(\s|$)", run) for run in runs)
    assert all(ignored(p) for p in (".venv", "data", "models", "mlflow", ".git"))


def test_volume_mount_points_exist_in_the_image():
    """An empty named volume takes the owner of its mount point in the image: created there,
    they are writable by the image's user."""
    runs = " ".join(a for i, a in dockerfile_instructions() if i == "RUN")
    for name, service in stack()["services"].items():
        if not runs_meterid_image(service):
            continue
        for target, source in mounts(service).items():
            if source in stack()["volumes"]:
                assert str(target) in runs.split(), f"{name}: {target} not created in the image"
