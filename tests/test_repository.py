"""The repository as a Hugging Face Space takes it: no tracked file over 10 MB (Spaces refuse
larger files that are not stored with Git LFS or Xet)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 10 * 10**6  # bytes, as the Hub counts them


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (installed from a wheel or an sdist)")
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_no_tracked_file_exceeds_10_mb():
    files = tracked_files()
    assert any(p.name == "model.safetensors" for p in files)  # the embedded checkpoints count
    sizes = {str(p.relative_to(ROOT)): p.stat().st_size for p in files if p.is_file()}
    too_big = {name: size for name, size in sizes.items() if size > LIMIT}
    assert not too_big, f"tracked files over 10 MB (a Space refuses them): {too_big}"
