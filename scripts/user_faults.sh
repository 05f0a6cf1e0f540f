#!/usr/bin/env bash
# The faults a user meets, tried as a user would on tiny runs, each a row of a table printed at
# the end (case, expected, got, ok); exit 1 if any row is not ok. NOTES.md records a run.
#   kill -9 and resume, Ctrl-C and SIGTERM, a fresh train into a killed run, a full disk (a 5 MB
#   tmpfs; root only), impossible --out folders, mistyped evaluate options, a quick evaluation
#   beside the run's scores, --set of a model field, a bool in a grid, `data show` piped;
#   issue 30: two writers into one run (fresh and --resume), a lock held by another process,
#   out of memory (ulimit -v), --device cuda / mps on a CPU torch, resume from config.json,
#   --set of an unsafe field on resume, pipeline on a finished run (with and without --resume),
#   an eval folder that cannot be written, --no-maj --num-augs 4, new tasks on evaluate,
#   report.html copied alone (and a Chromium screenshot of it where chromium is installed),
#   report --out, data validate --ids, the global help.
# Usage: bash scripts/user_faults.sh [WORK_DIR]   (default: a new temporary folder)
#   ARCDIFF (default: arcdiff) is the command; PY (default: python3) a python with arcdiff.
set -u
export OMP_NUM_THREADS=1
A=${ARCDIFF:-arcdiff}
PY=${PY:-python3}
W=${1:-$(mktemp -d)}
mkdir -p "$W" && cd "$W" || exit 1
T=(--set 'data.ids=["0d3d703e","25ff71a9","3c9b0459","6150a2bd","a85d4709","d037b0a7"]'
   --set data.max_size=5 --set 'data.eval_sources=[]' --set data.val_pairs=2
   --set model.d_model=32 --set model.n_heads=2 --set model.n_layers=1
   --set train.batch_size=8 --set train.threads=1)
E=(--set eval.split=aa1:train --set eval.num_steps=2 --set eval.num_augs=2)

ROWS=()
row() { ROWS+=("$1"$'\t'"$2"$'\t'"$3"$'\t'"$4"); echo "[$4] $1: $3" >&2; }
ok_if() { if "$@"; then echo ok; else echo FAIL; fi; }
# one_line CASE WORDS CMD...: CMD exits 1 with one line on stderr holding WORDS, no traceback
one_line() {
  local case=$1 words=$2 err rc n; shift 2
  err=$("$@" 2>&1 >/dev/null); rc=$?
  n=$(printf '%s' "$err" | grep -c .)
  row "$case" "exit 1, one line: $words" "exit $rc, $n line(s): ${err:0:110}" \
    "$(ok_if test "$rc" = 1 -a "$n" = 1 -a "${err/*"$words"*/yes}" = yes)"
}
# steps RUN: "N rows, M distinct steps" of the loss rows of RUN/metrics.jsonl
steps() { python3 -c "import json,sys; s=[json.loads(l)['step'] for l in open(sys.argv[1]) if '\"loss\"' in l]; print(len(s), 'rows,', len(set(s)), 'distinct steps')" "$1/metrics.jsonl"; }

# --- faults from before issue 30 -----------------------------------------------------------
$A train --out k --no-progress "${T[@]}" --set train.max_steps=300 --set train.save_every=5 >/dev/null 2>&1 & p=$!
while [ ! -e k/checkpoints/step_0000020.pt ]; do sleep 0.1; done; kill -9 $p; wait $p 2>/dev/null
$A train --out k --no-progress --resume --set train.max_steps=300 >/dev/null 2>&1
got=$(steps k); row "kill -9, then train --resume" "300 rows, 300 distinct steps" "$got" \
  "$(ok_if test "$got" = "300 rows, 300 distinct steps")"

for sig in INT TERM; do
  $A train --out s$sig --no-progress "${T[@]}" --set train.max_steps=100000 >/dev/null 2>s$sig.err & p=$!
  while [ ! -e s$sig/metrics.jsonl ]; do sleep 0.1; done; sleep 2; kill -$sig $p; wait $p; rc=$?
  want=$([ $sig = INT ] && echo 130 || echo 143)
  row "SIG$sig during training" "exit $want, one line" "exit $rc: $(head -c 110 s$sig.err)" \
    "$(ok_if test $rc = $want -a "$(grep -c . s$sig.err)" = 1)"
done
one_line "a fresh train into that run" "already holds a run" $A train --out sINT --no-progress "${T[@]}"

mkdir -p disk && if mount -t tmpfs -o size=5m tmpfs disk 2>/dev/null; then
  one_line "a full disk (5 MB tmpfs)" "No space left" \
    $A train --out disk/run --no-progress "${T[@]}" --set train.max_steps=300 --set train.save_every=1
  n=$(find disk -name '*.tmp' | wc -l); umount disk
  row "  temporary files left on it" "0" "$n" "$(ok_if test "$n" = 0)"
else row "a full disk (5 MB tmpfs)" "one line" "(cannot mount a tmpfs here)" skipped; fi

touch afile
one_line "--out under a file" "cannot create the run directory" $A train --out afile/run "${T[@]}"
one_line "--out in /proc" "cannot create the run directory" $A train --out /proc/x "${T[@]}"
one_line "evaluate --num-augs 0" "--num-augs 0: must be >= 1" $A evaluate --run k --num-augs 0
one_line "evaluate --limit 0" "--limit 0: must be >= 1" $A evaluate --run k --limit 0
one_line "evaluate --limit -1" "--limit -1: must be >= 1" $A evaluate --run k --limit -1
one_line "evaluate --device foo" "not a device" $A evaluate --run k --device foo
one_line "evaluate a missing run" "no such run directory" $A evaluate --run /no/such/dir
$A evaluate --run k --split aa1:train --limit 1 --num-steps 1 --no-progress >/dev/null 2>&1
got=$(ls k/eval | tr '\n' ' ')
row "a quick evaluation" "a tagged folder" "$got" "$(ok_if test "${got/*steps1-limit1*/yes}" = yes)"
one_line "evaluate --set model.d_model=48" "model.d_model" \
  $A evaluate --run k --split aa1:train --set model.d_model=48
mkdir -p bools && echo '{"train":[{"input":[[1,true],[0,2]],"output":[[1]]}],"test":[{"input":[[1]]}]}' > bools/t.json
got=$($A data validate bools 2>&1 | grep -c True)
row "a bool in a grid: data validate" "the table names True" "$got line(s) name True" \
  "$(ok_if test "$got" -ge 1)"
got=$($A data show aa1:train/007bbfb7 | sed -n 5p)
row "data show, piped" "rows of digits" "$got" "$(ok_if test "$got" = "0 7 7")"

# --- issue 30 ------------------------------------------------------------------------------
for what in fresh resume; do
  if [ $what = fresh ]; then args=(train --out two --no-progress "${T[@]}" --set train.max_steps=250); n=250
  else args=(train --out two --resume --no-progress --set train.max_steps=500); n=500; fi
  $A "${args[@]}" >/dev/null 2>two1.err & p1=$!; $A "${args[@]}" >/dev/null 2>two2.err & p2=$!
  wait $p1; r1=$?; wait $p2; r2=$?
  got="exit $r1 and $r2; $(cat two1.err two2.err | head -c 90); $(steps two)"
  row "two train$([ $what = resume ] && echo " --resume") at once" \
    "exit 0 and 1, 'in use by', $n rows, $n distinct steps" "$got" \
    "$(ok_if test $((r1 + r2)) = 1 -a "$(steps two)" = "$n rows, $n distinct steps" \
       -a "$(cat two1.err two2.err | grep -c 'in use by another writer')" = 1)"
done

$PY -c "from arcdiff.runs.lock import run_lock; import pathlib, time
with run_lock(pathlib.Path('k'), 'train'): print('held', flush=True); time.sleep(600)" > hold.out & h=$!
while ! grep -q held hold.out 2>/dev/null; do sleep 0.1; done
one_line "a lock held by another process" "(pid $h: arcdiff train)" $A report k
kill -9 $h; wait $h 2>/dev/null
$A report k >/dev/null 2>&1; rc=$?
row "  the holder killed -9, then report" "exit 0" "exit $rc" "$(ok_if test $rc = 0)"

one_line "out of memory (ulimit -v 2 GB)" "train.batch_size=100000; lower it" \
  bash -c "ulimit -v 2097152; exec $A train --out oom --no-progress \"\$@\" --set train.batch_size=100000" _ "${T[@]}"
got=$(ls -A oom 2>/dev/null | tr '\n' ' ')
row "  what it left in the run folder" "only .lock" "${got:-nothing}" "$(ok_if test "$got" = ".lock ")"
one_line "train --device cuda on a CPU torch" "--device cuda: this torch" \
  $A train --out dev --device cuda "${T[@]}"
one_line "evaluate --device mps" "--device mps: not available" $A evaluate --run k --device mps

$A train --config toiny_aa1 --out p --no-progress "${T[@]}" "${E[@]}" --set train.max_steps=20 >/dev/null 2>&1
got=$($A train --out p --resume --no-progress --set train.max_steps=30 2>&1 | tail -n 1)
row "train --out RUN --resume --set train.max_steps=30 (made from a preset + --set)" "done: 30 steps" \
  "$got" "$(ok_if test "${got/*done: 30 steps*/yes}" = yes)"
got=$($A train --out p --resume --no-progress 2>&1 | tail -n 1)
row "train --out RUN --resume, nothing left to do" "done, no '; ;'" "$got" \
  "$(ok_if test "${got/*; ;*/no}" != no -a "${got/*done: 30 steps*/yes}" = yes)"
one_line "train --resume --set train.lr=0.5 --set model.d_model=64" "2 field(s)" \
  $A train --out p --resume --set train.lr=0.5 --set model.d_model=64
rows=$(steps p)
got=$($A pipeline --config toiny_aa1 --out p --no-progress 2>&1 | grep -E "is trained|report:" | tr '\n' ' ')
row "pipeline --config toiny_aa1 --out FINISHED_RUN" "evaluates and reports, no training" \
  "${got:0:110}; $(steps p)" \
  "$(ok_if test -f p/eval/aa1_train/scores.json -a "$(steps p)" = "$rows" -a "${got/*is trained*/yes}" = yes)"
sum=$(md5sum < p/eval/aa1_train/scores.json)
$A pipeline --out p --resume --no-progress >/dev/null 2>&1; rc=$?
row "pipeline --resume on a finished run" "exit 0, its eval/ not redone" \
  "exit $rc, scores.json $([ "$sum" = "$(md5sum < p/eval/aa1_train/scores.json)" ] && echo kept || echo rewritten)" \
  "$(ok_if test $rc = 0 -a "$sum" = "$(md5sum < p/eval/aa1_train/scores.json)")"

cp -r p ro && rm -r ro/eval && echo "a file" > ro/eval
one_line "evaluate where eval/ cannot be written" "nothing was sampled" $A evaluate --run ro --no-progress
$A evaluate --run p --no-maj --num-augs 4 --limit 1 --no-progress >/dev/null 2>&1
got=$(ls p/eval | tr '\n' ' ')
row "evaluate --no-maj --num-augs 4 --no-progress" "~nomaj, no augs4" "$got" \
  "$(ok_if test "${got/*nomaj-limit1*/yes}" = yes -a "${got/*augs4*/no}" != no)"
$A train --out new --no-progress "${T[@]}" --set data.ids=null --set data.limit=6 --set train.max_steps=2 >/dev/null 2>&1
one_line "evaluate tasks the run never trained on" "arcdiff lora --run new --tasks aa1:eval" \
  $A evaluate --run new --split aa1:eval

mkdir -p alone && cp p/report/report.html alone/
n=$(grep -oE '(src|href)="[^"#][^"]*"' alone/report.html | grep -vc '"data:image/png;base64,')
row "report.html copied alone: external references" "0" "$n" "$(ok_if test "$n" = 0)"
if command -v chromium >/dev/null; then
  chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,2000 \
    --screenshot="$W/alone.png" "file://$W/alone/report.html" >/dev/null 2>&1
  row "  Chromium screenshot of it" "a PNG (look at it)" "$(wc -c < alone.png) bytes: $W/alone.png" \
    "$(ok_if test -s alone.png)"
fi
$A report k p --out cmp >/dev/null 2>&1
got=$(ls cmp 2>/dev/null | tr '\n' ' ')
row "report RUN RUN --out DIR" "comparison.{html,json,md}" "$got" \
  "$(ok_if test "$got" = "comparison.html comparison.json comparison.md ")"
got=$($A data validate aa1:train --ids 007bbfb7,00d62c1b 2>&1 | tail -n 1)
row "data validate --ids a,b" "2 task(s)" "$got" "$(ok_if test "${got/*2 task(s)*/yes}" = yes)"
n=$($A --help | grep -c install-completion)
row "arcdiff --help" "no --install-completion" "$n mention(s)" "$(ok_if test "$n" = 0)"

printf '\n%-60s | %-52s | %-4s | %s\n' case expected ok got
bad=0
for r in "${ROWS[@]}"; do
  IFS=$'\t' read -r c e g o <<< "$r"
  printf '%-60s | %-52s | %-4s | %s\n' "${c:0:60}" "${e:0:52}" "$o" "$g"
  [ "$o" = FAIL ] && bad=$((bad + 1))
done
echo "work folder: $W; $bad row(s) not ok"
[ $bad = 0 ]
