"""Prepare backend onnxruntime ahead of time: the ONNX export and the TensorRT engine.

    python -m dehaze_ros.tools.build_engines [--params-file config/dehaze.yaml] [--checkpoint PATH]
        [--onnx-model PATH] [--device cuda] [--precision fp16] [--max-side 640] [--trt-cache-dir DIR]

The node's configure exports the checkpoint (when ``onnx_model`` is empty) and builds the TensorRT
engine (a minute on a desktop GPU, up to tens of minutes on a Jetson) before it answers again:
its executor is blocked meanwhile. Run this once after installing or changing the model, with the
settings the node will have (``--params-file``: the node's YAML; options override it), and the
node finds both in the caches. It builds through the same engine as the node, so the files it
leaves are exactly those the node looks for (a graph per checkpoint content, an engine per graph
content, precision and profile). Exit 0 when the caches are ready, 2 when the engine refused.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import yaml

from dehaze_ros.engine import DehazeEngine, EngineError, slow_setup_notice
from dehaze_ros.node_config import SPECS, ConfigError, NodeConfig, resolve_model

# What decides which files the node needs: the model, where it comes from, and the TensorRT
# profile's sizes and precision. The rest of the node's parameters changes nothing here.
OPTIONS = (
    "checkpoint",
    "onnx_model",
    "trt_cache_dir",
    "device",
    "precision",
    "max_side",
    "depth_max_side",
)


def node_parameters(path: Path) -> dict:
    """The first node's ``ros__parameters`` of a params file (``/**`` or a node name)."""
    document = yaml.safe_load(path.read_text()) or {}
    for section in document.values():
        if isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict):
            return dict(section["ros__parameters"])
    raise ConfigError(f"{path} has no ros__parameters section")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument(
        "--params-file", type=Path, help="the node's parameters YAML (its defaults otherwise)"
    )
    for name in OPTIONS:
        spec = SPECS[name]
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=type(spec.default),
            default=None,
            help=f"{spec.description} (default: the params file's, else {spec.default!r})",
        )
    args = parser.parse_args(argv)
    try:
        values = node_parameters(args.params_file) if args.params_file else {}
        values = {key: value for key, value in values.items() if key in SPECS}
        values.update(
            {name: getattr(args, name) for name in OPTIONS if getattr(args, name) is not None}
        )
        config = NodeConfig(**{**values, "backend": "onnxruntime"})
        config.validate()
        choice = resolve_model(config)
        if choice.model != "checkpoint":  # no checkpoint to be found: the node would run the DCP
            raise ConfigError(choice.warning or f"model {choice.model} has nothing to build")
        engine_config = config.engine_config(choice)
    except (ConfigError, OSError, yaml.YAMLError, TypeError) as exc:
        print(f"build_engines: {exc}", file=sys.stderr)
        return 2
    notice = slow_setup_notice(engine_config)
    print(
        f"build_engines: {notice or 'no export and no TensorRT build to do (cached, or not used by these settings)'}",
        flush=True,
    )
    started = time.monotonic()
    try:
        # The warm-up runs the sizes the node will run: the export and the TensorRT build happen here.
        engine = DehazeEngine(dataclasses.replace(engine_config, warmup=1))
    except EngineError as exc:
        print(f"build_engines: {exc}", file=sys.stderr)
        return 2
    info = engine.describe()
    engine.close()
    providers = info.get("providers", [])
    print(
        f"build_engines: ready in {time.monotonic() - started:.0f} s: graph {info['checkpoint']}, "
        f"device {info['device']} ({info['precision']}), providers {', '.join(providers)}"
    )
    if "TensorrtExecutionProvider" not in providers:
        print(
            "build_engines: no TensorRT in this session (device cpu, or an onnxruntime without the "
            "TensorRT provider): only the ONNX graph was prepared"
        )
    if info.get("device_warning"):
        print(f"build_engines: warning: {info['device_warning']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
