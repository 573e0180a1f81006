"""The README stays a short page for users, and the documentation in docs/ holds the rest: every
relative link in them resolves to a file (and a heading), and every topic has its section."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ulsad.card import CITATION

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"!?\[[^\]]*\]\(([^()\s]+)\)")

# Where each section of the old, long README lives now (code comments cite them by these names).
SECTIONS = {
    "cli.md": ["Commands", "What a failed run leaves", "Bad input", "Large images"],
    "app.md": ["Python API", "Demo app", "Bad input in the app", "Gradio API"],
    "presets.md": [
        "Presets",
        "The `lite` defaults",
        "Validation without defect images",
        "Logical defects",
        "Augmentation",
    ],
    "results.md": [
        "What the defaults score",
        "Against PatchCore and PaDiM",
        "Fit times depend on glibc's malloc",
    ],
    "reproducing.md": ["Reproducing the paper", "Notebooks", "Differences from the reference code"],
    "checkpoints.md": ["Checkpoints", "The Hugging Face Hub", "Installing and the Space"],
    "speed.md": ["Inference", "Training", "Inference shortcuts", "ONNX export", "Shared CPUs"],
    "architecture.md": ["Layout", "Dependencies", "Running the tests"],
}


def without_code(text: str) -> str:
    """The Markdown text without fenced code blocks and inline code (links there are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def headings(text: str) -> list[str]:
    """The headings of a Markdown text, outside code blocks."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return [m[1].strip() for m in re.finditer(r"^#{1,6} (.+)$", text, flags=re.M)]


def anchors(text: str) -> set[str]:
    """GitHub's anchors for the headings: lower case, punctuation dropped, spaces to hyphens,
    repeated ones numbered."""
    seen: dict[str, int] = {}
    out = set()
    for heading in headings(text):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def relative_links(path: Path) -> list[str]:
    return [t for t in LINK.findall(without_code(path.read_text(encoding="utf-8")))
            if not re.match(r"^[a-z]+:", t)]  # fmt: skip


def test_helpers_read_links_headings_and_anchors():
    text = "# A `b` c?\n\n## A b c\n\n[x](y.md#z) ![p](i.png) [w](https://e.org) `[n](no.md)`\n"
    assert anchors(text) == {"a-b-c", "a-b-c-1"}
    assert LINK.findall(without_code(text)) == ["y.md#z", "i.png", "https://e.org"]
    assert headings("```\n# not a heading\n```\n# one\n") == ["one"]


def test_readme_is_short_with_a_picture_and_a_citation():
    text = README.read_text(encoding="utf-8")
    assert text.startswith("---\n"), "the Space's front matter must stay at the top"
    assert len(text.splitlines()) <= 250
    images = re.findall(r"!\[[^\]]*\]\(([^()\s]+)\)", text)
    assert images, "the README shows at least one picture"
    for image in images:
        file = ROOT / image
        assert file.is_file() and file.suffix == ".png", image
        assert file.stat().st_size < 150_000, f"{image} is over 150 KB"
    bibtex = re.findall(r"```bibtex\n(.*?)```", text, flags=re.S)
    assert len(bibtex) == 1
    entry = bibtex[0]
    assert re.match(r"@(misc|article)\{\w+,", entry)
    for field in ["eprint        = {2410.16255}", "archivePrefix = {arXiv}", "year          = {2024}",
                  "Patra", "Ben Taieb", "Revisiting Deep Feature Reconstruction"]:  # fmt: skip
        assert field in entry, field
    assert entry.count("{") == entry.count("}")
    assert entry.strip() == CITATION, "one citation: ulsad.card.CITATION (the model cards use it)"


def test_readme_keeps_the_two_commands():
    """The app and test commands, exactly (`.ci/run` runs "the README's test command")."""
    text = README.read_text(encoding="utf-8")
    venv = "python3.11 -m venv .venv && .venv/bin/pip install -r"
    assert f"{venv} requirements.txt -e . && .venv/bin/python app.py\n" in text
    assert f"{venv} requirements-dev.txt -e . && .venv/bin/python -m pytest -q\n" in text
    assert "python -m pytest -q" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    links = relative_links(path)
    assert links, f"{path.name} links to nothing"
    broken = []
    for link in links:
        target, _, anchor = link.partition("#")
        file = (path.parent / target).resolve() if target else path
        if not file.exists():
            broken.append(f"{link}: no such file")
        elif (
            anchor
            and file.suffix == ".md"
            and anchor not in anchors(file.read_text(encoding="utf-8"))
        ):
            broken.append(f"{link}: no such heading")
    assert not broken, f"{path.relative_to(ROOT)}: {broken}"


def test_docs_have_every_section_and_an_index():
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    assert {p.name for p in DOCS} - {"README.md"} == set(SECTIONS)
    for name, sections in SECTIONS.items():
        assert f"]({name})" in index, f"docs/README.md does not link {name}"
        assert f"](docs/{name}" in README.read_text(encoding="utf-8"), f"README misses {name}"
        found = headings((ROOT / "docs" / name).read_text(encoding="utf-8"))
        missing = [s for s in sections if s not in found]
        assert not missing, f"docs/{name} lacks {missing}"
