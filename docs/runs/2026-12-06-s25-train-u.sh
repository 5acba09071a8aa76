cd /work/main && . .venv/bin/activate
python -m training.train_impact --latents /work/runs/latents-s24.safetensors --out /work/runs/s25/run-u --phase text \
  --preset small --init impact_rt/models/default --minutes ${MIN:-45} --ckpt-minutes 5 --threads 2 \
  --batch-size 32 --lr 1e-4 --warmup-steps 50 --no-ema-warmup --category-balance 0.5 \
  --kind-weights scene_fg=0 --mask-ratio-uniform 0.5 > /work/runs/s25/train-u.log 2>&1
