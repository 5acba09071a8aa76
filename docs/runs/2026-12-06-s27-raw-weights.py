"""Session 27: export a training checkpoint's raw weights ('model.' tensors) instead of its EMA, into a copy
of a bundle made from the same run. usage: python this.py CKPT_DIR BUNDLE OUT
(run: python this.py /work/runs/s26/run-t/ckpt /work/runs/s26/t-524 /work/runs/s27/t-raw)"""
import shutil
import sys
from pathlib import Path

import torch

from impact_rt import bundle as B
from impact_rt.config import ModelConfig
from impact_rt.model import IMPACT
from training.checkpoint import load_checkpoint, unprefixed

tensors, meta = load_checkpoint(Path(sys.argv[1]))
model = IMPACT(ModelConfig.from_dict(meta["model"]))
model.load_state_dict(unprefixed("model", tensors))
out = Path(sys.argv[3])
shutil.rmtree(out, ignore_errors=True)
shutil.copytree(sys.argv[2], out)
B.save_generator(model, out, dtype=torch.float16)
print(out, "step", meta.get("step"))
