"""Pack the training data of a GPU window small enough to travel with the working tree, and unpack it.

The device tool sends the repository's working tree and the paths named in ``carry``, 64 MiB in
all. The RGB-D scenes and ITS pairs the training config reads take about 53 MB as plain files;
``pack`` writes only the files the config's sources read, one xz archive per scene folder, and
fails (leaving no pack) when the pack and the working tree together do not fit. ``unpack``
restores them under ``<pack>/root``, which is the training run's ``data.root`` there.

    python -m training.gpu_data pack ../shared/data .gpu_data       # here (gpu_campaign.sh --prepare)
    python -m training.gpu_data check .gpu_data                     # here, before each device call
    python -m training.gpu_data unpack .gpu_data                    # there (gpu_campaign.sh)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from training.config import load_config, resolve_path
from training.data.reside import scan_paired_folder
from training.data.rgbd import scan_rgbd_folder

CARRY_LIMIT_BYTES = 64 * 1024 * 1024  # the device tool: working tree + carried paths
SAFETY_BYTES = 1024 * 1024  # the tool's own accounting (directories, rounding)
MANIFEST = "manifest.json"
UNPACKED = "root"  # <pack>/root: where unpack writes by default
UNPACK_MARK = ".unpacked"  # unpack's own folder: it may empty it again
DEFAULT_CONFIG = "config/train/diacmpn_rt.yaml"


class PackError(RuntimeError):
    pass


@dataclass
class Unit:
    """One scene folder (or one whole paired source), packed as one archive."""

    name: str  # path below the data root, e.g. rgbd/middlebury2014/Pipes
    files: set[Path] = field(default_factory=set)
    archive_bytes: int = 0


def _scene_folder(path: Path, source_root: Path) -> Path:
    """<group>/<scene> below an rgbd source (middlebury2014/Pipes, frames/tum), or less when shallower."""
    inside = path.relative_to(source_root).parts
    return source_root.joinpath(*inside[: min(2, len(inside) - 1)])


def collect_units(data_root: Path, config_path: str | Path = DEFAULT_CONFIG) -> list[Unit]:
    """The files each enabled rgbd or reside source of the training config reads, by scene folder."""
    config = load_config(config_path, [f"data.root={data_root}"])
    units: dict[str, Unit] = {}

    def add(path: Path, folder: Path) -> None:
        name = folder.relative_to(data_root).as_posix()
        units.setdefault(name, Unit(name)).files.add(path)

    for name, source in config.data.sources.items():
        if source.weight <= 0 or source.kind not in ("rgbd", "reside"):
            continue
        root = resolve_path(data_root, source.path)
        if source.kind == "rgbd":
            items, _ = scan_rgbd_folder(root, source, name)
            for item in items:
                for path in (item.color, item.depth, item.calib):
                    if path is not None:
                        add(path, _scene_folder(path, root))
        else:
            for item in scan_paired_folder(root, name, source.exclude):
                for path in (item.hazy, item.clear, item.depth):
                    if path is not None:
                        add(path, root)  # a paired source travels whole
    return sorted(units.values(), key=lambda unit: unit.name)


def working_tree_bytes(repo: Path, leave_out: Path | None = None) -> int:
    """What the device tool sends besides the carried paths: tracked and untracked-not-ignored
    files (those below ``leave_out``, the pack itself, are counted as the pack)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    paths = {repo / name.decode() for name in listed if name}
    if leave_out is not None:
        paths = {path for path in paths if not path.resolve().is_relative_to(leave_out.resolve())}
    return sum(path.stat().st_size for path in paths if path.is_file())


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _archive_name(unit: Unit) -> str:
    return unit.name.replace("/", "__") + ".tar.xz"


def _clear(out: Path) -> None:
    for old in list(out.glob("*.tar.xz")) + [out / MANIFEST]:
        old.unlink(missing_ok=True)
    shutil.rmtree(out / UNPACKED, ignore_errors=True)


def pack(
    data_root: str | Path,
    out: str | Path,
    repo: str | Path = ".",
    config_path: str | Path = DEFAULT_CONFIG,
    limit_bytes: int = CARRY_LIMIT_BYTES,
) -> dict:
    """Write the pack; returns its manifest. Raises PackError (and leaves no pack) when the pack
    does not fit beside the working tree."""
    data_root, out, repo = Path(data_root).resolve(), Path(out), Path(repo).resolve()
    if (
        out.exists()
        and any(out.iterdir())
        and not (out / MANIFEST).is_file()
        and not list(out.glob("*.tar.xz"))
    ):
        raise PackError(
            f"{out} exists and is not a pack (no {MANIFEST}); remove it or choose another folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    _clear(out)
    units = collect_units(data_root, config_path)
    if not units:
        raise PackError(f"the training config's sources read no files below {data_root}")
    budget = limit_bytes - SAFETY_BYTES - working_tree_bytes(repo, leave_out=out)
    for unit in units:
        with tarfile.open(out / _archive_name(unit), "w:xz", preset=9) as archive:
            for path in sorted(unit.files):
                archive.add(path, arcname=path.relative_to(data_root).as_posix())
        unit.archive_bytes = (out / _archive_name(unit)).stat().st_size
    total = sum(u.archive_bytes for u in units)
    if total > budget:
        _clear(out)
        raise PackError(
            f"the scenes the training config reads take {total / 2**20:.1f} MiB packed but only "
            f"{budget / 2**20:.1f} MiB are left beside the working tree "
            f"({limit_bytes / 2**20:.0f} MiB in all): commit fewer large files or read less data"
        )
    manifest = {
        "data_root": str(data_root),
        "config": str(config_path),
        "budget_bytes": budget,
        "pack_bytes": total,
        "units": {
            u.name: {"archive": _archive_name(u), "files": len(u.files), "bytes": u.archive_bytes}
            for u in units
        },
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def check(
    pack_dir: str | Path, repo: str | Path = ".", limit_bytes: int = CARRY_LIMIT_BYTES
) -> int:
    """The bytes a device call carrying ``pack_dir`` sends; PackError when over the limit (the working
    tree changes with every commit: check before each call, re-pack when it fails)."""
    pack_dir, repo = Path(pack_dir), Path(repo).resolve()
    if not (pack_dir / MANIFEST).is_file():
        raise PackError(
            f"{pack_dir} has no {MANIFEST}: run 'bash training/gpu_campaign.sh --prepare' first"
        )
    total = working_tree_bytes(repo, leave_out=pack_dir) + folder_bytes(pack_dir)
    if total > limit_bytes:
        raise PackError(
            f"the working tree and {pack_dir} take {total / 2**20:.1f} MiB, over the "
            f"{limit_bytes / 2**20:.0f} MiB the device tool carries: run "
            "'bash training/gpu_campaign.sh --prepare' again (it re-packs for today's working tree)"
        )
    return total


def unpack(pack_dir: str | Path, to: str | Path | None = None) -> Path:
    """Extract every archive of the pack into ``to`` (default ``<pack>/root``): a new or empty
    folder, or one an earlier unpack wrote (emptied first); returns that folder."""
    pack_dir = Path(pack_dir)
    manifest_path = pack_dir / MANIFEST
    if not manifest_path.is_file():
        raise PackError(
            f"{pack_dir} has no {MANIFEST}: run 'bash training/gpu_campaign.sh --prepare' first"
        )
    manifest = json.loads(manifest_path.read_text())
    root = Path(to) if to is not None else pack_dir / UNPACKED
    if root.exists() and any(root.iterdir()):
        # Nothing of an earlier pack's scenes may stay, and nothing else may be deleted.
        if not (root / UNPACK_MARK).is_file():
            raise PackError(
                f"{root} exists and was not written by unpack; choose an empty or new folder"
            )
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / UNPACK_MARK).write_text(f"unpacked from {pack_dir.resolve()}\n")
    for name, unit in manifest["units"].items():
        archive_path = pack_dir / unit["archive"]
        if not archive_path.is_file():
            raise PackError(f"{archive_path} (scene {name}) is missing from the pack")
        with tarfile.open(archive_path, "r:xz") as archive:
            members = archive.getmembers()
            if len(members) != unit["files"]:
                raise PackError(
                    f"{archive_path} holds {len(members)} files, the manifest says {unit['files']}"
                )
            archive.extractall(root, filter="data")
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.gpu_data",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    pack_parser = commands.add_parser("pack", help="pack the data the training config reads")
    pack_parser.add_argument("data_root", help="the data root (../shared/data)")
    pack_parser.add_argument("out", help="the pack folder (.gpu_data)")
    pack_parser.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"training config (default {DEFAULT_CONFIG})"
    )
    unpack_parser = commands.add_parser("unpack", help="extract a pack into <pack>/root")
    unpack_parser.add_argument("pack", help="the pack folder (.gpu_data)")
    unpack_parser.add_argument(
        "--to",
        help="where to extract (default <pack>/root): a new or empty folder, or an earlier unpack's",
    )
    check_parser = commands.add_parser(
        "check", help="whether the pack still fits beside the working tree"
    )
    check_parser.add_argument("pack", help="the pack folder (.gpu_data)")
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            manifest = pack(args.data_root, args.out, config_path=args.config)
            files = sum(unit["files"] for unit in manifest["units"].values())
            print(
                f"packed {files} files of {len(manifest['units'])} scene folders into {args.out}: "
                f"{manifest['pack_bytes'] / 2**20:.1f} MiB of the {manifest['budget_bytes'] / 2**20:.1f} MiB "
                "left beside the working tree"
            )
        elif args.command == "check":
            print(
                f"{args.pack} and the working tree: {check(args.pack) / 2**20:.1f} MiB of "
                f"{CARRY_LIMIT_BYTES / 2**20:.0f}"
            )
        else:
            print(f"unpacked into {unpack(args.pack, args.to)}")
    except PackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
