"""Screenshot a flow run's pages in the Prefect UI with headless Chromium, as a user would see them.

Given the UI's base URL and a flow run (its id, or the latest run of a flow, `extract-and-train` by
default), saves PNGs of the flow run page, its Artifacts tab, the artifacts list, and each of the
run's artifacts (`/artifacts/key/<key>`, or `/artifacts/artifact/<id>` for keyless progress
artifacts) under artifacts/screenshots/. The UI is a single-page app that renders after its API
calls return, so Chromium is driven through its DevTools protocol: each page is captured only
once its text shows what the page must show (the run's name, the artifact's key) and has stopped
changing; a page that never does is reported and the script exits 1. Talks to the server's REST
API with httpx (no prefect import). Usage:

    python bench/screenshot_ui.py --ui http://127.0.0.1:4200                  # latest extract-and-train
    python bench/screenshot_ui.py --ui http://127.0.0.1:4300 --flow-run <id> --out /tmp/shots
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",  # Chromium picks a free port and writes it to DevToolsActivePort
)
EMPTY_RUN_TEXT = "did not produce any artifacts"
# The centre of the innermost element whose text is exactly %s (a tab), as [x, y] or null.
FIND_JS = """(() => {
  const found = [...document.querySelectorAll('body *')]
    .filter(e => e.innerText && e.innerText.trim() === %s)
    .filter(e => ![...e.children].some(c => c.innerText && c.innerText.trim() === %s));
  if (!found.length) return null;
  const box = found[0].getBoundingClientRect();
  return [box.x + box.width / 2, box.y + box.height / 2];
})()"""


@dataclass(frozen=True)
class Page:
    name: str  # file stem under the output folder
    path: str  # UI path after the base URL
    must_show: tuple[str, ...]  # text the rendered page must contain
    must_not_show: tuple[str, ...] = ()
    click: str | None = None  # a tab or button to click (by its exact text) once the page is up


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def latest_flow_run(api: str, flow_name: str) -> dict:
    answer = httpx.post(
        f"{api}/flow_runs/filter",
        json={"flows": {"name": {"any_": [flow_name]}}, "sort": "START_TIME_DESC", "limit": 1},
        timeout=10,
    )
    answer.raise_for_status()
    runs = answer.json()
    if not runs:
        raise SystemExit(f"no runs of flow {flow_name!r} on {api}")
    return runs[0]


def read_flow_run(api: str, flow_run_id: str) -> dict:
    answer = httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=10)
    if answer.status_code == 404:
        raise SystemExit(f"no flow run {flow_run_id} on {api}")
    answer.raise_for_status()
    return answer.json()


def run_artifacts(api: str, flow_run_id: str) -> list[dict]:
    """Every artifact the run (or its tasks) made, oldest first."""
    answer = httpx.post(
        f"{api}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "CREATED_DESC"},
        timeout=10,
    )
    answer.raise_for_status()
    return answer.json()[::-1]  # the API sorts newest first only


def visible_text(markdown: str) -> str:
    """The start of the first line of markdown as the browser renders it (no links, marks, pipes)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", markdown)
    for line in text.splitlines():
        for cell in re.split(r"[#*`|]", line):  # a table's cells render apart: take the first
            cell = " ".join(cell.split())
            if cell and set(cell) - set("-: "):
                return cell[:40]
    return ""


def artifact_must_show(artifact: dict) -> tuple[str, ...]:
    """Text that only the rendered artifact shows: a table's first header and cell, markdown's text."""
    data = artifact.get("data")
    if artifact["type"] == "table":
        rows = json.loads(data) if isinstance(data, str) else data
        if not rows:
            return ("__an empty table__",)  # never on a page: an empty table fails the check
        column, value = next(iter(rows[0].items()))
        return (column, str(value))
    if artifact["type"] == "progress":
        return ("Progress",)
    return (visible_text(str(data)),)


def pages_for(flow_run: dict, artifacts: list[dict]) -> list[Page]:
    run_path = f"/runs/flow-run/{flow_run['id']}"
    keys = list(dict.fromkeys(a["key"] for a in artifacts if a.get("key")))
    pages = [
        Page("flow-run", run_path, (flow_run["name"],)),
        Page("flow-run-artifacts", run_path, tuple(keys), (EMPTY_RUN_TEXT,), click="Artifacts"),
        Page("artifacts", "/artifacts", tuple(keys)),
    ]
    progress = itertools.count()
    for artifact in artifacts:
        stem = artifact.get("key") or f"progress-{next(progress)}"
        pages.append(
            Page(
                f"artifact-{stem}",
                f"/artifacts/artifact/{artifact['id']}",
                artifact_must_show(artifact),
            )
        )
    return pages


class DevTools:
    """The smallest DevTools-protocol client that navigates one tab and captures it."""

    def __init__(self, websocket_url: str):
        from websockets.sync.client import connect

        self.socket = connect(websocket_url, max_size=64 * 2**20)
        self.ids = itertools.count(1)

    def call(self, method: str, **params) -> dict:
        call_id = next(self.ids)
        self.socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:  # events arrive between the answers: skip them
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def text(self) -> str:
        result = self.call(
            "Runtime.evaluate",
            expression="document.body ? document.body.innerText : ''",
            returnByValue=True,
        )
        return result.get("result", {}).get("value") or ""

    def click(self, text: str) -> None:
        """Click the element showing exactly `text` with real mouse events (the UI's tabs need them)."""
        quoted = json.dumps(text)
        found = self.call(
            "Runtime.evaluate", expression=FIND_JS % (quoted, quoted), returnByValue=True
        )
        point = found.get("result", {}).get("value")
        if not point:
            raise RuntimeError(f"nothing on the page shows {text!r} to click")
        for event in ("mousePressed", "mouseReleased"):
            self.call(
                "Input.dispatchMouseEvent",
                type=event,
                x=point[0],
                y=point[1],
                button="left",
                clickCount=1,
            )

    def close(self) -> None:
        self.socket.close()


def open_browser(
    chromium: str, profile: Path, width: int = 2400, height: int = 1600
) -> tuple[subprocess.Popen, DevTools]:
    process = subprocess.Popen(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--window-size={width},{height}",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text().strip():
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise SystemExit(f"{chromium} did not open its DevTools port (exit {process.poll()})")
        time.sleep(0.2)
    port = port_file.read_text().split()[0]
    targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
    page = next(t for t in targets if t["type"] == "page")
    tools = DevTools(page["webSocketDebuggerUrl"])
    tools.call(
        "Emulation.setDeviceMetricsOverride",
        width=width,
        height=height,
        deviceScaleFactor=1,
        mobile=False,
    )
    return process, tools


def wait_until(tools: DevTools, must_show: tuple[str, ...], deadline: float) -> str:
    """The page's text once it shows every string in `must_show` and has not changed for 1.5 s."""
    previous, stable_since, text = None, time.monotonic(), ""
    while time.monotonic() < deadline:
        time.sleep(0.5)
        text = tools.text()
        if text != previous:
            previous, stable_since = text, time.monotonic()
            continue
        shown = all(expected in text for expected in must_show)
        if shown and time.monotonic() - stable_since >= 1.5:
            break
    return text


def capture(tools: DevTools, url: str, page: Page, out: Path, timeout: float) -> list[str]:
    """Navigate, wait until the page shows what it must and its text settles, save the PNG.

    Returns the problems found (empty when the page rendered as expected).
    """
    tools.call("Page.navigate", url=url)
    deadline = time.monotonic() + timeout
    if page.click:
        wait_until(tools, (page.click,), deadline)
        tools.click(page.click)
    text = wait_until(tools, page.must_show, deadline)
    problems = [
        f"does not show {expected!r}" for expected in page.must_show if expected not in text
    ]
    problems += [f"shows {bad!r}" for bad in page.must_not_show if bad in text]
    shot = tools.call("Page.captureScreenshot", format="png")
    out.write_bytes(base64.b64decode(shot["data"]))
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ui", default="http://127.0.0.1:4200", help="the Prefect UI's base URL")
    parser.add_argument("--api", help="the API URL (default: <ui>/api)")
    parser.add_argument("--flow-run", help="flow run id (default: the flow's latest run)")
    parser.add_argument("--flow", default="extract-and-train", help="flow whose latest run to take")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "screenshots")
    parser.add_argument(
        "--width", type=int, default=2400, help="wide: the metrics table has 15 columns"
    )
    parser.add_argument("--height", type=int, default=1600)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per page to render")
    args = parser.parse_args(argv)

    ui = args.ui.rstrip("/")
    api = (args.api or f"{ui}/api").rstrip("/")
    chromium = find_chromium()
    if chromium is None:
        print("no chromium on PATH (apt-get install chromium)", file=sys.stderr)
        return 2
    try:
        flow_run = (
            read_flow_run(api, args.flow_run) if args.flow_run else latest_flow_run(api, args.flow)
        )
    except httpx.ConnectError:
        print(f"no Prefect server answers at {api} (start one: python -m flows.server start)")
        return 2
    artifacts = run_artifacts(api, flow_run["id"])
    print(f"flow run {flow_run['name']} ({flow_run['id']}): {len(artifacts)} artifacts")
    args.out.mkdir(parents=True, exist_ok=True)
    failures = 0
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        process, tools = open_browser(chromium, Path(profile), args.width, args.height)
        try:
            for page in pages_for(flow_run, artifacts):
                out = args.out / f"{page.name}.png"
                problems = capture(tools, ui + page.path, page, out, args.timeout)
                failures += bool(problems)
                verdict = "; ".join(problems) if problems else "rendered"
                print(f"  {out}  <- {page.path}  [{verdict}]")
        finally:
            tools.close()
            os.killpg(process.pid, signal.SIGTERM)  # the browser and its helper processes
            process.wait(timeout=10)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
