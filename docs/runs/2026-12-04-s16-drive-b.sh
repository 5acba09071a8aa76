#!/bin/bash
# session 16, run b: only the text projection trained (the rest of the shipped generator frozen),
# thunder weighted up; after each chunk an EMA bundle and the thunder prompt on seeds 10-29 (bf16).
cd /work/main && . .venv/bin/activate
R=/work/runs/s16/runb; S=/work/runs/s16/snapsb; mkdir -p $S
for chunk in 1 2 3 4 5; do
  python -m training.train_impact --latents /work/runs/latents-s15.safetensors --out $R --phase text \
    --preset small --init impact_rt/models/default --minutes 10 --ckpt-minutes 5 --threads 2 \
    --batch-size 32 --lr 5e-4 --warmup-steps 20 --no-ema-warmup --ema-decay 0.995 --category-balance 0.5 \
    --kind-weights scene_fg=0,natural_fg=2 --category-weights thunder=3 --trainable text_proj \
    > /work/runs/s16/trainb-$chunk.log 2>&1
  step=$(python -c "import json; print(json.load(open('$R/ckpt/state.json'))['step'])")
  python -m training.export_bundle --ckpt $R/ckpt --vae impact_rt/models/default --out $S/step-$step > /dev/null 2>&1
  python -m training.evaluate_model --model $S/step-$step --out /work/runs/s16/thb-$step --threads 2 \
    --seeds 20 --first-seed 10 --backend cpu --prompts /work/runs/thunder.tsv --reference /work/runs/ref-test-pre12 \
    > /work/runs/s16/thb-$step.log 2>&1
  python -c "import json; s=json.load(open('/work/runs/s16/thb-$step/summary.json')); print('step $step thunder', s['thunder'], 'silent', s['silent_share_per_prompt'])" >> /work/runs/s16/progressb.txt
done
