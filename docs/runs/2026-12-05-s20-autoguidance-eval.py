"""Session 20: autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of
itself") in place of CFG, as a check of issue 3's levers: every head step's eps is
    eps = eps_bad(c) + beta(t) * (eps_good(c) - eps_bad(c))
with "good" the shipped generator and "bad" an earlier checkpoint of the same lineage (BAD=bundle
folder; session 20 used the session-4 bundle, commit ecf32c4, which the shipped one continues).
Same compute as CFG: the unconditional branch is replaced by the bad model's conditional one.
Runs training.evaluate_model with the reference (torch) backend wrapped; its flags pass through."""
import os
import sys

import torch

from impact_rt import ddpm, pipeline
from impact_rt.reference import TorchBackend

BAD = os.environ["BAD"]


class Autoguided(TorchBackend):
    def __init__(self, good, bad):
        super().__init__(good.model, good.vae, good.vocoder)
        self.bad = bad

    @torch.inference_mode()
    def project(self, states, mask):
        self._bad_cond = self.bad.project_condition(states, mask)   # the bad model's own projection
        return self.model.project_condition(states, mask)

    @torch.inference_mode()
    def encode(self, tokens, cond, cond_mask, visible_idx, predicted_idx):
        b = tokens.shape[0] // 2             # decode() sends [cond rows; null rows]: the null rows are replaced
        good = self.model.encoder(tokens[:b], cond[:b], cond_mask[:b], visible_idx[:b], predicted_idx[:b])
        bc, bm = self._bad_cond
        bad = self.bad.encoder(tokens[:b], bc, bm, visible_idx[:b], predicted_idx[:b])
        return torch.cat([good, bad])

    @torch.inference_mode()
    def sample(self, h_good, h_bad, noise, guidance, temperature, schedule):
        tab = self.schedule_tensors(schedule)
        g, bh = self.model.head, self.bad.head
        c = g.token_dim
        t_g, t_b = g.time_embed(tab["timestep_map"]), bh.time_embed(tab["timestep_map"])
        c_g, c_b = g.cond_embed(h_good), bh.cond_embed(h_bad)
        x = noise[0]
        steps = tab["timestep_map"].shape[0]
        for j, i in enumerate(reversed(range(steps))):
            og, ob = g.step(x, c_g + t_g[i]), bh.step(x, c_b + t_b[i])
            eps = ob[:, :c] + guidance * (og[:, :c] - ob[:, :c])
            x = ddpm.p_sample_step(tab, x, i, eps, og[:, c:], noise[j + 1] if i > 0 else None, temperature)
        return x


_orig = pipeline.Pipeline.from_pretrained


def _from_pretrained(*a, **k):
    pipe = _orig(*a, **k)
    bad = _orig(BAD, backend="torch").model
    pipe.backend = Autoguided(pipe.backend, bad)
    return pipe


pipeline.Pipeline.from_pretrained = _from_pretrained
from training.evaluate_model import main  # noqa: E402

sys.exit(main())
