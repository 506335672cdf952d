"""Turn a run's best.pt (or last.pt) into the deployable checkpoint the engine and the node load.

    python -m training.export runs/diacmpn_rt_20250101-120000/best.pt -o dehaze_ros/checkpoints/default.pt
    python -m training.export RUN_DIR/best.pt -o out.pt --fp16        # half the file size
    python -m training.export CHECKPOINT --onnx model.onnx            # one ONNX graph (the onnx extra)

``--onnx`` takes a deployable checkpoint, or a run's best.pt / last.pt (exported to ``-o`` first
when given, else to a temporary file): ``dehaze_ros.onnx_export`` says what the graph holds.

Writes the EMA weights (``--raw`` for the optimiser's weights), no optimiser state, and the full
metadata: model config, training config, data (scenes per split), steps, validation metrics, the
git commit that trained and the one that exported, dates. The file loads with
``dehaze_ros.checkpoint.load_checkpoint`` (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path


from dehaze_ros.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from training.run_state import TrainingError, git_commit, load_training_file


def _maybe_half(state: dict, fp16: bool) -> dict:
    if not fp16:
        return state
    # Storage only: the engine loads fp16 tensors into fp32 parameters (load_state_dict copies
    # and converts), so precision at run time is still the engine's choice.
    return {
        key: value.half() if value.is_floating_point() else value for key, value in state.items()
    }


def export_checkpoint(
    training_file: str | Path, output: str | Path, use_ema: bool = True, fp16: bool = False
) -> dict:
    """Write the deployable checkpoint; returns a short summary."""
    state = load_training_file(training_file)
    provenance = dict(state.get("provenance") or {})
    config = provenance.get("config") or {}
    depth_cfg = config.get("depth", {})
    depth_supervised = bool(provenance.get("depth_supervised", True))
    prefix = "ema_" if use_ema else ""
    best = state.get("best") or {}
    # Metrics only of a validation of these very weights: last.pt exported after the best step
    # must not carry the best step's numbers.
    step = int(state["step"])
    validated = next(
        (
            record
            for record in (best, state.get("last_validation") or {})
            if record and int(record.get("step", -1)) == step
        ),
        {},
    )
    if not use_ema:  # validation scores the EMA networks, not the raw ones exported here
        validated = {}
    provenance.update(
        {
            "source_file": str(Path(training_file).resolve()),
            "weights": "ema" if use_ema else "raw",
            "ema_decay": (config.get("train") or {}).get("ema_decay"),
            "steps": step,
            "samples_seen": int(state.get("samples_seen", 0)),
            "training_minutes": round(float(state.get("elapsed_s", 0.0)) / 60.0, 2),
            "trained_until": state.get("saved_at", ""),
            "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
            "export_git_commit": git_commit(),
            "storage_dtype": "float16" if fp16 else "float32",
            "selected_on": (
                f"validation {best.get('metric', '')} at step {best.get('step', '')}"
                if best and best is validated
                else f"none: the {'EMA' if use_ema else 'raw (never validated)'} weights of step {step}"
                + (f", best validation was step {best.get('step')}" if best else "")
            ),
        }
    )
    metrics = {
        f"val_{key}": float(value) for key, value in (validated.get("metrics") or {}).items()
    }
    save_checkpoint(
        output,
        model_config=provenance["model_config"],
        dehazer_state=_maybe_half(state[f"{prefix}dehazer"], fp16),
        depth_net_state=_maybe_half(state[f"{prefix}depth_net"], fp16),
        # Without depth supervision E never learnt metres: say so rather than promise them.
        depth_units="meters" if depth_supervised else "relative",
        depth_range_m=_depth_range(provenance, depth_cfg),
        provenance=provenance,
        metrics=metrics,
    )
    load_checkpoint(output)  # read back: a file the engine cannot load must not look exported
    return {
        "output": str(output),
        "steps": int(state["step"]),
        "weights": provenance["weights"],
        "depth_units": "meters" if depth_supervised else "relative",
        "metrics": metrics,
        "bytes": Path(output).stat().st_size,
    }


def _depth_range(provenance: dict, depth_cfg: dict) -> tuple[float, float]:
    """The range the depth network was trained for: a frozen one (train.freeze) keeps the range of
    the checkpoint it came from, else the run's depth.min_m / max_m."""
    frozen = "depth_net" in ((provenance.get("config") or {}).get("train") or {}).get("freeze", [])
    inherited = (provenance.get("init_from") or {}).get("depth_range_m")
    if frozen and inherited:
        return float(inherited[0]), float(inherited[1])
    return float(depth_cfg.get("min_m", 0.1)), float(depth_cfg.get("max_m", 80.0))


def _is_deployable_checkpoint(path: str | Path) -> bool:
    try:
        load_checkpoint(path)
    except CheckpointError:
        return False
    return True


def _export_onnx(checkpoint: str | Path, onnx_output: str, opset: int) -> None:
    from dehaze_ros.onnx_export import export_onnx

    summary = export_onnx(checkpoint, onnx_output, opset=opset)
    print(
        f"wrote {summary['output']} ({summary['bytes'] / 1e6:.2f} MB, {summary['model']}, opset "
        f"{summary['opset']}, outputs {', '.join(summary['outputs'])}, height and width >= {summary['min_side']})"
    )


def main(argv: list[str] | None = None) -> int:
    from dehaze_ros.onnx_export import DEFAULT_OPSET, OnnxExportError

    parser = argparse.ArgumentParser(
        prog="python -m training.export", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "training_file",
        help="RUN_DIR/best.pt (or last.pt); with --onnx also a deployable checkpoint",
    )
    parser.add_argument("-o", "--output", help="deployable checkpoint to write (.pt)")
    parser.add_argument(
        "--onnx", metavar="OUT.onnx", help="ONNX graph of the deployable networks to write"
    )
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (>= 17)")
    parser.add_argument(
        "--fp16", action="store_true", help="store weights as float16 (half the size)"
    )
    parser.add_argument(
        "--raw", action="store_true", help="export the raw weights instead of the EMA weights"
    )
    args = parser.parse_args(argv)
    if not args.output and not args.onnx:
        parser.error("nothing to write: give -o OUT.pt, --onnx OUT.onnx, or both")
    try:
        if args.onnx and not args.output and _is_deployable_checkpoint(args.training_file):
            _export_onnx(args.training_file, args.onnx, args.opset)
            return 0
        with tempfile.TemporaryDirectory() as folder:
            output = args.output or str(Path(folder) / "model.pt")
            summary = export_checkpoint(
                args.training_file, output, use_ema=not args.raw, fp16=args.fp16
            )
            if args.output:
                metrics = ", ".join(
                    f"{k} {v:.4g}" for k, v in summary["metrics"].items() if "/" not in k
                )
                print(
                    f"wrote {summary['output']} ({summary['bytes'] / 1e6:.2f} MB, {summary['weights']} weights "
                    f"after {summary['steps']} steps, depth in {summary['depth_units']})"
                    f"{'; ' + metrics if metrics else ''}"
                )
            if args.onnx:
                _export_onnx(output, args.onnx, args.opset)
    except (TrainingError, ValueError, KeyError, OnnxExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
