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


def private_imports(path: Path) -> list[str]:
    """`from ulsad.x import _name` and `x._name` on an imported ulsad module, in one file:
    reaching into another module's private names (a module's own `_names` are its business)."""
    import ast

    def private(name: str) -> bool:
        return name.startswith("_") and not name.startswith("__")

    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ulsad"):
            found += [f"{node.module}.{a.name}" for a in node.names if private(a.name)]
            modules |= {a.asname or a.name for a in node.names}  # may be submodules
        elif isinstance(node, ast.Import):
            modules |= {a.asname for a in node.names if a.name.startswith("ulsad") and a.asname}
    for node in ast.walk(tree):
        name = (
            node.value.id
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            else None
        )
        if name in modules and private(node.attr):
            found.append(f"{node.value.id}.{node.attr}")
    return [f"{path.relative_to(ROOT)}: {name}" for name in found]


def test_no_module_imports_another_modules_private_names():
    files = [*sorted((ROOT / "ulsad").rglob("*.py")), ROOT / "app.py",
             *sorted((ROOT / "benchmarks").glob("*.py")), *sorted((ROOT / "tests").glob("*.py")),
             *sorted((ROOT / "notebooks").rglob("*.py"))]  # fmt: skip
    assert len(files) > 20
    found = [hit for path in files for hit in private_imports(path)]
    assert not found, f"private names used across modules: {found}"


def test_private_import_check_can_fail(tmp_path, monkeypatch):
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    sample = tmp_path / "x.py"
    sample.write_text("from ulsad.cli import _parse_overrides\nimport ulsad.checkpoint as checkpoint\n"
                      "checkpoint._resolve('a')\nfrom ulsad import __version__\n")  # fmt: skip
    assert private_imports(sample) == [
        "x.py: ulsad.cli._parse_overrides",
        "x.py: checkpoint._resolve",
    ]


def layout_entries(text: str) -> list[str]:
    """The module paths drawn in the "Layout" tree of docs/architecture.md (one line per module:
    the tree's `├──`/`└──` lines; a folder line ends with `/`)."""
    import re

    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```text\n", 1)[1].split("```", 1)[0]
    paths, parents = [], []
    for line in block.splitlines():
        match = re.match(r"^((?:│   |    )*)(?:├── |└── )?(\S+)", line)
        if not match:
            continue
        depth = len(match[1]) // 4 + (1 if re.search(r"├── |└── ", line) else 0)
        name = match[2]
        if name.endswith(".py"):
            assert len(line[match.end() :].strip()) > 10, f"Layout: {name} has no description"
        parents[depth:] = [name]
        paths.append("".join(parents))
    return [p for p in paths if p.endswith(".py")]


def test_docs_layout_draws_every_module_of_the_package():
    architecture = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    drawn = set(layout_entries(architecture))
    package = {str(p.relative_to(ROOT)) for p in (ROOT / "ulsad").rglob("*.py")
               if "__pycache__" not in p.parts}  # fmt: skip
    assert "ulsad/model.py" in package
    assert not package - drawn, f"modules missing from docs/architecture.md: {package - drawn}"
    assert not {p for p in drawn if p.startswith("ulsad/")} - package, (
        "Layout names files that do not exist"
    )
