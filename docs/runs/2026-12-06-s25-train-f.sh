cd /work/main && . .venv/bin/activate
python -m training.train_impact --latents /work/runs/latents-s24.safetensors --out /work/runs/s25/run-f --phase text \
  --preset small --init impact_rt/models/default --minutes ${MIN:-48} --ckpt-minutes 5 --threads 2 \
  --batch-size 32 --lr 1e-4 --warmup-steps 50 --no-ema-warmup --category-balance 0.5 \
  --kind-weights event=0.25,scene_fg=3,natural_fg=3 > /work/runs/s25/train-f.log 2>&1
