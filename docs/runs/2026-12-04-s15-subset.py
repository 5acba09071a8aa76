"""The session-15 scorer subset: every captioned val/test clip and at most 50 captioned train
clips per category string (seed 15), in manifest order.

    python docs/runs/2026-12-04-s15-subset.py /work/corpus/manifest.csv /work/corpus/manifest-s15.csv
"""
import collections, csv, random, sys

src, dst = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(src)))
order = {x["id"]: i for i, x in enumerate(rows)}
shuffled = rows[:]
random.seed(15)
random.shuffle(shuffled)
count, keep = collections.Counter(), []
for x in shuffled:
    if not x["caption"]:
        continue
    if x["split"] == "train":
        if count[x["category"]] >= 50:
            continue
        count[x["category"]] += 1
    keep.append(x)
keep.sort(key=lambda x: order[x["id"]])
w = csv.DictWriter(open(dst, "w", newline=""), fieldnames=list(rows[0]))
w.writeheader()
w.writerows(keep)
print(len(keep), collections.Counter(x["split"] for x in keep))
