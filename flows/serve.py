"""Publish every flow as a deployment named by each config's `name`: `python -m flows.serve CONFIG...`.

`configs/movielens.toml` (name = "demo") gives `extract-and-train/demo`, `caption/demo`, ...; run
one with `prefect deployment run extract-and-train/demo` (the CLI takes flow/deployment).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flows.dag import FLOWS, caption_flow, embed_flow, extract_and_train, extract_flow, study_flow
from pipeline.config import Config, ConfigError, load_config
from pipeline.errors import explain

FAN_OUT_FLOWS = (caption_flow, embed_flow, extract_flow, extract_and_train, study_flow)


def task_runner(config: Config):
    """A Dask task runner when the config asks for one (a scheduler address or local workers)."""
    scale = config.scale
    if not scale.dask_address and not scale.dask_local_workers:
        return None
    from prefect_dask import DaskTaskRunner

    if scale.dask_address:
        return DaskTaskRunner(address=scale.dask_address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": scale.dask_local_workers,
            "threads_per_worker": 1,
            "host": "127.0.0.1",
        }
    )


def deployments(config_path: Path) -> list:
    """One deployment per flow for this config, with the config's path as the default parameter
    (`study/<name>` only for a config with a [study] section)."""
    config = load_config(config_path)
    runner = task_runner(config)
    out = []
    for flow in FLOWS:
        if flow is study_flow and config.study is None:
            continue
        if runner is not None and flow in FAN_OUT_FLOWS:
            flow = flow.with_options(task_runner=runner)
        out.append(flow.to_deployment(name=config.name, parameters={"config": str(config.source)}))
    return out


def _reachable(api_url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__)
    parser.add_argument("configs", nargs="+", type=Path, help="run configs (TOML) to publish")
    args = parser.parse_args(argv)
    from extractors.redact import install_log_redaction

    install_log_redaction()  # serve.log: what this process and the flow runs it starts log
    from prefect import serve
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    if not api_url or not _reachable(api_url):
        raise SystemExit(
            f"no Prefect server answers at {api_url or '(PREFECT_API_URL is unset)'}: start one with "
            "`python -m flows.server start` (or `make demo`) and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )

    try:
        published = [d for path in args.configs for d in deployments(path)]
    except ConfigError as error:
        raise SystemExit(f"error: {error}") from None
    except OSError as error:
        raise SystemExit(f"error: {explain(error)}") from None
    serve(*published)


if __name__ == "__main__":
    main()
