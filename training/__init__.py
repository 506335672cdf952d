"""Offline training, evaluation and export of the DIACMPN networks that dehaze_ros deploys.

    python -m training.train    --config config/train/diacmpn_rt.yaml [key=value ...]
    python -m training.evaluate --checkpoint PATH --data SPEC [--baseline dcp]
    python -m training.export   RUN_DIR/best.pt -o dehaze_ros/checkpoints/NAME.pt

The networks come from ``dehaze_ros.models`` (one definition in the whole repository); the
deployable checkpoint format from ``dehaze_ros.checkpoint``. See docs/training.md.
"""
