#!/usr/bin/env bash
# Session 10, device call 1: two text-phase fine-tunes (thunder) beside the GPU tests.
set -u
OUT=${OUT:-/tmp/out}; L=$OUT/call1.log
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore PYTHONPATH=$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
export IMPACT_RT_CACHE=/tmp/impact_rt_cache
t0=$(date +%s); stamp() { echo "== $1 at +$(( $(date +%s) - t0 )) s" >> $L; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> $L
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name(0))" >> $L
stamp unpack
python3 -m training.pack_store unpack --out /tmp/store.safetensors .gpudata/A10.pack >> $L 2>&1
train() {  # name lr kind-weights
  timeout 420 python3 -m training.train_impact --latents /tmp/store.safetensors --out /tmp/run$1 --phase text \
    --preset small --init impact_rt/models/default --minutes ${TRAIN_MIN:-4} --ckpt-minutes 1 --batch-size 128 \
    --lr $2 --warmup-steps 200 --category-balance 0.5 --kind-weights "$3" > /tmp/train$1.log 2>&1
  python3 -m training.export_bundle --ckpt /tmp/run$1/ckpt --vae impact_rt/models/default --out /tmp/b$1 > /tmp/export$1.log 2>&1
  mkdir -p $OUT/b$1 && cp /tmp/b$1/impact.safetensors /tmp/b$1/config.json $OUT/b$1/ && cp /tmp/run$1/log.csv $OUT/log$1.csv
}
stamp train
train A 0.0003 "scene_fg=0,event=3,crop=3" & PA=$!
train B 0.0003 "scene_fg=0,scene=0.3" & PB=$!
sleep 20
stamp tests
timeout 240 python3 -m pytest -q -rs -p no:cacheprovider -n 6 --timeout 200 --timeout-method thread \
  tests/test_fused_sampler.py tests/test_cuda_backend.py > $OUT/tests.log 2>&1
echo "tests exit: $?" >> $L
tail -5 $OUT/tests.log >> $L
wait $PA $PB
stamp done
for n in A B; do echo "-- train $n"; tail -c 1500 /tmp/train$n.log; tail -c 600 /tmp/export$n.log; done >> $L
ls -la $OUT $OUT/* >> $L
