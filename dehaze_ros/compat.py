"""Bridges to PyTorch APIs newer than the oldest torch the runtime accepts (requirements.txt: 2.1).

NVIDIA's Jetson wheels lag PyPI by several releases, and replacing them with a PyPI wheel loses
the GPU (README.md, "Install"): the runtime keeps working on the torch that is there.
"""

from __future__ import annotations

import torch


def exporting_probe(compiler=None):
    """torch.compiler.is_exporting (torch >= 2.7). Before it, is_compiling (2.3), which is true under
    torch.export too: the callers only choose a shape-generic path then, correct in both cases. A
    torch older still cannot run our ONNX export at all (onnx_export needs torch.export.Dim.AUTO),
    so nothing is exporting there."""
    compiler = getattr(torch, "compiler", None) if compiler is None else compiler
    for name in ("is_exporting", "is_compiling"):
        probe = getattr(compiler, name, None)
        if probe is not None:
            return probe
    return lambda: False


is_exporting = exporting_probe()
