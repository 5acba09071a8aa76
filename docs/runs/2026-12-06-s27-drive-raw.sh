#!/bin/bash
# session 27, run r: run t's recipe (session 26) from the shipped bundle, judged by its RAW weights (not the EMA)
# every 100 steps: thunder on seeds 100-139 first; every prompt on seeds 10-14 for a snapshot at 13/40 or more.
cd /work/main && . .venv/bin/activate
R=/work/runs/s27/run-r; S=/work/runs/s27/snaps-r; mkdir -p $S
for steps in 100 200 300; do
  python -m training.train_impact --latents /work/runs/latents-s26-tags.safetensors --out $R --phase text \
    --preset small --init impact_rt/models/default --steps $steps --ckpt-minutes 5 --threads 2 \
    --batch-size 32 --lr 1e-4 --warmup-steps 50 --no-ema-warmup --category-balance 0.5 \
    --kind-weights scene_fg=0 --tag-caption-prob 0.5 >> /work/runs/s27/train-r.log 2>&1
  python docs/runs/2026-12-06-s27-raw-weights.py $R/ckpt /work/runs/s26/t-524 $S/raw-$steps > /dev/null
  python -m training.evaluate_model --model $S/raw-$steps --seeds 40 --first-seed 100 --prompts /work/runs/s24/thunder.tsv \
    --out /work/runs/s27/judge/r$steps-thunder100 > /work/runs/s27/judge/r$steps-thunder100.log 2>&1
  hits=$(python -c "import json; print(json.load(open('/work/runs/s27/judge/r$steps-thunder100/summary.json'))['thunder'].split('/')[0])")
  echo "raw-$steps thunder $hits/40" >> /work/runs/s27/progress-r.txt
  if [ "$hits" -ge 13 ]; then
    python -m training.evaluate_model --model $S/raw-$steps --seeds 5 --first-seed 10 --reference /work/corpus/clips/test \
      --out /work/runs/s27/judge/r$steps-all > /work/runs/s27/judge/r$steps-all.log 2>&1
    python -c "import json; a=json.load(open('/work/runs/s27/judge/r$steps-all/summary.json')); print('raw-$steps adherence', round(a['adherence'],4), 'FD', round(a['metrics']['fd'],2), a['per_prompt'])" >> /work/runs/s27/progress-r.txt
  fi
done
