#!/bin/bash
# judge_sched.sh SCHED NAME [GUIDANCE]: shipped bundle, every prompt seeds 10-14 + thunder seeds 10-29, with another CFG schedule shape
cd /work/main && . .venv/bin/activate
E=/work/runs/s20/ev; mkdir -p $E; G=${3:-5}
SCHED=$1 python docs/runs/2026-12-05-s20-cfg-schedule-eval.py --model impact_rt/models/default --out $E/$2-thunder --seeds 20 --first-seed 10 --backend cpu --threads 2 \
  --guidance $G --prompts /work/runs/thunder.tsv --reference /work/runs/ref-test-pre12 > $E/$2-thunder.log 2>&1
SCHED=$1 python docs/runs/2026-12-05-s20-cfg-schedule-eval.py --model impact_rt/models/default --out $E/$2-all --seeds 5 --first-seed 10 --backend cpu --threads 2 \
  --guidance $G --reference /work/runs/ref-test-pre12 > $E/$2-all.log 2>&1
python -c "import json; a=json.load(open('$E/$2-all/summary.json')); t=json.load(open('$E/$2-thunder/summary.json')); print('$2', 'adherence', round(a['adherence'],4), 'FD', round(a['metrics']['fd'],2), 'silent', round(a['metrics']['silent_share'],3), 'thunder', t['per_prompt'])" >> /work/runs/s20/progress.txt
