#!/bin/bash
# session 27, run b: run r's recipe (run t's, judged by raw weights) with every clip that has a bed left out
# (kinds scene, scene_fg, natural_fg weighted 0), 100 steps, thunder on seeds 100-139 from the raw weights.
cd /work/main && . .venv/bin/activate
R=/work/runs/s27/run-b; S=/work/runs/s27/snaps-b; mkdir -p $S
python -m training.train_impact --latents /work/runs/latents-s26-tags.safetensors --out $R --phase text \
  --preset small --init impact_rt/models/default --steps ${STEPS:-100} --ckpt-minutes 5 --threads 2 \
  --batch-size 32 --lr 1e-4 --warmup-steps 50 --no-ema-warmup --category-balance 0.5 \
  --kind-weights scene=0,scene_fg=0,natural_fg=0 --tag-caption-prob 0.5 >> /work/runs/s27/train-b.log 2>&1
python docs/runs/2026-12-06-s27-raw-weights.py $R/ckpt /work/runs/s26/t-524 $S/raw-${STEPS:-100} > /dev/null
python -m training.evaluate_model --model $S/raw-${STEPS:-100} --seeds 40 --first-seed 100 --prompts /work/runs/s24/thunder.tsv \
  --out /work/runs/s27/judge/b${STEPS:-100}-thunder100 > /work/runs/s27/judge/b${STEPS:-100}-thunder100.log 2>&1
