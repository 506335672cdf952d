"""Training data: sources (reside, rgbd, procedural, rosbag2) and their weighted mixture.

    SOURCES["rgbd"]                                       # (RgbdConfig, RgbdSource): kind -> its classes
    sources = build_sources(config.data, "train")        # one DataSource per source with weight > 0
    dataset = build_training_dataset(config.data, seed)   # MixtureDataset, index-addressed
    val = build_validation_samples(config.data, seed)     # fixed list of whole images

Every source splits by scene (an image, a Middlebury scene, a frame sequence, a bag): validation
and test scenes are never seen in training, and nothing is read from ``data.test_roots``.
"""

from __future__ import annotations

from pathlib import Path

from training.config import DataConfig, SourceConfig, resolve_path
from training.data.common import DataSource, FolderSourceConfig, Sample, is_excluded
from training.data.io import DataError
from training.data.mixture import ContinuingSampler, MixtureDataset, sample_to_tensors, worker_init
from training.data.procedural import ProceduralConfig, ProceduralSource
from training.data.reside import ResideConfig, ResideSource
from training.data.rgbd import RgbdConfig, RgbdSource
from training.data.rosbag2 import Rosbag2Config, Rosbag2Source

__all__ = [
    "DataError",
    "DataSource",
    "Sample",
    "MixtureDataset",
    "ContinuingSampler",
    "worker_init",
    "sample_to_tensors",
    "SOURCES",
    "open_source",
    "build_source",
    "build_sources",
    "build_training_dataset",
    "build_validation_samples",
    "check_not_test_data",
]

# Every kind of data source: its config dataclass (the keys of data.sources.<name>) and its class.
# Training (config loading, build_source) and training.evaluate both look kinds up here; a new
# kind is a module with these two classes and one line here.
SOURCES: dict[str, tuple[type[SourceConfig], type[DataSource]]] = {
    "reside": (ResideConfig, ResideSource),
    "rgbd": (RgbdConfig, RgbdSource),
    "procedural": (ProceduralConfig, ProceduralSource),
    "rosbag2": (Rosbag2Config, Rosbag2Source),
}


def check_not_test_data(path: Path, data: DataConfig, source_name: str, exclude: list[str]) -> None:
    """Refuse a source that reads a test set: the best checkpoint must never be chosen on test data."""
    resolved = path.resolve()
    for test_root in data.test_roots:
        test_path = resolve_path(data.root, test_root).resolve()
        if resolved == test_path or test_path in resolved.parents:
            raise DataError(
                f"data source '{source_name}' reads {path}, which is inside the test data "
                f"{test_path} (data.test_roots): test sets are for training.evaluate only. "
                "Point the source elsewhere, or remove that entry from data.test_roots if "
                "it is not test data"
            )
        if resolved in test_path.parents:
            relative = test_path.relative_to(resolved).as_posix()
            if not is_excluded(relative, exclude):
                raise DataError(
                    f"data source '{source_name}' reads {path}, which contains the test data "
                    f"{test_path}; add '{relative}' to data.sources.{source_name}.exclude"
                )


def open_source(
    name: str, config: SourceConfig, split: str, root: Path | None, cache_items: int = 0
) -> DataSource:
    """The ``split`` of a source of ``config.kind``; ``root``: its folder (None for procedural)."""
    if config.kind not in SOURCES:
        raise DataError(
            f"data source '{name}': unknown kind {config.kind!r}; kinds: {', '.join(SOURCES)}"
        )
    return SOURCES[config.kind][1](name, config, split, root, cache_items)


def build_source(name: str, source: SourceConfig, split: str, data: DataConfig) -> DataSource:
    root = None
    if isinstance(source, FolderSourceConfig):
        root = resolve_path(data.root, source.path)
        check_not_test_data(root, data, name, source.exclude)
    return open_source(name, source, split, root, data.cache_items)


def build_sources(data: DataConfig, split: str) -> list[DataSource]:
    """The split of every source with a positive weight (in config order)."""
    return [
        build_source(name, source, split, data)
        for name, source in data.sources.items()
        if source.weight > 0
    ]


def build_training_dataset(
    data: DataConfig, seed: int, sources: list[DataSource] | None = None
) -> MixtureDataset:
    sources = build_sources(data, "train") if sources is None else sources
    for source in sources:
        if len(source) == 0:
            held_out = source.config.val_scenes + source.config.test_scenes
            reason = (
                f"every scene is held out (val/test: {', '.join(held_out)})"
                if held_out
                else "the folder has no usable items, or val_fraction took them all"
            )
            raise DataError(
                f"data source '{source.name}' has no training items: {reason}; hold out "
                "fewer scenes or give the source weight 0"
            )
    weights = [data.sources[source.name].weight for source in sources]
    return MixtureDataset(sources, weights, data.crop, seed, data.flips, data.rot90)


def build_validation_samples(
    data: DataConfig, seed: int = 0, sources: list[DataSource] | None = None
) -> list[Sample]:
    """Whole validation images (up to ``val_max_images`` per source, spread over its items)."""
    sources = build_sources(data, "val") if sources is None else sources
    samples: list[Sample] = []
    for source in sources:
        count = len(source)
        if count == 0:
            continue
        chosen = min(count, data.val_max_images)
        indices = sorted({round(i * (count - 1) / max(chosen - 1, 1)) for i in range(chosen)})
        samples.extend(source.eval_sample(index, data.val_max_side, seed) for index in indices)
    return samples
