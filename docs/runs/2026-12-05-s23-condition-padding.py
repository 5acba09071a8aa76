"""Session 23 (AVX2-only CPU): what the condition's padding costs the encoder. MiniLM conditions are 77 token
states (padded, masked) + the pooled embedding at position 78, and CFG's learned null attends all 78, so
only the prompt rows could drop padding, and only by compacting positions. Timing stand-in: a copy of the
encoder with the text positions cut to the prompt rows' need (not a correct model: timing only)."""
import copy, statistics, time, torch
from impact_rt.pipeline import Pipeline
cpu = Pipeline.from_pretrained(backend="cpu", precision="fp32")
REPEATS = 7
for prompts in (["thunder"], ["thunder", "rain", "a dog barking", "birds chirping"]):
    calls = []
    orig = cpu.backend.encode
    def rec(*a):
        calls.append([x.clone() for x in a]); return orig(*a)
    cpu.backend.encode = rec
    cpu.generate(prompts, seed=0)
    cpu.backend.encode = orig
    enc = cpu.backend.encoder; b = len(prompts)
    L = enc.text_len                  # 77 MiniLM token states + the pooled embedding last
    n = int(calls[0][2][:b, :L - 1].sum(1).max()) + 1
    enc_s = copy.deepcopy(enc); enc_s.text_len = n
    for name in ("encoder_pos_embed_learned", "decoder_pos_embed_learned"):
        p = getattr(enc, name); setattr(enc_s, name, torch.nn.Parameter(torch.cat([p[:, :n], p[:, L:]], 1)))
    with torch.inference_mode():
        runs = {"full": lambda: [enc(*c) for c in calls],
                "split": lambda: [(enc_s(c[0][:b], c[1][:b, :n], c[2][:b, :n], c[3][:b], c[4][:b]),
                                   enc(c[0][b:], c[1][b:], c[2][b:], c[3][b:], c[4][b:])) for c in calls]}
        ts = {k: [] for k in runs}
        for k in runs:
            runs[k]()                                   # warm-up
        for _ in range(REPEATS):                        # interleaved, so that drifts in the machine hit both
            for k, fn in runs.items():
                t0 = time.perf_counter(); fn(); ts[k].append((time.perf_counter() - t0) * 1e3)
        full, split = statistics.median(ts["full"]), statistics.median(ts["split"])
        print("  ms per repeat:", {k: [round(x) for x in v] for k, v in ts.items()})
    print(f"batch {b}: kept {n} of 78 positions for the prompt rows; one call {full:.0f} ms, prompt rows cut + null rows apart {split:.0f} ms (medians of {REPEATS}) ({1 - split/full:+.1%} saved)")
