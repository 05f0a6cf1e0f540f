#!/usr/bin/env bash
# The faults a user meets, tried by hand on a tiny run (NOTES.md, "Runs survive interruption"):
# kill -9 and resume, Ctrl-C and SIGTERM, a fresh train into a killed run, a full disk (a 5 MB
# tmpfs; root only), impossible --out folders, mistyped evaluate options, a quick evaluation
# beside the run's scores, --set of a model field, a bool in a grid, `data show` piped.
# Usage: bash scripts/user_faults.sh [WORK_DIR]   (default: a new temporary folder)
set -u
export OMP_NUM_THREADS=1
A=${ARCDIFF:-arcdiff}
W=${1:-$(mktemp -d)}
mkdir -p "$W" && cd "$W" || exit 1
T=(--set 'data.ids=["0d3d703e","25ff71a9","3c9b0459","6150a2bd","a85d4709","d037b0a7"]'
   --set data.max_size=5 --set 'data.eval_sources=[]' --set data.val_pairs=2
   --set model.d_model=32 --set model.n_heads=2 --set model.n_layers=1
   --set train.batch_size=8 --set train.threads=1)
steps() { python3 -c "import json,sys; s=[json.loads(l)['step'] for l in open(sys.argv[1]) if '\"loss\"' in l]; print(len(s), 'rows,', len(set(s)), 'distinct steps')" "$1/metrics.jsonl"; }

echo "== kill -9 with train.save_every=5, then --resume"
$A train --out k --no-progress "${T[@]}" --set train.max_steps=300 --set train.save_every=5 >/dev/null 2>&1 & p=$!
while [ ! -e k/checkpoints/step_0000020.pt ]; do sleep 0.1; done; kill -9 $p; wait $p 2>/dev/null
$A train --out k --no-progress --resume "${T[@]}" --set train.max_steps=300 --set train.save_every=5 2>&1 | grep -E "resuming|done|error"
steps k

for sig in INT TERM; do
  echo "== SIG$sig during training"
  $A train --out s$sig --no-progress "${T[@]}" --set train.max_steps=100000 >/dev/null 2>s$sig.err & p=$!
  while [ ! -e s$sig/metrics.jsonl ]; do sleep 0.1; done; sleep 2; kill -$sig $p; wait $p; echo "exit $?"; cat s$sig.err
done

echo "== a fresh train into that run"
$A train --out sINT --no-progress "${T[@]}" 2>&1 | tail -n 1

echo "== a full disk (5 MB tmpfs)"
mkdir -p disk && if mount -t tmpfs -o size=5m tmpfs disk 2>/dev/null; then
  $A train --out disk/run --no-progress "${T[@]}" --set train.max_steps=300 --set train.save_every=1 2>&1 >/dev/null | cat
  echo "temporary files left: $(find disk -name '*.tmp' | wc -l)"; umount disk
else echo "(cannot mount a tmpfs here)"; fi

echo "== impossible --out"
touch afile; $A train --out afile/run "${T[@]}" 2>&1 >/dev/null | cat; $A train --out /proc/x "${T[@]}" 2>&1 >/dev/null | cat

echo "== evaluate: mistyped options, a quick evaluation, a model --set"
for opt in "--num-augs 0" "--limit 0" "--limit -1" "--device foo"; do $A evaluate --run k $opt 2>&1 | tail -n 1; done
$A evaluate --run /no/such/dir 2>&1 | tail -n 1
$A evaluate --run k --split aa1:train --limit 1 --num-steps 1 >/dev/null 2>&1; ls k/eval
$A evaluate --run k --split aa1:train --set model.d_model=48 2>&1 | tail -n 1

echo "== a bool beside integers in a grid; data show piped"
mkdir -p bools && echo '{"train":[{"input":[[1,true],[0,2]],"output":[[1]]}],"test":[{"input":[[1]]}]}' > bools/t.json
$A data validate bools 2>&1 | grep -E "True|error"
$A data show aa1:train/007bbfb7 | head -n 8
echo "work folder: $W"
