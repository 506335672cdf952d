"""DIACMPN networks (dehazer D, depth net E) from a checkpoint, run by PyTorch."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from dehaze_ros.backends.base import Backend, BackendError, BackendOutput
from dehaze_ros.checkpoint import build_models, load_checkpoint
from dehaze_ros.devices import (
    auto_cpu_warning,
    precision_name,
    resolve_device,
    resolve_precision,
    visible_gpu,
)


class TorchBackend(Backend):
    def __init__(self, checkpoint_path: str | Path, device: str = "auto", precision: str = "auto"):
        self.device = resolve_device(device)
        # auto on the CPU with a GPU in the machine: a CPU wheel over the CUDA one, said in
        # /diagnostics rather than found out from the frame rate.
        self.device_warning = auto_cpu_warning(
            device, self.device.type, visible_gpu(), torch.version.cuda
        )
        self.dtype = resolve_precision(precision, self.device)
        checkpoint = load_checkpoint(checkpoint_path, map_location="cpu")
        self.dehazer, self.depth_net = build_models(checkpoint)
        # Keep the metadata only: the state dicts would be a second copy of every weight.
        self.checkpoint = dataclasses.replace(checkpoint, dehazer_state={}, depth_net_state=None)
        self.dehazer.to(self.device)
        if self.depth_net is not None:
            self.depth_net.to(self.device)
        self.name = str(checkpoint.model_config.get("name", "custom"))
        self.depth_units = checkpoint.depth_units
        self.depth_range = tuple(checkpoint.depth_range_m)
        self.canonical_focal_px = float(checkpoint.model_config.get("canonical_focal_px", 0.0))

    def describe(self) -> dict:
        description = {
            "model": self.name,
            "backend": "torch",
            "checkpoint": self.checkpoint.path,
            "device": str(self.device),
            "precision": precision_name(self.dtype),
        }
        if self.device_warning:
            description["device_warning"] = self.device_warning
        return description

    def close(self) -> None:
        self.dehazer = self.depth_net = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _sync(self) -> None:
        # Per-stage timings are only honest when queued CUDA work has finished.
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _autocast(self):
        if self.dtype != torch.float32:
            return torch.autocast(self.device.type, dtype=self.dtype)
        return contextlib.nullcontext()

    def run(self, rgb: np.ndarray, want_dehazed: bool, want_depth: bool) -> BackendOutput:
        if self.dehazer is None:
            raise BackendError("torch backend is closed")
        timings: dict[str, float] = {}
        with torch.inference_mode(), self._autocast():
            mark = time.perf_counter()
            hazy = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1)[None]
            out = self.dehazer.forward_physics(hazy)
            dehazed = out.dehazed.float().clamp_(0.0, 1.0)
            branch_depth = None
            if self.depth_net is None and want_depth:
                branch_depth = self.dehazer.depth_branch.metres_from_log_depth(out.branch_log_depth)
            self._sync()
            timings["dehaze"] = (time.perf_counter() - mark) * 1e3
            depth = None
            if want_depth:
                mark = time.perf_counter()
                # Deployment depth is E(D(I)): the depth net sees the dehazed image, as in training.
                depth = (
                    branch_depth
                    if self.depth_net is None
                    else self.depth_net(dehazed, out.transmission)
                )
                depth = depth[0, 0].float().cpu().numpy()
                timings["depth"] = (time.perf_counter() - mark) * 1e3
            transmission = airlight = None
            if out.transmission is not None:
                transmission = out.transmission[0, 0].float().cpu().numpy()
                airlight = out.airlight.float().reshape(3).cpu().numpy()
            dehazed_np = dehazed[0].permute(1, 2, 0).cpu().numpy() if want_dehazed else None
        # On the CPU these arrays share the tensors' memory: copies only where the engine keeps them.
        return BackendOutput(
            np.ascontiguousarray(dehazed_np) if dehazed_np is not None else None,
            transmission,
            airlight,
            depth,
            timings,
        )
