#!/bin/bash
# session 28, run v: session 27's run b (every clip with a bed left out: thunder is then heard only as isolated
# events and crops) with thunder weighted x3; raw weights judged on thunder, seeds 100-139, every 100 steps.
cd /work/main && . .venv/bin/activate
W=/work/runs/s28; R=$W/run-v; S=$W/snaps-v; mkdir -p $S $W/judge
for steps in ${STEPS_LIST:-100 200}; do
  python -m training.train_impact --latents /work/runs/latents-s26-tags.safetensors --out $R --phase text \
    --preset small --init impact_rt/models/default --steps $steps --ckpt-minutes 5 --threads 2 \
    --batch-size 32 --lr 1e-4 --warmup-steps 50 --no-ema-warmup --category-balance 0.5 \
    --kind-weights scene=0,scene_fg=0,natural_fg=0 --category-weights thunder=3 --tag-caption-prob 0.5 >> $W/train-v.log 2>&1
  python docs/runs/2026-12-06-s27-raw-weights.py $R/ckpt /work/runs/s26/t-524 $S/raw-$steps > /dev/null
  python -m training.evaluate_model --model $S/raw-$steps --seeds 40 --first-seed 100 --prompts /work/runs/s24/thunder.tsv \
    --out $W/judge/v$steps-thunder100 > $W/judge/v$steps-thunder100.log 2>&1
  hits=$(python -c "import json; print(json.load(open('$W/judge/v$steps-thunder100/summary.json'))['thunder'].split('/')[0])")
  echo "raw-$steps thunder $hits/40" >> $W/progress-v.txt
done
