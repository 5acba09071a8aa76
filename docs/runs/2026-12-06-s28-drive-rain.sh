#!/bin/bash
# session 28, run w: run r's recipe (session 27: run t's, judged by raw weights) with every clip where thunder
# is heard over anything but rain left out (--clip-weights from ...-s28-thunder-rain-weights.py); raw weights
# judged on thunder, seeds 100-139, every 100 steps; every prompt on seeds 10-14 where thunder reaches 13/40.
cd /work/main && . .venv/bin/activate
W=/work/runs/s28; R=$W/run-w; S=$W/snaps-w; mkdir -p $S $W/judge
python docs/runs/2026-12-06-s28-thunder-rain-weights.py /work/corpus/manifest-s24.csv $W/thunder-rain.csv
for steps in ${STEPS_LIST:-100 200}; do
  python -m training.train_impact --latents /work/runs/latents-s26-tags.safetensors --out $R --phase text \
    --preset small --init impact_rt/models/default --steps $steps --ckpt-minutes 5 --threads 2 \
    --batch-size 32 --lr 1e-4 --warmup-steps 50 --no-ema-warmup --category-balance 0.5 \
    --kind-weights scene_fg=0 --tag-caption-prob 0.5 --clip-weights $W/thunder-rain.csv >> $W/train-w.log 2>&1
  python docs/runs/2026-12-06-s27-raw-weights.py $R/ckpt /work/runs/s26/t-524 $S/raw-$steps > /dev/null
  python -m training.evaluate_model --model $S/raw-$steps --seeds 40 --first-seed 100 --prompts /work/runs/s24/thunder.tsv \
    --out $W/judge/w$steps-thunder100 > $W/judge/w$steps-thunder100.log 2>&1
  hits=$(python -c "import json; print(json.load(open('$W/judge/w$steps-thunder100/summary.json'))['thunder'].split('/')[0])")
  echo "raw-$steps thunder $hits/40" >> $W/progress-w.txt
  if [ "$hits" -ge 13 ]; then
    python -m training.evaluate_model --model $S/raw-$steps --seeds 5 --first-seed 10 --reference /work/corpus/clips/test \
      --out $W/judge/w$steps-all > $W/judge/w$steps-all.log 2>&1
    python -c "import json; a=json.load(open('$W/judge/w$steps-all/summary.json')); print('raw-$steps adherence', round(a['adherence'],4), 'FD', round(a['metrics']['fd'],2), a['per_prompt'])" >> $W/progress-w.txt
  fi
done
