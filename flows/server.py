"""The local Prefect server and the served deployments behind `make demo` and `make stop`.

`python -m flows.server demo CONFIG` starts (or reuses) a Prefect server on 127.0.0.1 with its
SQLite database under artifacts/prefect, serves the config's deployments, runs
`extract-and-train/<name>`, waits for it, and prints the metrics and the UI address; the server
and the deployments stay up. `python -m flows.server stop` stops both.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from model.run import write_text

ROOT = Path(__file__).resolve().parents[1]
HOME = Path(os.environ.get("PREFECT_HOME", ROOT / "artifacts" / "prefect"))
HOST, PORT = "127.0.0.1", int(os.environ.get("DEMO_PREFECT_PORT", "4200"))
API_URL = f"http://{HOST}:{PORT}/api"
UI_URL = f"http://{HOST}:{PORT}"


def prefect_env() -> dict[str, str]:
    """The environment every Prefect process here gets: local API, no telemetry, home under artifacts/."""
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(HOME),
        PREFECT_API_URL=API_URL,
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_API_HOST=HOST,
        PREFECT_SERVER_API_PORT=str(PORT),
        PREFECT_UI_API_URL=API_URL,
    )
    return env


def healthy(timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{API_URL}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _start(name: str, command: list[str]) -> int:
    """Start a background process in its own session, logging to artifacts/prefect/<name>.log."""
    HOME.mkdir(parents=True, exist_ok=True)
    log = open(HOME / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps the handle
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=prefect_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    write_text(HOME / f"{name}.pid", str(process.pid))
    return process.pid


def _alive(name: str) -> bool:
    pid_file = HOME / f"{name}.pid"
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text()), 0)
        return True
    except (ProcessLookupError, ValueError):
        return False


def start_server(timeout: float = 180.0) -> None:
    if healthy():
        print(f"Prefect server already up at {UI_URL}")
        return
    print(f"starting the Prefect server on {UI_URL} (database under {HOME}) ...", flush=True)
    _start(
        "server",
        [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(PORT)],
    )
    deadline = time.monotonic() + timeout
    while not healthy():
        if time.monotonic() > deadline or not _alive("server"):
            raise RuntimeError(f"the Prefect server did not come up; see {HOME / 'server.log'}")
        time.sleep(1.0)


def start_serving(
    configs: list[Path], flow_name: str, deployment: str, timeout: float = 180.0
) -> None:
    """(Re)start `python -m flows.serve CONFIGS` and wait until the deployment is registered."""
    stop_process("serve")  # `serve` keeps the code it started with: restart it to pick up changes
    _start("serve", [sys.executable, "-m", "flows.serve", *map(str, configs)])
    deadline = time.monotonic() + timeout
    while True:
        answer = httpx.get(f"{API_URL}/deployments/name/{flow_name}/{deployment}", timeout=5)
        if answer.status_code == 200:
            return
        if time.monotonic() > deadline or not _alive("serve"):
            raise RuntimeError(f"the deployments were not served; see {HOME / 'serve.log'}")
        time.sleep(1.0)


def stop_process(name: str, grace_seconds: float = 10.0) -> bool:
    pid_file = HOME / f"{name}.pid"
    if not pid_file.exists():
        return False
    try:
        group = int(pid_file.read_text())
        os.killpg(group, signal.SIGTERM)
        stopped = True
    except (ProcessLookupError, ValueError, PermissionError):
        stopped = False
    if stopped:  # `serve` may outlive a SIGTERM (it waits on its runs): kill it after a grace time
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline and _group_alive(group):
            time.sleep(0.2)
        if _group_alive(group):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return stopped


def _group_alive(group: int) -> bool:
    with contextlib.suppress(ChildProcessError):  # reap it when this process started it
        os.waitpid(group, os.WNOHANG)
    try:
        os.killpg(group, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def stop_flow_runs() -> int:
    """Stop flow-run processes that the served deployments started (they run in their own sessions)."""
    stopped = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"prefect.engine" in command and f"PREFECT_HOME={HOME}".encode() in environ:
            try:
                os.kill(int(proc.name), signal.SIGTERM)
                stopped += 1
            except ProcessLookupError:
                pass
    return stopped


def demo(config_path: Path, force: str | None = None) -> int:
    """Server up, deployments served, one run of extract-and-train/<name> waited for and reported."""
    os.environ.update(prefect_env())
    from prefect.deployments import run_deployment

    from pipeline.config import load_config
    from pipeline.report import metrics_rows, metrics_table

    config = load_config(config_path)
    server_was_up = healthy()
    flow_run = None
    # Ctrl-C is ours to handle even when the shell started this process with SIGINT ignored
    # (a background job of a non-interactive shell: Python then installs no handler of its own)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        start_server()
        start_serving([config_path], "extract-and-train", config.name)
        parameters = {"force": force} if force else {}
        print(f"running extract-and-train/{config.name} ... (follow it at {UI_URL}/runs)",
              flush=True)
        started = time.perf_counter()
        flow_run = run_deployment(f"extract-and-train/{config.name}", parameters=parameters,
                                  timeout=0)
        flow_run = _wait(flow_run.id)
    except KeyboardInterrupt:
        _interrupted(flow_run.id if flow_run is not None else None, stop_server=not server_was_up)
        return 130
    seconds = time.perf_counter() - started
    state = flow_run.state
    print(f"flow run {flow_run.name}: {state.name if state else 'unknown'} in {seconds:.0f} s")
    print(f"UI: {UI_URL}/runs/flow-run/{flow_run.id}")
    if state is None or not state.is_completed():
        print(f"the run did not complete; its logs are in the UI and in {HOME / 'serve.log'}")
        return 1
    from pipeline.training import current_runs

    runs = [run.path for run in current_runs(config)]
    print(metrics_table(metrics_rows(runs)))
    print(f"run folder: {runs[0]}")
    print(f"the server and the deployments stay up at {UI_URL}; `make stop` stops them")
    return 0


def _wait(flow_run_id, poll_seconds: float = 2.0, show=print):
    """The flow run once it is in a final state; meanwhile its log lines, as they arrive (each
    stage's progress, every training epoch with its valid Recall@20), are shown with their task."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        follow = _LogFollower(client, flow_run_id, show)
        while True:
            flow_run = client.read_flow_run(flow_run_id)
            follow.show_new()
            if flow_run.state is not None and flow_run.state.is_final():
                # the run's last log lines may still be on their way to the server: read until
                # three polls in a row bring nothing new (at most ~15 s)
                quiet, deadline = 0, time.monotonic() + 15
                while quiet < 3 and time.monotonic() < deadline:
                    time.sleep(1.0)
                    quiet = quiet + 1 if follow.show_new() == 0 else 0
                return flow_run
            time.sleep(poll_seconds)


class _LogFollower:
    """Prints the log lines of one flow run (and its task runs) that it has not printed yet."""

    def __init__(self, client, flow_run_id, show) -> None:
        self.client, self.flow_run_id, self.show = client, flow_run_id, show
        self.after, self.seen, self.task_names = None, set(), {}

    def show_new(self) -> int:
        """Print the lines not printed yet; how many there were."""
        from prefect.client.schemas.filters import (
            LogFilter,
            LogFilterFlowRunId,
            LogFilterTimestamp,
        )
        from prefect.client.schemas.sorting import LogSort

        log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[self.flow_run_id]))
        if self.after is not None:
            log_filter.timestamp = LogFilterTimestamp(after_=self.after)
        shown = 0
        for log in self.client.read_logs(log_filter=log_filter, sort=LogSort.TIMESTAMP_ASC,
                                         limit=200):
            if log.id in self.seen:
                continue
            shown += 1
            self.seen.add(log.id)
            self.after = log.timestamp
            where = self._task_name(log.task_run_id) if log.task_run_id else "flow"
            for line in str(log.message).splitlines() or [""]:
                self.show(f"  [{log.timestamp:%H:%M:%S}] {where}: {line}", flush=True)
        return shown

    def _task_name(self, task_run_id) -> str:
        if task_run_id not in self.task_names:
            self.task_names[task_run_id] = self.client.read_task_run(task_run_id).name
        return self.task_names[task_run_id]


def _interrupted(flow_run_id, stop_server: bool) -> None:
    """Ctrl-C: cancel the run, stop what this demo started; the store keeps what was written."""
    print("\ninterrupted: stopping the run ...", file=sys.stderr, flush=True)
    if flow_run_id is not None:
        from prefect.client.orchestration import get_client
        from prefect.states import Cancelling

        try:
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(flow_run_id, Cancelling(), force=True)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:  # the served runner kills the run's process
                    state = client.read_flow_run(flow_run_id).state
                    if state is not None and state.is_final():
                        break
                    time.sleep(1.0)
        except Exception as error:  # noqa: BLE001 - the server may be gone: stop processes anyway
            print(f"could not cancel the run through the API ({error})", file=sys.stderr)
    stopped = ["serve"] if stop_process("serve") else []
    if stop_server and stop_process("server"):
        stopped.append("server")
    runs = stop_flow_runs()
    print(f"stopped: {', '.join(stopped) or 'nothing else'}"
          + (f", {runs} flow-run process(es)" if runs else "")
          + "; every stage resumes from what is in the store: rerun `make demo`",
          file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.server", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("demo", help="server + deployments + one extract-and-train run")
    run.add_argument("config", type=Path)
    run.add_argument("--force", help="stages to recompute, e.g. caption or caption,embed")
    commands.add_parser("start", help="start the local Prefect server")
    commands.add_parser("stop", help="stop the served deployments and the server")
    args = parser.parse_args(argv)
    from pipeline.config import ConfigError
    from pipeline.errors import explain

    try:
        return _run(args)
    except OSError as error:
        print(f"error: {explain(error)}", file=sys.stderr)
    except (ConfigError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
    return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        return demo(args.config, args.force)
    if args.command == "start":
        start_server()
        return 0
    for name in ("serve", "server"):
        print(f"{name}: {'stopped' if stop_process(name) else 'not running'}")
    runs = stop_flow_runs()
    if runs:
        print(f"flow runs in progress: {runs} stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
