#!/bin/bash
# session 22: the shipped generator deepened 4+4 -> 6+6 blocks (training.grow: identity blocks, same function at
# step 0), then run p's recipe (session 18: no thunder weight, scene_fg=0) on latents-s17, judged after each chunk
# on held-out seeds: every prompt on seeds 10-14 and the thunder prompt on seeds 10-29 (cpu backend, bf16).
cd /work/main && . .venv/bin/activate
R=/work/runs/s22/run-deep; S=/work/runs/s22/snaps-deep; E=/work/runs/s22/ev-deep; mkdir -p $S $E
judge() {  # $1 bundle, $2 name
  python -m training.evaluate_model --model $1 --out $E/$2-all --seeds 5 --first-seed 10 --backend cpu --threads 2 \
    --reference /work/runs/ref-test-pre12 > $E/$2-all.log 2>&1
  python -m training.evaluate_model --model $1 --out $E/$2-thunder --seeds 20 --first-seed 10 --backend cpu --threads 2 \
    --prompts /work/runs/thunder.tsv --reference /work/runs/ref-test-pre12 > $E/$2-thunder.log 2>&1
  python -c "import json; a=json.load(open('$E/$2-all/summary.json')); t=json.load(open('$E/$2-thunder/summary.json')); print('$2', 'adherence', round(a['adherence'],4), 'FD', round(a['metrics'].get('fd', float('nan')),2), 'thunder', t['per_prompt'])" >> /work/runs/s22/progress-deep.txt
}
for chunk in $(seq ${CHUNKS:-2}); do
  python -m training.train_impact --latents /work/runs/latents-s17.safetensors --out $R --phase text \
    --preset small --init impact_rt/models/default --enc-depth 6 --dec-depth 6 --grow encoder \
    --minutes ${CHUNK_MIN:-40} --ckpt-minutes 5 --threads 2 \
    --batch-size 32 --lr 1e-4 --warmup-steps 50 --no-ema-warmup --category-balance 0.5 \
    --kind-weights scene_fg=0 >> /work/runs/s22/train-deep.log 2>&1
  step=$(python -c "import json; print(json.load(open('$R/ckpt/state.json'))['step'])")
  python -m training.export_bundle --ckpt $R/ckpt --vae impact_rt/models/default --out $S/step-$step > $S/export-$step.log 2>&1
  judge $S/step-$step step-$step
done
