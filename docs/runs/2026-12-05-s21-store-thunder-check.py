"""Session 21: do the latent store's thunder rows hold thunder? 12 train rows per kind whose caption names
thunder, decoded by the shipped VAE + Griffin-Lim, against the same clips as recorded; judged by the
evaluator's YAMNet adherence for the thunder prompt (store: 67.9 %, recorded: 71.7 %, 53 clips)."""
import json, torch, random, collections, shutil, hashlib
from pathlib import Path
from safetensors import safe_open
from impact_rt.pipeline import Pipeline
from impact_rt.audio import save_audio
from impact_rt.evaluation import evaluate
from impact_rt.evaluation.adherence import default_prompts_path
meta=json.load(open('/work/runs/latents-s17.json'))
print('vae sha store', meta['vae_sha256'][:12], 'shipped', hashlib.sha256(open('impact_rt/models/default/vae.safetensors','rb').read()).hexdigest()[:12])
caps=meta['captions']
f=safe_open('/work/runs/latents-s17.safetensors','pt')
cid=f.get_tensor('caption_id'); clip=f.get_tensor('clip'); split=f.get_tensor('split')
import csv
rows={r['id']:r for r in csv.DictReader(open(meta['manifest']))}
ids=meta['clip_ids']
sel=collections.defaultdict(list)
for j in range(len(cid)):
    c=int(cid[j])
    if c<0 or split[j]!=0: continue
    cap=caps[c]
    if 'thunder' not in cap: continue
    r=rows[ids[int(clip[j])]]
    sel[r['kind']].append((j,cap,r))
random.seed(0)
pipe=Pipeline.from_pretrained(None, backend="torch")
vae,voc=pipe.backend.vae,pipe.backend.vocoder
lat=f.get_slice('latents')
out=Path('/tmp/storechk'); shutil.rmtree(out,ignore_errors=True)
for w in ('store','orig'): (out/w).mkdir(parents=True)
recs=[]
for kind,L in sel.items():
    print(kind,len(L))
    for j,cap,r in random.sample(L,min(12,len(L))):
        z=lat[j:j+1].float()
        with torch.inference_mode(): a=voc(vae.decode_latents(z))
        name=f"{len(recs):04d}.wav"
        save_audio(str(out/'store'/name),a[0])
        shutil.copy(Path(meta['manifest']).parent/r['file'], out/'orig'/(name[:-4]+'.flac'))
        recs.append({'file':name,'prompt':'thunder','kind':kind,'cap':cap})
for w in ('store','orig'):
    rr=[dict(x) for x in recs]
    if w=='orig':
        for x in rr: x['file']=x['file'][:-4]+'.flac'
    (out/w/'clips.jsonl').write_text(''.join(json.dumps(x)+'\n' for x in rr))
    rep=evaluate(out/w,None,default_prompts_path(),out/w/'clips.jsonl')
    per=rep['adherence'].get('per_clip') or rep['adherence'].get('clips')
    print(w, rep['adherence']['rate'], list(rep['adherence'].keys()))
    json.dump(rep, open(out/f'{w}.json','w'), indent=1, default=str)
