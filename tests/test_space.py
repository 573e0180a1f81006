"""The repository as a Hugging Face Space: README.md's front matter passes the Hub's Space rules
and `.gitattributes` sends every binary file to LFS/Xet, as the Hub's templates do.

The rules, from the Hub's "Spaces Configuration Reference" (huggingface.co/docs/hub/
spaces-config-reference) and what it refuses on push: `sdk` one of gradio, streamlit, docker,
static; `sdk_version` a version (here: one that requirements.txt allows); `app_file` a file of
the repository; `python_version` 3.x or 3.x.x; `colorFrom`/`colorTo` from the thumbnail palette;
`short_description` at most 60 characters (a 61-character one was refused); `license` one of the
Hub's licence identifiers; `models`/`datasets` lists of repo ids.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

from ulsad.hub import WEIGHTS_DIR, is_hub_repo_id, read_manifest

ROOT = Path(__file__).resolve().parents[1]
SDKS = {"gradio", "streamlit", "docker", "static"}
COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
SHORT_DESCRIPTION_MAX = 60
# The Hub's licence identifiers (huggingface.js, packages/hub/src/types/public.ts, `License`).
LICENSE_IDS = """apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m
    bigscience-bloom-rail-1.0
    bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause
    bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0
    cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0
    cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0
    cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1
    agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc lppl-1.3c ms-pl mpl-2.0 odc-by
    odbl openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr unknown
    other"""
LICENSES = set(LICENSE_IDS.split())


def front_matter(text: str) -> dict[str, Any]:
    """The YAML block between the first two `---` lines of a README."""
    match = re.match(r"---\n(.*?)\n---\n", text, re.DOTALL)
    assert match, "README.md has no front matter"
    return yaml.safe_load(match[1])


def space_problems(meta: dict[str, Any], root: Path = ROOT) -> list[str]:
    """What the Hub would refuse (or mislabel) in a Space's front matter `meta`."""
    problems = []
    if meta.get("sdk") not in SDKS:
        problems.append(f"sdk {meta.get('sdk')!r} is not one of {sorted(SDKS)}")
    if not (root / str(meta.get("app_file", ""))).is_file():
        problems.append(f"app_file {meta.get('app_file')!r} is not a file of the repository")
    version = meta.get("sdk_version")
    try:
        Version(str(version))
    except InvalidVersion:
        problems.append(f"sdk_version {version!r} is not a version")
    python = meta.get("python_version")
    if python is not None and not re.fullmatch(r"3\.\d+(\.\d+)?", str(python)):
        problems.append(f"python_version {python!r} is not 3.x or 3.x.x")
    for key in ("colorFrom", "colorTo"):
        if key in meta and meta[key] not in COLORS:
            problems.append(f"{key} {meta[key]!r} is not one of {sorted(COLORS)}")
    description = meta.get("short_description")
    if description is not None and len(str(description)) > SHORT_DESCRIPTION_MAX:
        problems.append(
            f"short_description has {len(str(description))} characters "
            f"(the Hub allows {SHORT_DESCRIPTION_MAX})"
        )
    if meta.get("license") not in LICENSES:
        problems.append(f"license {meta.get('license')!r} is not a Hub licence identifier")
    for key in ("models", "datasets"):
        ids = meta.get(key, [])
        if not isinstance(ids, list) or not all(is_hub_repo_id(str(i)) for i in ids):
            problems.append(f"{key} {ids!r} must be a list of Hub repo ids owner/name")
    return problems


def readme_meta() -> dict[str, Any]:
    return front_matter((ROOT / "README.md").read_text(encoding="utf-8"))


def test_front_matter_passes_the_hubs_space_rules():
    assert space_problems(readme_meta()) == []


def test_the_rules_refuse_what_the_hub_refused():
    """The front matter before this test: its 61-character description was refused on push."""
    old = {**readme_meta(), "license": "apache-2.0",
           "short_description": "Find structural and logical defects in product images (ULSAD)"}  # fmt: skip
    assert len(old["short_description"]) == 61
    assert space_problems(old) == ["short_description has 61 characters (the Hub allows 60)"]
    bad = {**readme_meta(), "sdk": "flask", "license": "apache", "colorTo": "orange",
           "datasets": ["mvtec_ad"], "app_file": "nowhere.py", "python_version": "3"}  # fmt: skip
    assert len(space_problems(bad)) == 6


def test_sdk_version_is_one_that_requirements_allow():
    """The Space installs gradio==sdk_version: it must be a version requirements.txt accepts."""
    meta = readme_meta()
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    requirements = [Requirement(line) for line in lines if line and not line.startswith("#")]
    sdk = next(r for r in requirements if r.name == meta["sdk"])
    assert Version(str(meta["sdk_version"])) in sdk.specifier, (meta["sdk_version"], sdk)


def test_licence_is_the_one_of_what_the_space_serves():
    """The Space serves the embedded checkpoints and their example images: its licence is the
    most restrictive of theirs (bottle and metal_plate: trained on CC BY-NC-SA 4.0 images, so
    non-commercial), not the code's Apache-2.0, which only the synthetic layout checkpoint has."""
    served = {}
    for name, entry in read_manifest()["checkpoints"].items():
        card = (WEIGHTS_DIR / entry["path"] / "README.md").read_text(encoding="utf-8")
        served[name] = front_matter(card)["license"]
    assert served.pop("layout") == "apache-2.0"  # generated by ulsad.data: ours
    assert set(served.values()) == {"cc-by-nc-sa-4.0"}
    assert readme_meta()["license"] == "cc-by-nc-sa-4.0"


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (installed from a wheel or an sdist)")
    return [name for name in out.decode().split("\0") if name]


def is_binary(path: Path) -> bool:
    """Git's own test: a NUL byte in the first 8000 bytes."""
    with path.open("rb") as f:
        return b"\0" in f.read(8000)


def test_gitattributes_sends_every_binary_file_to_lfs():
    binaries = [n for n in tracked_files() if (ROOT / n).is_file() and is_binary(ROOT / n)]
    assert any(n.endswith("model.safetensors") for n in binaries)
    assert any(n.endswith(".png") for n in binaries)
    out = subprocess.run(["git", "check-attr", "filter", "--", *binaries], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    not_lfs = [line for line in out.splitlines() if not line.endswith(": filter: lfs")]
    assert not not_lfs, f"binary files that a Space push would refuse: {not_lfs}"
    # The Hub template's entries for weights and arrays are all there.
    text = (ROOT / ".gitattributes").read_text(encoding="utf-8")
    for pattern in ("*.safetensors", "*.onnx", "*.npy", "*.pt", "*.bin", "*.zip", "*.png"):
        assert f"{pattern} filter=lfs diff=lfs merge=lfs -text" in text.splitlines(), pattern


# The deploy command (docs: "Checkpoints, Hub and Space"), run from a clean checkout of this
# commit: what the Space needs, nothing else; files gone from the checkout are deleted there.
SPACE_FILES = [
    "README.md",
    ".gitattributes",
    "app.py",
    "requirements.txt",
    "ulsad/**",
    "weights/**",
]


def deploy_command(space: str) -> list[str]:
    includes = [part for pattern in SPACE_FILES for part in ("--include", pattern)]
    return ["hf", "upload", space, ".", ".", "--repo-type", "space", *includes,
            "--exclude", "**/__pycache__/**", "--delete", "*"]  # fmt: skip


def test_deploy_command_from_a_clean_checkout(hub, tmp_path):
    """`hf upload` of a clean checkout (`git archive HEAD`) to a Space: app.py, the package and
    the embedded checkpoints arrive, tests and notebooks do not, and a redeploy removes files
    that the checkout no longer has. Against tests/hub_server.py, which speaks the Hub's upload
    protocol (the real Hub also moves the binaries to LFS/Xet)."""
    import os
    import shutil
    import sys

    hf = shutil.which("hf") or str(Path(sys.executable).with_name("hf"))
    if not Path(hf).is_file():
        pytest.skip("the `hf` command (huggingface_hub) is not installed")
    tracked_files()  # skips outside a git checkout
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    archive = subprocess.run(["git", "archive", "--format=tar", "HEAD"], cwd=ROOT,
                             capture_output=True, check=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(checkout)], input=archive, check=True)
    hub.commit("me/space", {"stale.py": b"# deleted by the next deploy\n"})
    env = {**os.environ, "HF_TOKEN": "hf_test", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    done = subprocess.run([hf, *deploy_command("me/space")[1:]], cwd=checkout, env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    repo = hub.repos["me/space"]
    files = repo.commits[repo.refs["main"]]
    assert {"README.md", ".gitattributes", "app.py", "requirements.txt"} <= set(files)
    assert "ulsad/app/ui.py" in files and "ulsad/cli.py" in files
    for entry in read_manifest()["checkpoints"].values():
        for name in ("model.safetensors", "config.json", "README.md", "example.png"):
            assert f"weights/{entry['path']}/{name}" in files
    assert "stale.py" not in files
    assert not [n for n in files if n.startswith(("tests/", "notebooks/", "benchmarks/", "docs/"))]
    assert files["README.md"] == (checkout / "README.md").read_bytes()
