#!/usr/bin/env bash
# GPU call 2: add chunk B, resume the run on A+B for TRAIN_S seconds, export the EMA weights.
set -u
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore PYTHONPATH=$PWD:/tmp/site
TP=$(pgrep -f training.train_impact | head -1); echo "trainer pid ${TP:-none}"; tail -n 2 /tmp/g/run/log.csv
if [ -f /tmp/g/chunkA.safetensors ]; then
  python3 .gpudata/unpack.py /tmp/g/store2.safetensors /tmp/g/chunkA.safetensors .gpudata/chunkB.safetensors
  INIT=""
else
  echo "machine is fresh: chunk B only, from the shipped bundle"; mkdir -p /tmp/g
  python3 .gpudata/unpack.py /tmp/g/store2.safetensors .gpudata/chunkB.safetensors
fi
[ -n "${TP:-}" ] && kill $TP && sleep 2
MIN=$(python3 -c "print(${TRAIN_S:-200}/60)")
python3 -m training.train_impact --latents /tmp/g/store2.safetensors --out /tmp/g/run --phase text \
  --preset small --init impact_rt/models/default --minutes $MIN --ckpt-minutes 1 --batch-size 128 --lr 0.0005 \
  --warmup-steps 200 --category-balance 0.5 --threads 8 > /tmp/g/train2.log 2>&1
tail -c 600 /tmp/g/train2.log
python3 .gpudata/export_ema.py /tmp/g/run/ckpt $OUT; cp /tmp/g/run/log.csv $OUT/log.csv
tail -n 5 /tmp/g/run/log.csv; echo "call 2 done at +$(el) s"
