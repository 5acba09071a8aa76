#!/bin/bash
# session 18, run o: the shipped model's fine-tune with thunder up-weighted (x3) but only the thunder of the
# packages the shipped model was trained on (the supplementary packages of session 11 at weight 0), on
# latents-s15; chunks of CHUNK_MIN minutes, each followed by the thunder prompt on held-out seeds 10-29.
cd /work/main && . .venv/bin/activate
R=/work/runs/s18/run-o; S=/work/runs/s18/snaps-o; mkdir -p $S
SUP=flightgear-data-base=0,scorched3d-data=0,searchandrescue-data=0,supertux-data=0,cube2-data=0,gl-117-data=0,pachi-data=0
for chunk in $(seq ${CHUNKS:-4}); do
  python -m training.train_impact --latents /work/runs/latents-s15.safetensors --out $R --phase text \
    --preset small --init impact_rt/models/default --minutes ${CHUNK_MIN:-20} --ckpt-minutes 5 --threads 2 \
    --batch-size 32 --lr 1e-4 --warmup-steps 50 --no-ema-warmup --category-balance 0.5 \
    --kind-weights scene_fg=0 --category-weights thunder=3 --source-weights $SUP >> /work/runs/s18/train-o.log 2>&1
  step=$(python -c "import json; print(json.load(open('$R/ckpt/state.json'))['step'])")
  python -m training.export_bundle --ckpt $R/ckpt --vae impact_rt/models/default --out $S/step-$step > /dev/null 2>&1
  python -m training.evaluate_model --model $S/step-$step --out /work/runs/s18/o-$step \
    --seeds 20 --first-seed 10 --backend cpu --threads 2 --prompts /work/runs/thunder.tsv \
    --reference /work/runs/ref-test-pre12 > /work/runs/s18/o-$step.log 2>&1
  python -c "import json; s=json.load(open('/work/runs/s18/o-$step/summary.json')); print('run o step $step', s['per_prompt'], 'silent', s['silent_share_per_prompt'])" >> /work/runs/s18/progress.txt
done
