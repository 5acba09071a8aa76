#!/usr/bin/env bash
# The default model end to end after the corpus and the VAE: latents → unconditional pre-training →
# text-conditional training → bundle → evaluations → model card. Every stage resumes or is skipped
# when its output exists, so rerunning continues where an interrupted run stopped.
#
#   RUNS=/work/runs CORPUS=/work/corpus UNCOND_MIN=25 TEXT_MIN=35 bash training/run_default.sh
#
# The bundle lands in $RUNS/bundle; copy it to impact_rt/models/default only when its card's
# numbers beat the shipped one's (docs/training.md).
set -eu
RUNS=${RUNS:-/work/runs}
CORPUS=${CORPUS:-/work/corpus}
THREADS=${THREADS:-2}
PRESET=${PRESET:-small}
UNCOND_MIN=${UNCOND_MIN:-25}
TEXT_MIN=${TEXT_MIN:-35}
SEEDS=${SEEDS:-10}
ABLATION_SEEDS=${ABLATION_SEEDS:-5}
EVAL_BACKEND=${EVAL_BACKEND:-cpu}
say() { echo "[run_default $(date +%H:%M:%S)] $*" >&2; }

if [ ! -f "$RUNS/latents.safetensors" ]; then
  say "latents"
  python -m training.latents --manifest "$CORPUS/manifest.csv" --vae "$RUNS/vae/export" \
    --out "$RUNS/latents.safetensors" --splits train --variants "${VARIANTS:-1}" --bf16 --threads "$THREADS"
fi
if [ ! -f "$RUNS/uncond/.done" ]; then
  say "phase 1: unconditional pre-training, $UNCOND_MIN min"
  python -m training.train_impact --latents "$RUNS/latents.safetensors" --out "$RUNS/uncond" --phase uncond \
    --preset "$PRESET" --minutes "$UNCOND_MIN" --threads "$THREADS" --ckpt-minutes 5 ${TRAIN_ARGS:-}
  touch "$RUNS/uncond/.done"
fi
if [ ! -f "$RUNS/text/.done" ]; then
  say "phase 2: text-conditional training, $TEXT_MIN min"
  python -m training.train_impact --latents "$RUNS/latents.safetensors" --out "$RUNS/text" --phase text \
    --preset "$PRESET" --init "$RUNS/uncond/ckpt" --minutes "$TEXT_MIN" --threads "$THREADS" --ckpt-minutes 5 ${TRAIN_ARGS:-}
  touch "$RUNS/text/.done"
fi
if [ ! -f "$RUNS/bundle/config.json" ]; then
  say "bundle"
  python -m training.export_bundle --ckpt "$RUNS/text/ckpt" --vae "$RUNS/vae/export" --griffin-lim 32 \
    --out "$RUNS/bundle"
fi
evaluate() {  # NAME BACKEND SEEDS [extra args]
  local name=$1 backend=$2 seeds=$3; shift 3
  if [ ! -f "$RUNS/eval/$name/summary.json" ]; then
    say "evaluation $name ($backend, $seeds seeds)"
    python -m training.evaluate_model --model "$RUNS/bundle" --out "$RUNS/eval/$name" --backend "$backend" \
      --seeds "$seeds" --reference "$CORPUS/clips/test" "$@"
  fi
}
evaluate main "$EVAL_BACKEND" "$SEEDS"
evaluate t1 "$EVAL_BACKEND" "$ABLATION_SEEDS" --iterations 1
evaluate g1 "$EVAL_BACKEND" "$ABLATION_SEEDS" --guidance 1
[ "${REFERENCE_EVAL:-1}" = 1 ] && evaluate reference torch "$ABLATION_SEEDS"
say "model card"
python -m training.model_card --bundle "$RUNS/bundle" --corpus "$CORPUS" --vae-log "$RUNS/vae/log.csv" \
  --train-log "unconditional pre-training=$RUNS/uncond/log.csv" --train-log "text-conditional=$RUNS/text/log.csv" \
  --eval "main=$RUNS/eval/main" --eval "T=1=$RUNS/eval/t1" --eval "β_max=1=$RUNS/eval/g1" \
  $( [ -f "$RUNS/eval/reference/summary.json" ] && echo --eval "torch-reference=$RUNS/eval/reference" )
say "done: $RUNS/bundle/MODEL_CARD.md"
