"""README.md and docs/ point only at files and modules that are in the repository, and the tree
holds only the deployed checkpoint (superseded ones are cited as `git show COMMIT:PATH`,
docs/results.md).

Fast and ROS-free: it reads text files (and asks git, where there is one).
"""

from __future__ import annotations

import ast
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


# A Python module of the repository by its dotted name (`python -m dehaze_ros.ros.dehaze_node`,
# `dehaze_ros.engine.DEFAULT_CHECKPOINT`): checked in code blocks too, since commands run them.
MODULE = re.compile(r"(?<![\w./:-])((?:dehaze_ros|training)(?:\.[A-Za-z_]\w*)+)")
FILE_SUFFIXES = {"md", "py", "sh", "txt", "yaml", "xml", "pt", "onnx"}


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


def package_names(init: Path) -> set[str]:
    """Names a package's __init__.py binds (imports, assignments, definitions)."""
    names = set()
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(target.id for target in targets if isinstance(target, ast.Name))
    return names


def module_exists(dotted: str, root: Path = ROOT) -> bool:
    """A module or package file for the longest prefix of the name; what follows a module is an
    attribute (not checked), what follows a package must be a name its __init__.py binds."""
    path = root / dotted.split(".")[0]
    for part in dotted.split(".")[1:]:
        if (path / part / "__init__.py").is_file():
            path = path / part
        elif (path / f"{part}.py").is_file():
            return True
        else:
            init = path / "__init__.py"
            return init.is_file() and part in package_names(init)
    return True


def broken_modules(path: Path, root: Path = ROOT) -> list[str]:
    names = {name.rstrip(".") for name in MODULE.findall(path.read_text())}
    names = {name for name in names if name.rsplit(".", 1)[1] not in FILE_SUFFIXES}  # training.md
    return [f"module {name}" for name in sorted(names) if not module_exists(name, root)]


def test_the_module_checker_follows_packages_modules_and_package_attributes(tmp_path):
    package = tmp_path / "dehaze_ros"
    (package / "ros").mkdir(parents=True)
    (package / "__init__.py").write_text('"""The sim camera."""\n__version__ = "1"\n')
    (package / "ros" / "__init__.py").write_text("")
    (package / "ros" / "node.py").write_text("")
    page = tmp_path / "page.md"
    page.write_text(
        "```bash\npython -m dehaze_ros.ros.node\npython -m dehaze_ros.node\n```\n"
        "`dehaze_ros.ros.node.main`, `dehaze_ros.__version__`, `dehaze_ros.camera`, training.md\n"
    )
    assert broken_modules(page, tmp_path) == ["module dehaze_ros.camera", "module dehaze_ros.node"]


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
    assert broken_references(document) + broken_modules(document) == []


def test_the_readme_is_a_users_document():
    # What it does, install, launch, topics, parameters, one results table; the rest in docs/.
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


@pytest.mark.skipif(
    not (ROOT / ".git").exists() or shutil.which("git") is None, reason="needs a git checkout"
)
def test_only_the_deployed_checkpoint_is_committed():
    # The checkpoint and its exported graph (what backend auto runs on a CPU), nothing else.
    tracked = subprocess.run(
        ["git", "ls-files", "*.pt", "*.onnx"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(tracked) == [
        "dehaze_ros/checkpoints/default.onnx",
        "dehaze_ros/checkpoints/default.pt",
    ]
