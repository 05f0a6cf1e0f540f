#!/usr/bin/env bash
# Schedules x objectives on the digits demo, at a shorter budget (600 steps instead of 1500):
# each run is scored with DDIM 50 steps (guidance 1) by the demo run's own metric classifier,
# copied in so every run is measured in the same feature space.
# Usage: bash scripts/image_study.sh   (after outputs/image_digits has its sweep)
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
for combo in linear:eps linear:v cosine:eps cosine:v; do
  schedule=${combo%%:*}
  prediction=${combo##*:}
  out=outputs/image_study/${schedule}_${prediction}
  mkdir -p "$out"
  cp outputs/image_digits/classifier.pt "$out/classifier.pt"
  python -m arcdiff image train --config configs/image_digits.json --out "$out" --no-diagnostics \
    --set train.steps=600 --set diffusion.schedule="$schedule" --set diffusion.prediction="$prediction"
  python -m arcdiff image sweep --run "$out" --threads 1 \
    --set 'eval.sweep_steps=[50]' --set eval.sweep_ddpm=false --set 'eval.sweep_guidance=[]'
done
