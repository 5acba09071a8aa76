#!/bin/bash
# session 17: a bf16 CPU fine-tune of the shipped generator on latents-s17 (latents-s15 + 240 procedural wind
# clips, kind "procedural"), in chunks; after each chunk an EMA bundle and the thunder and wind prompts on
# held-out seeds 10-29 (cpu backend), training paused meanwhile.
# v2: resumed at step 691 of v1 (docs/runs/2026-12-05-s17-drive-wind.sh, procedural=3: wind 1/20, thunder 9/20)
# with procedural wind weighted 8 (about 12 % of the draws instead of 5 %).
cd /work/main && . .venv/bin/activate
R=/work/runs/s17/run; S=/work/runs/s17/snaps; mkdir -p $S
for chunk in 3 4 5 6; do
  python -m training.train_impact --latents /work/runs/latents-s17.safetensors --out $R --phase text \
    --preset small --init impact_rt/models/default --minutes ${CHUNK_MIN:-18} --ckpt-minutes 5 --threads 2 \
    --batch-size 32 --lr 1e-4 --warmup-steps 50 --no-ema-warmup --category-balance 0.5 \
    --kind-weights scene_fg=0,procedural=8 > /work/runs/s17/train-$chunk.log 2>&1
  step=$(python -c "import json; print(json.load(open('$R/ckpt/state.json'))['step'])")
  python -m training.export_bundle --ckpt $R/ckpt --vae impact_rt/models/default --out $S/step-$step > /dev/null 2>&1
  python -m training.evaluate_model --model $S/step-$step --out /work/runs/s17/tw-$step \
    --seeds 20 --first-seed 10 --backend cpu --threads 2 --prompts /work/runs/thunder-wind.tsv \
    --reference /work/runs/ref-test-pre12 > /work/runs/s17/tw-$step.log 2>&1
  python -c "import json; s=json.load(open('/work/runs/s17/tw-$step/summary.json')); print('step $step', s['per_prompt'], 'silent', s['silent_share_per_prompt'])" >> /work/runs/s17/progress.txt
done
