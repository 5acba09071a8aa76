# session 29: how often the VAE decoder's log-mel exceeds what a peak-0.5 sine (the training data's peak) gives, on real
# test clips (encoded and decoded) and on the shipped model's clips of four prompts
import numpy as np, torch, csv, random, soundfile as sf
from impact_rt import Pipeline
from impact_rt.audio import log_mel_ceiling
from impact_rt.audio import MelSpectrogram
torch.set_num_threads(2)
ceil = log_mel_ceiling(0.5)
mel=MelSpectrogram()
rows=[r for r in csv.DictReader(open('/work/corpus/manifest.csv')) if r['split']=='test']; random.seed(2); rows=random.sample(rows,32)
x=torch.stack([torch.from_numpy(sf.read('/work/corpus/'+r['file'])[0]).float() for r in rows])
pipe=Pipeline.from_pretrained(None, backend="cpu", precision="fp32")
np.set_printoptions(precision=2, suppress=True, linewidth=200)
with torch.no_grad():
    m=mel(x); rec=pipe.vae.decode_latents(pipe.vae.encode_latents(m))
    print("VAE recon of real: max over ceiling", (rec-ceil).amax().item(), "share above", (rec>ceil).float().mean().item())
    for p in ["thunder","a dog barking","an explosion","rain falling on a roof"]:
        g=pipe.generate([p]*8, seed=list(range(100,108)))
        lm=pipe.vae.decode_latents(torch.from_numpy(g.latents))
        over=(lm-ceil)
        print(p, "max over ceiling %.2f"%over.amax().item(), "share above %.4f"%(over>0).float().mean().item(),
              "frames with any above", (over>0).any(-1).sum((1)).tolist(), "clipped share", g.settings["clipped"])
        print("   which bins (count above, every 4th)", (over>0).sum((0,1)).numpy()[::4])
