"""README.md and docs/ point only at files that are in the repository, and the tree holds only
the deployed checkpoint (superseded ones are cited as `git show COMMIT:PATH`, docs/results.md).

Fast and ROS-free: it reads text files (and asks git, where there is one).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\]\(([^)\s]+)\)")
# A path into the repository written in prose or inline code: it starts at one of the top-level
# folders. Not after "/", ":" or a word character, so ../shared/data/..., ~/.cache/dehaze_ros/...
# and COMMIT:training/... (a file in git history, not in the tree) are not taken for one.
REPO_PATH = re.compile(
    r"(?<![\w./:$-])((?:dehaze_ros|training|docs|config|test|launch|resource)/[\w./{}*<>-]*)"
)


def prose(path: Path) -> str:
    """The document without its fenced code blocks: commands may name files they write."""
    return FENCE.sub("", path.read_text())


def broken_references(path: Path) -> list[str]:
    text = prose(path)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor in the same page
        if not (path.parent / target.split("#")[0]).exists():
            broken.append(f"link {target}")
    for reference in REPO_PATH.findall(text):
        reference = reference.rstrip(".,;")
        if "<" in reference:
            continue  # a placeholder such as runs/<run>
        pattern = re.sub(r"\{[^}]*\}", "*", reference)
        if not any(ROOT.glob(pattern.rstrip("/"))):
            broken.append(f"path {reference}")
    return broken


def test_the_checker_finds_a_missing_file_and_accepts_existing_ones(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "See [here](nowhere.md), `training/checkpoints/gone.pt` and `docs/results.md`.\n"
        "Kept in git: `4aec785:training/checkpoints/gone.pt`; outside: ../shared/data/x.\n"
        "```bash\npython -m training.export x -o training/checkpoints/written.pt\n```\n"
    )
    assert broken_references(page) == ["link nowhere.md", "path training/checkpoints/gone.pt"]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_readme_and_docs_reference_only_files_in_the_repository(document):
    assert broken_references(document) == []


def test_the_readme_is_a_users_document():
    # What it does, install, launch, topics, parameters, one results table; the rest in docs/.
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


@pytest.mark.skipif(
    not (ROOT / ".git").exists() or shutil.which("git") is None, reason="needs a git checkout"
)
def test_only_the_deployed_checkpoint_is_committed():
    tracked = subprocess.run(
        ["git", "ls-files", "*.pt"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked == ["dehaze_ros/checkpoints/default.pt"]
