"""Training throughput on this machine: images/s of full alternating steps, and the data share.

    python -m training.throughput --config config/train/diacmpn_rt.yaml --threads 2 --precision fp32
    python -m training.throughput --config config/train/diacmpn_rt.yaml --threads 1 --autocast bf16

Builds the run's Trainer (no run folder is written), takes ``--warmup`` steps, then times
``--steps`` steps and the time spent waiting for data. ``--autocast bf16`` forces CPU bf16
autocast past the trainer's refusal, to measure it (training refuses it: NaN gradients at the
first step on this project's CPU; the printed losses show whether this run stayed finite).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time

import torch

from training.config import load_config
from training.trainer import Trainer


def measure(
    config_path: str, overrides: list[str], threads: int, autocast: str, steps: int, warmup: int
) -> dict:
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as run_dir:
        config = load_config(
            config_path, [f"train.out_dir={run_dir}", "train.device=cpu", *overrides]
        )
        trainer = Trainer(config, f"{run_dir}/run", log=lambda message: None)
        if autocast == "bf16":
            trainer.amp_dtype = torch.bfloat16
        batches = iter(trainer._loader())
        for _ in range(warmup):
            trainer.train_step(next(batches))
        data_s, finite = 0.0, True
        start = time.perf_counter()
        for _ in range(steps):
            mark = time.perf_counter()
            batch = next(batches)
            data_s += time.perf_counter() - mark
            out = trainer.train_step(batch)
            finite &= all(
                math.isfinite(value) for key, value in out.losses.items() if "grad_norm" not in key
            )
        elapsed = time.perf_counter() - start
        trainer.close()
    images = steps * config.data.batch_size
    return {
        "images_per_s": images / elapsed,
        "data_share": data_s / elapsed,
        "finite_losses": finite,
        "batch": config.data.batch_size,
        "crop": config.data.crop,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.throughput",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--config", required=True)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--autocast", choices=("none", "bf16"), default="none")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    result = measure(
        args.config, args.overrides, args.threads, args.autocast, args.steps, args.warmup
    )
    print(
        f"threads {args.threads}, autocast {args.autocast}, batch {result['batch']} x {result['crop']} px: "
        f"{result['images_per_s']:.1f} images/s, data wait {result['data_share']:.0%}, "
        f"losses {'finite' if result['finite_losses'] else 'NOT FINITE'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
