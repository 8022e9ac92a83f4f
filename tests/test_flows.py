"""The Prefect flows end to end on a tiny catalog: which stages run on each kind of rerun."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.support.catalog import make_catalog, write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tiny_catalog):
    return tiny_catalog


def task_states(flow_state) -> dict[str, str]:
    """{task name: state name} of one flow run, read back from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    flow_run_id = flow_state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    states = {}
    for task_run in task_runs:
        name = task_run.name.rsplit("-", 1)[0]  # "caption-0a1" -> "caption"
        # a stage fanned out over shards counts as run when any shard ran
        if states.get(name) != "Completed":
            states[name] = task_run.state.name
    return states


def flow_artifacts(flow_state) -> dict[str, object]:
    """{key: artifact} of the keyed artifacts one flow run (and its tasks) made."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    flow_run_id = flow_state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {artifact.key: artifact for artifact in artifacts if artifact.key}


def test_rerun_table(prefect_api, tiny):
    from flows.dag import caption_flow, extract_and_train

    root, catalog, config = tiny
    first = extract_and_train(str(config), return_state=True)
    assert first.is_completed(), first
    assert task_states(first) == {
        "ingest": "Completed",
        "caption": "Completed",
        "embed": "Completed",
        "train": "Completed",
        "rank": "Completed",
    }
    run_dir = first.result()
    # beside the history table: the training curves as an inline PNG, also kept in the run folder
    artifacts = flow_artifacts(first)
    curves = artifacts["tiny-training-curves"]
    assert curves.type == "markdown" and "](data:image/png;base64,iVBORw0KGgo" in curves.data
    assert (Path(run_dir) / "training_curves.png").read_bytes().startswith(b"\x89PNG")
    assert artifacts["tiny-history"].type == "table"
    assert (Path(run_dir) / "per_user.parquet").exists()

    # nothing changed: every stage finds its store up to date
    again = extract_and_train(str(config), return_state=True)
    assert set(task_states(again).values()) == {"Skipped"}

    # recaption everything: the descriptor gives the same captions, so nothing downstream changes
    forced = extract_and_train(str(config), force="caption", return_state=True)
    assert task_states(forced) == {
        "ingest": "Skipped",
        "caption": "Completed",
        "embed": "Skipped",
        "train": "Skipped",
        "rank": "Skipped",
    }

    # the caption deployment alone, after one poster changed: only that image is captioned
    Image.fromarray(np.full((48, 40, 3), (250, 120, 0), dtype=np.uint8)).save(catalog / "images" / "3.png")
    caption_only = caption_flow(str(config), return_state=True)
    assert task_states(caption_only) == {"caption": "Completed"}
    # ... and the next full run recomputes downstream what the new caption changed
    after = extract_and_train(str(config), return_state=True)
    states = task_states(after)
    assert states["caption"] == "Skipped"
    assert states["embed"] == "Completed"
    assert states["train"] == "Completed"
    assert states["rank"] == "Completed"
    assert after.result() != run_dir  # new inputs name a new run folder


def test_candidates_exclude_known_items(prefect_api, tiny):
    from flows.dag import extract_and_train

    root, catalog, config = tiny
    run_dir = extract_and_train(str(config))
    candidates = pq.read_table(f"{run_dir}/candidates.parquet").to_pylist()
    interactions = pq.read_table(
        root / "store-tiny" / "catalog" / "interactions.parquet", columns=["user_id", "item_id"]
    ).to_pylist()
    known = {(row["user_id"], row["item_id"]) for row in interactions}
    assert candidates, "no candidates written"
    assert not [row for row in candidates if (row["user_id"], row["item_id"]) in known]
    per_user = {}
    for row in candidates:
        per_user.setdefault(row["user_id"], []).append(row["rank"])
    assert all(ranks == list(range(1, len(ranks) + 1)) for ranks in per_user.values())


def test_bad_config_fails_the_run_naming_the_key(prefect_api, tiny, tmp_path):
    from flows.dag import extract_and_train

    root, catalog, config = tiny
    bad = tmp_path / "bad.toml"
    bad.write_text(config.read_text().replace("epochs = 3", "epochs = 'three'"))
    state = extract_and_train(str(bad), return_state=True, )
    assert state.is_failed()
    with pytest.raises(Exception, match="train.epochs"):
        state.result()


def test_extraction_fans_out_over_a_local_dask_cluster(prefect_api, tmp_path):
    """caption/embed shards run as tasks on Dask workers (processes on 127.0.0.1)."""
    from flows.dag import extract_flow
    from flows.serve import task_runner
    from pipeline.config import load_config
    from pipeline.schemas import CAPTIONS
    from pipeline.store import PartStore, StoreLayout, current_key

    catalog = make_catalog(tmp_path / "catalog", n_items=12, n_users=6)
    config_path = write_config(
        tmp_path, catalog, name="dask", extra="[scale]\nshards = 3\ndask_local_workers = 2\n"
    )
    config = load_config(config_path)
    runner = task_runner(config)
    assert type(runner).__name__ == "DaskTaskRunner"
    state = extract_flow.with_options(task_runner=runner)(str(config_path), return_state=True)
    assert state.is_completed(), state
    layout = StoreLayout(config.store)
    captions = PartStore(layout.captions(current_key(layout.captions("x").parent)), CAPTIONS).read()
    assert sorted(captions.column("item_id").to_pylist(), key=int) == [str(i) for i in range(12)]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    names = [run.name.rsplit("-", 1)[0] for run in task_runs]
    assert names.count("caption") == 3 and names.count("embed") == 3


def test_stage_failing_mid_run_keeps_earlier_stores_and_the_rerun_resumes(prefect_api, tmp_path):
    from flows.dag import extract_and_train

    catalog = make_catalog(tmp_path / "catalog", n_items=15, n_users=10)
    config = write_config(tmp_path, catalog, name="failing")
    good = config.read_text()
    # a modality name the data does not have: the train stage fails after extraction succeeded
    config.write_text(good.replace('model = "lirdrec"', 'model = "lirdrec"\nmm_weights = { caption = 0.5, image = 0.5 }'))
    failed = extract_and_train(str(config), return_state=True)
    assert failed.is_failed()
    states = task_states(failed)
    assert states["caption"] == "Completed" and states["embed"] == "Completed"
    assert states["train"] == "Failed"
    with pytest.raises(Exception, match="mm_weights"):
        failed.result()

    config.write_text(good)
    rerun = extract_and_train(str(config), return_state=True)
    assert rerun.is_completed()
    assert task_states(rerun) == {
        "ingest": "Skipped",
        "caption": "Skipped",
        "embed": "Skipped",
        "train": "Completed",
        "rank": "Completed",
    }


def test_serving_without_a_server_says_how_to_start_one():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api"}  # nothing listens on port 9
    result = subprocess.run(
        [sys.executable, "-m", "flows.serve", str(root / "configs" / "bench-ml100k-mmrec.toml")],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert "no Prefect server answers at http://127.0.0.1:9/api" in result.stderr
    assert "Traceback" not in result.stderr


def test_stages_run_by_the_cli_are_skipped_by_the_flow(prefect_api, tmp_path):
    """One stage API: each stage run by `python -m pipeline STAGE`, then the whole flow: the flow
    finds every stage's outputs up to date (the CLI wrote what the flow's skip checks read)."""
    import subprocess
    import sys

    from flows.dag import extract_and_train
    from tests.support.catalog import make_catalog, write_config

    catalog = make_catalog(tmp_path / "catalog", n_items=14, n_users=8)
    config = write_config(tmp_path, catalog, name="cli-then-flow")

    def cli(*args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True,
                                text=True, timeout=600, cwd=Path(__file__).resolve().parents[1])
        assert result.returncode == 0, result.stderr
        return result.stdout

    for stage in ("ingest", "caption", "embed"):
        cli(stage, "--config", str(config))
    run_dir = cli("train", "--config", str(config)).strip().splitlines()[-1]
    cli("rank", "--run", run_dir)
    state = extract_and_train(str(config), return_state=True)
    assert state.is_completed(), state
    assert task_states(state) == dict.fromkeys(("ingest", "caption", "embed", "train", "rank"),
                                               "Skipped")
    assert state.result() == run_dir


def test_the_demo_streams_each_stages_progress_and_every_epoch(prefect_api, tmp_path):
    """flows.server's wait loop shows the run's log lines: items captioned and embedded out of
    the total, then every training epoch with its valid Recall@20."""
    from flows.dag import extract_and_train
    from flows.server import _wait
    from tests.support.catalog import make_catalog, write_config

    catalog = make_catalog(tmp_path / "catalog", n_items=12, n_users=8)
    state = extract_and_train(str(write_config(tmp_path, catalog, name="streamed")),
                              return_state=True)
    lines = []
    _wait(state.state_details.flow_run_id, show=lambda line, **_: lines.append(line))
    text = "\n".join(lines)
    assert "Captioning streamed, shard 1/1: 12/12 items" in text
    assert "Embedding streamed, shard 1/1: 12/12 items" in text
    assert "valid R@20" in text and "epoch    1" in text
    assert text.index("Captioning") < text.index("Embedding") < text.index("epoch    1")


def test_ctrl_c_during_the_demo_cancels_the_run_and_stops_what_it_started(prefect_api, tmp_path):
    """`make demo` interrupted mid-training: exit 130, the flow run cancelled, `serve` and the
    flow-run process gone, the server it did not start left up, the checkpoint kept."""
    import signal
    import subprocess
    import sys
    import time
    from urllib.parse import urlparse

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.settings import PREFECT_API_URL

    catalog = make_catalog(tmp_path / "catalog", n_items=12, n_users=8)
    config = write_config(tmp_path, catalog, name="interrupted")
    config.write_text(config.read_text().replace("epochs = 3\npatience = 2",
                                                 "epochs = 100000\npatience = 100000"))
    home = tmp_path / "home"
    env = {**os.environ, "PREFECT_HOME": str(home),
           "DEMO_PREFECT_PORT": str(urlparse(PREFECT_API_URL.value()).port)}
    root = Path(__file__).resolve().parents[1]
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as stderr_file:
        demo = subprocess.Popen([sys.executable, "-m", "flows.server", "demo", str(config)],
                                cwd=root, env=env, stdout=subprocess.PIPE, stderr=stderr_file,
                                text=True)
    try:
        deadline = time.monotonic() + 180
        for line in demo.stdout:  # interrupt once training is under way
            if "valid R@20" in line or time.monotonic() > deadline:
                break
        assert "valid R@20" in line, "training never started"
        demo.send_signal(signal.SIGINT)
        demo.communicate(timeout=90)
    finally:
        if demo.poll() is None:  # a failed test leaves no serve or flow run training on
            demo.kill()
            _kill_what_the_demo_started(home)
    stderr = errors.read_text()
    assert demo.returncode == 130, stderr
    assert "interrupted: stopping the run" in stderr and "rerun `make demo`" in stderr
    assert "Traceback" not in stderr
    assert not (home / "serve.pid").exists()
    engines = [p for p in Path("/proc").iterdir() if p.name.isdigit()
               and _environ_has(p, f"PREFECT_HOME={home}") and _cmdline_has(p, "prefect.engine")]
    assert engines == [], "a flow-run process outlived the demo"
    with get_client(sync_client=True) as client:  # the server was up before: it stays up
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
            name=DeploymentFilterName(any_=["interrupted"])))
    assert [run.state.type.value for run in runs] == ["CANCELLED"]
    assert list((tmp_path / "store-interrupted" / "runs").glob("*/checkpoint.pt"))


def _kill_what_the_demo_started(home: Path) -> None:
    import signal

    pid_file = home / "serve.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and _environ_has(proc, f"PREFECT_HOME={home}") \
                and _cmdline_has(proc, "prefect.engine"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def _environ_has(proc: Path, entry: str) -> bool:
    try:
        return entry.encode() in (proc / "environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _cmdline_has(proc: Path, word: str) -> bool:
    try:
        return word.encode() in (proc / "cmdline").read_bytes()
    except OSError:
        return False


def test_the_study_flow_publishes_its_table_plots_and_progress(prefect_api, tmp_path):
    """study/<name>: ingest, caption, embed, then the study; its table, an inline-PNG markdown
    artifact of the plots, and a progress artifact that reached 100%; served only with [study]."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.dag import study_flow
    from flows.serve import deployments

    catalog = make_catalog(tmp_path / "catalog", n_items=12, n_users=8)
    config = write_config(tmp_path, catalog, name="studied", extra="""
[study]
models = ["lirdrec", "pop"]
modality_subsets = [["text"]]
train_fractions = [1.0, 0.5]
seeds = [1]
max_epochs = 1
""")
    state = study_flow(str(config), return_state=True)
    assert state.is_completed(), state
    assert task_states(state) == {"ingest": "Completed", "caption": "Completed",
                                  "embed": "Completed", "study": "Completed"}
    artifacts = flow_artifacts(state)
    table = artifacts["studied-study"]
    assert table.type == "table" and "best ID-only" in str(table.data)
    plots = str(artifacts["studied-study-plots"].data)
    assert plots.count("](data:image/png;base64,iVBORw0KGgo") == 2  # regimes and ablation
    with get_client(sync_client=True) as client:
        progress = [a for a in client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
            if a.type == "progress"]
    assert [a.data for a in progress if "Study studied" in (a.description or "")] == [100.0]
    names = [d.name for d in deployments(config)]
    assert names.count("studied") == len(names) and len(names) == 8  # study/studied included
    plain = write_config(tmp_path, catalog, name="plain")
    assert len(deployments(plain)) == 7
