"""Rebuild a LatentStore (fp16, text states padded to 78) from packed chunks; writes STORE and its manifest."""
import sys, json, csv, torch
from safetensors import safe_open
from safetensors.torch import load_file
sys.path.insert(0, '.')
from training.latent_store import LatentStore
out = sys.argv[1]; chunks = sys.argv[2:]
lat, clip, cap, split, states, masks, cats = [], [], [], [], [], [], {}
ncap = 0
for p in chunks:
    t = load_file(p)
    with safe_open(p, 'pt') as f:
        md = f.metadata()
    book, codes = t['book'], t['codes'].long()
    lat.append(torch.stack([book[ch][codes[:, ch]] for ch in range(8)], 1).half())
    clip.append(t['clip']); cap.append(t['caption_id'] + ncap); split.append(t['split'].long())
    m = t['text_mask'].bool()
    s = torch.zeros(m.shape + (t['text8'].shape[-1],), dtype=torch.float16)
    s[m] = (t['text8'].float() * t['text_scale'].float()).half()
    states.append(s); masks.append(m); ncap += m.shape[0]
    cats.update({int(k): v for k, v in json.loads(md['categories']).items()})
    meta = json.loads(md['meta'])
clip = torch.cat(clip)
uniq = sorted(set(clip.tolist()))
local = {c: i for i, c in enumerate(uniq)}
man = out.replace('.safetensors', '.manifest.csv')
with open(man, 'w', newline='') as f:
    w = csv.writer(f); w.writerow(['id', 'category'])
    for c in uniq: w.writerow([f'c{c}', cats[c]])
meta.pop('clip_ids', None)
meta.update({'manifest': man, 'clip_ids': [f'c{c}' for c in uniq], 'packed_from': chunks})
st = LatentStore(torch.cat(lat), torch.tensor([local[c] for c in clip.tolist()]), torch.cat(cap), torch.cat(split),
                 torch.cat(states), torch.cat(masks), meta, out)
st.save(out)
print('store', out, 'rows', len(st.clip), 'text rows', len(st.rows('text')), 'captions', ncap, flush=True)
