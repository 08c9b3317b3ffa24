"""Start, watch and stop the processes of a ``StackPlan``.

Each service runs in a session of its own (its own process group), so stopping it reaches every
process it spawned (uvicorn workers, the worker's flow runs); whatever outlives the group's
SIGTERM and SIGKILL is found among the descendants recorded while it ran and killed too. The
Prefect schedules live in the server's database: stopping the stack never pauses them (unlike
``flow.serve``'s shutdown), so a restart finds them active.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psutil
import requests

from meterid.serve.plan import ServeError, Service, StackPlan, check_ports_free

log = logging.getLogger(__name__)

_POLL_S = 0.5
_STOP_GRACE_S = 20.0
_COMMAND_TIMEOUT_S = 300.0
_LOG_TAIL = 3000


def _tail(path: os.PathLike) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - _LOG_TAIL))
            return handle.read().decode(errors="replace")
    except OSError:
        return "(no log)"


class Stack:
    """The running stack; ``start`` brings it up in order, ``stop`` takes all of it down."""

    def __init__(self, plan: StackPlan):
        self.plan = plan
        self.processes: dict[str, subprocess.Popen] = {}
        self._seen: dict[int, psutil.Process] = {}  # every descendant observed, to reap at stop

    # --- starting ---------------------------------------------------------------------------

    def start(self) -> None:
        check_ports_free(self.plan.host, self.plan.ports)
        if self.plan.databases:
            from meterid.serve.postgres import ensure_databases

            ensure_databases(self.plan.databases.values())
        try:
            for service in (self.plan.prefect, self.plan.mlflow):  # both boot at once
                self._spawn(service)
            self._wait_healthy([self.plan.prefect, self.plan.mlflow])
            self.apply_deployments()
            self._spawn(self.plan.worker)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, service: Service) -> None:
        service.log.parent.mkdir(parents=True, exist_ok=True)
        with open(service.log, "ab") as log_file:
            self.processes[service.name] = subprocess.Popen(
                service.command, env=service.env, cwd=self.plan.root, stdout=log_file,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.info("started %s (pid %d), log %s", service.name,
                 self.processes[service.name].pid, service.log)

    def _wait_healthy(self, services: list[Service]) -> None:
        deadline = time.monotonic() + self.plan.startup_timeout_s
        waiting = list(services)
        while waiting:
            for service in list(waiting):
                self._raise_if_exited(service)
                if _answers(service.health_url):
                    log.info("%s is up: %s", service.name, service.health_url)
                    waiting.remove(service)
            if waiting and time.monotonic() > deadline:
                names = ", ".join(s.name for s in waiting)
                raise ServeError(f"{names} did not answer within {self.plan.startup_timeout_s:.0f}"
                                 f" s; last log lines:\n{_tail(waiting[0].log)}")
            time.sleep(_POLL_S)

    def _raise_if_exited(self, service: Service) -> None:
        code = self.processes[service.name].poll()
        if code is not None:
            raise ServeError(f"{service.name} exited with code {code}; last log lines of "
                             f"{service.log}:\n{_tail(service.log)}")

    def apply_deployments(self) -> None:
        """The work pool (created once) and prefect.yaml's deployments, through the new API."""
        pool = self.plan.work_pool
        if self._prefect(["work-pool", "inspect", pool], check=False).returncode != 0:
            self._prefect(["work-pool", "create", pool, "--type", "process"])
        self._prefect(["--no-prompt", "deploy", "--all"])
        log.info("deployments of %s applied to pool %s", self.plan.root / "prefect.yaml", pool)

    def _prefect(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess:
        worker = self.plan.worker
        # prefect.yaml's pull step reads $PWD: the folder the deployments run in.
        env = {**worker.env, "PWD": str(self.plan.root)}
        result = subprocess.run([worker.command[0], *args], env=env, cwd=self.plan.root,
                                capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S)
        if check and result.returncode != 0:
            raise ServeError(f"`prefect {' '.join(args)}` failed ({result.returncode}):\n"
                             f"{(result.stdout + result.stderr)[-_LOG_TAIL:]}")
        return result

    # --- running ----------------------------------------------------------------------------

    def exited(self) -> list[tuple[str, int]]:
        """Services that stopped on their own, with their exit codes."""
        return [(name, p.returncode) for name, p in self.processes.items()
                if p.poll() is not None]

    def pids(self) -> set[int]:
        """Every live process of the stack: the services and all their descendants."""
        found: set[int] = set()
        for process in self.processes.values():
            try:
                parent = psutil.Process(process.pid)
                tree = [parent, *parent.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for member in tree:
                self._seen.setdefault(member.pid, member)
                found.add(member.pid)
        return found

    # --- stopping ---------------------------------------------------------------------------

    def stop(self) -> None:
        """SIGTERM each service's group (the worker first), SIGKILL what is left after a grace
        period, then any descendant that escaped its group."""
        self.pids()  # record the current tree before it starts to fall apart
        for name in reversed(list(self.processes)):
            process = self.processes[name]
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM for %.0f s: killing it", name, _STOP_GRACE_S)
                _signal_group(process, signal.SIGKILL)
                process.wait(_STOP_GRACE_S)
            log.info("stopped %s", name)
        survivors = [p for p in self._seen.values() if is_alive(p)]
        for process in survivors:
            process.kill()
        psutil.wait_procs(survivors, timeout=_STOP_GRACE_S)
        self.processes.clear()

    @contextmanager
    def running(self) -> Iterator[Stack]:
        self.start()
        try:
            yield self
        finally:
            self.stop()


def _answers(url: str | None) -> bool:
    try:
        return url is not None and requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def is_alive(process: psutil.Process) -> bool:
    """Running and not a zombie (psutil checks the start time: a reused pid is not it)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def run_until_stopped(stack: Stack, on_ready: Callable[[StackPlan], None]) -> int:
    """Start the stack, call ``on_ready``, then wait for SIGTERM or SIGINT (Ctrl-C) or a
    service that dies; stop everything either way. Returns the exit code (0: asked to stop)."""
    stopping: list[int] = []
    handlers = {sig: signal.signal(sig, lambda signum, _frame: stopping.append(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        stack.start()
        on_ready(stack.plan)
        while not stopping:
            if dead := stack.exited():
                name, status = dead[0]
                log.error("%s exited with code %s; stopping the stack. Last log lines:\n%s",
                          name, status, _tail(_service(stack.plan, name).log))
                code = 1
                break
            stack.pids()
            time.sleep(1.0)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        stack.stop()
    return code


def _service(plan: StackPlan, name: str) -> Service:
    return next(s for s in (plan.prefect, plan.mlflow, plan.worker) if s.name == name)
