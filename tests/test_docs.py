"""The docs point at things that exist: Markdown links (files and heading anchors), repository paths quoted in
backticks, and ``§`` references to the design notes' sections, in every document and source file; the README stays
short enough to read in one sitting."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "zs2_kernels" / "DESIGN.md"
#: Folders whose paths the docs quote relative to the repository root.
TOP_LEVEL = ("zs2_kernels/", "benchmarks/", "python/", "tests/", "csrc/", ".ci/")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
QUOTED_PATH = re.compile(r"`((?:zs2_kernels|benchmarks|python|tests|csrc|\.ci)/[\w./-]*)`")
SECTION = re.compile(r"§(\d+(?:\.\d+)?)")
#: Paths the install makes (the CUDA C++ library nvcc builds): quoted in the docs, never tracked.
BUILT = ("zs2_kernels/_lib/",)


def tracked(*patterns: str) -> list[Path]:
    """Files git tracks (a fresh clone's files), outside the committed benchmark results."""
    listed = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / name for name in listed.stdout.splitlines()
            if not name.startswith("benchmarks/results/") and (ROOT / name).is_file()]


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(document: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in document.read_text(encoding="utf-8").splitlines()
            if line.startswith("#")}


def design_sections() -> set[str]:
    numbered = re.compile(r"^#{2,3} (\d+(?:\.\d+)?)\.? ")
    return {match.group(1) for line in DESIGN.read_text(encoding="utf-8").splitlines()
            if (match := numbered.match(line))}


@pytest.mark.parametrize("document", tracked("*.md"), ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_links_and_quoted_paths_resolve(document):
    text = document.read_text(encoding="utf-8")
    broken = []
    for match in LINK.finditer(text):
        target = match.group(1) or match.group(2)
        if re.match(r"[a-z]+://|mailto:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        if not resolved.exists():
            broken.append(f"link {target}: no {resolved}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"link {target}: {resolved.name} has no heading #{anchor}")
    for match in QUOTED_PATH.finditer(text):
        path = match.group(1).rstrip(".")
        if not any(character in path for character in "*{<") and not path.startswith(BUILT) \
                and not (ROOT / path).exists():
            broken.append(f"path `{path}` does not exist")
    assert broken == []


def test_section_references_name_sections_of_the_design_notes():
    sections = design_sections()
    assert {"1.1", "1.2", "1.3", "2", "3", "4", "5"} <= sections
    wrong = [f"{path.relative_to(ROOT)}: §{number}" for path in tracked("*.md", "*.py", "*.sh")
             for number in SECTION.findall(path.read_text(encoding="utf-8")) if number.rstrip(".") not in sections]
    assert wrong == []


def test_the_readme_reads_in_one_sitting():
    """At most 350 lines: the study's documentation and the performance record live beside their code."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 350
    commands = [line for line in lines if line.startswith("python3 -m venv .venv")]
    assert len(commands) == 2  # the two set-up commands: make a video, run the tests


def test_a_broken_link_is_caught(tmp_path):
    """The checks above can fail: a missing file, a missing anchor and a missing section are each found."""
    document = tmp_path / "doc.md"
    document.write_text("# Title\n[a](missing.md) [b](#no-such-heading) [c](#title)\n")
    found = [m.group(1) for m in LINK.finditer(document.read_text())]
    assert found == ["missing.md", "#no-such-heading", "#title"]
    assert not (tmp_path / "missing.md").exists() and "no-such-heading" not in anchors(document)
    assert "title" in anchors(document) and "9.9" not in design_sections()
