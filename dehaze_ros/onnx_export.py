"""One ONNX graph of a checkpoint's deployable networks, with the checkpoint's metadata inside.

    python -m training.export CHECKPOINT --onnx model.onnx           # the command line
    summary = export_onnx("dehaze_ros/checkpoints/default.pt", "model.onnx")
    metadata = OnnxMetadata.from_props(session.get_modelmeta().custom_metadata_map, "model.onnx")

The graph is the torch backend's path from the hazy image to its outputs: the dehazer D
(``forward_physics``), its image clamped to [0, 1], the depth net E on that image (and on t where
``depth_inputs`` says so), or D's depth branch for checkpoints without E.

    input   hazy          float32 1 x 3 x H x W, RGB in [0, 1]; H, W dynamic, each >= min_side
    output  dehazed       float32 1 x 3 x H x W, RGB clamped to [0, 1]
            depth         float32 1 x 1 x H x W in the metadata's depth_units
            transmission  float32 1 x 1 x H x W in (0, 1]     physics heads (asm, asm_dcp) only
            airlight      float32 1 x 3, RGB in [0, 1]         physics heads only

Focal length: for a canonical-camera checkpoint (``canonical_focal_px`` > 0) ``depth`` is the
network's canonical depth, metres for a camera whose focal length is canonical_focal_px pixels
at the graph's input size. The conversion d = d_c * f / f_c stays OUTSIDE the graph: f is the
focal length of the image the graph ran on, known only at run time (CameraInfo, or the engine's
assumed field of view), and the engine applies it for every backend alike
(``dehaze_ros.canonical_camera``). The graph stays a function of the image alone, and the metadata
carries canonical_focal_px.

metadata_props (all strings; JSON where structured): ``dehaze_ros.format`` ("dehaze_ros.onnx"),
``dehaze_ros.format_version``, ``model_config``, ``io``, ``depth_units``, ``depth_range_m``,
``canonical_focal_px``, ``min_side``, ``outputs``, ``provenance``, ``metrics``,
``source_checkpoint``, ``source_sha256``, ``exporter``.

Exporter: ``torch.onnx.export(dynamo=True)`` (torch.export, then onnxscript's translation; the
TorchScript exporter is deprecated and traces sizes as constants). Dynamic sizes need the models'
size-dependent choices to stay symbolic (``models.blocks.pad_to_multiple``,
``models.dcp_prior``); the parity tests in test/test_onnx.py check sizes that are and are not
multiples of the padding. The batch is fixed at 1 (the engine runs one frame at a time).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from dehaze_ros import dcp
from dehaze_ros.backends.base import GRAPH_INPUT_NAME
from dehaze_ros.checkpoint import (
    Checkpoint,
    atomic_write,
    build_models,
    file_sha256,
    load_checkpoint,
)

ONNX_FORMAT = "dehaze_ros.onnx"
ONNX_FORMAT_VERSION = 1
DEFAULT_OPSET = 18
PHYSICS_OUTPUTS = ("dehazed", "depth", "transmission", "airlight")
INSTALL_HINT = (
    "pip install 'dehaze_ros[onnx]' (or: pip install onnx onnxscript onnxruntime; on an NVIDIA GPU "
    "'dehaze_ros[onnx-gpu]', onnxruntime-gpu instead of onnxruntime)"
)


class OnnxExportError(RuntimeError):
    """The ONNX export could not run or produced a graph that failed its check."""


class OnnxModelError(ValueError):
    """An .onnx file is not a dehaze_ros graph, or its metadata is incomplete."""


class DeployableNetworks(nn.Module):
    """D then E as one module: ``forward(hazy) -> (dehazed, depth[, transmission, airlight])``."""

    def __init__(self, dehazer: nn.Module, depth_net: nn.Module | None):
        super().__init__()
        self.dehazer = dehazer
        self.depth_net = depth_net

    def forward(self, hazy: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.dehazer.forward_physics(hazy)
        dehazed = out.dehazed.float().clamp(0.0, 1.0)
        if self.depth_net is None:
            depth = self.dehazer.depth_branch.metres_from_log_depth(out.branch_log_depth)
        else:
            # Deployment depth is E(D(I)) on the clamped image, as in the torch backend.
            depth = self.depth_net(dehazed, out.transmission)
        if out.transmission is None:
            return dehazed, depth
        return dehazed, depth, out.transmission, out.airlight.reshape(-1, 3)


def min_side(dehazer: nn.Module, depth_net: nn.Module | None) -> int:
    """The smallest height or width the graph accepts: every padding must be a reflection (a
    side at least the padding multiple) and the DCP patch must fit (its shrinking for tiny images
    is not in the graph)."""
    multiples = [dehazer.size_multiple, dehazer.depth_branch.size_multiple]
    if depth_net is not None:
        multiples.append(depth_net.size_multiple)
    return max(*multiples, dcp.PATCH)


@dataclass(frozen=True)
class OnnxMetadata:
    """The checkpoint's metadata as it travels in an exported graph."""

    model_config: dict
    depth_units: str
    depth_range_m: tuple[float, float]
    canonical_focal_px: float
    min_side: int
    outputs: tuple[str, ...]
    io: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    source_sha256: str = ""

    @property
    def name(self) -> str:
        return str(self.model_config.get("name", "custom"))

    def to_props(self, source: str, exporter: str) -> dict[str, str]:
        return {
            "dehaze_ros.format": ONNX_FORMAT,
            "dehaze_ros.format_version": str(ONNX_FORMAT_VERSION),
            "model_config": json.dumps(self.model_config, sort_keys=True),
            "io": json.dumps(self.io, sort_keys=True),
            "depth_units": self.depth_units,
            "depth_range_m": json.dumps(list(self.depth_range_m)),
            "canonical_focal_px": repr(float(self.canonical_focal_px)),
            "min_side": str(self.min_side),
            "outputs": json.dumps(list(self.outputs)),
            "provenance": json.dumps(self.provenance, sort_keys=True, default=str),
            "metrics": json.dumps(self.metrics, sort_keys=True),
            "source_checkpoint": source,
            "source_sha256": self.source_sha256,
            "exporter": exporter,
        }

    @classmethod
    def from_props(cls, props: dict[str, str], path: str | os.PathLike) -> OnnxMetadata:
        """Parse metadata_props (``session.get_modelmeta().custom_metadata_map``); OnnxModelError
        naming ``path`` and what is wrong."""
        found = props.get("dehaze_ros.format")
        if found != ONNX_FORMAT:
            raise OnnxModelError(
                f"{path} is not a dehaze_ros ONNX graph (metadata dehaze_ros.format: {found!r}); "
                "export one with `python -m training.export CHECKPOINT --onnx OUT.onnx`"
            )
        version = props.get("dehaze_ros.format_version")
        if version != str(ONNX_FORMAT_VERSION):
            raise OnnxModelError(
                f"{path} has dehaze_ros ONNX format version {version!r}; this "
                f"dehaze_ros reads version {ONNX_FORMAT_VERSION}: export it again"
            )
        try:
            near, far = (float(v) for v in json.loads(props["depth_range_m"]))
            metadata = cls(
                model_config=json.loads(props["model_config"]),
                depth_units=props["depth_units"],
                depth_range_m=(near, far),
                canonical_focal_px=float(props["canonical_focal_px"]),
                min_side=int(props["min_side"]),
                outputs=tuple(json.loads(props["outputs"])),
                io=json.loads(props.get("io", "{}")),
                provenance=json.loads(props.get("provenance", "{}")),
                metrics=json.loads(props.get("metrics", "{}")),
                source_sha256=props.get("source_sha256", ""),
            )
        except KeyError as exc:
            raise OnnxModelError(f"{path}: metadata lacks {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise OnnxModelError(f"{path}: metadata is malformed: {exc}") from None
        if metadata.outputs[:2] != ("dehazed", "depth"):
            raise OnnxModelError(
                f"{path}: outputs must start with dehazed, depth; got {metadata.outputs}"
            )
        return metadata

    def as_checkpoint(self, path: str | os.PathLike) -> Checkpoint:
        """A weightless Checkpoint: code reading ``engine.checkpoint`` works for either backend."""
        return Checkpoint(
            path=str(path),
            model_config=self.model_config,
            dehazer_state={},
            depth_net_state=None,
            depth_units=self.depth_units,
            depth_range_m=self.depth_range_m,
            io=self.io,
            provenance=self.provenance,
            metrics=self.metrics,
        )


def _require_exporter() -> None:
    missing = []
    for module in ("onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise OnnxExportError(
            f"ONNX export needs {' and '.join(missing)}, which are not installed; " + INSTALL_HINT
        )


def check_written_opset(proto, opset: int) -> None:
    """OnnxExportError unless ``proto`` is in ``opset``. torch writes opset 18 and converts down
    with onnx's version converter; where that has no adapter (Pad 18 -> 17, met by our graphs) it
    keeps 18 with only a logged traceback. A graph asked for as 17 that is 18 inside would fail
    later, in TensorRT 8.6's parser on a robot: it is refused here."""
    written = next(
        (entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), None
    )
    if written != opset:
        raise OnnxExportError(
            f"opset {opset} was asked for but the exporter wrote opset {written} (onnx's "
            f"version converter could not convert every operator); export with --opset "
            f"{written}: TensorRT reads it from version 10 on (docs/onnx.md)"
        )


def _export_program(
    module: torch.nn.Module,
    example: torch.Tensor,
    smallest: int,
    outputs: tuple,
    opset: int,
    checkpoint_path: str | os.PathLike,
):
    """torch.onnx.export (dynamo) of ``module`` with symbolic image sizes >= ``smallest``."""
    # AUTO, not named Dims: the window attention's reshapes leave guards (view-versus-copy
    # choices on strides) that torch.export cannot prove for all sizes and named Dims refuse;
    # they do not change what the graph computes (ONNX Reshape has no strides), and the sizes
    # stay symbolic (test_onnx checks sizes that are and are not multiples of the padding).
    dims = {
        GRAPH_INPUT_NAME: {
            2: torch.export.Dim.AUTO(min=smallest),
            3: torch.export.Dim.AUTO(min=smallest),
        }
    }
    # torch's exporter logs a warning per torchvision op it cannot register; we use none of them.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        # torch.export's deprecation chatter about its own internals says nothing to the user.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                dynamic_shapes=dims,
                input_names=[GRAPH_INPUT_NAME],
                output_names=list(outputs),
                opset_version=opset,
                verbose=False,
                external_data=False,
            )
        except Exception as exc:  # torch.export / translation errors: all mean "no graph"
            raise OnnxExportError(f"exporting {checkpoint_path} to ONNX failed: {exc}") from exc
    return program


def _metadata(checkpoint, checkpoint_path: str | os.PathLike, smallest: int, outputs: tuple):
    """The graph's metadata: the checkpoint's model, depth, I/O, provenance and metrics."""
    return OnnxMetadata(
        model_config=dict(checkpoint.model_config),
        depth_units=checkpoint.depth_units,
        depth_range_m=tuple(checkpoint.depth_range_m),
        canonical_focal_px=float(checkpoint.model_config.get("canonical_focal_px", 0.0)),
        min_side=smallest,
        outputs=outputs,
        io={
            **checkpoint.io,
            "graph": {
                "input": f"{GRAPH_INPUT_NAME}: float32 1x3xHxW RGB [0,1], H,W >= {smallest}",
                "outputs": list(outputs),
                "dehazed": "clamped to [0,1]",
                "depth": "depth_units; canonical camera if canonical_focal_px > 0: "
                "metres = depth * f / canonical_focal_px, f of the input image",
            },
        },
        provenance=dict(checkpoint.provenance),
        metrics=dict(checkpoint.metrics),
        source_sha256=file_sha256(checkpoint_path),
    )


def export_onnx(
    checkpoint_path: str | os.PathLike,
    output: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    example_size: tuple[int, int] = (240, 320),
) -> dict:
    """Write the graph of ``checkpoint_path`` (a deployable checkpoint) to ``output`` atomically,
    with the metadata; returns a summary. OnnxExportError / CheckpointError on failure."""
    _require_exporter()
    import onnx

    if opset < 17:
        raise ValueError(
            f"opset must be >= 17 (the exporter writes opset 18 and converts), got {opset}"
        )
    checkpoint = load_checkpoint(checkpoint_path, map_location="cpu")
    dehazer, depth_net = build_models(checkpoint)
    module = DeployableNetworks(dehazer, depth_net).eval()
    smallest = min_side(dehazer, depth_net)
    physics = dehazer.head != "residual"
    outputs = PHYSICS_OUTPUTS if physics else PHYSICS_OUTPUTS[:2]
    height, width = (max(side, smallest) for side in example_size)
    example = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    program = _export_program(module, example, smallest, outputs, opset, checkpoint_path)
    proto = program.model_proto
    check_written_opset(proto, opset)
    metadata = _metadata(checkpoint, checkpoint_path, smallest, outputs)
    exporter = f"torch {torch.__version__}, torch.onnx.export(dynamo=True), opset {opset}"
    onnx.helper.set_model_props(
        proto, metadata.to_props(str(Path(checkpoint_path).resolve()), exporter)
    )
    try:
        onnx.checker.check_model(proto, full_check=False)
    except onnx.checker.ValidationError as exc:
        raise OnnxExportError(
            f"the exported graph of {checkpoint_path} failed onnx.checker: {exc}"
        ) from exc
    # One file (no external data): the graphs are a few MB. Never half-written (atomic_write).
    atomic_write(output, lambda file: file.write(proto.SerializeToString()))
    return {
        "output": str(output),
        "model": metadata.name,
        "outputs": list(outputs),
        "opset": opset,
        "min_side": smallest,
        "bytes": Path(output).stat().st_size,
    }
