"""Session 28: a clip-weight file (training.train_impact --clip-weights) that leaves out every training clip
where thunder is heard with any sound other than rain: thunder then comes alone (kinds event, crop) or
over rain, as in a thunderstorm, never over wind, traffic, a fire or a waterfall.
usage: python this.py MANIFEST OUT.csv"""
import csv
import sys
from collections import Counter

rows = [r for r in csv.DictReader(open(sys.argv[1], newline="")) if (r.get("split") or "train") == "train"]
out, kept = [], Counter()
for r in rows:
    cats = set(filter(None, r["category"].split(";")))
    if "thunder" not in cats:
        continue
    if cats - {"thunder", "rain"}:
        out.append(r["id"])
    else:
        kept[(r["category"], r["kind"])] += 1
with open(sys.argv[2], "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["id", "weight"])
    w.writerows([i, 0] for i in out)
print(f"left out {len(out)} thunder clips; kept {sum(kept.values())}: {dict(kept)}")
