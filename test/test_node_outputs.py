"""The node's output table and its diagnostics, without DDS: pure functions over plain values."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

sensor_msgs = pytest.importorskip(
    "sensor_msgs.msg", reason="sensor_msgs (ROS message package) missing"
)

from dehaze_ros import stats  # noqa: E402
from dehaze_ros.frame_outputs import (
    OUTPUTS,
    FrameProducts,
    Output,
    build_messages,  # noqa: E402
    check_outputs,
    message_class,
    wanted_outputs,
)
from dehaze_ros.node_config import SPECS, NodeConfig  # noqa: E402
from dehaze_ros.visibility import estimate_visibility  # noqa: E402
from dehaze_ros.pointcloud import UNCALIBRATED  # noqa: E402
from dehaze_ros.metric_scale import (
    CONFIDENCE,
    GROUND,
    LEARNED,
    SUPPORT_LEARNED,
    SUPPORT_NONE,  # noqa: E402
    SUPPORT_PLANE,
    ScaleState,
)


def everyone_listens(topic: str) -> bool:
    return True


def topics(outputs) -> list[str]:
    return [output.topic for output in outputs]


def test_the_output_table_is_well_formed_and_its_types_exist():
    check_outputs(OUTPUTS, SPECS)
    assert message_class("sensor_msgs/msg/Range") is sensor_msgs.Range
    for output in OUTPUTS:
        assert message_class(output.message_type).__name__ == output.message_type.split("/")[-1]


def test_a_row_without_a_parameter_fails_the_check():
    bad = dataclasses.replace(OUTPUTS[0], topic="haze/density", enabled_by="publish_haze")
    with pytest.raises(
        ValueError, match=r"haze/density: enabled_by 'publish_haze' is not a boolean"
    ):
        check_outputs(OUTPUTS + (bad,), SPECS)
    not_a_switch = dataclasses.replace(OUTPUTS[0], enabled_by="max_side")  # an integer
    with pytest.raises(ValueError, match="listed twice.*'max_side' is not a boolean"):
        check_outputs((OUTPUTS[0], not_a_switch), SPECS)


def test_demand_follows_switches_subscribers_camera_info_and_depth_units():
    everything = wanted_outputs(NodeConfig(), everyone_listens, metric=True, have_camera_info=True)
    assert topics(everything) == topics(OUTPUTS)
    # No camera_info: no camera_info outputs and no cloud; the rest still goes out.
    assert topics(wanted_outputs(NodeConfig(), everyone_listens, True, False)) == [
        "dehazed/image",
        "depth/image",
        "depth/confidence",
        "depth/colormap",
        "visibility",
    ]
    # Relative depth (dcp): no metric topics unless asked for, never visibility nor confidence.
    assert topics(wanted_outputs(NodeConfig(), everyone_listens, False, True)) == [
        "dehazed/image",
        "dehazed/camera_info",
        "depth/colormap",
    ]
    assert not {"visibility", "depth/confidence"} & set(
        topics(
            wanted_outputs(NodeConfig(publish_relative_depth=True), everyone_listens, False, True)
        )
    )
    assert "points" in topics(
        wanted_outputs(NodeConfig(publish_relative_depth=True), everyone_listens, False, True)
    )
    # A switch turns off every topic of its row; only topics with a subscriber are made.
    assert topics(
        wanted_outputs(NodeConfig(publish_depth=False), everyone_listens, True, True)
    ) == [
        "dehazed/image",
        "dehazed/camera_info",
        "depth/confidence",
        "depth/colormap",
        "points",
        "visibility",
    ]
    only_visibility = wanted_outputs(NodeConfig(), lambda topic: topic == "visibility", True, True)
    assert topics(only_visibility) == ["visibility"]
    # What the engine must compute follows from the rows: visibility alone needs depth only.
    assert [(o.uses_dehazed, o.uses_depth) for o in only_visibility] == [(False, True)]
    camera_info_only = wanted_outputs(
        NodeConfig(), lambda topic: topic.endswith("camera_info"), True, True
    )
    assert not any(output.uses_engine for output in camera_info_only)


def test_builders_make_the_messages_with_the_input_header():
    from dehaze_ros.engine import EngineResult

    header = sensor_msgs.Image().header
    header.frame_id, header.stamp.sec = "cam", 7
    info = sensor_msgs.CameraInfo(width=8, height=6)
    info.k = [10.0, 0.0, 4.0, 0.0, 10.0, 3.0, 0.0, 0.0, 1.0]
    depth = np.full((6, 8), 5.0, np.float32)
    depth[0, 0] = np.inf
    rgb = np.full((6, 8, 3), 128, np.uint8)
    support = np.full((6, 8), SUPPORT_PLANE, np.uint8)
    support[0, 0], support[1] = SUPPORT_NONE, SUPPORT_LEARNED
    result = EngineResult(
        dehazed=rgb, depth=depth, depth_units="meters", timings_ms={}, depth_support=support
    )
    frame = FrameProducts(
        header,
        8,
        6,
        NodeConfig(depth_inf_as_nan=True, point_decimation=1),
        info,
        image=rgb,
        encoding="rgb8",
        rgb=rgb,
        result=result,
        depth_range=(0.1, 80.0),
    )
    messages = {output.topic: output.build(frame) for output in OUTPUTS}
    assert all(message.header.frame_id == "cam" for message in messages.values())
    assert messages["depth/image"].encoding == "32FC1"
    assert np.isnan(
        np.frombuffer(bytes(messages["depth/image"].data), np.float32)[0]
    )  # parameter applied
    assert messages["depth/colormap"].encoding == "bgr8"
    confidence = np.frombuffer(bytes(messages["depth/confidence"].data), np.float32).reshape(6, 8)
    assert messages["depth/confidence"].encoding == "32FC1"
    assert (
        confidence[0, 0] == 0.0 and confidence[1, 0] == CONFIDENCE[SUPPORT_LEARNED]
    )  # +inf: nothing to trust
    assert (
        confidence[2, 0] == CONFIDENCE[SUPPORT_PLANE]
        and ((confidence >= 0) & (confidence <= 1)).all()
    )
    assert messages["points"].width == 8 * 6 - 1  # the infinite pixel has no point
    assert messages["dehazed/camera_info"] is messages["depth/camera_info"]  # built once
    assert isinstance(messages["visibility"], sensor_msgs.Range)
    assert frame.visibility.status == "none"  # a flat 5 m wall gives no estimate


def test_build_messages_yields_the_rows_in_order_and_hands_over_those_it_cannot_make():
    """The one loop the node (publish) and process_bag (write) share."""
    from dehaze_ros.engine import EngineResult

    header = sensor_msgs.Image().header
    uncalibrated = sensor_msgs.CameraInfo(width=8, height=6)  # K and P all zero
    depth = np.full((6, 8), 5.0, np.float32)
    rgb = np.full((6, 8, 3), 128, np.uint8)
    frame = FrameProducts(
        header,
        8,
        6,
        NodeConfig(),
        uncalibrated,
        image=rgb,
        encoding="rgb8",
        rgb=rgb,
        result=EngineResult(
            dehazed=rgb,
            depth=depth,
            depth_units="meters",
            timings_ms={},
            depth_support=np.full((6, 8), SUPPORT_LEARNED, np.uint8),
        ),
    )
    assert frame.visibility_made is None
    not_made = []
    made = list(
        build_messages(
            OUTPUTS, frame, lambda output, exc: not_made.append((output.topic, str(exc)))
        )
    )
    assert topics(output for output, _ in made) == [
        topic for topic in topics(OUTPUTS) if topic != "points"
    ]
    assert not_made == [("points", not_made[0][1])] and not_made[0][1].startswith(UNCALIBRATED)
    assert frame.visibility_made is frame.visibility  # made by the visibility row, once


def snapshot(at: float, **counts) -> stats.StatsSnapshot:
    return stats.StatsSnapshot(taken_at=at, **counts)


def test_diagnostics_rates_and_levels_from_two_snapshots():
    config = NodeConfig()
    view = stats.NodeView(
        state="active",
        input_topic="/cam/image",
        have_camera_info=True,
        active_since=0.0,
        engine_info={
            "model": "checkpoint",
            "device": "cpu",
            "depth_units": "meters",
            "max_side": 320,
        },
        config=config,
    )
    previous = snapshot(10.0, received=10, processed=8)
    current = snapshot(
        12.0,
        received=30,
        processed=28,
        dropped=2,
        last_received_at=11.9,
        last_good_at=11.9,
        processing_ms=(10.0, 20.0, 30.0, 40.0),
    )
    diagnosis = stats.diagnose(current, previous, view)
    assert diagnosis.level == stats.OK
    assert diagnosis.message == "processing 10.0 Hz of 10.0 Hz input"
    values = diagnosis.values
    assert values[stats.KEY_DROPPED] == "2" and values[stats.KEY_PROCESSED] == "28"
    assert values["input rate (Hz)"] == "10.00"
    assert values["latency receive->publish median (ms)"] == "30.0"  # nearest rank
    assert values["max side"] == "320" and values[stats.KEY_MODEL] == "checkpoint"
    assert values["visibility status"] == "none" and "not computed yet" in values["visibility"]

    # A bad frame in the period warns; a good frame after it clears the level, not the counter.
    bad = dataclasses.replace(
        current,
        taken_at=13.0,
        invalid=1,
        last_problem="bad frame: x",
        last_problem_at=12.5,
        last_received_at=12.9,
    )
    warned = stats.diagnose(bad, current, view)
    assert warned.level == stats.WARN and "1 bad frame(s) in the last 1.0 s" in warned.message
    recovered = dataclasses.replace(bad, taken_at=14.0, last_good_at=13.5, last_received_at=13.9)
    cleared = stats.diagnose(recovered, bad, view)
    assert cleared.level == stats.OK and cleared.values[stats.KEY_INVALID] == "1"

    # Silence while active is NO INPUT, named with the topic.
    silent = stats.diagnose(snapshot(20.0, last_received_at=11.9), current, view)
    assert silent.level == stats.WARN and silent.message.startswith(
        "NO INPUT: no new frame on /cam/image"
    )


def test_a_dead_processing_thread_is_an_error_for_the_period_it_was_found_in():
    view = stats.NodeView(
        state="active",
        input_topic="/cam/image",
        have_camera_info=True,
        active_since=0.0,
        config=NodeConfig(),
        engine_info={"model": "checkpoint", "depth_units": "meters"},
    )
    previous = snapshot(10.0, received=10, processed=10, last_received_at=9.9, last_good_at=9.9)
    failure = "processing thread dehaze_worker died (SystemExit: x) and was restarted"
    died = dataclasses.replace(
        previous,
        taken_at=11.0,
        last_received_at=10.9,
        worker_restarts=1,
        last_worker_failure=failure,
        last_problem=failure,
        last_problem_at=10.5,
    )
    diagnosis = stats.diagnose(died, previous, view)
    assert diagnosis.level == stats.ERROR and diagnosis.message.startswith(failure)
    assert diagnosis.values["processing thread restarts"] == "1"
    # Once frames flow again the level clears; the counter and the cause stay for the record.
    later = dataclasses.replace(
        died, taken_at=12.0, processed=20, last_good_at=11.9, last_received_at=11.9
    )
    assert stats.diagnose(later, died, view).level == stats.OK
    assert stats.diagnose(later, died, view).values["last processing thread failure"] == failure


def test_an_unusable_camera_info_is_named_in_the_message():
    view = stats.NodeView(
        state="active",
        input_topic="/cam/image",
        have_camera_info=True,
        camera_info_problem="camera_info is uncalibrated: ...",
        active_since=0.0,
    )
    current = snapshot(2.0, received=5, processed=5, last_received_at=1.9, last_good_at=1.9)
    message = stats.diagnose(current, snapshot(1.0), view).message
    assert "camera_info is uncalibrated: ...: points are off" in message


def test_diagnostics_say_why_nothing_is_published():
    never_configured = stats.diagnose(
        snapshot(1.0), snapshot(0.0), stats.NodeView(state="unconfigured")
    )
    assert never_configured.level == stats.WARN
    assert never_configured.values[stats.KEY_STATE] == "unconfigured"
    failed = stats.diagnose(
        snapshot(1.0),
        snapshot(0.0),
        stats.NodeView(
            state="unconfigured", configure_error="configure failed: checkpoint not found: /x.pt"
        ),
    )
    assert (failed.level, failed.message) == (
        stats.ERROR,
        "configure failed: checkpoint not found: /x.pt",
    )
    refused = stats.diagnose(
        snapshot(1.0),
        snapshot(0.0),
        stats.NodeView(
            state="inactive",
            startup_refusals=("autostart:='maybe' is not a boolean; using the default True",),
        ),
    )
    assert refused.level == stats.ERROR and "start-up parameters refused" in refused.message
    relative = stats.diagnose(
        snapshot(1.0),
        snapshot(0.0),
        stats.NodeView(
            state="inactive",
            engine_info={"depth_units": "relative"},
            config=NodeConfig(model="dcp"),
        ),
    )
    assert relative.level == stats.WARN and "RELATIVE" in relative.message
    assert relative.values["visibility"] == stats.VISIBILITY_NEEDS_METRES


def test_diagnostics_report_the_last_visibility_estimate():
    distances = np.linspace(50.0, 400.0, 64 * 64, dtype=np.float32).reshape(64, 64)
    estimate = estimate_visibility(np.exp(-0.01 * distances), distances, (0.1, 1000.0))
    assert estimate.valid
    frame_stats = stats.FrameStats()
    frame_stats.received(1.0, replaced_unprocessed=False)
    frame_stats.processed(
        1.2,
        received_at=1.0,
        inference_ms=5.0,
        focal_assumed=False,
        estimate=estimate,
        stamp_age_ms=None,
    )
    current = frame_stats.snapshot(2.0)
    assert (current.processed, current.with_depth, current.with_visibility) == (1, 1, 1)
    assert current.processing_ms == pytest.approx((200.0,))
    values = stats.diagnose(
        current,
        snapshot(1.0),
        stats.NodeView(state="active", engine_info={"depth_units": "meters"}, config=NodeConfig()),
    ).values
    assert values["visibility (m)"] == "391.2" and values["visibility valid"] == "true"
    assert values["latency stamp->publish median (ms)"] == "n/a"


def test_diagnostics_say_where_the_time_per_frame_goes():
    frame_stats = stats.FrameStats()
    for index, dehaze_ms in enumerate((30.0, 50.0, 40.0)):
        frame_stats.received(1.0 + index, replaced_unprocessed=False)
        frame_stats.processed(
            1.1 + index,
            received_at=1.0 + index,
            inference_ms=dehaze_ms + 10.0,
            focal_assumed=False,
            estimate=None,
            stamp_age_ms=None,
            stages_ms={
                "wait": 2.0,
                "decode": 1.0,
                "dehaze": dehaze_ms,
                "depth": 10.0,
                "publish": 4.0 + index,
            },
        )
    values = stats.diagnose(
        frame_stats.snapshot(4.0),
        snapshot(0.0),
        stats.NodeView(state="active", config=NodeConfig()),
    ).values
    # Medians per stage, in the order a frame goes through them.
    assert values[stats.KEY_STAGES] == "wait 2.0, decode 1.0, dehaze 40.0, depth 10.0, publish 5.0"
    assert (
        stats.diagnose(snapshot(1.0), snapshot(0.0), stats.NodeView(state="active")).values[
            stats.KEY_STAGES
        ]
        == "n/a"
    )


def test_a_gpu_left_unused_is_a_warning_in_diagnostics():
    warning = (
        "device auto runs on the CPU although an NVIDIA GPU is visible (/dev/nvidia0 exists): ..."
    )
    view = stats.NodeView(
        state="active",
        input_topic="/cam/image",
        have_camera_info=True,
        engine_info={
            "model": "diacmpn-rt",
            "device": "cpu",
            "depth_units": "meters",
            "device_warning": warning,
        },
    )
    current = snapshot(1.0, received=10, processed=10, last_received_at=0.9, last_good_at=0.9)
    diagnosis = stats.diagnose(current, snapshot(0.0), view)
    assert diagnosis.level == stats.WARN and warning in diagnosis.message
    assert diagnosis.values[stats.KEY_DEVICE_WARNING] == warning
    healthy = stats.NodeView(
        state="active",
        input_topic="/cam/image",
        have_camera_info=True,
        engine_info={"model": "diacmpn-rt", "device": "cuda:0", "depth_units": "meters"},
    )
    assert (
        stats.diagnose(current, snapshot(0.0), healthy).values[stats.KEY_DEVICE_WARNING] == "none"
    )


def test_diagnostics_name_the_scale_source_with_its_factor_and_its_fallbacks():
    """/diagnostics says where the metres come from: ground plane (factor, inliers), held, learned."""
    view = stats.NodeView(
        state="active",
        input_topic="/cam/image",
        have_camera_info=True,
        active_since=0.0,
        engine_info={"depth_units": "meters", "canonical_focal_px": 200.0},
        config=NodeConfig(camera_height_m=1.65, camera_pitch_deg=0.0),
    )

    def values_after(*states):
        frame_stats = stats.FrameStats()
        for index, state in enumerate(states):
            frame_stats.processed(
                1.0 + index,
                received_at=1.0 + index,
                inference_ms=5.0,
                focal_assumed=False,
                estimate=None,
                stamp_age_ms=None,
                scale=state,
            )
        return stats.diagnose(frame_stats.snapshot(9.0), snapshot(0.0), view).values

    ground = ScaleState(GROUND, 1.73, quality=0.64, measured=1.75)
    values = values_after(ground)
    assert values["metric scale from"] == "ground plane (factor 1.73, inliers 64 %)"
    assert (values[stats.KEY_SCALE_SOURCE], values[stats.KEY_SCALE_FACTOR]) == ("ground", "1.730")
    held = ScaleState(
        GROUND, 1.73, held=True, age_s=2.5, quality=0.64, note="too little ground: 12 inliers"
    )
    values = values_after(ground, held)
    assert values["metric scale from"].startswith(
        "ground plane held (factor 1.73, measured 2.5 s ago"
    )
    assert "too little ground" in values["metric scale from"]
    assert values[stats.KEY_SCALE_SOURCE] == "ground (held)"
    assert values["frames with the scale held (no estimate)"] == "1"
    fallen = ScaleState(
        LEARNED, 1.0, note="ground plane: no estimate for 10.5 s, beyond the hold of 10"
    )
    values = values_after(ground, held, fallen)
    assert (
        values["metric scale from"]
        == "learned only (ground plane: no estimate for 10.5 s, beyond the hold of 10)"
    )
    assert values["frames at the learned scale after a source failed"] == "1"
    # No scale source configured: the network's metres, and the focal length they rest on.
    values = values_after(ScaleState(LEARNED, 1.0))
    assert values["metric scale from"] == "learned only (camera_info focal length)"
