"""The weighted mixture of sources, as an index-addressed, infinite, resumable stream.

Sample ``i`` is a pure function of (seed, i): its generator is ``default_rng([seed, i])``, which
picks the source, the item, the crop, the haze and the flips. Hence

* the stream does not depend on the number of DataLoader workers or their scheduling;
* the data position of a run is one integer (the next sample index), and resuming from it
  continues the very same stream;
* no global random state is touched, in the main process or in workers.
"""

from __future__ import annotations

import dataclasses
import signal
from typing import Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from training.data.common import DataSource, Sample


def sample_to_tensors(sample: Sample) -> dict[str, torch.Tensor]:
    height, width = sample.hazy.shape[:2]
    transmission = (
        np.full((height, width), np.nan, np.float32)
        if sample.transmission is None
        else sample.transmission
    )
    airlight = np.full(3, np.nan, np.float32) if sample.airlight is None else sample.airlight
    return {
        "hazy": torch.from_numpy(np.ascontiguousarray(sample.hazy.transpose(2, 0, 1))),
        "clear": torch.from_numpy(np.ascontiguousarray(sample.clear.transpose(2, 0, 1))),
        "depth": torch.from_numpy(np.ascontiguousarray(sample.depth_m[None])),
        "has_depth": torch.tensor(bool(sample.has_depth)),
        "focal_px": torch.tensor(float(sample.focal_px), dtype=torch.float32),
        "metric_depth": torch.tensor(bool(sample.metric_depth)),
        # The synthetic haze's truth; NaN where the sample's haze is not known (loss.transmission).
        "transmission": torch.from_numpy(
            np.ascontiguousarray(transmission[None], dtype=np.float32)
        ),
        "airlight": torch.from_numpy(np.ascontiguousarray(airlight, dtype=np.float32)),
    }


def random_flips(sample: Sample, rng: np.random.Generator, flips: bool, rot90: bool) -> Sample:
    """Horizontal flips always keep a scene plausible. Vertical flips and 90-degree turns (the
    paper's augmentation) put the floor on top, which a depth network learns from: opt-in."""
    # Every per-pixel array moves together (the transmission too, where the sample has one).
    arrays = [sample.hazy, sample.clear, sample.depth_m]
    if sample.transmission is not None:
        arrays.append(sample.transmission)
    if flips and rng.random() < 0.5:
        arrays = [a[:, ::-1] for a in arrays]
    if rot90:
        if rng.random() < 0.5:
            arrays = [a[::-1] for a in arrays]
        turns = int(rng.integers(4))
        arrays = [np.rot90(a, turns) for a in arrays]
    arrays = [np.ascontiguousarray(a) for a in arrays]
    transmission = arrays[3] if sample.transmission is not None else None
    # A flip keeps the focal length; a 90-degree turn swaps fx and fy, equal for square pixels.
    return dataclasses.replace(
        sample, hazy=arrays[0], clear=arrays[1], depth_m=arrays[2], transmission=transmission
    )


class MixtureDataset(Dataset):
    def __init__(
        self,
        sources: list[DataSource],
        weights: list[float],
        crop: int,
        seed: int,
        flips: bool = True,
        rot90: bool = False,
    ):
        if not sources:
            raise ValueError("a mixture needs at least one source")
        if len(weights) != len(sources) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(
                f"mixture weights must be >= 0 with a positive sum, one per source, got {weights}"
            )
        self.sources = sources
        self.probabilities = np.asarray(weights, dtype=np.float64) / float(sum(weights))
        self.crop, self.seed, self.flips, self.rot90 = crop, seed, flips, rot90

    def sample(self, index: int) -> tuple[Sample, int]:
        rng = np.random.default_rng([self.seed, index])
        which = int(rng.choice(len(self.sources), p=self.probabilities))
        sample = self.sources[which].train_sample(rng, self.crop)
        return random_flips(sample, rng, self.flips, self.rot90), which

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample, which = self.sample(int(index))
        tensors = sample_to_tensors(sample)
        tensors["source"] = torch.tensor(which)
        return tensors


class ContinuingSampler(Sampler[int]):
    """Indices start, start+1, ... without end; ``start`` is the run's data position.

    With several processes (``world_size`` > 1) the same stream is dealt out in per-process
    batches of ``batch_size``: at data position P, rank r takes P + r*b ... P + r*b + b - 1 and
    the position moves on by b * world_size. Every index is used once, by one rank, and the
    ranks' batches together are the batch a single process of batch b * world_size would take.
    """

    def __init__(self, start: int = 0, batch_size: int = 1, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size or batch_size < 1:
            raise ValueError(
                f"need 0 <= rank < world_size and batch_size >= 1, got rank {rank}, "
                f"world_size {world_size}, batch_size {batch_size}"
            )
        self.start, self.batch_size, self.rank, self.world_size = (
            int(start),
            batch_size,
            rank,
            world_size,
        )

    def __iter__(self) -> Iterator[int]:
        position = self.start + self.rank * self.batch_size
        while True:
            yield from range(position, position + self.batch_size)
            position += self.batch_size * self.world_size


def worker_init(_worker_id: int) -> None:
    # Ctrl-C reaches the whole process group, and torchrun passes Ctrl-C or SIGTERM on to its
    # workers' whole process groups. Workers ignore both, so the main process can finish the
    # current step and write last.pt while the workers are still there to be shut down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # One thread per worker: the workers are the parallelism; nested thread pools only contend.
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
