#!/usr/bin/env bash
# One GPU window of the device tool (about 9 minutes of training in a 15-minute budget): train
# diacmpn-rt from the shipped weights, export the best EMA weights, evaluate them
# beside DCP, and
# leave checkpoints, logs and tables in $OUT (what the device tool brings back).
#
#   bash training/gpu_campaign.sh --prepare      # here, before each device call: pack the training
#                                                # data into .gpu_data/ for today's working tree
#   device run: bash training/gpu_campaign.sh    # carry [".gpu_data"], timeout_s 600
#   bash training/gpu_campaign.sh --dry-run      # here, on the CPU: a few tiny steps of every stage
#                                                # (DRY_RUN_DATA=.gpu_data: through the pack)
#
# Inference on the GPU (engine, onnxruntime, TensorRT, the node) is the other script a window can
# run: python -m dehaze_ros.tools.gpu_check --out $OUT (docs/performance.md, "The GPU check").
#
# Environment: PYTHON (default: .venv/bin/python here, python3 on the GPU machine), OUT (default
# gpu_out), MINUTES (training budget, default 9), INIT (weights to fine-tune; default the shipped
# checkpoint; none = from scratch), BATCH (default 64).
# The data pipeline hazes on the CPU workers (16 cores there), not on the GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=.gpu_data
mode=${1:-run}
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if [[ $mode == --prepare ]]; then
    # What the training config reads (RGB-D scenes incl. Middlebury 2001-2006, RESIDE ITS), one xz
    # archive per scene: the device tool carries at most 64 MiB with the working tree, and the
    # plain files alone take about 53 MB. check fails when the two together do not fit.
    $PYTHON -m training.gpu_data pack ../shared/data "$DATA"
    $PYTHON -m training.gpu_data check "$DATA"
    exit 0
fi

OUT=${OUT:-gpu_out}
MINUTES=${MINUTES:-9}
BATCH=${BATCH:-64}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

if [[ $mode == --dry-run ]]; then
    # The CPU: seconds, not minutes. DRY_RUN_DATA: a data root (../shared/data) or a pack.
    DATA=${DRY_RUN_DATA:-../shared/data}
    MINUTES=1
fi
if [[ -f $DATA/manifest.json && $mode == --dry-run ]]; then
    # Not into the pack: a dry run must not leave 35 MiB of plain files in the carried folder.
    unpacked=$(mktemp -d)
    trap 'rm -rf "$unpacked"' EXIT
    $PYTHON -m training.gpu_data unpack "$DATA" --to "$unpacked/root"
    DATA=$unpacked/root
elif [[ -f $DATA/manifest.json ]]; then
    $PYTHON -m training.gpu_data unpack "$DATA"
    DATA=$DATA/root
elif [[ ! -d $DATA ]]; then
    echo "error: $DATA is missing: run 'bash training/gpu_campaign.sh --prepare' here and carry it" >&2
    exit 2
fi
overrides=(data.root="$DATA" data.batch_size="$BATCH" data.workers=-1 train.device=auto train.precision=auto
           train.val_every=500 train.checkpoint_every=500)
if [[ $mode == --dry-run ]]; then
    overrides=(data.root="$DATA" data.batch_size=2 data.crop=48 data.workers=0 data.val_max_side=64
               data.val_max_images=1 train.device=cpu train.steps=3 train.val_every=3 train.checkpoint_every=3
               train.log_every=1)
fi

# The shipped weights (INIT=none: from scratch). The fields a fine-tune may change
# (FINE_TUNE_MAY_CHANGE) are set to the checkpoint's (the shipped one's depth network reads -ln t,
# the preset's does not); a file that cannot be read stops the script here, and a network the
# preset cannot take stops the trainer, never a silent start from scratch. The fine-tune
# follows the recipe of the shipped lineage (docs/results.md, stages 13-19: SSIM as heavy as L1, t and A
# supervised, 256 px crops) at a rate between those CPU fine-tunes' (2.5e-5 to 1e-4 at batch 8) and
# the from-scratch stages' (3e-4 to 1e-3), for batch 64. The dry run passes it too (its own crop
# and batch come after it and win), so a key the trainer does not know fails here, not there.
INIT=${INIT:-dehaze_ros/checkpoints/default.pt}

init=()
recipe=()
if [[ $INIT == none ]]; then
    start="starting from scratch (INIT=none)"
else
    model_overrides=$($PYTHON - "$INIT" <<'EOF'
import json
import sys
from pathlib import Path
from dehaze_ros.checkpoint import load_checkpoint
from dehaze_ros.models import ModelConfig, get_model_config
from dehaze_ros.models.config import FINE_TUNE_MAY_CHANGE
if not Path(sys.argv[1]).is_file():
    sys.exit(f"error: INIT={sys.argv[1]} does not exist (INIT=none trains from scratch)")
try:
    theirs = ModelConfig.from_dict(load_checkpoint(sys.argv[1]).model_config).to_dict()
except Exception as error:  # a corrupt or foreign file: say so, do not train something else
    sys.exit(f"error: INIT={sys.argv[1]} cannot be fine-tuned: {error}")
ours = get_model_config("diacmpn-rt").to_dict()
# Only the fields a fine-tune may change; any other difference is the trainer's to refuse
# (train.init_from), which stops this script before the window is spent.
print(" ".join(f"model.overrides.{key}={json.dumps(theirs[key])}" for key in FINE_TUNE_MAY_CHANGE
               if key != "name" and theirs[key] != ours[key]))
EOF
)
    read -r -a model_args <<< "$model_overrides"
    init=(train.init_from="$INIT" "${model_args[@]}")
    recipe=(loss.ssim=1.0 loss.transmission=1.0 loss.airlight=1.0 data.crop=256 optim.lr_dehazer=2e-4
            optim.lr_depth=2e-4 optim.warmup_steps=100)
    start="starting from $INIT ${model_args[*]}"
fi

# Evaluated as deployed: at the node's max_side, read from its parameter table (the one home).
NODE_MAX_SIDE=$($PYTHON -c 'from dehaze_ros.node_config import SPECS; print(SPECS["max_side"].default)')

{
    echo "$start"
    echo "== $(date -u +%FT%TZ) $($PYTHON -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")')"
    $PYTHON -m training.train --config config/train/diacmpn_rt.yaml --run-dir "$OUT/run_rt" \
        --max-minutes "$MINUTES" "${init[@]}" "${recipe[@]}" "${overrides[@]}"
    $PYTHON -m training.export "$OUT/run_rt/best.pt" -o "$OUT/diacmpn_rt.pt"
    $PYTHON -m training.evaluate --checkpoint "$OUT/diacmpn_rt.pt" --baseline dcp --engine-max-side "$NODE_MAX_SIDE" \
        --data "$DATA/rgbd/middlebury2014" --scenes Pipes,Shelves,Teddy --grids 0 --out "$OUT/eval_val"
    cp "$OUT/eval_val/summary.md" "$OUT/eval_val.md"
    cp "$OUT/run_rt/metrics.jsonl" "$OUT/metrics_rt.jsonl"
} 2>&1 | tee "$OUT/campaign.log"
# The device tool brings back at most 8 files, 2 folders deep: keep the run folder's bulk out.
[[ $mode == --dry-run ]] || rm -rf "$OUT/run_rt" "$OUT/eval_val"
