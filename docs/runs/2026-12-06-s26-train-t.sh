cd /work/main && . .venv/bin/activate
python -m training.tag_captions --latents /work/runs/latents-s24.safetensors --out /work/runs/latents-s26-tags.safetensors
python -m training.train_impact --latents /work/runs/latents-s26-tags.safetensors --out /work/runs/s26/run-t --phase text \
  --preset small --init impact_rt/models/default --minutes ${MIN:-50} --ckpt-minutes 5 --threads 2 \
  --batch-size 32 --lr 1e-4 --warmup-steps 50 --no-ema-warmup --category-balance 0.5 \
  --kind-weights scene_fg=0 --tag-caption-prob 0.5 > /work/runs/s26/train-t.log 2>&1
