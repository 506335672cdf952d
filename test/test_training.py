"""The training loop on tiny procedural data (CPU): learning, alternation, resume, run folder, errors."""

import json
import math
import os
import re
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dehaze_ros.checkpoint import build_models, file_sha256, load_checkpoint, save_checkpoint
from training import losses
from training.config import load_config
from training.export import export_checkpoint
from training.run_state import (
    TRAINING_STATE_FORMAT,
    TRAINING_STATE_VERSION,
    TrainingError,
    load_training_file,
    save_training_file,
)
from state_compare import assert_identical
from training.train import Trainer, main, prepare

SMOKE = Path(__file__).resolve().parent.parent / "config" / "train" / "smoke.yaml"
QUIET = dict(log=lambda message: None)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: why


def tiny_config(tmp_path, *overrides):
    """The shipped smoke config (tiny diacmpn-rt variant, 32 px crops, CPU), redirected to tmp_path."""
    return load_config(SMOKE, [f"train.out_dir={tmp_path}", *overrides])


def parameters(module):
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def same(first, second):
    return all(torch.equal(first[name], second[name]) for name in first)


def fixed_batch(trainer, count=8):
    samples = [trainer.dataset[10_000 + index] for index in range(count)]
    return {key: torch.stack([sample[key] for sample in samples]) for key in samples[0]}


@torch.no_grad()
def held_out_losses(trainer, batch):
    dehazed = trainer.dehazer(batch["hazy"]).clamp(0, 1)
    mask = losses.valid_depth_mask(batch["depth"], 0.1, 80.0)
    # The networks learn depth in the canonical camera: compare in those units.
    target, scale_known, _ = trainer._canonical_targets(batch["depth"], batch)
    depth_loss, _ = losses.depth_loss(
        trainer.depth_net(dehazed), target, mask, 0.1, 1.0, 0.85, scale_known=scale_known
    )
    return float((dehazed - batch["clear"]).abs().mean()), float(depth_loss)


def test_a_few_dozen_steps_lower_the_dehazing_and_depth_losses(tmp_path):
    # 64 px crops: a 32 px crop is a 3-7 degree window of a deployed frame (the procedural
    # source's focal lengths), nearly one surface, and the DCP-initialised head starts too close
    # to what such crops allow to show a clear gain in 40 steps.
    trainer = Trainer(
        tiny_config(
            tmp_path,
            "train.steps=40",
            "optim.lr_dehazer=2e-3",
            "optim.lr_depth=2e-3",
            "data.crop=64",
        ),
        tmp_path / "run",
        **QUIET,
    )
    batch = fixed_batch(trainer)
    l1_before, depth_before = held_out_losses(trainer, batch)
    iterator = iter(trainer._loader())
    for _ in range(40):
        trainer.train_step(next(iterator))
    l1_after, depth_after = held_out_losses(trainer, batch)
    assert l1_after < 0.85 * l1_before
    assert depth_after < 0.85 * depth_before
    trainer.close()


def test_alternating_steps_never_change_the_frozen_network(tmp_path):
    trainer = Trainer(tiny_config(tmp_path), tmp_path / "run", **QUIET)
    batch = fixed_batch(trainer, 4)
    hazy, clear, depth = batch["hazy"], batch["clear"], batch["depth"]
    mask = losses.valid_depth_mask(depth, 0.1, 80.0)
    dehazer_before, depth_before = parameters(trainer.dehazer), parameters(trainer.depth_net)

    dehazed, out = trainer.dehazer_step(hazy, clear, depth, mask)
    assert {
        "dehazer/l1",
        "dehazer/ssim",
        "dehazer/depth_perception",
        "dehazer/branch_depth",
    } <= set(out.losses)
    assert same(depth_before, parameters(trainer.depth_net))  # E frozen in D's step
    assert not same(dehazer_before, parameters(trainer.dehazer))
    assert all(p.grad is None for p in trainer.depth_net.parameters())
    assert not dehazed.requires_grad

    dehazer_after = parameters(trainer.dehazer)
    out = trainer.depth_step(dehazed, clear, depth, mask)
    assert {"depth/weighted_depth_silog", "depth/depth_silog"} <= set(out.losses)
    assert same(dehazer_after, parameters(trainer.dehazer))  # D frozen in E's step
    assert not same(depth_before, parameters(trainer.depth_net))
    trainer.close()


def shipped_checkpoint(tmp_path, with_depth_net=True):
    """A deployable checkpoint whose weights (and BatchNorm statistics) are not at their init."""
    donor = Trainer(tiny_config(tmp_path), tmp_path / "donor", **QUIET)
    donor.train_step(fixed_batch(donor, 4))
    path = tmp_path / ("shipped.pt" if with_depth_net else "dehazer_only.pt")
    save_checkpoint(
        path,
        model_config=donor.model_config.to_dict(),
        dehazer_state=donor.dehazer.state_dict(),
        depth_net_state=donor.depth_net.state_dict() if with_depth_net else None,
        depth_units="meters",
        depth_range_m=(0.2, 50.0),
    )
    weights = parameters(donor.dehazer), parameters(donor.depth_net)
    donor.close()
    return path, weights


def test_freeze_fine_tunes_one_network_and_keeps_the_other_bit_identical(tmp_path):
    shipped, (dehazer_shipped, depth_shipped) = shipped_checkpoint(tmp_path)
    messages = []
    config = tiny_config(
        tmp_path,
        f"train.init_from={shipped}",
        "train.freeze=[dehazer]",
        "train.select_metric=abs_rel",
        "train.steps=6",
        "train.val_every=2",
    )
    trainer = Trainer(config, tmp_path / "depth_only", log=messages.append)
    assert any("frozen (train.freeze): dehazer" in message for message in messages)

    def stop_at_step_3(trainer):
        if trainer.step == 3:
            trainer._stop_requested = True  # what Ctrl-C sets: last.pt at step 3

    assert trainer.fit(on_step=stop_at_step_3)["step"] == 3
    # Weights, running statistics and the moving average of D: exactly the shipped ones.
    assert same(dehazer_shipped, parameters(trainer.dehazer))
    assert same(dehazer_shipped, parameters(trainer.D.ema.module))
    assert not same(depth_shipped, parameters(trainer.depth_net))
    trainer.close()

    # The resume takes weights and lineage from last.pt: the init_from file may be gone since.
    shipped_sha = file_sha256(shipped)
    shipped.rename(tmp_path / "moved.pt")
    resumed = prepare(None, [], str(tmp_path / "depth_only"), None, log=lambda message: None)
    assert resumed.step == 3 and resumed.fit()["step"] == 6
    assert same(dehazer_shipped, parameters(resumed.dehazer))
    out = resumed.train_step(fixed_batch(resumed, 4))
    assert (
        "dehazer/l1" in out.losses
        and "dehazer/grad_norm" not in out.losses
        and "depth/total" in out.losses
    )
    resumed.close()
    validations = [
        json.loads(line)
        for line in (tmp_path / "depth_only" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [v["step"] for v in validations] == [2, 4, 6]
    assert (
        len({v["psnr"] for v in validations}) == 1 and len({v["abs_rel"] for v in validations}) == 3
    )
    summary = export_checkpoint(tmp_path / "depth_only" / "last.pt", tmp_path / "exported.pt")
    exported = load_checkpoint(summary["output"])
    assert same(dehazer_shipped, exported.dehazer_state)
    lineage = exported.provenance["init_from"]
    assert (
        lineage["path"] == str(shipped)
        and lineage["sha256"] == shipped_sha
        and lineage["depth_units"] == "meters"
    )

    trainer = Trainer(
        tiny_config(
            tmp_path,
            f"train.init_from={tmp_path / 'moved.pt'}",
            "train.freeze=[depth_net]",
            "train.steps=2",
        ),
        tmp_path / "dehazer_only",
        **QUIET,
    )
    trainer.fit()
    assert same(depth_shipped, parameters(trainer.depth_net))
    assert same(depth_shipped, parameters(trainer.E.ema.module))
    assert not same(dehazer_shipped, parameters(trainer.dehazer))
    trainer.close()


def test_a_frozen_depth_network_keeps_the_units_and_range_it_was_trained_with(tmp_path):
    # Fine-tuning the dehazer on pairs without depth must not relabel a metric depth network.
    shipped, (_, depth_shipped) = shipped_checkpoint(tmp_path)
    write_reside_without_depth(tmp_path / "its")
    config = tiny_config(
        tmp_path,
        f"data.root={tmp_path}",
        "data.sources.procedural=null",
        "data.sources.its={kind: reside, path: its}",
        f"train.init_from={shipped}",
        "train.freeze=[depth_net]",
        "train.steps=2",
    )
    trainer = Trainer(config, tmp_path / "run", **QUIET)
    trainer.fit()
    trainer.close()
    exported = load_checkpoint(
        export_checkpoint(tmp_path / "run" / "last.pt", tmp_path / "out.pt")["output"]
    )
    assert exported.depth_units == "meters" and tuple(exported.depth_range_m) == (0.2, 50.0)
    assert same(depth_shipped, exported.depth_net_state)


def test_init_from_accepts_another_airlight_chroma_and_refuses_other_weights(tmp_path):
    donor = Trainer(tiny_config(tmp_path), tmp_path / "donor", **QUIET)
    config, dehazer, depth_net = (
        donor.model_config.to_dict(),
        donor.dehazer.state_dict(),
        donor.depth_net.state_dict(),
    )
    donor.close()
    coloured = tmp_path / "coloured.pt"
    save_checkpoint(
        coloured,
        model_config={**config, "name": "older", "airlight_chroma": 0.5},
        dehazer_state=dehazer,
        depth_net_state=depth_net,
    )
    messages = []
    trainer = Trainer(
        tiny_config(tmp_path, f"train.init_from={coloured}"), tmp_path / "run", log=messages.append
    )
    assert same(dehazer, parameters(trainer.dehazer))
    assert any(
        f"airlight_chroma 0.5 in {coloured}, {config['airlight_chroma']} in this run" in m
        for m in messages
    )
    trainer.close()
    other_camera = tmp_path / "other_camera.pt"
    save_checkpoint(
        other_camera,
        model_config={**config, "canonical_focal_px": 123.0},
        dehazer_state=dehazer,
        depth_net_state=depth_net,
    )
    with pytest.raises(TrainingError, match="differs from this run's .* in canonical_focal_px"):
        Trainer(
            tiny_config(tmp_path, f"train.init_from={other_camera}"), tmp_path / "refused", **QUIET
        )


def test_init_from_widens_an_image_only_depth_network_to_read_the_transmission(tmp_path):
    shipped, _ = shipped_checkpoint(tmp_path)  # depth_inputs: image
    reads_t = "model.overrides.depth_inputs=image_transmission"
    messages = []
    trainer = Trainer(
        tiny_config(tmp_path, reads_t, f"train.init_from={shipped}"),
        tmp_path / "run",
        log=messages.append,
    )
    assert any(
        f"depth_inputs image in {shipped}, image_transmission in this run" in m for m in messages
    )
    _, donor = build_models(load_checkpoint(shipped))
    image, transmission = torch.rand(1, 3, 40, 40), torch.rand(1, 1, 40, 40) * 0.9 + 0.1
    with torch.no_grad():
        torch.testing.assert_close(
            trainer.depth_net.eval()(image, transmission), donor.eval()(image), rtol=1e-5, atol=1e-6
        )
    trainer.close()
    with pytest.raises(
        TrainingError, match="a frozen network never learns to read the transmission"
    ):
        Trainer(
            tiny_config(
                tmp_path, reads_t, f"train.init_from={shipped}", "train.freeze=[depth_net]"
            ),
            tmp_path / "frozen",
            **QUIET,
        )
    reads_t_run = Trainer(tiny_config(tmp_path, reads_t), tmp_path / "donor_t", **QUIET)
    widened = tmp_path / "widened.pt"
    save_checkpoint(
        widened,
        model_config=reads_t_run.model_config.to_dict(),
        dehazer_state=reads_t_run.dehazer.state_dict(),
        depth_net_state=reads_t_run.depth_net.state_dict(),
    )
    reads_t_run.close()
    with pytest.raises(
        TrainingError, match="would drop an input its depth network was trained with"
    ):
        Trainer(tiny_config(tmp_path, f"train.init_from={widened}"), tmp_path / "narrowed", **QUIET)


def test_freeze_refuses_what_would_train_nothing_or_from_random_weights(tmp_path):
    from training.config import ConfigError

    for overrides, message in (
        (["train.freeze=[dehazer, depth_net]", "train.init_from=x.pt"], "nothing would train"),
        (["train.freeze=[encoder]"], "train.freeze may name"),
        (["train.freeze=[dehazer]", "train.select_metric=abs_rel"], "without train.init_from"),
        (["train.freeze=[dehazer]", "train.init_from=x.pt"], "select_metric=abs_rel"),
        (
            ["train.freeze=[depth_net]", "train.init_from=x.pt", "train.schedule=joint"],
            "needs train.schedule 'alternating'",
        ),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            tiny_config(tmp_path, *overrides)
    dehazer_only, _ = shipped_checkpoint(tmp_path, with_depth_net=False)
    with pytest.raises(TrainingError, match="has none: it would stay randomly initialised"):
        Trainer(
            tiny_config(tmp_path, f"train.init_from={dehazer_only}", "train.freeze=[depth_net]"),
            tmp_path / "random_depth",
            **QUIET,
        )
    shipped, _ = shipped_checkpoint(tmp_path)
    write_reside_without_depth(tmp_path / "its")
    with pytest.raises(TrainingError, match="nothing to learn from"):
        Trainer(
            tiny_config(
                tmp_path,
                f"data.root={tmp_path}",
                "data.sources.procedural=null",
                "data.sources.its={kind: reside, path: its}",
                f"train.init_from={shipped}",
                "train.freeze=[dehazer]",
                "train.select_metric=abs_rel",
            ),
            tmp_path / "no_depth",
            **QUIET,
        )


def test_joint_schedule_updates_both_networks_from_one_summed_loss(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, "train.schedule=joint"), tmp_path / "run", **QUIET)
    dehazer_before, depth_before = parameters(trainer.dehazer), parameters(trainer.depth_net)
    out = trainer.train_step(fixed_batch(trainer, 4))
    assert {"joint/total", "joint/depth_weighted", "joint/depth_perception"} <= set(out.losses)
    assert not same(dehazer_before, parameters(trainer.dehazer))
    assert not same(depth_before, parameters(trainer.depth_net))
    trainer.close()


def test_switching_terms_off_reproduces_the_ablations(tmp_path):
    trainer = Trainer(
        tiny_config(
            tmp_path, "loss.depth_perception=0", "loss.branch_depth=0", "loss.depth_weighted=0"
        ),
        tmp_path / "run",
        **QUIET,
    )
    out = trainer.train_step(fixed_batch(trainer, 4))
    assert "dehazer/depth_perception" not in out.losses and "dehazer/branch_depth" not in out.losses
    assert "depth/weighted_depth_silog" not in out.losses and "depth/depth_silog" in out.losses
    trainer.close()


def test_haze_supervision_reaches_the_dehazer_and_needs_a_physics_head(tmp_path):
    plain = Trainer(tiny_config(tmp_path), tmp_path / "plain", **QUIET)
    batch = fixed_batch(plain, 4)
    assert torch.isfinite(batch["transmission"]).any() and torch.isfinite(batch["airlight"]).all()
    assert "dehazer/transmission" not in plain.train_step(batch).losses
    supervised = Trainer(
        tiny_config(tmp_path, "loss.transmission=1.0", "loss.airlight=1.0"),
        tmp_path / "supervised",
        **QUIET,
    )
    out = supervised.train_step(batch)
    # Untrained, the DCP start is off in both (the tiny scenes are not the DCP's world).
    assert out.losses["dehazer/transmission"] > 0 and out.losses["dehazer/airlight"] > 0
    # Same seed, same batch, same start: only the t and A terms differ, and they move D.
    assert not same(parameters(plain.dehazer), parameters(supervised.dehazer))
    joint = Trainer(
        tiny_config(tmp_path, "train.schedule=joint", "loss.transmission=1.0"),
        tmp_path / "joint",
        **QUIET,
    )
    assert "joint/transmission" in joint.train_step(batch).losses
    # The optical-depth term alone also reaches D (and moves it differently from the t term).
    optical = Trainer(
        tiny_config(tmp_path, "loss.optical_depth=1.0"), tmp_path / "optical", **QUIET
    )
    optical_out = optical.train_step(batch)
    assert optical_out.losses["dehazer/optical_depth"] > 0
    assert not same(parameters(plain.dehazer), parameters(optical.dehazer))
    assert not same(parameters(supervised.dehazer), parameters(optical.dehazer))
    for trainer in (plain, supervised, joint, optical):
        trainer.close()
    with pytest.raises(TrainingError, match="residual head"):
        Trainer(
            tiny_config(tmp_path, "model.overrides.head=residual", "loss.transmission=1.0"),
            tmp_path / "residual",
            **QUIET,
        )
    with pytest.raises(TrainingError, match="residual head"):
        Trainer(
            tiny_config(tmp_path, "model.overrides.head=residual", "loss.optical_depth=1.0"),
            tmp_path / "residual_od",
            **QUIET,
        )


def final_state(run_dir):
    state = load_training_file(Path(run_dir) / "last.pt")
    return {
        key: state[key]
        for key in (
            "step",
            "dehazer",
            "depth_net",
            "ema_dehazer",
            "ema_depth_net",
            "optimizer_dehazer",
            "optimizer_depth",
            "scheduler_dehazer",
            "rng",
        )
    }


def test_run_state_file_round_trip_resumes_the_same_state_and_refuses_others(tmp_path):
    trainer = Trainer(tiny_config(tmp_path), tmp_path / "run", **QUIET)
    trainer.train_step(fixed_batch(trainer, 2))
    state = trainer.state_dict(full=True)
    loaded = load_training_file(save_training_file(state, tmp_path / "last.pt"))
    assert_identical(state, loaded)
    # The layout training/run_state.py documents, which export and evaluate read.
    per_network = {
        f"{kind}_{name}"
        for kind in ("optimizer", "scheduler", "scaler")
        for name in ("dehazer", "depth")
    }
    assert (
        set(loaded)
        == {
            "format",
            "format_version",
            "step",
            "samples_seen",
            "world_size",
            "elapsed_s",
            "best",
            "last_validation",
            "saved_at",
            "provenance",
            "skipped_steps",
            "dehazer",
            "depth_net",
            "ema_dehazer",
            "ema_depth_net",
            "rng",
        }
        | per_network
    )
    assert set(trainer.state_dict(full=False)) == set(loaded) - per_network - {"rng"}

    resumed = Trainer(tiny_config(tmp_path), tmp_path / "run2", **QUIET)
    resumed.load_state_dict(loaded)
    again = resumed.state_dict(full=True)
    for key in (
        "step",
        "dehazer",
        "depth_net",
        "ema_dehazer",
        "ema_depth_net",
        *sorted(per_network),
    ):
        assert_identical(state[key], again[key], key)
    trainer.close()
    resumed.close()

    torch.save(
        {"format": TRAINING_STATE_FORMAT, "format_version": TRAINING_STATE_VERSION + 1},
        tmp_path / "new.pt",
    )
    with pytest.raises(
        TrainingError, match=f"version {TRAINING_STATE_VERSION + 1}; this code reads version"
    ):
        load_training_file(tmp_path / "new.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "last.pt").read_bytes()[:1000])
    with pytest.raises(TrainingError, match="could not be read"):
        load_training_file(tmp_path / "cut.pt")
    with pytest.raises(ValueError, match="not a training state"):
        save_training_file({"step": 1}, tmp_path / "bare.pt")


def validations(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def best_state(run_dir):
    state = load_training_file(Path(run_dir) / "best.pt")
    return {
        key: state[key]
        for key in ("step", "best", "dehazer", "depth_net", "ema_dehazer", "ema_depth_net")
    }


def test_resume_after_ctrl_c_continues_bit_identically(tmp_path):
    overrides = (
        "train.steps=10",
        "train.checkpoint_every=3",
        "train.val_every=5",
        "train.image_every=4",
    )
    straight = Trainer(tiny_config(tmp_path, *overrides), tmp_path / "straight", **QUIET)
    straight.fit()
    straight.close()

    def press_ctrl_c(trainer):
        if trainer.step == 4:
            os.kill(os.getpid(), signal.SIGINT)  # the real signal, through the real handler

    interrupted = Trainer(tiny_config(tmp_path, *overrides), tmp_path / "interrupted", **QUIET)
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under `make test &`
    summary = interrupted.fit(on_step=press_ctrl_c)
    interrupted.close()
    assert summary["step"] == 4 and summary["reason"].startswith("stopped")
    assert signal.getsignal(signal.SIGINT) is before  # the handler the caller had is put back
    assert load_training_file(tmp_path / "interrupted" / "last.pt")["step"] == 4
    # Ctrl-C does not validate (not even before the first validation): no extra entry, no best.pt
    assert not (tmp_path / "interrupted" / "metrics.jsonl").exists()
    assert not (tmp_path / "interrupted" / "best.pt").exists()

    messages = []
    resumed = prepare(None, [], str(tmp_path / "interrupted"), None, log=messages.append)
    assert resumed.step == 4 and "resumed at step 4" in messages
    resumed.fit()
    resumed.close()
    assert_identical(final_state(tmp_path / "straight"), final_state(tmp_path / "interrupted"))
    # ... and it validates at the same steps with the same numbers, and selects the same best.pt
    assert [entry["step"] for entry in validations(tmp_path / "straight")] == [5, 10]
    assert validations(tmp_path / "interrupted") == validations(tmp_path / "straight")
    assert_identical(best_state(tmp_path / "straight"), best_state(tmp_path / "interrupted"))


def test_ctrl_c_from_the_command_line_saves_last_state_and_exits_130(tmp_path, monkeypatch):
    def press_ctrl_c(self, budget_start=None, on_step=None):
        def at_step_2(trainer):
            if trainer.step == 2:
                os.kill(os.getpid(), signal.SIGINT)

        return original_fit(self, budget_start, on_step=at_step_2)

    original_fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", press_ctrl_c)
    run = tmp_path / "run"
    assert (
        main(["--config", str(SMOKE), "--run-dir", str(run), "train.steps=10", "train.val_every=5"])
        == 130
    )
    assert load_training_file(run / "last.pt")["step"] == 2
    assert not (run / "best.pt").exists() and not (run / "metrics.jsonl").exists()


def test_run_folder_holds_config_states_and_tensorboard_logs(tmp_path):
    config = tiny_config(
        tmp_path,
        "train.steps=6",
        "train.val_every=3",
        "train.image_every=3",
        "train.log_every=2",
        "train.run_name=logged",
    )
    trainer = Trainer(config, tmp_path / "logged", **QUIET)
    trainer.fit()
    trainer.close()
    run = tmp_path / "logged"
    assert load_config(run / "config.yaml").to_dict() == config.to_dict()
    last = torch.load(run / "last.pt", weights_only=True)
    best = torch.load(run / "best.pt", weights_only=True)
    assert last["step"] == 6 and "optimizer_depth" in last and "rng" in last
    assert "optimizer_dehazer" not in best and best["best"]["metric"] == "psnr"
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"), size_guidance={"images": 0, "scalars": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {
        "train/dehazer/l1",
        "train/depth/depth_silog",
        "val/psnr",
        "val/abs_rel",
        "perf/images_per_s",
        "perf/data_wait_share",
        "train/lr_dehazer",
    } <= scalars
    images = events.Tags()["images"]
    assert len(images) == 1
    grid = events.Images(images[0])[-1]
    decoded = cv2.imdecode(np.frombuffer(grid.encoded_image_string, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape[1] > 7 * 32  # seven tiles side by side
    with pytest.raises(TrainingError, match="already holds a run"):
        prepare(
            str(SMOKE), [f"train.out_dir={tmp_path}", "train.run_name=logged"], None, None, **QUIET
        )


def write_reside_without_depth(root):
    rng = np.random.default_rng(0)
    for scene in ("1", "2", "3"):
        clear = cv2.resize(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), (64, 48))
        (root / "GT").mkdir(parents=True, exist_ok=True)
        (root / "hazy").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "GT" / f"{scene}.png"), clear)
        cv2.imwrite(str(root / "hazy" / f"{scene}_1.png"), (clear * 0.6 + 90).astype(np.uint8))


def test_without_depth_the_depth_terms_are_off_and_the_run_says_so(tmp_path):
    write_reside_without_depth(tmp_path / "its")
    messages = []
    config = tiny_config(
        tmp_path,
        f"data.root={tmp_path}",
        "data.sources.procedural=null",
        "data.sources.its={kind: reside, path: its, val_scenes: ['3']}",
    )
    trainer = Trainer(config, tmp_path / "run", log=messages.append)
    assert any("depth supervision OFF" in message for message in messages)
    depth_before = parameters(trainer.depth_net)
    out = trainer.train_step(next(iter(trainer._loader())))
    assert set(out.losses) == {"dehazer/l1", "dehazer/ssim", "dehazer/total", "dehazer/grad_norm"}
    assert same(depth_before, parameters(trainer.depth_net))
    trainer.close()


def test_a_teacher_checkpoint_supplies_depth_targets_for_data_without_depth(tmp_path):
    write_reside_without_depth(tmp_path / "its")
    # A teacher gives plain metres (no canonical camera: its output would need each image's focal).
    donor = Trainer(
        tiny_config(tmp_path, "model.overrides.canonical_focal_px=0"), tmp_path / "donor", **QUIET
    )
    teacher_path = tmp_path / "teacher.pt"
    save_checkpoint(
        teacher_path,
        model_config=donor.model_config.to_dict(),
        dehazer_state=donor.dehazer.state_dict(),
        depth_net_state=donor.depth_net.state_dict(),
        depth_units="meters",
    )
    canonical_teacher = tmp_path / "canonical_teacher.pt"
    save_checkpoint(
        canonical_teacher,
        model_config={**donor.model_config.to_dict(), "canonical_focal_px": 250.0},
        dehazer_state=donor.dehazer.state_dict(),
        depth_net_state=donor.depth_net.state_dict(),
        depth_units="meters",
    )
    donor.close()
    with pytest.raises(TrainingError, match="predicts canonical-camera depth"):
        Trainer(
            tiny_config(tmp_path, f"depth.teacher_checkpoint={canonical_teacher}"),
            tmp_path / "refused",
            **QUIET,
        )
    messages = []
    config = tiny_config(
        tmp_path,
        f"data.root={tmp_path}",
        "data.sources.procedural=null",
        "data.sources.its={kind: reside, path: its}",
        f"depth.teacher_checkpoint={teacher_path}",
    )
    trainer = Trainer(config, tmp_path / "run", log=messages.append)
    assert any("its: depth from the teacher" in message for message in messages)
    batch = next(iter(trainer._loader()))
    assert not batch["has_depth"].any() and torch.isnan(batch["depth"]).all()
    targets = trainer._depth_targets(batch["clear"], batch["depth"], batch["has_depth"])
    assert torch.isfinite(targets).all() and (targets > 0).all()
    depth_before = parameters(trainer.depth_net)
    out = trainer.train_step(batch)
    assert "depth/depth_silog" in out.losses and not same(
        depth_before, parameters(trainer.depth_net)
    )
    trainer.close()


def test_time_budget_stops_early_with_a_resumable_last_state(tmp_path):
    messages = []
    trainer = Trainer(
        tiny_config(tmp_path, "train.steps=1000", "train.max_minutes=0.0005"),
        tmp_path / "run",
        log=messages.append,
    )
    summary = trainer.fit()
    trainer.close()
    assert summary["reason"].startswith("time budget") and 0 < summary["step"] < 1000
    assert load_training_file(tmp_path / "run" / "last.pt")["step"] == summary["step"]
    assert (tmp_path / "run" / "best.pt").exists()
    assert any(f"--resume {tmp_path / 'run'}" in message for message in messages)


def test_command_line_errors_say_what_is_wrong(tmp_path, capsys):
    def run(*argv):
        code = main(list(argv))
        return code, capsys.readouterr().err

    code, err = run("--config", str(SMOKE), "train.stpes=3")
    assert code == 2 and "unknown config key 'train.stpes'; did you mean 'train.steps'" in err
    code, err = run("--config", str(SMOKE), "train.steps=many")
    assert code == 2 and "'train.steps' must be an integer, got 'many'" in err
    code, err = run("--config", str(SMOKE), "train.schedule=sometimes")
    assert code == 2 and "train.schedule must be one of ('alternating', 'joint')" in err
    code, err = run(
        "--config",
        str(SMOKE),
        f"data.root={tmp_path}",
        "data.sources.x={kind: rgbd, path: nowhere}",
    )
    assert code == 2 and f"{tmp_path / 'nowhere'} does not exist" in err
    (tmp_path / "empty" / "hazy").mkdir(parents=True)
    (tmp_path / "empty" / "GT").mkdir()
    code, err = run(
        "--config",
        str(SMOKE),
        f"data.root={tmp_path}",
        "data.sources.x={kind: reside, path: empty}",
    )
    assert code == 2 and "no hazy images in" in err
    if not torch.cuda.is_available():
        code, err = run("--config", str(SMOKE), "train.device=cuda")
        assert code == 2 and "CUDA is not available" in err
    code, err = run("--config", str(SMOKE), "train.precision=bf16")
    assert code == 2 and "train.precision=bf16 needs a CUDA device" in err
    code, err = run("--config", str(tmp_path / "missing.yaml"))
    assert code == 2 and "config file not found" in err
    code, err = run("--resume", str(tmp_path))
    assert code == 2 and "needs config.yaml and last.pt" in err


def test_resume_refuses_overrides_that_would_change_the_run(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, "train.steps=2"), tmp_path / "run", **QUIET)
    trainer.fit()
    trainer.close()
    run = tmp_path / "run"
    with pytest.raises(ValueError, match="cannot be applied to a resumed run"):
        prepare(None, ["optim.lr_dehazer=0.1"], str(run), None, **QUIET)
    config_yaml = (run / "config.yaml").read_text()
    validated = validations(run)
    overrides = ["train.max_minutes=5", "train.log_every=1"]
    resumed = prepare(None, overrides, str(run), None, **QUIET)
    assert resumed.config.train.max_minutes == 5 and resumed.step == 2
    resumed.fit()
    resumed.close()
    # The overrides held for that session only: config.yaml is the run's own, resumes.jsonl says
    # what the session changed, and the next resume starts from the run's configuration again.
    assert (run / "config.yaml").read_text() == config_yaml
    record = json.loads((run / "resumes.jsonl").read_text().splitlines()[-1])
    assert record["step"] == 2 and record["overrides"] == overrides
    assert validations(run) == validated  # a finished run is not validated a second time
    again = prepare(None, [], str(run), None, **QUIET)
    assert again.config.train.max_minutes == trainer.config.train.max_minutes
    assert again.config.train.log_every == trainer.config.train.log_every != 1
    again.close()


def test_config_inheritance_overrides_and_coercions(tmp_path):
    t_config = load_config(SMOKE.parent / "diacmpn_t.yaml")
    rt_config = load_config(SMOKE.parent / "diacmpn_rt.yaml")
    assert t_config.name == "diacmpn_t" and t_config.model.preset == "diacmpn-t"
    assert t_config.data.sources == rt_config.data.sources  # inherited data and splits
    assert t_config.data.batch_size == 8 and rt_config.data.batch_size == 16
    assert "Recycle" in rt_config.data.sources["rgbd"].test_scenes
    (tmp_path / "child.yaml").write_text(f"inherit: {SMOKE}\noptim:\n  lr_depth: 1e-4\n")
    child = load_config(
        tmp_path / "child.yaml",
        [
            "data.sources.extra={kind: procedural, weight: 2}",
            "data.sources.procedural=null",
            "train.run_name=2024",
        ],
    )
    assert child.optim.lr_depth == 1e-4  # YAML reads "1e-4" as text; still a number
    assert child.optim.lr_dehazer == 1e-3  # inherited
    assert list(child.data.sources) == ["extra"] and child.data.sources["extra"].weight == 2.0
    assert child.train.run_name == "2024"
    with pytest.raises(ValueError, match="data.sources.procedural.haze.jpeg_prob must lie in"):
        load_config(tmp_path / "child.yaml", ["data.sources.procedural.haze.jpeg_prob=1.5"])
    with pytest.raises(ValueError, match="'data.flips' must be true or false"):
        load_config(tmp_path / "child.yaml", ["data.flips=3"])
    with pytest.raises(ValueError, match="model: unknown ModelConfig keys"):
        Trainer(load_config(SMOKE, ["model.overrides={stage_width: 3}"]), tmp_path / "run", **QUIET)


def test_resume_refuses_a_run_whose_model_config_the_preset_no_longer_gives(tmp_path):
    trainer = Trainer(tiny_config(tmp_path), tmp_path / "run", **QUIET)
    state = trainer.state_dict()
    stored = state["provenance"]["model_config"]
    del stored["depth_inputs"]  # written before the field existed: its default, accepted
    trainer.load_state_dict(state)
    stored["canonical_focal_px"] = 123.0  # trained in other units
    with pytest.raises(TrainingError, match="differs in canonical_focal_px"):
        trainer.load_state_dict(state)
    trainer.close()


def test_a_nonfinite_gradient_skips_the_step_and_keeps_weights_ema_and_batchnorm(tmp_path):
    """One corrupt frame (NaN pixels, as a broken sensor gives) makes every gradient NaN; through
    AdamW that would make every weight NaN, then the EMA and last.pt. The step is left out."""
    trainer = Trainer(tiny_config(tmp_path), tmp_path / "run", **QUIET)
    batch = fixed_batch(trainer, count=2)
    trainer.train_step(
        batch
    )  # a normal step first: the EMA and BatchNorm statistics hold real values
    weights = {
        name: parameters(state.model) for name, state in (("D", trainer.D), ("E", trainer.E))
    }
    corrupt = dict(batch, hazy=batch["hazy"].clone())
    corrupt["hazy"][:, :, :4, :4] = float("nan")
    out = trainer.train_step(corrupt)
    assert not math.isfinite(out.losses["dehazer/grad_norm"])
    assert trainer.D.skipped_steps == 1 and trainer.D.last_step_skipped
    for name, state in (("D", trainer.D), ("E", trainer.E)):
        # Weights and BatchNorm statistics (buffers) as before the NaN forward pass; the EMA goes on
        # averaging those good weights.
        assert same(weights[name], parameters(state.model)), name
        assert all(
            torch.isfinite(value).all() for value in parameters(state.ema.module).values()
        ), name
    assert trainer.state_dict()["skipped_steps"]["dehazer"] == 1
    # Training goes on with the next good batch, and the count survives a resume.
    trainer.train_step(batch)
    assert not same(weights["D"], parameters(trainer.D.model)) and trainer.D.consecutive_skips == 0
    resumed = Trainer(tiny_config(tmp_path), tmp_path / "run2", **QUIET)
    resumed.load_state_dict(trainer.state_dict())
    assert resumed.D.skipped_steps == 1
    trainer.close()
    resumed.close()


def test_a_run_whose_every_gradient_is_nonfinite_stops_with_the_reason():
    from training.network_state import MAX_CONSECUTIVE_SKIPS, NetworkState, NonFiniteTraining

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    optim = load_config(SMOKE).optim
    state = NetworkState(model, "dehazer", "dehazer", 1e-3, optim, 100, 0.99, fp16_scaler=False)
    before = parameters(model)
    with pytest.raises(
        NonFiniteTraining, match=f"not finite in {MAX_CONSECUTIVE_SKIPS} steps in a row"
    ):
        for _ in range(MAX_CONSECUTIVE_SKIPS):
            state.backward_and_step(
                model(torch.rand(1, 3, 8, 8)).sum() * float("inf"), grad_clip=0.0
            )
    assert same(before, parameters(model)) and state.skipped_steps == MAX_CONSECUTIVE_SKIPS


def test_ddp_buffer_option_exists_in_older_torch_too():
    """forward_sync_buffers is torch 2.13's; 2.11 (the GPU machines) and NVIDIA's wheels only know
    broadcast_buffers, and DDP refuses an unknown keyword."""
    from training.distributed import no_forward_buffer_sync

    class OlderDistributedDataParallel:
        def __init__(
            self, module, device_ids=None, broadcast_buffers=True, find_unused_parameters=False
        ):
            pass

    assert no_forward_buffer_sync(OlderDistributedDataParallel) == {"broadcast_buffers": False}
    expected = "forward_sync_buffers" if torch.__version__ >= "2.13" else "broadcast_buffers"
    assert list(no_forward_buffer_sync()) == [expected]


def test_validation_runs_without_cudnn_autotuning_and_restores_it(tmp_path):
    trainer = Trainer(tiny_config(tmp_path), tmp_path / "run", **QUIET)
    seen = []
    # On a convolution: validation calls D's forward_physics, which no hook on D itself sees.
    first_conv = next(m for m in trainer.D.ema.module.modules() if isinstance(m, torch.nn.Conv2d))
    hook = first_conv.register_forward_hook(lambda *_: seen.append(torch.backends.cudnn.benchmark))
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # what tune_for_device sets on a GPU
    try:
        trainer.validate()
        assert seen and not any(seen)
        assert torch.backends.cudnn.benchmark is True
    finally:
        torch.backends.cudnn.benchmark = previous
        hook.remove()
        trainer.close()


def test_step_losses_are_read_as_floats_in_one_go(tmp_path):
    """The terms stay on the device until read (one sync per logged step, not one per term)."""
    trainer = Trainer(tiny_config(tmp_path), tmp_path / "run", **QUIET)
    out = trainer.train_step(fixed_batch(trainer, count=2))
    assert any(isinstance(value, torch.Tensor) for value in out.terms.values())
    losses_read = out.losses
    assert list(losses_read) == list(out.terms)
    assert all(isinstance(value, float) for value in losses_read.values())
    for key, value in out.terms.items():
        assert losses_read[key] == pytest.approx(float(value), nan_ok=True), key
    trainer.close()
