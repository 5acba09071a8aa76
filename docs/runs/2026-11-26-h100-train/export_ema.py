"""EMA weights of a training checkpoint -> impact.safetensors (fp16, bundle format) in DIR."""
import sys, json, torch
sys.path.insert(0, '.')
from pathlib import Path
from training.checkpoint import load_checkpoint, unprefixed
from impact_rt.config import ModelConfig
from impact_rt.model import IMPACT
from impact_rt.bundle import save_generator
t, m = load_checkpoint(sys.argv[1])
model = IMPACT(ModelConfig(**m['model']))
model.load_state_dict({k: v.float() for k, v in unprefixed('ema', t).items()})
save_generator(model, Path(sys.argv[2]), torch.float16)
(Path(sys.argv[2]) / 'ckpt_step.json').write_text(json.dumps({'step': m['step'], 'train': m['train']}))
print('exported step', m['step'], flush=True)
