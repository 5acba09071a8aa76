#!/bin/bash
# session 17, run c: does down-weighting the corpus's thunder rows keep (or lift) the shipped model's thunder?
# The recipe of the wind run's first part (docs/runs/2026-12-05-s17-drive-wind.sh) on latents-s15 (no procedural
# clips) with --category-weights thunder=0.3; one chunk, then the thunder prompt on held-out seeds 10-29.
cd /work/main && . .venv/bin/activate
R=/work/runs/s17/run-c; S=/work/runs/s17/snaps-c; mkdir -p $S
python -m training.train_impact --latents /work/runs/latents-s15.safetensors --out $R --phase text \
  --preset small --init impact_rt/models/default --minutes ${CHUNK_MIN:-22} --ckpt-minutes 5 --threads 2 \
  --batch-size 32 --lr 1e-4 --warmup-steps 50 --no-ema-warmup --category-balance 0.5 \
  --kind-weights scene_fg=0 --category-weights thunder=0.3 > /work/runs/s17/train-c.log 2>&1
step=$(python -c "import json; print(json.load(open('$R/ckpt/state.json'))['step'])")
python -m training.export_bundle --ckpt $R/ckpt --vae impact_rt/models/default --out $S/step-$step > /dev/null 2>&1
python -m training.evaluate_model --model $S/step-$step --out /work/runs/s17/c-$step \
  --seeds 20 --first-seed 10 --backend cpu --threads 2 --prompts /work/runs/thunder-wind.tsv \
  --reference /work/runs/ref-test-pre12 > /work/runs/s17/c-$step.log 2>&1
python -c "import json; s=json.load(open('/work/runs/s17/c-$step/summary.json')); print('run c step $step', s['per_prompt'], 'silent', s['silent_share_per_prompt'])" >> /work/runs/s17/progress.txt
