#!/usr/bin/env bash
# Label / text / latent+text U-Nets on digits at one training budget (NOTES: image track, part 3).
# Trains the VAE, then the three models (with their diagnostics), then scores each with DDIM 50
# at guidance 1 and 2 (300 samples) and its class alignment (30 per class, a noise seed per
# class, guidance 2). The label run's metric classifier is copied into the other two runs before
# they train, so every row is measured in the same feature space.
# Usage: bash scripts/image_text_latent.sh [STEPS]   (default 1500, the configs' budget)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
STEPS=${1:-1500}
export OMP_NUM_THREADS=1
stamp() { echo "== $(date -u +%H:%M:%S) $*"; }
stamp vae
$PY -m arcdiff image vae --config image_digits_latent --out outputs/image_digits_vae
for config in image_digits image_digits_text image_digits_latent; do
  out=outputs/$config
  if [ "$config" != image_digits ]; then
    mkdir -p "$out" && cp outputs/image_digits/classifier.pt "$out/classifier.pt"
  fi
  stamp "train $config"
  $PY -m arcdiff image train --config "$config" --out "$out" --set train.steps="$STEPS"
  stamp "sweep $config"
  $PY -m arcdiff image sweep --run "$out" --threads 1 \
    --set 'eval.sweep_steps=[50]' --set eval.sweep_ddpm=false --set 'eval.sweep_guidance=[2.0]'
done
stamp done
$PY scripts/image_text_latent_table.py outputs/image_digits outputs/image_digits_text \
  outputs/image_digits_latent --vae outputs/image_digits_vae
