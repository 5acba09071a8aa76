"""ckpt DIR -> bundle OUT: the shipped bundle with the checkpoint's EMA generator (fp16) and model config."""
import sys, json, shutil, torch
sys.path.insert(0, '/work/main')
from pathlib import Path
from training.checkpoint import load_checkpoint, unprefixed
from impact_rt.config import ModelConfig
from impact_rt.model import IMPACT
from impact_rt.bundle import save_generator
t, m = load_checkpoint(sys.argv[1])
out = Path(sys.argv[2])
shutil.copytree('/work/main/impact_rt/models/default', out)
model = IMPACT(ModelConfig(**m['model']))
model.load_state_dict({k: v.float() for k, v in unprefixed('ema', t).items()})
save_generator(model, out, torch.float16)
cfg = json.loads((out / 'config.json').read_text()); cfg['model'] = m['model']
(out / 'config.json').write_text(json.dumps(cfg, indent=2))
(out / 'ckpt_step.json').write_text(json.dumps({'step': m['step'], 'train': m['train']}))
print('exported step', m['step'])
