"""Session 17 prototype (not adopted): phase retrieval by phase-gradient heap integration (PGHI, Prusa,
Balazs and Sondergaard 2017) in the STFT convention of impact_rt.audio; see 2026-12-05-s17-pghi-ceiling.py."""
import heapq, numpy as np

M, A = 1024, 160
LAMBDA = 0.25645 * M * M           # equivalent Gaussian of a Hann window of length M (samples^2)

def pghi(mag: np.ndarray, tol_db: float = 60.0, rng=None) -> np.ndarray:
    """mag [T, 513] -> unit phases [T, 513] (complex)."""
    T, K = mag.shape
    s = np.log(np.maximum(mag, 1e-12))
    smax = s.max()
    floor = smax - tol_db / 20 * np.log(10)
    s_c = np.maximum(s, floor)
    ds_dk = np.gradient(s_c, axis=1)
    ds_dm = np.gradient(s_c, axis=0)
    k = np.arange(K)[None, :]
    tgrad = (A * M / LAMBDA) * ds_dk + 2 * np.pi * A * k / M     # phase advance per frame
    fgrad = -(LAMBDA / (A * M)) * ds_dm + np.pi                   # phase advance per bin
    rng = rng or np.random.default_rng(0)
    phase = rng.uniform(0, 2 * np.pi, (T, K))
    todo = s > floor
    done = ~todo
    order = np.argsort(-s, axis=None)
    flat_i = 0
    heap = []
    while True:
        if not heap:
            while flat_i < order.size and done.flat[order[flat_i]]:
                flat_i += 1
            if flat_i >= order.size:
                break
            idx = order[flat_i]
            m0, k0 = divmod(int(idx), K)
            phase[m0, k0] = 0.0
            done[m0, k0] = True
            heap.append((-s[m0, k0], m0, k0))
        _, m0, k0 = heapq.heappop(heap)
        p = phase[m0, k0]
        for dm, dk in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            m1, k1 = m0 + dm, k0 + dk
            if 0 <= m1 < T and 0 <= k1 < K and not done[m1, k1]:
                if dm:
                    phase[m1, k1] = p + dm * 0.5 * (tgrad[m0, k0] + tgrad[m1, k1])
                else:
                    phase[m1, k1] = p + dk * 0.5 * (fgrad[m0, k0] + fgrad[m1, k1])
                done[m1, k1] = True
                heapq.heappush(heap, (-s[m1, k1], m1, k1))
    return np.exp(1j * phase)
