"""Where one frame's time goes: torch.profiler over ``DehazeEngine.process``, per operator.

    python -m dehaze_ros.tools.profile_engine [--size 640x480] [--frames 10] [--threads 1]
                                              [--precision fp32] [--backend torch] [--top 15]

Prints two markdown tables: the engine's own stage timings (median over the frames) and the
profiler's operators by self CPU time, with their share of the profiled total. The operator table
is what tells overhead (copies, padding, cat) from arithmetic (convolutions); the stage table what
happens outside the backend (resizing, recovery, depth fusion). On a shared machine the shares are
more stable than the milliseconds: compare two profiles by share, timings only from the same run.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch.profiler import ProfilerActivity, profile

from dehaze_ros.engine import DEFAULT_CHECKPOINT, DehazeEngine, EngineConfig
from dehaze_ros.tools.benchmark import hazy_frame, parse_sizes


def stage_table(timings: list[dict[str, float]]) -> list[str]:
    rows = ["| stage | median ms |", "|---|---:|"]
    for stage in timings[0]:
        rows.append(f"| {stage} | {statistics.median(t.get(stage, 0.0) for t in timings):.1f} |")
    return rows


def operator_table(prof, frames: int, top: int) -> list[str]:
    events = prof.key_averages()
    total = sum(event.self_cpu_time_total for event in events) or 1.0
    ordered = sorted(events, key=lambda event: event.self_cpu_time_total, reverse=True)
    rows = ["| operator | self ms / frame | share | calls / frame |", "|---|---:|---:|---:|"]
    for event in ordered[:top]:
        rows.append(
            f"| {event.key} | {event.self_cpu_time_total / 1e3 / frames:.1f} | "
            f"{100.0 * event.self_cpu_time_total / total:.0f}% | {event.count // frames} |"
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=parse_sizes, default=parse_sizes("640x480"))
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--precision", default="fp32")
    # torch: torch.profiler sees its operators; OpenVINO's graph is one opaque call to it.
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--max-side", type=int, default=320)
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    width, height = args.size[0]
    engine = DehazeEngine(
        EngineConfig(
            checkpoint=args.checkpoint,
            backend=args.backend,
            device="cpu",
            precision=args.precision,
            max_side=args.max_side,
            num_threads=args.threads,
        )
    )
    image = hazy_frame(width, height)
    engine.process(image)  # warm-up at this size (oneDNN's kernel choice), outside the profile
    timings = []
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.frames):
            timings.append(engine.process(image).timings_ms)
    print(
        f"# {width}x{height}, max_side {args.max_side}, {args.backend} {args.precision}, "
        f"threads {torch.get_num_threads()}, {args.frames} frames"
    )
    print("\n".join(stage_table(timings)))
    print()
    print("\n".join(operator_table(prof, args.frames, args.top)))


if __name__ == "__main__":
    main()
