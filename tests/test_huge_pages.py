"""Importing the model (or the pipeline) before torch backs torch's large CPU buffers with
transparent huge pages (model/__init__.py), where the kernel hands them out on request."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
ROOT = Path(__file__).resolve().parents[1]


def _mode() -> str:
    found = re.search(r"\[(\w+)\]", THP_MODE.read_text()) if THP_MODE.exists() else None
    return found.group(1) if found else "none"


def _huge_kb(first_import: str) -> int:
    code = (f"{first_import}\nimport torch\nbuffer = torch.ones(2**25)\n"
            "print([line.split()[1] for line in open('/proc/self/smaps_rollup')"
            " if line.startswith('AnonHugePages')][0])")
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                          capture_output=True, text=True)
    return int(done.stdout.strip())


@pytest.mark.skipif(_mode() != "madvise", reason="huge pages on request only under THP 'madvise'")
@pytest.mark.parametrize("package", ["model", "pipeline"])
def test_a_large_buffer_gets_huge_pages_once_the_package_is_imported_first(package):
    assert _huge_kb("import os") == 0  # torch alone: 4 KB pages
    assert _huge_kb(f"import {package}") >= 64 * 1024  # most of the 128 MB buffer
