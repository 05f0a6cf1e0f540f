#!/usr/bin/env bash
# The GPU path in one command (issue 21). On a machine with a CUDA device:
#   1. the placement tests on CUDA (every random draw from a generator on its device)
#   2. pipeline smol_aa1 for 300 steps with bf16, scoring 40 aa1 eval tasks
#   3. evaluate the same 40 tasks again: the eval seed holds on CUDA (same predictions.json)
#   4. torchrun on 2 GPUs for 50 steps with --device cuda (NCCL; skipped with one GPU)
#   5. resume exactness on CUDA with dropout and self-conditioning (30 steps straight, twice,
#      against 15 + a resume to 30); torch.equal, or no further apart than two straight runs
#   6. scripts/bench_train.py smol_aa1 with bf16: the training step's MFU
# prints a table and exits 1 if a check failed (2 without a CUDA device). The step counts keep
# it under 8 minutes on one H100/H200.
# Usage: bash scripts/gpu_check.sh [WORK_DIR]   (default: a new temporary folder)
#        PYTHON=.venv/bin/python bash scripts/gpu_check.sh
set -u
PY=${PYTHON:-python}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if ! $PY -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check.sh: no CUDA device is visible to torch ($PY); run it on a machine with a GPU" >&2
  exit 2
fi
W=${1:-$(mktemp -d)}
mkdir -p "$W" || exit 2
GPUS=$($PY -c 'import torch; print(torch.cuda.device_count())')
NAME=$($PY -c 'import torch; print(torch.cuda.get_device_name(0))')
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT" || exit 2
echo "gpu_check: $GPUS x $NAME, work folder $W"

ROWS=()
FAILED=0
row() {  # name, PASS/FAIL/SKIP, detail, seconds
  ROWS+=("$(printf '%-34s %-5s %7ss  %s' "$1" "$2" "$4" "$3")")
  [ "$2" = FAIL ] && FAILED=1
  echo "[$2] $1: $3"
}
since() { echo $(( $(date +%s) - $1 )); }
field() {  # a JSON file's dotted field
  $PY -c 'import json, sys; v = json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): v = v[k]
print(v)' "$1" "$2" 2>/dev/null || echo "?"
}

# 1. placement tests on CUDA
t=$(date +%s)
if $PY -m pytest -q -p no:cacheprovider tests/runs/test_device.py -k cuda >"$W/placement.log" 2>&1; then
  row "placement tests on cuda" PASS "$(tail -n 1 "$W/placement.log")" "$(since $t)"
else
  row "placement tests on cuda" FAIL "see $W/placement.log" "$(since $t)"
fi

# 2. the pipeline, bf16, 300 steps, 40 eval tasks
SMOL=(--config configs/smol_aa1.json --set train.max_steps=300 --set train.warmup_steps=30
      --set train.eval_every=150 --set train.save_every=null --set train.max_minutes=null
      --set train.bf16=true --set eval.bf16=true --set eval.limit=40)
t=$(date +%s)
if $PY -m arcdiff pipeline "${SMOL[@]}" --out "$W/smol" --device cuda --no-progress \
    >"$W/pipeline.log" 2>&1; then
  scores="$W/smol/eval/aa1_eval/scores.json"
  learnt=$($PY -c 'import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if "\"loss\"" in l]
first, last = rows[0]["loss"], rows[-1]["loss"]
print("ok" if math.isfinite(last) and last < first else "no", f"loss {first:.3f} -> {last:.3f}")' \
    "$W/smol/metrics.jsonl" 2>/dev/null || echo "no metrics")
  detail="$learnt, pass@2 $(field "$scores" summary.pass@2), cells $(field "$scores" summary.cell_accuracy)"
  [ "${learnt%% *}" = ok ] && row "pipeline smol_aa1 300 steps bf16" PASS "$detail" "$(since $t)" \
    || row "pipeline smol_aa1 300 steps bf16" FAIL "$detail" "$(since $t)"
else
  row "pipeline smol_aa1 300 steps bf16" FAIL "see $W/pipeline.log" "$(since $t)"
fi

# 3. the evaluation again: the same seed gives the same predictions on CUDA
t=$(date +%s)
if [ -f "$W/smol/eval/aa1_eval/predictions.json" ]; then
  cp "$W/smol/eval/aa1_eval/predictions.json" "$W/pipeline_predictions.json"
  if $PY -m arcdiff evaluate --run "$W/smol" --limit 40 --device cuda >"$W/evaluate.log" 2>&1; then
    if cmp -s "$W/pipeline_predictions.json" "$W/smol/eval/aa1_eval/predictions.json"; then
      row "evaluate 40 aa1 eval tasks again" PASS "predictions.json identical to the pipeline's" "$(since $t)"
    else
      row "evaluate 40 aa1 eval tasks again" FAIL "predictions.json differs from the pipeline's" "$(since $t)"
    fi
  else
    row "evaluate 40 aa1 eval tasks again" FAIL "see $W/evaluate.log" "$(since $t)"
  fi
else
  row "evaluate 40 aa1 eval tasks again" FAIL "no pipeline predictions to compare" "$(since $t)"
fi

# 4. DDP over NCCL on two GPUs, --device cuda (each rank on GPU LOCAL_RANK)
t=$(date +%s)
if [ "$GPUS" -ge 2 ]; then
  PORT=$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  if $PY -m torch.distributed.run --nproc_per_node 2 --master_port "$PORT" -m arcdiff train \
      "${SMOL[@]}" --set train.max_steps=50 --set train.eval_every=50 --out "$W/ddp" \
      --device cuda --no-progress >"$W/ddp.log" 2>&1 && grep -q "world size 2" "$W/ddp.log"; then
    steps=$($PY -c 'import json, sys
print(len([1 for l in open(sys.argv[1]) if "\"loss\"" in l]))' "$W/ddp/metrics.jsonl")
    [ "$steps" = 50 ] && row "torchrun 2 GPUs 50 steps" PASS "world size 2, 50 metric rows" "$(since $t)" \
      || row "torchrun 2 GPUs 50 steps" FAIL "$steps metric rows, expected 50" "$(since $t)"
  else
    row "torchrun 2 GPUs 50 steps" FAIL "see $W/ddp.log" "$(since $t)"
  fi
else
  row "torchrun 2 GPUs 50 steps" SKIP "$GPUS GPU visible" "$(since $t)"
fi

# 5. resume exactness on CUDA: dropout draws from the CUDA generator a checkpoint keeps
t=$(date +%s)
TOINY=(--config configs/toiny_aa1.json --set model.dropout=0.1 --set model.self_condition=true
       --set train.self_cond_prob=0.5 --set train.lr_schedule=constant --set train.warmup_steps=5
       --set train.eval_every=15 --set train.quick_eval_every=null --set train.max_minutes=null)
ok=1
for run in straight again; do
  $PY -m arcdiff train "${TOINY[@]}" --set train.max_steps=30 --out "$W/resume_$run" \
    --device cuda --no-progress >"$W/resume_$run.log" 2>&1 || ok=0
done
$PY -m arcdiff train "${TOINY[@]}" --set train.max_steps=15 --out "$W/resume_cut" \
  --device cuda --no-progress >"$W/resume_cut.log" 2>&1 || ok=0
$PY -m arcdiff train "${TOINY[@]}" --set train.max_steps=30 --out "$W/resume_cut" --resume \
  --device cuda --no-progress >>"$W/resume_cut.log" 2>&1 || ok=0
if [ $ok = 1 ]; then
  verdict=$($PY - "$W" <<'EOF'
import sys
import torch
w = sys.argv[1]
def weights(run):
    return torch.load(f"{w}/resume_{run}/checkpoints/last.pt", weights_only=False)["model"]
a, b, cut = weights("straight"), weights("again"), weights("cut")
def apart(x, y):
    return max((x[k].float() - y[k].float()).abs().max().item() for k in x)
floor, resumed = apart(a, b), apart(a, cut)
if resumed == 0:
    print("PASS resumed weights torch.equal to the straight run's")
elif floor > 0 and resumed <= 10 * floor:
    print(f"PASS max |diff| {resumed:.2e}, two straight runs {floor:.2e} (kernels not deterministic)")
else:
    print(f"FAIL max |diff| {resumed:.2e} from the straight run; two straight runs {floor:.2e}")
EOF
)
  row "resume exactness on cuda" "${verdict%% *}" "${verdict#* }" "$(since $t)"
else
  row "resume exactness on cuda" FAIL "see $W/resume_*.log" "$(since $t)"
fi

# 6. the training step's bf16 MFU
t=$(date +%s)
if $PY scripts/bench_train.py --config smol_aa1 --device cuda --steps 10 --warmup 3 \
    --json "$W/bench.json" >"$W/bench.log" 2>&1; then
  mfu=$(field "$W/bench.json" median_mfu)
  bf16=$(field "$W/bench.json" autocast_bf16)
  detail=$($PY -c 'import sys; print(f"MFU {float(sys.argv[1]):.1%}, autocast bf16 {sys.argv[2]}")' \
    "$mfu" "$bf16" 2>/dev/null || echo "MFU $mfu")
  [ "$bf16" = True ] && row "bench_train smol_aa1 bf16 MFU" PASS "$detail" "$(since $t)" \
    || row "bench_train smol_aa1 bf16 MFU" FAIL "$detail" "$(since $t)"
else
  row "bench_train smol_aa1 bf16 MFU" FAIL "see $W/bench.log" "$(since $t)"
fi

echo
printf '%-34s %-5s %8s  %s\n' check result time detail
for r in "${ROWS[@]}"; do echo "$r"; done
exit $FAILED
