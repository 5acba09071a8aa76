#!/usr/bin/env bash
# Session 13, device call 1 (issue 6): the step kernels with programmatic dependent launch and
# LayerNorm partials, timed per sampling step and in the decode cells, then the GPU tests, then
# inductor's max-autotune GEMM step, each stage with its own limit (the whole call ≤ ~560 s).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p $OUT; L=$OUT/call1.log
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore PYTHONPATH=$PWD
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .whl/soundfile-*.whl .whl/cffi-*.whl .whl/pycparser-*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
export IMPACT_RT_CACHE=/tmp/impact_rt_cache
t0=$(date +%s); stamp() { echo "== $1 at +$(( $(date +%s) - t0 )) s" | tee -a $L; }
left() { echo $(( ${TOTAL:-560} - ($(date +%s) - t0) )); }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee -a $L
python3 -c "import torch, triton; p = torch.cuda.get_device_properties(0); print('torch', torch.__version__, \
'triton', triton.__version__, 'cuda', torch.version.cuda, p.name, p.multi_processor_count, 'SMs')" | tee -a $L

stamp steps   # µs a sampling step: step kernels ×{partials}×{pdl}, eager loop, inductor step; per-launch breakdown
timeout 150 python3 -m kernels.step_kernels --bench --inductor --profile 2>&1 | tee $OUT/steps.log | tail -20
echo "steps exit: ${PIPESTATUS[0]}" | tee -a $L

stamp bench   # decode cells at batch 1: default (inductor GEMM step) against the step-kernel paths
timeout 210 python3 -m kernels.bench_fused_sampler --only decode --cells 1x64 1x8 \
  --paths default steps steps_partials steps_pdl steps_pdl_partials --out $OUT/decode.json 2>&1 \
  | tee $OUT/bench.log | grep -v '^ ' | tail -25
echo "bench exit: ${PIPESTATUS[0]}" | tee -a $L

stamp tests
timeout $(( $(left) > 150 ? 150 : $(left) - 60 )) python3 -m pytest -q -rs -p no:cacheprovider -n 8 --timeout 140 \
  --timeout-method thread tests/test_step_kernels.py tests/test_cuda_backend.py tests/test_fused_sampler.py \
  > $OUT/tests.log 2>&1
echo "tests exit: $?" | tee -a $L
tail -25 $OUT/tests.log

stamp max_autotune   # what is left: inductor max-autotune GEMM step, batch 1 T=64 only
timeout $(( $(left) - 5 )) python3 -m kernels.bench_fused_sampler --only decode --cells 1x64 --no-eager \
  --paths gemm_compiled_max --out $OUT/decode_max.json > $OUT/bench_max.log 2>&1
echo "max-autotune exit: $?" | tee -a $L
grep '^{"b1' $OUT/bench_max.log | tee -a $L
stamp done
