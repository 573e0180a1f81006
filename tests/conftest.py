"""Shared fixtures: a synthetic dataset and a lite model trained on it once per session."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before huggingface_hub is imported: tests never go online
# Idle OpenMP threads sleep instead of spinning: on a busy 2-core machine spinning is ~50x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

from ulsad import ULSAD
from ulsad.data import make_synthetic_dataset

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(root, "synthetic", n_train=30, n_test_good=8, n_test_defect=8)
    return root


@pytest.fixture(scope="session")
def trained_checkpoint(synthetic_root, tmp_path_factory) -> Path:
    """A lite model trained for a few epochs on the synthetic dataset, saved to a folder."""
    out = tmp_path_factory.mktemp("checkpoint")
    torch.manual_seed(0)
    # Short schedule for tests: a higher learning rate than the paper's 2e-4 and small batches.
    model = ULSAD.from_preset("lite", epochs=10, lr_milestones=(10,), lr=1e-3, batch_size=4)
    model.fit(synthetic_root, category="synthetic", out_dir=out, progress=False)
    return out


@pytest.fixture
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip("../shared/data is absent (fresh clone): real-data tests skipped")
    return REAL_DATA


@pytest.fixture
def hub(monkeypatch, tmp_path_factory):
    """A Hub-compatible server on 127.0.0.1 (tests/hub_server.py) that huggingface_hub talks to:
    HF_ENDPOINT points at it, offline mode is off and the cache is a fresh folder, both in the
    environment (for subprocesses and notebook kernels) and in huggingface_hub.constants (read
    once at import by this process)."""
    from hub_server import HubServer
    from huggingface_hub import constants

    server = HubServer().start()
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
    template = server.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    yield server
    server.stop()


def header_only_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height, with no pixel data: for the pixel-count
    refusals of the CLI and the app."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path
