"""Data-parallel training with real processes: torchrun, the gloo backend, the CPU.

The tests start ``python -m torch.distributed.run --standalone --nproc_per_node 2`` on this file:
run as a script (``worker`` below) it trains like ``training.train.main`` does and then leaves
each rank's whole training state in a file, so the test can compare the ranks. The command line
itself (``-m training.train`` under torchrun) is tested with SIGTERM. Tiny smoke-config runs of a
few steps, one thread per process: seconds each on a shared 2-core machine.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from state_compare import assert_identical

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "config" / "train" / "smoke.yaml"
STEPS = 6
BATCH = 2  # per process: the 2-process runs have a global batch of 4
# Checkpoints and validations inside the run, so rank 0's writing and the barriers take part.
RUN = [
    f"train.steps={STEPS}",
    f"data.batch_size={BATCH}",
    "train.checkpoint_every=2",
    "train.val_every=3",
    "train.log_every=1",
    "train.image_every=4",
]
TORCHRUN_TIMEOUT_S = 180

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),  # conftest.py: why (children: OMP_NUM_THREADS=1)
    pytest.mark.skipif(
        not torch.distributed.is_available(), reason="torch built without distributed"
    ),
]


# --------------------------------------------------------------------------------------------
# The worker: one rank, started by torchrun


def worker(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dump", required=True)
    parser.add_argument("--config")
    parser.add_argument("--resume")
    parser.add_argument("--run-dir")
    parser.add_argument("--signal-rank-1-at-step", type=int, default=0)
    parser.add_argument("--without-batchnorm", action="store_true")
    parser.add_argument("--count-all-reduces", action="store_true")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import training.trainer
    from training.distributed import Distributed
    from training.train import prepare

    if args.without_batchnorm:
        # Patched where the Trainer looks it up (training/trainer.py builds the networks).
        build = training.trainer.build_dehazer
        training.trainer.build_dehazer = lambda model_config: without_batchnorm(build(model_config))

    dist = Distributed.from_environment()
    trainer = prepare(args.config, args.overrides, args.resume, args.run_dir, dist=dist)
    all_reduces = []
    if args.count_all_reduces:
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        def counting(network):
            def hook(state, bucket):
                # In D's step D is in train mode, in E's step E is.
                step = "dehazer step" if trainer.dehazer.training else "depth step"
                all_reduces.append((network, step))
                return allreduce_hook(state, bucket)  # what DDP does without a hook

            return hook

        trainer.D.forward.register_comm_hook(None, counting("dehazer"))
        trainer.E.forward.register_comm_hook(None, counting("depth_net"))

    def on_step(trainer):
        if dist.rank == 1 and trainer.step == args.signal_rank_1_at_step:
            os.kill(os.getpid(), signal.SIGINT)  # the real signal, to one rank only

    summary = trainer.fit(on_step=on_step)
    trainer.close()
    state = comparable(trainer.state_dict(full=True))
    torch.save(
        {
            "summary": summary,
            "state": state,
            "world_size": dist.world_size,
            "all_reduces": all_reduces,
        },
        Path(args.dump) / f"rank{dist.rank}.pt",
    )
    dist.stop()
    return 0


def without_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """D with each BatchNorm replaced by a per-image norm (GroupNorm of one group).

    BatchNorm is the one part of the networks whose result depends on how a batch is split over
    processes (each rank normalises its own share); without it, 2 processes of batch b must
    compute what 1 process of batch 2b computes, up to the order of floating-point sums.
    """
    for name, child in module.named_children():
        if isinstance(child, torch.nn.BatchNorm2d):
            setattr(module, name, torch.nn.GroupNorm(1, child.num_features))
        else:
            without_batchnorm(child)
    return module


def comparable(state: dict) -> dict:
    """What must agree between ranks and runs (not the clock, the folder or the RNG)."""
    return {
        key: state[key]
        for key in (
            "step",
            "samples_seen",
            "dehazer",
            "depth_net",
            "ema_dehazer",
            "ema_depth_net",
            "optimizer_dehazer",
            "optimizer_depth",
            "scheduler_dehazer",
            "scheduler_depth",
            "scaler_dehazer",
            "scaler_depth",
        )
    }


# --------------------------------------------------------------------------------------------
# Helpers of the tests


def child_environment() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def torchrun(*arguments: str, processes: int = 2) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        *arguments,
    ]


def run_workers(dump: Path, *worker_args: str) -> subprocess.CompletedProcess:
    dump.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        torchrun(__file__, "--dump", str(dump), *worker_args),
        cwd=REPO,
        env=child_environment(),
        capture_output=True,
        text=True,
        timeout=TORCHRUN_TIMEOUT_S,
    )


def ranks(dump: Path) -> list[dict]:
    return [torch.load(dump / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]


def last_state(run: Path) -> dict:
    from training.run_state import load_training_file

    return load_training_file(run / "last.pt")


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def checked(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (
        f"status {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """A 2-process run of STEPS steps, uninterrupted; each rank's final state in dump/."""
    base = tmp_path_factory.mktemp("straight")
    checked(
        run_workers(base / "dump", "--config", str(SMOKE), "--run-dir", str(base / "run"), *RUN)
    )
    return base


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """The same 2-process run, with SIGINT sent to rank 1 alone after step 2."""
    base = tmp_path_factory.mktemp("interrupted")
    result = run_workers(
        base / "dump",
        "--config",
        str(SMOKE),
        "--run-dir",
        str(base / "run"),
        "--signal-rank-1-at-step=2",
        *RUN,
    )
    return base, result


# --------------------------------------------------------------------------------------------
# The tests


def test_the_sampler_deals_every_global_index_once_per_step():
    from training.data import ContinuingSampler

    def batches(rank, world_size, start=7, batch=3, count=3):
        indices = iter(ContinuingSampler(start, batch, rank, world_size))
        return [[next(indices) for _ in range(batch)] for _ in range(count)]

    # rank r takes P + r*b ... at data position P, which moves on by b * W per step
    assert batches(0, 2) == [[7, 8, 9], [13, 14, 15], [19, 20, 21]]
    assert batches(1, 2) == [[10, 11, 12], [16, 17, 18], [22, 23, 24]]
    # together the ranks take exactly the batches one process of batch b * W takes
    for step, (first, second) in enumerate(zip(batches(0, 2), batches(1, 2))):
        assert first + second == batches(0, 1, batch=6)[step]
    with pytest.raises(ValueError, match="rank < world_size"):
        ContinuingSampler(0, 2, rank=2, world_size=2)


def test_one_process_without_torchrun_sets_up_nothing(monkeypatch):
    from training.distributed import Distributed

    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    alone = Distributed.from_environment()
    assert not alone.launched and alone.world_size == 1 and alone.is_main
    assert alone.start("cpu") == torch.device("cpu") and not torch.distributed.is_initialized()
    assert alone.any_rank(True, False) == (True, False)
    with pytest.raises(ValueError, match="torchrun"):
        Distributed.from_environment({"RANK": "0"})


def test_two_ranks_end_identical_and_rank_0_alone_writes_the_run_folder(straight):
    first, second = ranks(straight / "dump")
    assert first["world_size"] == second["world_size"] == 2
    # Bit for bit: weights, BatchNorm statistics, EMA, optimiser moments, schedulers, scalers
    assert_identical(first["state"], second["state"])
    assert first["state"]["step"] == STEPS and first["state"]["samples_seen"] == STEPS * BATCH * 2
    run = straight / "run"
    assert [path.relative_to(straight) for path in straight.rglob("last.pt")] == [
        Path("run/last.pt")
    ]
    assert len(list((run / "tb").iterdir())) == 1  # one TensorBoard writer
    assert [entry["step"] for entry in jsonl(run / "metrics.jsonl")] == [
        3,
        6,
    ]  # validated once per step
    last = last_state(run)
    assert_identical(comparable(last), first["state"])  # last.pt is rank 0's = everyone's
    assert last["world_size"] == 2
    from training.config import load_config

    assert load_config(run / "config.yaml").train.world_size == 2  # the resolved config records it


@pytest.fixture(scope="module")
def straight_without_batchnorm(tmp_path_factory):
    base = tmp_path_factory.mktemp("straight_without_batchnorm")
    checked(
        run_workers(
            base / "dump",
            "--config",
            str(SMOKE),
            "--run-dir",
            str(base / "run"),
            "--without-batchnorm",
            "--count-all-reduces",
            *RUN,
        )
    )
    return base


def test_each_network_is_all_reduced_in_its_own_step_only(straight_without_batchnorm):
    # In D's step gradients flow through the frozen E into D: E takes none and sends none.
    for rank in ranks(straight_without_batchnorm / "dump"):
        calls = rank["all_reduces"]
        assert {
            network: calls.count((network, step)) >= STEPS
            for network, step in (("dehazer", "dehazer step"), ("depth_net", "depth step"))
        } == {"dehazer": True, "depth_net": True}
        assert set(calls) == {("dehazer", "dehazer step"), ("depth_net", "depth step")}


def test_two_processes_compute_what_one_process_computes_with_the_global_batch(
    straight_without_batchnorm, tmp_path, monkeypatch
):
    import training.trainer
    from training.config import load_config

    build = training.trainer.build_dehazer
    monkeypatch.setattr(
        training.trainer,
        "build_dehazer",
        lambda model_config: without_batchnorm(build(model_config)),
    )
    config = load_config(SMOKE, [*RUN, f"data.batch_size={2 * BATCH}", f"train.out_dir={tmp_path}"])
    single = training.trainer.Trainer(config, tmp_path / "single", log=lambda message: None)
    single.fit()
    single.close()
    two = ranks(straight_without_batchnorm / "dump")[0]["state"]
    assert single.samples_seen == two["samples_seen"] == STEPS * 2 * BATCH
    # The tolerance: sums are taken in another order (per rank, then all-reduced), and where a
    # weight's true gradient is zero (the biases in front of D's instance norms) Adam turns that
    # rounding noise into steps of up to the learning rate (1e-3). Measured: mean difference
    # 4e-9, 7 of 248k weights of D above 1e-5 (largest 1.3e-4), E within 1.3e-7; with the grey
    # airlight of the presets (airlight_chroma 0) 74 of 248k (largest 2.2e-4, in the structure
    # branch's decoder and the scale fusion). Wrong data (one rank's samples only, or other crops)
    # moves the mean by 1e-3 and 95 % of weights above 1e-5: a share of 1e-3 keeps that apart.
    for name, module in (
        ("dehazer", single.dehazer),
        ("depth_net", single.depth_net),
        ("ema_dehazer", single.D.ema.module),
        ("ema_depth_net", single.E.ema.module),
    ):
        reference = module.state_dict()
        difference = torch.cat(
            [
                (reference[key] - two[name][key]).abs().flatten()
                for key in reference
                if reference[key].is_floating_point()
            ]
        )
        assert difference.max() <= 1e-3, f"{name}: {difference.max():.3g}"
        assert difference.mean() <= 1e-7, f"{name}: mean {difference.mean():.3g}"
        assert (difference > 1e-5).float().mean() <= 1e-3, (
            f"{name}: {(difference > 1e-5).sum()} weights"
        )


def test_a_signal_to_one_rank_stops_both_and_the_resumed_run_continues_exactly(
    straight, interrupted
):
    base, result = interrupted
    checked(result)
    stopped = ranks(base / "dump")  # both ranks stopped after the same step
    assert [rank["summary"]["step"] for rank in stopped] == [2, 2]
    assert all(rank["summary"]["reason"].startswith("stopped") for rank in stopped)
    assert_identical(stopped[0]["state"], stopped[1]["state"])
    run = base / "run"
    assert last_state(run)["step"] == 2 and last_state(run)["samples_seen"] == 2 * 2 * BATCH
    resumed_run = base / "resumed"
    shutil.copytree(run, resumed_run)
    checked(run_workers(base / "resumed_dump", "--resume", str(resumed_run)))
    # Continued where it stopped: the same state as the run that was never interrupted
    finished = ranks(base / "resumed_dump")
    assert_identical(finished[0]["state"], ranks(straight / "dump")[0]["state"])
    assert_identical(finished[1]["state"], finished[0]["state"])
    assert jsonl(resumed_run / "resumes.jsonl") == [
        {**jsonl(resumed_run / "resumes.jsonl")[0], "step": 2, "world_size": 2, "samples_seen": 8}
    ]
    assert jsonl(resumed_run / "metrics.jsonl") == jsonl(straight / "run" / "metrics.jsonl")


def test_a_two_process_run_resumes_with_one_process_from_its_global_data_position(
    interrupted, tmp_path
):
    from training.train import main, prepare

    run = tmp_path / "run"
    shutil.copytree(interrupted[0] / "run", run)  # 2 processes x 2 for 2 steps: samples 0..7 used
    trainer = prepare(None, [], str(run), None, log=lambda message: None)
    assert trainer.dist.world_size == 1 and not trainer.dist.launched
    first = next(iter(trainer._loader()))
    expected = torch.stack([trainer.dataset[index]["hazy"] for index in (8, 9)])
    assert torch.equal(first["hazy"], expected)  # the next global indices, not step * batch = 4
    before = {key: value.clone() for key, value in trainer.dehazer.state_dict().items()}
    trainer.close()

    assert main(["--resume", str(run)]) == 0  # the command line, one process, no torchrun
    state = last_state(run)
    assert state["step"] == STEPS and state["world_size"] == 1
    assert state["samples_seen"] == 8 + (STEPS - 2) * BATCH  # now a global batch of 2
    assert any(not torch.equal(before[key], state["dehazer"][key]) for key in before)
    assert jsonl(run / "resumes.jsonl")[-1]["world_size"] == 1
    from training.config import load_config

    assert load_config(run / "config.yaml").train.world_size == 2  # how the run started


def test_sigterm_to_torchrun_stops_every_rank_with_a_consistent_last_pt(tmp_path):
    run = tmp_path / "run"
    # No checkpoint before the end: a last.pt can only come from the stop.
    command = torchrun(
        "-m",
        "training.train",
        "--config",
        str(SMOKE),
        "--run-dir",
        str(run),
        "train.steps=100000",
        f"data.batch_size={BATCH}",
        "train.checkpoint_every=100000",
        "train.val_every=100000",
        "train.image_every=100000",
    )
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=child_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + TORCHRUN_TIMEOUT_S
        while (
            not (run / "config.yaml").exists()
            and process.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)  # rank 0 writes config.yaml as training starts
        time.sleep(2.0)
        process.send_signal(signal.SIGTERM)  # as a scheduler does; torchrun passes it to every rank
        output, _ = process.communicate(timeout=TORCHRUN_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert output.count("stopped on request") == 1, output[-3000:]  # rank 0 reports, once
    state = last_state(run)
    assert 0 < state["step"] < 100000 and state["samples_seen"] == state["step"] * 2 * BATCH
    assert state["world_size"] == 2
    assert (
        not (run / "best.pt").exists() and not (run / "metrics.jsonl").exists()
    )  # a stop does not validate


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1:]))
