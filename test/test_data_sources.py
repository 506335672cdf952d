"""The kind -> (config, source) mapping that training and evaluation share, the per-kind config
keys, and the one function that turns a clear image and its depth into a hazed sample."""

import dataclasses

import cv2
import numpy as np
import pytest
import yaml

from test_data_rosbag2 import COLOR, DEPTH, write_bag
from training.config import ConfigError, HazeConfig, load_config, save_config
from training.data import SOURCES, build_sources
from training.data.common import hazed_sample
from training.evaluate import open_set


def write_rgb(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))


def reside_folder(root):
    for scene in ("1", "2"):
        clear = np.full((24, 32, 3), 40 * int(scene), np.uint8)
        write_rgb(root / "GT" / f"{scene}.png", clear)
        write_rgb(root / "hazy" / f"{scene}_1.png", clear // 2 + 100)
    return "{kind: reside, path: set}", []


def rgbd_folder(root):
    for index in (1, 2):
        write_rgb(root / "cam" / "color" / f"{index}.png", np.full((24, 32, 3), 90, np.uint8))
        (root / "cam" / "depth").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(
            str(root / "cam" / "depth" / f"{index}.png"), np.full((24, 32), 1500 * index, np.uint16)
        )
    return "{kind: rgbd, path: set}", []


def rosbag2_folder(root):
    write_bag(root / "bag0", frames=3)
    return (
        f"{{kind: rosbag2, path: set, color_topic: {COLOR}, depth_topic: {DEPTH}}}",
        [f"color_topic={COLOR}", f"depth_topic={DEPTH}"],
    )


def procedural_views(root):
    return "{kind: procedural, val_count: 2}", []


# One way to make data of each kind; a kind added to SOURCES without one here fails below.
MAKE_DATA = {
    "reside": reside_folder,
    "rgbd": rgbd_folder,
    "rosbag2": rosbag2_folder,
    "procedural": procedural_views,
}


def test_every_kind_has_a_test_data_maker():
    assert set(MAKE_DATA) == set(SOURCES)


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_every_kind_opens_in_training_and_in_evaluation(tmp_path, kind):
    source_yaml, options = MAKE_DATA[kind](tmp_path / "set")
    config = load_config(
        None, [f"data.root={tmp_path}", f"data.sources.x={source_yaml}", "data.crop=16"]
    )
    config_class, source_class = SOURCES[kind]
    assert type(config.data.sources["x"]) is config_class
    (train,) = build_sources(config.data, "train")
    assert type(train) is source_class and len(train) > 0
    sample = train.train_sample(np.random.default_rng(0), 16)
    assert sample.hazy.shape == (16, 16, 3) and sample.depth_m.shape == (16, 16)

    spec = f"{kind}:2" if kind == "procedural" else f"{kind}:{tmp_path / 'set'}"
    eval_set = open_set(spec, 64, [], 0.4, 0, source_options=options)
    samples = list(eval_set.samples)
    assert eval_set.count == len(samples) > 0
    assert all(s.has_depth == train.has_depth and s.hazy.shape == s.clear.shape for s in samples)


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_a_key_of_another_kind_names_the_kind_and_its_keys(kind):
    own = [item.name for item in dataclasses.fields(SOURCES[kind][0])]
    foreign = next(
        item.name
        for other, (config_class, _) in SOURCES.items()
        if other != kind
        for item in dataclasses.fields(config_class)
        if item.name not in own
    )
    with pytest.raises(ConfigError) as error:
        load_config(None, [f"data.sources.x={{kind: {kind}, path: p, {foreign}: 1}}"])
    message = str(error.value)
    assert f"data.sources.x.{foreign}" in message and f"kind '{kind}'" in message
    assert ", ".join(own) in message


def test_an_unknown_kind_lists_the_kinds():
    with pytest.raises(
        ConfigError,
        match=r"data.sources.x.kind must be one of \('reside', 'rgbd', 'procedural', "
        r"'rosbag2'\), got 'lidar'",
    ):
        load_config(None, ["data.sources.x={kind: lidar}"])


def test_a_run_folder_config_with_every_kinds_keys_still_loads(tmp_path):
    """config.yaml of runs from before the per-kind configs holds every kind's keys per source."""
    config = load_config(
        None,
        [
            "data.sources.p={kind: procedural, val_count: 3}",
            "data.sources.r={kind: rgbd, path: rgbd, depth_scale: 0.002}",
        ],
    )
    path = tmp_path / "config.yaml"
    save_config(config, path)
    raw = yaml.safe_load(path.read_text())
    flat = {
        "path": "",
        "color_topic": "",
        "stride": 1,
        "val_items": [],
        "depth_scale": 0.001,
        "max_time_diff_s": 0.02,
    }
    raw["data"]["sources"]["p"].update(flat)
    raw["data"]["sources"]["r"].update(color_topic="", stride=1, val_count=8)
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="not a key of a source of kind 'procedural'"):
        load_config(path)
    assert load_config(path, saved=True).to_dict() == config.to_dict()


def no_degradation(transmission, airlight):
    return HazeConfig(
        transmission_range=[transmission, transmission],
        airlight_range=[airlight, airlight],
        airlight_tint=0.0,
        nonhomogeneous_prob=0.0,
        noise_prob=0.0,
        jpeg_prob=0.0,
    )


def test_a_hazed_sample_applies_the_scattering_model():
    rng = np.random.default_rng(0)
    clear = rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)
    depth = np.full((12, 20), 6.0, np.float32)
    depth[0, 0] = np.nan  # a hole: hazed at its neighbour's depth, kept unknown in the target

    clear_air = hazed_sample(clear, depth, no_degradation(1.0, 0.8), rng, "s/1", 300.0)
    np.testing.assert_allclose(clear_air.hazy, clear / 255.0, atol=1e-6)  # t = 1: I = J

    # Constant depth: t at the median depth is t everywhere, so I = J t + A (1 - t) per pixel.
    sample = hazed_sample(
        clear, depth, no_degradation(0.25, 0.9), rng, "s/1", 300.0, metric_depth=False
    )
    np.testing.assert_allclose(sample.hazy, clear / 255.0 * 0.25 + 0.9 * 0.75, atol=1e-5)
    np.testing.assert_array_equal(sample.clear, (clear / 255.0).astype(np.float32))
    assert np.isnan(sample.depth_m[0, 0]) and sample.depth_m[1, 1] == 6.0
    assert (sample.name, sample.focal_px, sample.has_depth, sample.metric_depth) == (
        "s/1",
        300.0,
        True,
        False,
    )
