"""Device and precision rules, in one place for the engine, the node and training.

    device    = resolve_device("auto")                 # cuda when present, else cpu; cuda:N checked
    dtype     = resolve_precision("auto", device)      # torch.float32 / bfloat16 / float16

This module imports torch only inside the functions that need it: the node and the training
config validate their parameters with it before torch is loaded.

Choices: ``DEVICE_HELP`` (auto | cpu | cuda | cuda:N) and ``PRECISIONS``. ``validate_device`` and
``validate_precision`` check the spelling only (no torch call, so a config is checked before any
weights or devices are touched); ``resolve_*`` check against this machine and raise
:class:`DeviceError` with what to use instead.

Precision rules (``training=True``: training's, where the CPU is always fp32):

* CUDA: ``auto`` is bf16 where the GPU supports it, else fp16 (the rule of training's AMP, so a
  checkpoint is deployed in the precision it was validated in); fp32, fp16, bf16 on request.
* CPU: fp16 is refused (no fast CPU kernels). bf16 needs native bf16 instructions (x86
  AVX512-BF16 or AMX-BF16, Arm BF16): elsewhere oneDNN emulates it, slower than fp32, and it is
  refused. ``auto`` on the CPU is ``CPU_AUTO_PRECISION`` where bf16 is native (bf16: measured to
  hold quality, within 0.1 dB PSNR of fp32 on every dev set, docs/performance.md "bf16 on the CPU"), else fp32.
* Training on the CPU: fp32, also for ``auto``; bf16 and fp16 are refused: bf16 autocast
  training on this project's AVX512-BF16 CPU (torch 2.13) gave NaN gradients in the first
  backward pass (bf16 inference is fine).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DEVICE_HELP = "auto | cpu | cuda | cuda:N"
# What ``auto`` means on a CPU with native bf16 (never on one without): "fp32" or "bf16".
# bf16: the shipped checkpoint through the engine at max_side 320 (training.evaluate --precision
# bf16 vs fp32, 2026-11-30) changed PSNR by -0.014 (SOTS indoor), -0.007 (RESIDE outdoor), +0.001
# (O-HAZE), +0.002 dB (Middlebury Pipes, Shelves, Teddy; depth AbsRel 1.284 -> 1.283): inside the
# 0.1 dB allowed on every dev set; and faster on this project's AVX512-BF16 CPU (docs/performance.md "Speed").
CPU_AUTO_PRECISION = "bf16"
# CPU feature flags (as /proc/cpuinfo spells them) that give native bf16 arithmetic.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
_DEVICE_PATTERN = re.compile(r"auto|cpu|cuda|cuda:\d+")
# Signs of an NVIDIA GPU that need no torch: the driver's first device node (desktops, servers,
# containers given a GPU), a Jetson's integrated GPU (its nvhost / nvgpu nodes, the L4T release
# file JetPack writes), and nvidia-smi on the PATH.
GPU_EVIDENCE_PATHS = ("/dev/nvidia0", "/dev/nvhost-gpu", "/dev/nvgpu", "/etc/nv_tegra_release")
INSTALL_SECTION = "README.md, 'Install on a GPU or a Jetson'"


class DeviceError(RuntimeError):
    """The requested device or precision does not exist or is not supported on this machine."""


def validate_device(name: str) -> None:
    """Spelling only: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``. ValueError otherwise."""
    if not isinstance(name, str) or not _DEVICE_PATTERN.fullmatch(name):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")


def validate_precision(name: str) -> None:
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {name!r}")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available, else cpu; an explicit CUDA device must exist."""
    import torch

    validate_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {name!r} requested but CUDA is not available "
                "(torch.cuda.is_available() is False); use device cpu or auto"
            )
        index = int(name[5:]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {name!r} requested but only {torch.cuda.device_count()} "
                "CUDA device(s) exist"
            )
    return torch.device(name)


def visible_gpu(paths: tuple[str, ...] = GPU_EVIDENCE_PATHS, which=shutil.which) -> str:
    """What shows that this machine has an NVIDIA GPU, in words ("/dev/nvidia0 exists"), or "".

    Independent of torch and onnxruntime on purpose: it is the evidence against which their
    ``auto`` choice of the CPU is checked (a CPU-only wheel installed over a CUDA or Jetson one
    runs, slowly, without a word).
    """
    for path in paths:
        if os.path.exists(path):
            return f"{path} exists"
    smi = which("nvidia-smi")
    return f"nvidia-smi is at {smi}" if smi else ""


def auto_cpu_warning(requested: str, chosen: str, gpu_evidence: str, torch_cuda: str | None) -> str:
    """Why ``device: auto`` running torch on the CPU is probably a broken install, or "".

    ``chosen``: the device type auto gave; ``gpu_evidence``: ``visible_gpu()``'s answer (tests pass
    their own); ``torch_cuda``: ``torch.version.cuda`` (None for a CPU-only build). An explicit
    ``cpu`` is a choice and gets no warning.
    """
    if requested != "auto" or chosen != "cpu" or not gpu_evidence:
        return ""
    if torch_cuda:
        reason = (
            f"this torch (built for CUDA {torch_cuda}) cannot reach it: torch.cuda.is_available() is "
            "False (driver too old, CUDA libraries missing, or CUDA_VISIBLE_DEVICES hides it)"
        )
    else:
        reason = (
            "this torch is a CPU-only build (a PyPI or CPU wheel installed over the CUDA or Jetson "
            "one?)"
        )
    return (
        f"device auto runs on the CPU although an NVIDIA GPU is visible ({gpu_evidence}): {reason}; "
        f"install PyTorch built for this GPU ({INSTALL_SECTION}), or set device cpu to keep the CPU"
    )


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo text (x86 ``flags``, Arm ``Features``); empty
    where the file does not exist (macOS, Windows)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_supports_bf16(flags: frozenset[str] | None = None, onednn_bf16: bool | None = None) -> bool:
    """Native bf16 on this CPU: a bf16 instruction flag AND oneDNN's bf16 kernels.

    Both inputs default to this machine (``cpu_flags()``; torch's mkldnn probe). oneDNN alone
    is not enough: it reports bf16 on any AVX512BW CPU, where bf16 is emulated and slower than
    fp32. Where /proc/cpuinfo is missing (``flags`` empty) oneDNN's answer is taken.
    """
    if onednn_bf16 is None:
        import torch

        try:
            onednn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            onednn_bf16 = False
    if flags is None:
        flags = cpu_flags()
    return onednn_bf16 and (not flags or bool(flags & NATIVE_BF16_FLAGS))


def resolve_precision(
    name: str, device: torch.device, cpu_bf16: bool | None = None, training: bool = False
) -> torch.dtype:
    """The compute dtype for ``name`` on ``device`` (see the module docstring for the rules).

    ``cpu_bf16``: whether this CPU has native bf16 (default: ``cpu_supports_bf16()``).
    """
    import torch

    validate_precision(name)
    if device.type != "cuda" and training:
        if name in ("bf16", "fp16"):
            raise DeviceError(
                f"precision {name} needs a CUDA device for training (bf16 training on the "
                f"CPU gave NaN gradients); on {device} use fp32 or auto"
            )
        return torch.float32
    if device.type != "cuda":
        if name == "fp16":
            raise DeviceError(
                f"precision fp16 needs a CUDA device; on {device} use fp32, bf16 or auto"
            )
        if name == "fp32":
            return torch.float32
        if cpu_bf16 is None:
            cpu_bf16 = cpu_supports_bf16()
        if name == "bf16":
            if not cpu_bf16:
                raise DeviceError(
                    "precision bf16 on the CPU needs native bf16 support (AVX512-BF16, AMX "
                    "or Arm BF16), which this CPU lacks; use fp32 or auto"
                )
            return torch.bfloat16
        return dtype(CPU_AUTO_PRECISION) if cpu_bf16 else torch.float32
    if name == "auto":
        # Native bf16 from Ampere (compute capability 8) on, on the device asked for.
        # torch.cuda.is_bf16_supported() also says yes where bf16 is only emulated (T4, V100,
        # Xavier), where fp16 is the fast choice.
        return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
    return dtype(name)


def dtype(name: str) -> torch.dtype:
    """ "fp32" | "fp16" | "bf16" -> the torch dtype."""
    import torch

    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name not in dtypes:
        raise ValueError(f"precision must be one of {tuple(dtypes)} here, got {name!r}")
    return dtypes[name]


def precision_name(value: torch.dtype) -> str:
    """torch.bfloat16 -> "bf16" (the spelling of the configuration)."""
    for name in ("fp32", "fp16", "bf16"):
        if dtype(name) == value:
            return name
    raise ValueError(f"no precision name for {value}")
