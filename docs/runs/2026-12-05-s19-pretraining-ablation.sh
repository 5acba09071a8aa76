#!/bin/bash
# session 19: does unconditional pre-training help FD (issue 3's third trend), with today's sampler and latents?
# One uncond pre-training run from scratch, then two text phases of the same length, seed and settings: one
# from the pre-trained EMA weights, one from random weights. Both judged on every prompt, seeds 0-4 (90 clips).
cd /work/main && . .venv/bin/activate
W=${W:-/work/runs/s19/pt}; L=/work/runs/latents-s15.safetensors; mkdir -p $W
COMMON="--latents $L --preset small --threads 2 --batch-size 32 --ckpt-minutes 5 --seed 0"
python -m training.train_impact $COMMON --out $W/uncond --phase uncond --minutes ${PRE_MIN:-30} --lr 1e-4 --warmup-steps 50 >> $W/train.log 2>&1
for arm in pre scratch; do
  init=""; [ $arm = pre ] && init="--init $W/uncond/ckpt"
  python -m training.train_impact $COMMON --out $W/text-$arm --phase text $init --steps ${TEXT_STEPS:-550} \
    --lr 1e-4 --warmup-steps 50 --category-balance 0.5 >> $W/train.log 2>&1
  python -m training.export_bundle --ckpt $W/text-$arm/ckpt --vae impact_rt/models/default --out $W/bundle-$arm > /dev/null 2>&1
done
for arm in pre scratch; do
  python -m training.evaluate_model --model $W/bundle-$arm --out $W/ev-$arm --seeds 5 --backend cpu --threads 2 \
    --reference /work/runs/ref-test-pre12 > $W/ev-$arm.log 2>&1
  python -c "import json; s=json.load(open('$W/ev-$arm/summary.json')); print('$arm', 'adherence', round(s['adherence'],4), 'shuffled', round(s['adherence_shuffled_prompts'],4), 'FD', round(s['metrics']['fd'],2), 'silent', round(s['metrics']['silent_share'],3))" >> $W/result.txt
done
