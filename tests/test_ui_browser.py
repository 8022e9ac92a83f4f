"""The Prefect UI in headless Chromium: a tiny extract-and-train's metrics, captions, history and
training-curve artifacts render, each page checked for the text only the rendered artifact shows
(its table's first header and cell, the markdown's heading) through bench/screenshot_ui.py's
DevTools driver, and the curves page for its inline PNG drawn as an image. Skipped only where no
Chromium is installed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import screenshot_ui  # noqa: E402 - bench/ is not a package
from screenshot_ui import find_chromium  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_chromium() is None, reason="no Chromium installed (apt-get install chromium)"),
]
# data: images on the page that the browser decoded (a broken image has naturalWidth 0)
DRAWN_DATA_IMAGES = """[...document.images]
  .filter(image => image.src.startsWith('data:image/png;base64,') && image.naturalWidth > 0)
  .length"""
FLOW = """
import sys
from flows.dag import extract_and_train
print(extract_and_train(sys.argv[1]))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory):
    """`prefect server start` on a free loopback port with its own home; stopped afterwards."""
    port = free_port()
    home = tmp_path_factory.mktemp("prefect-ui-home")
    env = {**os.environ, "PREFECT_HOME": str(home), "DO_NOT_TRACK": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api"}
    log = (home / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            os.killpg(server.pid, signal.SIGTERM)
            pytest.fail(f"the Prefect server did not come up: {(home / 'server.log').read_text()[-2000:]}")
        time.sleep(1)
    try:
        yield f"http://127.0.0.1:{port}", env
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def test_metrics_captions_history_and_curves_render_in_the_ui(ui_server, tiny_catalog, tmp_path):
    ui, env = ui_server
    root, catalog, _ = tiny_catalog
    from tests.support.catalog import write_config

    config = write_config(root, catalog, name="browser")
    flow = subprocess.run([sys.executable, "-c", FLOW, str(config)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert flow.returncode == 0, flow.stderr[-3000:]
    api = f"{ui}/api"
    flow_run = screenshot_ui.latest_flow_run(api, "extract-and-train")
    artifacts = screenshot_ui.run_artifacts(api, flow_run["id"])
    wanted = {f"artifact-browser-{what}"
              for what in ("metrics", "captions", "history", "training-curves")}
    pages = [page for page in screenshot_ui.pages_for(flow_run, artifacts)
             if page.name in wanted or page.name == "flow-run-artifacts"]
    assert {page.name for page in pages} >= wanted, [a.get("key") for a in artifacts]
    problems = {}
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        process, tools = screenshot_ui.open_browser(find_chromium(), Path(profile), 1800, 1200)
        try:
            for page in pages:
                out = tmp_path / f"{page.name}.png"
                problems[page.name] = screenshot_ui.capture(tools, ui + page.path, page, out, 90)
                assert out.stat().st_size > 10_000, page.name  # a picture, not a blank page
                if page.name == "artifact-browser-training-curves":
                    drawn = tools.call("Runtime.evaluate", expression=DRAWN_DATA_IMAGES,
                                       returnByValue=True)["result"]["value"]
                    if drawn != 1:
                        problems[page.name].append(f"{drawn} drawn data: PNG images, not 1")
        finally:
            tools.close()
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
    assert not any(problems.values()), problems
