"""evaluate_model with another CFG schedule shape (session 20 check): SCHED=constant|linear_up|cos (default)."""
import math, os, sys
from impact_rt import decoding
kind = os.environ["SCHED"]
def sched(iterations, gmax):
    if kind == "constant":
        return [float(gmax)] * iterations
    if kind == "cos_half":      # cos from β_max but never below (1 + β_max)/2
        return [max((1 + gmax) / 2, 1.0 + math.cos(math.pi / 2 * t / iterations) * (gmax - 1.0)) for t in range(iterations)]
    raise SystemExit(kind)
decoding.guidance_schedule = sched
from training.evaluate_model import main
sys.exit(main())
