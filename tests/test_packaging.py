"""A built wheel, installed (not editable) into a fresh virtualenv, works offline: the embedded
checkpoints load and score like the source tree's, `python -m ulsad` and the `ulsad` script
predict, and `python app.py` (a copy outside the checkout) answers an inspect request.

The fresh venv sees the test environment's site-packages through a `.pth` line (torch and the
other dependencies are reused, nothing is downloaded); `.pth` files in there are not processed,
so the editable install of this checkout stays invisible and `ulsad` comes from the wheel only.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import site
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from ulsad import ULSAD

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "weights" / "bottle" / "examples" / "broken_large_000.png"
pytestmark = pytest.mark.slow


def tracked_tree(target: Path) -> Path:
    """The checkout's tracked files (as they are in the working tree) copied to `target`."""
    try:
        names = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for name in filter(None, names.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(HF_HUB_OFFLINE="1", OMP_WAIT_POLICY="PASSIVE", GRADIO_ANALYTICS_ENABLED="False")
    return {**env, **extra}


def run(args: list, cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=clean_env(**extra), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv with the wheel built from this checkout installed; returns its python."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tracked_tree(tmp / "src")
    dist = tmp / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    run([*build, "--no-index", "-q", "-w", dist, source], cwd=tmp)
    (wheel,) = dist.glob("ulsad-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("bottle", "metal_plate"):
        assert f"ulsad/weights/{name}/model.safetensors" in names
        assert f"ulsad/weights/{name}/example.png" in names  # the model card's figure
    assert "ulsad/weights/manifest.json" in names and "ulsad/__main__.py" in names
    assert not [n for n in names if n.endswith(".pt") or "/tests/" in n]

    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    python = venv / "bin" / "python"
    purelib = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                       cwd=tmp).stdout.strip())  # fmt: skip
    (purelib / "_test_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index"]
    run([*pip, "-q", wheel], cwd=tmp)
    return python


def test_sdist_contains_the_embedded_checkpoints(tmp_path):
    source = tracked_tree(tmp_path / "src")
    code = "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))"
    name = run([sys.executable, "-c", code, tmp_path / "sdist"], cwd=source).stdout.split()[-1]
    with tarfile.open(tmp_path / "sdist" / name) as archive:
        members = archive.getnames()
    assert any(m.endswith("weights/bottle/model.safetensors") for m in members)
    assert any(m.endswith("weights/manifest.json") for m in members)


def test_wheel_loads_and_scores_the_embedded_checkpoint_offline(installed, tmp_path):
    code = (
        "import json, sys, ulsad; from ulsad import ULSAD; from ulsad.hub import WEIGHTS_DIR\n"
        "m = ULSAD.from_pretrained('bottle')\n"
        "print(json.dumps({'file': ulsad.__file__, 'weights': str(WEIGHTS_DIR),"
        " 'score': m.predict(sys.argv[1]).score}))"
    )
    result = json.loads(run([installed, "-c", code, EXAMPLE], cwd=tmp_path).stdout)
    prefix = str(installed.parent.parent)
    assert result["file"].startswith(prefix) and result["weights"].startswith(prefix)
    expected = ULSAD.from_pretrained("bottle").predict(EXAMPLE).score
    assert result["score"] == pytest.approx(expected, abs=1e-6)

    for name, command in (
        ("module", [installed, "-m", "ulsad"]),
        ("script", [installed.parent / "ulsad"]),
    ):
        out = tmp_path / name
        run([*command, "predict", "--checkpoint", "bottle", "--out", out, EXAMPLE], cwd=tmp_path)
        rows = list(csv.DictReader((out / "scores.csv").open()))
        assert len(rows) == 1 and float(rows[0]["score"]) == pytest.approx(expected, abs=1e-5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_app_from_the_wheel_answers_offline(installed, tmp_path):
    pytest.importorskip("gradio")
    from gradio_client import Client, handle_file

    app = tmp_path / "app.py"
    shutil.copy(ROOT / "app.py", app)  # outside the checkout: ulsad comes from the wheel
    port = free_port()
    env = clean_env(GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1")
    started = time.perf_counter()
    process = subprocess.Popen([installed, app], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/"
        while True:
            assert process.poll() is None, process.stdout.read()[-4000:]
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.perf_counter() - started < 120, "app did not start within 120 s"
                time.sleep(0.2)
        client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        score = client.predict(handle_file(str(EXAMPLE)), api_name="/inspect")[0]
        elapsed = time.perf_counter() - started
        expected = ULSAD.from_pretrained("bottle").predict(EXAMPLE).score
        assert score == pytest.approx(expected, abs=1e-5)
        print(f"app: first inspect answered {elapsed:.1f} s after `python app.py`")
    finally:
        process.terminate()
        process.wait(timeout=30)
