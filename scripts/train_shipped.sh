#!/usr/bin/env bash
# Train the shipped model in the background, in stages (see the model card):
#   1. paired supervised pre-training on 64² patches (configs/paired.yaml)
#   1b. the paired ablation: 1 continued on 128² patches (configs/paired_large.yaml), paired.pt
#   2. CycleGAN fine-tuning on 128² patches with a paired anchor (configs/shipped.yaml),
#      initialised from 1 (not 1b), exported as lowdose-liver-pan.pt
# Run folders, checkpoints and logs go to ~/.cache/lowdose-denoise/runs/; rerunning the
# script resumes both stages from their checkpoints.  Afterwards:
#   python benchmarks/model_card_eval.py --paired ~/.cache/lowdose-denoise/runs/paired-ablation-large/paired.pt
#
# Usage: scripts/train_shipped.sh            (background, log in ~/.cache/lowdose-denoise/logs/)
#        scripts/train_shipped.sh --foreground
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
export OMP_NUM_THREADS=1  # a shared CPU: oversubscribed OpenMP threads ran 4x slower
RUNS="$HOME/.cache/lowdose-denoise/runs"
LOGS="$HOME/.cache/lowdose-denoise/logs"
CONFIGS=LowDoseDenoise/LowDoseDenoiseLib/training/configs
mkdir -p "$LOGS"

if [[ "${1:-}" != "--foreground" ]]; then
    nohup "$0" --foreground > "$LOGS/train_shipped.log" 2>&1 &
    echo "training in the background (pid $!); log: $LOGS/train_shipped.log"
    exit 0
fi

stage() {  # config, run name, exported file name
    PYTHONPATH=LowDoseDenoise "$PY" - "$1" "$2" "$3" <<'PYEOF'
import sys
from pathlib import Path
from LowDoseDenoiseLib.training.trainer import train_from_config
from LowDoseDenoiseLib.training.export import export_checkpoint
config, name, exported = sys.argv[1:4]
folder = train_from_config(config, resume=True, progress=True)
print(export_checkpoint(str(folder / "checkpoint.pt"), str(folder / exported), name=name))
PYEOF
}

stage "$CONFIGS/paired.yaml" paired-ablation paired64.pt
stage "$CONFIGS/paired_large.yaml" paired-ablation paired.pt
stage "$CONFIGS/shipped.yaml" lowdose-liver-pan lowdose-liver-pan.pt
echo "done: $RUNS/lowdose-liver-pan/lowdose-liver-pan.pt (copy it to LowDoseDenoise/Resources/Models/)"
