#!/usr/bin/env bash
# The default model end to end after the corpus and the VAE: latents → unconditional pre-training →
# text-conditional training → bundle → evaluations → model card. Every stage resumes or is skipped
# when its output exists, so rerunning continues where an interrupted run stopped.
#
#   RUNS=/work/runs CORPUS=/work/corpus UNCOND_MIN=25 TEXT_MIN=35 bash training/run_default.sh
#   THREADS=1 ABLATION=1 ...     # also the text phase without pre-training, beside the main one
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
    --out "$RUNS/latents.safetensors" --splits train --variants "${VARIANTS:-1}" \
    --threads "${LATENT_THREADS:-2}"
fi
export OMP_NUM_THREADS=$THREADS   # trainers and evaluations: no more threads than asked (oversubscription)
if [ ! -f "$RUNS/uncond/.done" ]; then
  export OMP_NUM_THREADS=${UNCOND_THREADS:-$THREADS}
  say "phase 1: unconditional pre-training, $UNCOND_MIN min"
  python -m training.train_impact --latents "$RUNS/latents.safetensors" --out "$RUNS/uncond" --phase uncond \
    --preset "$PRESET" --minutes "$UNCOND_MIN" --threads "${UNCOND_THREADS:-$THREADS}" --ckpt-minutes 5 ${TRAIN_ARGS:-}
  touch "$RUNS/uncond/.done"
fi
export OMP_NUM_THREADS=$THREADS
text_phase() {  # OUT [extra args]: text-conditional training into $RUNS/OUT
  local out=$1; shift
  if [ ! -f "$RUNS/$out/.done" ]; then
    python -m training.train_impact --latents "$RUNS/latents.safetensors" --out "$RUNS/$out" --phase text \
      --preset "$PRESET" --minutes "$TEXT_MIN" --threads "$THREADS" --ckpt-minutes 5 ${TRAIN_ARGS:-} "$@"
    touch "$RUNS/$out/.done"
  fi
}
if [ "${ABLATION:-0}" = 1 ]; then
  # the same text phase without pre-training, beside the main one (THREADS=1 each on a 2-core machine)
  say "phase 2 without pre-training (ablation), $TEXT_MIN min, in the background"
  text_phase text-scratch > "$RUNS/text-scratch.log" 2>&1 &
  ablation_pid=$!
fi
say "phase 2: text-conditional training, $TEXT_MIN min"
text_phase text --init "$RUNS/uncond/ckpt"
[ -n "${ablation_pid:-}" ] && wait "$ablation_pid"
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
if [ "${ABLATION:-0}" = 1 ] && [ ! -f "$RUNS/bundle-scratch/config.json" ]; then
  python -m training.export_bundle --ckpt "$RUNS/text-scratch/ckpt" --vae "$RUNS/vae/export" --griffin-lim 32 \
    --out "$RUNS/bundle-scratch"
fi
# Two evaluation streams side by side (one thread each): the main run, and the ablations.
evaluate main "$EVAL_BACKEND" "$SEEDS" > "$RUNS/eval-main.log" 2>&1 &
main_pid=$!
evaluate t1 "$EVAL_BACKEND" "$ABLATION_SEEDS" --iterations 1
evaluate g1 "$EVAL_BACKEND" "$ABLATION_SEEDS" --guidance 1
if [ "${ABLATION:-0}" = 1 ] && [ ! -f "$RUNS/eval/nopre/summary.json" ]; then
  say "evaluation nopre"
  python -m training.evaluate_model --model "$RUNS/bundle-scratch" --out "$RUNS/eval/nopre" --backend "$EVAL_BACKEND" \
    --seeds "$ABLATION_SEEDS" --reference "$CORPUS/clips/test"
fi
if [ "${REFERENCE_EVAL:-1}" = 1 ]; then evaluate reference torch "$ABLATION_SEEDS"; fi
wait "$main_pid"
say "model card"
python -m training.model_card --bundle "$RUNS/bundle" --corpus "$CORPUS" --vae-log "$RUNS/vae/log.csv" \
  --train-log "unconditional pre-training=$RUNS/uncond/log.csv" --train-log "text-conditional=$RUNS/text/log.csv" \
  --eval "main=$RUNS/eval/main" --eval "T=1=$RUNS/eval/t1" --eval "β_max=1=$RUNS/eval/g1" \
  $( [ -f "$RUNS/eval/reference/summary.json" ] && echo --eval "torch-reference=$RUNS/eval/reference" ) \
  $( [ -f "$RUNS/eval/nopre/summary.json" ] && echo --eval "no-pre-training=$RUNS/eval/nopre" )
say "done: $RUNS/bundle/MODEL_CARD.md"
