"""What a training run decides and checks before its first step, apart from the loop itself.

    amp_dtype = resolve_precision(config.train.precision, device)
    model_config = build_model_config(config)
    init_record = load_init_weights(path, model_config, dehazer, depth_net, freeze, log)
    teacher = load_teacher(config.depth.teacher_checkpoint, device)
    check_trainable(config, model_config, loss, depth_available)
    describe_setup(trainer, sources_with_depth)

Every refusal here is a ``ConfigError`` or ``TrainingError`` that says what to change: a run that
cannot learn what was asked should stop before it spends GPU time, not after.
"""

from __future__ import annotations

import contextlib
import os
import random
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from dehaze_ros.checkpoint import build_models, file_sha256, load_checkpoint
from dehaze_ros.devices import DeviceError
from dehaze_ros.devices import resolve_precision as engine_precision
from dehaze_ros.models import ModelConfig, count_parameters, get_model_config
from dehaze_ros.models.config import DEPTH_INPUTS, FINE_TUNE_MAY_CHANGE, depth_inputs_widen
from training.config import ConfigError, TrainingConfig
from training.data import ContinuingSampler, MixtureDataset, worker_init
from training.distributed import Distributed
from training.losses import DualTaskLoss
from training.run_state import TrainingError

if TYPE_CHECKING:
    from training.trainer import Trainer


# --------------------------------------------------------------------------------------------
# Device, precision, seeds


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32.

    The engine's rule (auto: bf16 where the GPU supports it, else fp16; fp32 on the CPU), taken
    from the engine itself so that a checkpoint is deployed in the precision it was validated in.
    bf16 autocast *training* on the CPU is refused: on this project's AVX512-BF16 CPU (torch
    2.13) the first backward pass gave NaN gradients in both networks (the engine's bf16
    inference is fine).
    """
    if device.type != "cuda" and name in ("bf16", "fp16"):
        raise ConfigError(
            f"train.precision={name} needs a CUDA device (bf16 training on the CPU gave NaN "
            f"gradients); on {device} use fp32 or auto"
        )
    try:
        dtype = engine_precision(name, device, training=True)
    except DeviceError as exc:
        raise ConfigError(f"train.precision={name}: {exc}") from exc
    return None if dtype == torch.float32 else dtype


def autocast(device: torch.device, amp_dtype: torch.dtype | None):
    """The mixed-precision context of a forward pass (none in fp32)."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


def recorded_world_size(configured: int, dist: Distributed) -> int:
    """train.world_size of a new run: what torchrun started, refused if the config claims another."""
    if configured not in (1, dist.world_size):
        raise ConfigError(
            f"train.world_size={configured} but this run has {dist.world_size} "
            "process(es): the field is recorded by the trainer from torchrun; leave it out"
        )
    return dist.world_size


@contextlib.contextmanager
def cudnn_autotuning(enabled: bool):
    """cuDNN's per-size algorithm search on or off for a block, as it was afterwards."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def tune_for_device(device: torch.device) -> None:
    if device.type == "cuda":
        # Speed over bit-exactness on the GPU: fixed crop sizes make cuDNN autotuning pay off.
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------------------------
# Networks: their config, starting weights and the depth teacher


def build_model_config(config: TrainingConfig) -> ModelConfig:
    try:
        preset = get_model_config(config.model.preset)
        values = {**preset.to_dict(), **config.model.overrides}
        if config.model.overrides and "name" not in config.model.overrides:
            values["name"] = f"{preset.name}-custom"
        return ModelConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model: {exc}") from exc


def load_init_weights(
    path: str,
    model_config: ModelConfig,
    dehazer: nn.Module,
    depth_net: nn.Module,
    freeze: list[str],
    log: Callable[[str], None],
) -> dict:
    """Load train.init_from's weights into the fresh networks; returns the record of where they
    came from (path, hash, units, their own provenance) that every state and export keeps."""
    ckpt = load_checkpoint(path)
    # Normalised: a checkpoint written before a ModelConfig field existed has the field's default.
    theirs, ours = ModelConfig.from_dict(ckpt.model_config).to_dict(), model_config.to_dict()
    # Fields without weights of their own may change in a fine-tune (e.g. a grey airlight for
    # a network trained with a coloured one); everything else must match.
    changed = sorted(
        key for key in ours if theirs.get(key) != ours[key] and key not in FINE_TUNE_MAY_CHANGE
    )
    if changed:
        raise TrainingError(
            f"train.init_from={path} was trained with model_config "
            f"{ckpt.model_config.get('name')!r} that differs from this run's "
            f"{model_config.name!r} in {', '.join(changed)}; use the same "
            "model.preset/overrides"
        )
    for key in FINE_TUNE_MAY_CHANGE:
        if key != "name" and theirs.get(key) != ours[key]:
            log(f"train.init_from: {key} {theirs.get(key)} in {path}, {ours[key]} in this run")
    widen = theirs["depth_inputs"] != ours["depth_inputs"]
    check_depth_inputs(
        path,
        theirs["depth_inputs"],
        ours["depth_inputs"],
        "depth_net" in freeze,
        ckpt.depth_net_state is not None,
    )
    dehazer_weights, depth_weights = build_models(ckpt)
    dehazer.load_state_dict(dehazer_weights.state_dict())
    if depth_weights is not None and widen:
        # The one widening DEPTH_INPUTS has today (image -> image_transmission); a further entry
        # needs its own loader (this one refuses, by shape, a state it cannot widen).
        depth_net.load_image_only_state(depth_weights.state_dict())
    elif depth_weights is not None:
        depth_net.load_state_dict(depth_weights.state_dict())
    return {
        "path": str(path),
        "sha256": file_sha256(path),
        "depth_units": ckpt.depth_units,
        "depth_range_m": list(ckpt.depth_range_m),
        "provenance": ckpt.provenance,
    }


def check_depth_inputs(
    path: str, theirs: str, ours: str, frozen_depth: bool, has_depth_net: bool
) -> None:
    """Whether init_from's depth network can start this run's: same inputs or widened, and a
    frozen one must exist and read what it was trained to read."""
    widen = theirs != ours
    if widen and not depth_inputs_widen(theirs, ours):
        raise TrainingError(
            f"train.init_from={path} has depth_inputs {theirs!r}; this run's "
            f"{ours!r} would drop an input its depth network was trained "
            f"with (a fine-tune may only widen, along {' -> '.join(DEPTH_INPUTS)})"
        )
    if frozen_depth and not has_depth_net:
        raise TrainingError(
            f"train.freeze=[depth_net] keeps the depth network of train.init_from={path}, "
            "but that checkpoint has none: it would stay randomly initialised"
        )
    if frozen_depth and widen:
        raise TrainingError(
            f"train.freeze=[depth_net] with depth_inputs {ours!r} and "
            f"train.init_from={path} (depth_inputs {theirs!r}): a frozen network never "
            "learns to read the transmission"
        )


def load_teacher(path: str, device: torch.device) -> nn.Module | None:
    """depth.teacher_checkpoint's depth network, frozen on ``device`` (None without one)."""
    if not path:
        return None
    ckpt = load_checkpoint(path)
    if ckpt.depth_units != "meters":
        raise TrainingError(
            f"depth.teacher_checkpoint={path} gives {ckpt.depth_units} depth; a "
            "teacher must give metres (depth units 'meters')"
        )
    if ckpt.depth_net_state is None:
        raise TrainingError(
            f"depth.teacher_checkpoint={path} has no depth network; export one "
            "from a run trained with metric depth"
        )
    if ckpt.model_config.get("canonical_focal_px"):
        # Its output is canonical depth of the image it sees: metres only with that image's
        # focal length, which the targets here do not carry through the teacher.
        raise TrainingError(
            f"depth.teacher_checkpoint={path} predicts canonical-camera depth "
            f"(canonical_focal_px {ckpt.model_config['canonical_focal_px']}); a teacher "
            "must predict plain metres (a checkpoint with canonical_focal_px 0)"
        )
    _, depth_net = build_models(ckpt)
    # The teacher sees the clear image: the depth of the ideal image, as the paper compares.
    return depth_net.to(device).eval().requires_grad_(False)


def check_trainable(
    config: TrainingConfig, model_config: ModelConfig, loss: DualTaskLoss, depth_available: bool
) -> None:
    """Refuse a run whose losses, data and frozen networks leave something that cannot learn."""
    if "dehazer" in config.train.freeze and not (depth_available and loss.trains_depth_net()):
        raise TrainingError(
            "train.freeze=[dehazer] leaves only the depth network to train, and it has "
            "nothing to learn from: no training source has depth (nor a "
            "depth.teacher_checkpoint), or loss.depth_weighted and depth_unweighted are 0"
        )
    if loss.supervises_haze() and model_config.head == "residual":
        raise TrainingError(
            "loss.transmission, optical_depth and airlight supervise a physics head's t and A; "
            f"model {model_config.name} has the residual head (J = I + f(I)), "
            "which predicts neither: set them to 0 or use head asm / asm_dcp"
        )


def check_resumed_model_config(stored: dict | None, model_config: ModelConfig) -> None:
    """A resumed run must rebuild the networks it saved: refuse a preset that changed since."""
    if stored is None:
        return
    stored = ModelConfig.from_dict(stored).to_dict()  # fields added since take their defaults
    current = model_config.to_dict()
    if stored != current:
        # The run's config names a preset; a preset changed since the run started (its head,
        # its canonical camera) would otherwise resume in other units or fail on shapes.
        changed = sorted(
            key for key in set(stored) | set(current) if stored.get(key) != current.get(key)
        )
        raise TrainingError(
            f"this run was trained with another model config than its preset gives now "
            f"(differs in {', '.join(changed)}); continue it with "
            "model.overrides holding those values, or start a new run with "
            "train.init_from=<its exported checkpoint>"
        )


# --------------------------------------------------------------------------------------------
# Data loading


def loader_workers(configured: int, device: torch.device, dist: Distributed) -> int:
    if configured >= 0:
        return configured
    if device.type != "cuda":
        return 0  # CPU runs are smoke tests: worker start-up would cost more than it saves
    # The machine's cores are shared by the processes torchrun started on it.
    return max(2, min(12, ((os.cpu_count() or 4) - 2) // dist.local_world_size))


def training_loader(
    dataset: MixtureDataset,
    batch_size: int,
    workers: int,
    samples_seen: int,
    device: torch.device,
    dist: Distributed,
) -> DataLoader:
    """Batches from the data position ``samples_seen`` on, this rank's share of them."""
    workers = loader_workers(workers, device, dist)
    extra = {}
    if workers:
        # Spawned, not forked: by now this process runs threads (torch's and OpenCV's pools,
        # pin-memory, TensorBoard), and a fork can copy a lock that one of them held into the
        # child, where no thread will ever release it. Forked workers stalled that way on the
        # GPU machine; spawned ones start clean, once (persistent), for a few seconds each.
        extra = {
            "persistent_workers": True,
            "prefetch_factor": 4,
            "worker_init_fn": worker_init,
            "multiprocessing_context": "spawn",
        }
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ContinuingSampler(samples_seen, batch_size, dist.rank, dist.world_size),
        num_workers=workers,
        pin_memory=device.type == "cuda",
        # Its own generator: creating the loader must not draw from the global
        # torch RNG, or a resumed run would diverge from an uninterrupted one.
        generator=torch.Generator(),
        **extra,
    )


# --------------------------------------------------------------------------------------------
# The setup report at the start of a run


def describe_setup(trainer: Trainer, sources_with_depth: list[str]) -> None:
    """What this run will do, in its log: device, model, data, and what depth supervision it has."""
    cfg, log = trainer.config, trainer.log
    log(f"run folder: {trainer.run_dir}")
    log(
        f"device {trainer.device}, precision {trainer.amp_dtype or torch.float32}, schedule "
        f"{cfg.train.schedule}, {cfg.train.steps} steps of batch {cfg.data.batch_size} at "
        f"{cfg.data.crop}x{cfg.data.crop}"
    )
    if trainer.dist.launched:
        world = trainer.dist.world_size
        log(
            f"torchrun: {world} processes, global batch {world} x {cfg.data.batch_size} = "
            f"{world * cfg.data.batch_size}; learning rates as configured (not scaled)"
        )
    log(
        f"model {trainer.model_config.name}: dehazer {count_parameters(trainer.dehazer):,} parameters, "
        f"depth net {count_parameters(trainer.depth_net):,}"
    )
    if cfg.train.freeze:
        log(
            f"frozen (train.freeze): {', '.join(cfg.train.freeze)} keeps the weights of {cfg.train.init_from}"
        )
    for source in trainer.train_sources + trainer.val_sources:
        log("  " + source.describe())
    log(
        f"validation: {len(trainer.val_samples)} images "
        f"({sum(s.has_depth for s in trainer.val_samples)} with depth)"
    )
    log(depth_supervision_line(trainer, sources_with_depth))
    if not trainer.val_samples:
        log(
            "WARNING: no validation images (no source holds out val scenes): best.pt follows "
            "the last validation instead of being chosen on held-out data"
        )


def depth_supervision_line(trainer: Trainer, sources_with_depth: list[str]) -> str:
    if not trainer.depth_available:
        return (
            "depth supervision OFF: no training source has depth and depth.teacher_checkpoint "
            "is empty; loss.depth_perception, branch_depth, depth_weighted and depth_unweighted "
            "are ignored and only the dehazer learns"
        )
    without = [s.name for s in trainer.train_sources if not s.has_depth]
    note = ""
    if without:
        note = (
            f"; {', '.join(without)}: depth from the teacher"
            if trainer.teacher is not None
            else f"; {', '.join(without)}: no depth, depth terms skip their samples"
        )
    return f"depth supervision: metric depth from {', '.join(sources_with_depth) or 'the teacher'}{note}"
