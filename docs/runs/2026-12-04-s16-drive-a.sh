#!/bin/bash
# session 16: a longer bf16 CPU fine-tune of the shipped generator, in chunks; after each chunk an EMA
# bundle and the thunder prompt on held-out seeds 10-29 (cpu backend), training paused meanwhile.
cd /work/main && . .venv/bin/activate
R=/work/runs/s16/run; S=/work/runs/s16/snaps; mkdir -p $S
for chunk in 1 2 3 4 5 6; do
  python -m training.train_impact --latents /work/runs/latents-s15.safetensors --out $R --phase text \
    --preset small --init impact_rt/models/default --minutes ${CHUNK_MIN:-22} --ckpt-minutes 5 --threads 2 \
    --batch-size 32 --lr 1e-4 --warmup-steps 50 --no-ema-warmup --category-balance 0.5 \
    --kind-weights scene_fg=0,natural_fg=2 --category-weights thunder=2 > /work/runs/s16/train-$chunk.log 2>&1
  step=$(python -c "import json; print(json.load(open('$R/ckpt/state.json'))['step'])")
  python -m training.export_bundle --ckpt $R/ckpt --vae impact_rt/models/default --out $S/step-$step > /dev/null 2>&1
  OMP_NUM_THREADS=2 python -m training.evaluate_model --model $S/step-$step --out /work/runs/s16/th-$step \
    --seeds 20 --first-seed 10 --backend cpu --prompts /work/runs/thunder.tsv --reference /work/runs/ref-test-pre12 \
    > /work/runs/s16/th-$step.log 2>&1
  python -c "import json; s=json.load(open('/work/runs/s16/th-$step/summary.json')); print('step $step thunder', s['thunder'], 'silent', s['silent_share_per_prompt'])" >> /work/runs/s16/progress.txt
done
