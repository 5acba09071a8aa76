#!/usr/bin/env bash
# GPU call 1: start the text-phase training (chunk A) as a daemon, GPU tests beside it, bench with training paused.
set -u
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=$PWD:/tmp/site
mkdir -p /tmp/g && cp .gpudata/*.py /tmp/g/ && cp .gpudata/chunkA.safetensors /tmp/g/
python3 .gpudata/unpack.py /tmp/g/store.safetensors /tmp/g/chunkA.safetensors > $OUT/train.log 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > $OUT/env.txt
setsid nohup python3 -m training.train_impact --latents /tmp/g/store.safetensors --out /tmp/g/run --phase text \
  --preset small --init impact_rt/models/default --minutes 60 --ckpt-minutes 0.5 --batch-size 128 --lr 0.0005 \
  --warmup-steps 200 --category-balance 0.5 --threads 4 >> /tmp/g/train.log 2>&1 < /dev/null &
sleep 20; echo "train started at +$(el) s"; tail -c 400 /tmp/g/train.log
STAGES="tests" TEST_LIMIT=${TEST_LIMIT:-170} TEST_WORKERS=6 bash kernels/gpu_session.sh
TP=$(pgrep -f training.train_impact | head -1); echo "trainer pid $TP at +$(el) s"; tail -n 3 /tmp/g/run/log.csv
kill -STOP $TP
STAGES="bench" BENCH_LIMIT=${BENCH_LIMIT:-260} BENCH_ARGS="--only decode --cells 1x64 1x8 64x4 16x4" bash kernels/gpu_session.sh
kill -CONT $TP; echo "trainer resumed at +$(el) s"
sleep 5; python3 .gpudata/export_ema.py /tmp/g/run/ckpt $OUT >> $OUT/train.log 2>&1
cp /tmp/g/run/log.csv $OUT/log1.csv; tail -c 1500 /tmp/g/train.log >> $OUT/train.log; tail -n 4 /tmp/g/run/log.csv
echo "call 1 done at +$(el) s"
