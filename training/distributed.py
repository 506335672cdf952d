"""Data-parallel training under ``torchrun``: which process this is, and the few collectives the
trainer needs.

    torchrun --nproc_per_node 4 -m training.train --config config/train/diacmpn_rt.yaml

torchrun starts one process per device and sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``;
that is how a process knows it is one of several. A plain ``python -m training.train`` has none
of them and gets ``Distributed()``: one process, no process group, and every method below a
no-op, so single-process training runs exactly the code it ran before.

The backend follows the device: NCCL on CUDA (each process on ``cuda:LOCAL_RANK``), gloo on the
CPU. The stream of training samples is index-addressed (``training.data.mixture``), so sharding
it needs no communication at all: each rank computes its own indices (``ContinuingSampler``).
"""

from __future__ import annotations

import datetime
import inspect
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import nn

from dehaze_ros.devices import resolve_device
from training.config import ConfigError

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@dataclass
class Distributed:
    """This process's place in a data-parallel job (defaults: the only process)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1  # processes on this machine (torchrun's LOCAL_WORLD_SIZE)
    launched: bool = False  # started by torchrun (the variables are set)
    device: torch.device | None = field(default=None, repr=False)  # set by start()

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> "Distributed":
        environ = os.environ if environ is None else environ
        present = [name for name in TORCHRUN_VARIABLES if name in environ]
        if not present:
            return cls()
        if len(present) != len(TORCHRUN_VARIABLES):
            missing = sorted(set(TORCHRUN_VARIABLES) - set(present))
            raise ConfigError(
                f"{', '.join(present)} set but {', '.join(missing)} not: start several "
                "processes with torchrun (it sets all three), or unset them for one process"
            )
        try:
            rank, local_rank, world_size = (int(environ[name]) for name in TORCHRUN_VARIABLES)
            local_world_size = int(environ.get("LOCAL_WORLD_SIZE", world_size))
        except ValueError as exc:
            raise ConfigError(f"torchrun variables must be integers: {exc}") from None
        return cls(
            rank=rank,
            local_rank=local_rank,
            world_size=world_size,
            local_world_size=local_world_size,
            launched=True,
        )

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that validates and writes the run folder."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.launched and dist.is_available() and dist.is_initialized()

    def start(self, device_name: str) -> torch.device:
        """The training device of this process; under torchrun also the process group.

        ``train.device`` auto/cuda becomes ``cuda:LOCAL_RANK``: one process per GPU, as torchrun
        counts them. An explicit ``cuda:N`` would put every process on the same GPU.
        """
        device = resolve_device(device_name)
        if not self.launched:
            self.device = device
            return device
        if device.type == "cuda":
            if device_name not in ("auto", "cuda"):
                raise ConfigError(
                    f"train.device={device_name} under torchrun: each process uses "
                    "cuda:LOCAL_RANK; set train.device=cuda (or auto) and choose GPUs "
                    "with CUDA_VISIBLE_DEVICES"
                )
            if self.local_rank >= torch.cuda.device_count():
                raise ConfigError(
                    f"LOCAL_RANK {self.local_rank} but only {torch.cuda.device_count()} "
                    "CUDA device(s) here: --nproc_per_node must not exceed the GPUs per machine"
                )
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            # A long validation on rank 0 keeps the others waiting in a barrier: give the
            # collectives more than the default 10 minutes before they count as hung.
            kwargs: dict[str, Any] = {"timeout": datetime.timedelta(minutes=60)}
            if device.type == "cuda":
                kwargs["device_id"] = device  # binds NCCL to this GPU (no guessing in barrier())
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", **kwargs)
        self.device = device
        return device

    def stop(self) -> None:
        if self.active:
            dist.destroy_process_group()

    # ---- collectives (no-ops for a single process)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def any_rank(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag, true if it is true on any rank: decisions every rank must take alike
        (stop now, skip a step) from inputs that differ per rank (a signal, a clock, a batch)."""
        if not self.active:
            return tuple(bool(flag) for flag in flags)
        values = torch.tensor([float(bool(flag)) for flag in flags], device=self.device)
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return tuple(bool(value) for value in values.tolist())

    def broadcast_object(self, value: Any) -> Any:
        """Rank 0's value on every rank (a run folder named after rank 0's clock)."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    @torch.no_grad()
    def broadcast_buffers(self, modules: Iterable[nn.Module]) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank.

        Each rank normalises its own batch, so running statistics drift apart while parameters
        stay identical; copying rank 0's after every step keeps the whole state, EMA included,
        the same on every rank (rank 0's is the one last.pt keeps). One flat broadcast per dtype.
        """
        if not self.active or self.world_size == 1:
            return
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for module in modules:
            for buffer in module.buffers():
                by_dtype.setdefault(buffer.dtype, []).append(buffer)
        for buffers in by_dtype.values():
            flat = torch.cat([buffer.reshape(-1) for buffer in buffers])
            dist.broadcast(flat, src=0)
            for buffer, value in zip(buffers, flat.split([buffer.numel() for buffer in buffers])):
                buffer.copy_(value.view_as(buffer))

    def wrap(self, module: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
        """``module`` in DistributedDataParallel under torchrun, else itself.

        DDP broadcasts rank 0's parameters and buffers here, so every rank starts from the same
        weights. Buffers are not synchronised before every forward (``forward_sync_buffers``):
        the trainer does it once per step, after the optimisers (``broadcast_buffers`` above).
        """
        if not self.launched:
            return module
        device_ids = (
            [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        )
        return nn.parallel.DistributedDataParallel(
            module,
            device_ids=device_ids,
            **no_forward_buffer_sync(),
            find_unused_parameters=find_unused_parameters,
        )


def no_forward_buffer_sync(
    ddp_class: type = nn.parallel.DistributedDataParallel,
) -> dict[str, bool]:
    """DistributedDataParallel's keyword that turns off the buffer broadcast before each forward.

    torch 2.13 named it ``forward_sync_buffers`` and deprecated ``broadcast_buffers`` (a warning);
    every older torch, the GPU machines' 2.11 and NVIDIA's wheels included, knows only
    ``broadcast_buffers``, which also skips the buffers' broadcast at construction: harmless here,
    every rank builds the same seeded (or init_from) buffers, and the trainer broadcasts rank 0's
    after every step.
    """
    if "forward_sync_buffers" in inspect.signature(ddp_class.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


class DehazerWithDepth(nn.Module):
    """D's ``forward_with_depth`` as ``forward``: DistributedDataParallel hooks ``forward`` only
    (it prepares the gradient all-reduce there), and the dehazing step needs the branch depth."""

    def __init__(self, dehazer: nn.Module):
        super().__init__()
        self.dehazer = dehazer

    def forward(
        self, hazy: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(dehazed, branch depth, transmission or None, airlight or None): the transmission feeds
        a depth network built with ``depth_inputs: image_transmission``; both are supervised by
        ``loss.transmission``, ``loss.optical_depth`` and ``loss.airlight``."""
        out = self.dehazer.forward_physics(hazy)
        return (
            out.dehazed,
            self.dehazer.depth_branch.metres_from_log_depth(out.branch_log_depth),
            out.transmission,
            out.airlight,
        )
