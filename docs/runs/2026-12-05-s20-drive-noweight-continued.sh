#!/bin/bash
# session 20: session 18's run p (below) continued from its step 891 in a copy of its run folder; each chunk judged as in session 18.
# session 18, run p:
# long as the session allows on latents-s15, judged after each chunk on held-out seeds: every prompt on seeds
# 10-14 and the thunder prompt on seeds 10-29.
cd /work/main && . .venv/bin/activate
R=/work/runs/s20/run-p; S=/work/runs/s20/snaps-p; E=/work/runs/s20/ev-p; mkdir -p $S $E
judge() {  # $1 bundle, $2 name
  python -m training.evaluate_model --model $1 --out $E/$2-all --seeds 5 --first-seed 10 --backend cpu --threads 2 \
    --reference /work/runs/ref-test-pre12 > $E/$2-all.log 2>&1
  python -m training.evaluate_model --model $1 --out $E/$2-thunder --seeds 20 --first-seed 10 --backend cpu --threads 2 \
    --prompts /work/runs/thunder.tsv --reference /work/runs/ref-test-pre12 > $E/$2-thunder.log 2>&1
  python -c "import json; a=json.load(open('$E/$2-all/summary.json')); t=json.load(open('$E/$2-thunder/summary.json')); print('$2', 'adherence', round(a['adherence'],4), 'FD', round(a['metrics'].get('fd', float('nan')),2) if isinstance(a.get('metrics'), dict) else a.get('metrics'), 'thunder', t['per_prompt'])" >> /work/runs/s20/progress-p.txt
}
# (the shipped model and steps 441, 891 were judged in session 18)
for chunk in $(seq ${CHUNKS:-3}); do
  python -m training.train_impact --latents /work/runs/latents-s15.safetensors --out $R --phase text \
    --preset small --init impact_rt/models/default --minutes ${CHUNK_MIN:-22} --ckpt-minutes 5 --threads 2 \
    --batch-size 32 --lr 1e-4 --warmup-steps 50 --no-ema-warmup --category-balance 0.5 \
    --kind-weights scene_fg=0 >> /work/runs/s20/train-p.log 2>&1
  step=$(python -c "import json; print(json.load(open('$R/ckpt/state.json'))['step'])")
  python -m training.export_bundle --ckpt $R/ckpt --vae impact_rt/models/default --out $S/step-$step > /dev/null 2>&1
  judge $S/step-$step step-$step
done
