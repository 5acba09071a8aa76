"""Metrics on models whose weights the user supplies by local path.

- PANNs Cnn14 (16 kHz: window 512, hop 160, 64 mel bands 50-8000 Hz, 527 AudioSet classes), the
  network behind audioldm_eval's FD ("2048" embedding = ReLU(fc1)), KL and IS ("logits" =
  fc_audioset before the sigmoid). Weights: a safetensors file holding the checkpoint's "model"
  state dict (`Cnn14_16k_mAP=0.438.pth` converted once; see docs/evaluation.md). Nothing is
  unpickled here. Needs torch and safetensors.
- VGGish (16 kHz: log-mel examples of 96 frames x 64 bands, 0.96 s, non-overlapping), the network
  of the Frechet Audio Distance (FAD): torchvggish's VGG stack (`features.*`) and fully connected
  layers (`embeddings.*`) to 128-d, then the PCA whitening of its post-processor (`pproc.*`, without
  the 8-bit quantisation). Weights: a safetensors file holding torchvggish's state dict names
  (`python -m impact_rt.evaluation.convert vggish` makes it once from the .pth files). Nothing is
  unpickled here. Needs torch and safetensors.
- CLAP (transformers' ClapModel + ClapProcessor) from a local Hugging Face folder (e.g. a copy of
  laion/clap-htsat-unfused); audio at the feature extractor's rate (48 kHz), text through its
  tokenizer; `local_files_only`, safetensors weights only. Needs torch and transformers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import EvalError, UsageError

PANNS_SAMPLE_RATE = 16000
PANNS_N_FFT, PANNS_HOP, PANNS_MELS, PANNS_CLASSES = 512, 160, 64, 527
PANNS_MIN_SAMPLES = 32000   # audioldm_eval pads shorter clips to 2 s


def _torch(what: str = "PANNs metrics"):
    try:
        import torch
        return torch
    except ModuleNotFoundError:
        raise EvalError(f"{what} need PyTorch (pip install torch)") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _key_report(expected: dict, state: dict) -> str:
    """'' when `state` has exactly the keys and shapes of `expected`, else what differs (a few keys)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad = [f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}" for k in expected
           if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    return "; ".join(f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                     for what, keys in (("missing", missing), ("unexpected", unexpected),
                                        ("wrong shape", bad)) if keys)


def _build_cnn14():
    torch = _torch()
    nn, F = torch.nn, torch.nn.functional

    class ConvBlock(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
            self.bn1, self.bn2 = nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)

        def forward(self, x, pool):
            x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
            return F.avg_pool2d(x, pool)

    class Holder(nn.Module):
        pass

    class Cnn14(nn.Module):
        """Inference-only Cnn14 with torchlibrosa's parameter names (STFT as two Conv1d, melW)."""

        def __init__(self):
            super().__init__()
            bins = PANNS_N_FFT // 2 + 1
            self.spectrogram_extractor = Holder()
            self.spectrogram_extractor.stft = Holder()
            self.spectrogram_extractor.stft.conv_real = nn.Conv1d(1, bins, PANNS_N_FFT, PANNS_HOP, bias=False)
            self.spectrogram_extractor.stft.conv_imag = nn.Conv1d(1, bins, PANNS_N_FFT, PANNS_HOP, bias=False)
            self.logmel_extractor = Holder()
            self.logmel_extractor.melW = nn.Parameter(torch.zeros(bins, PANNS_MELS))
            self.bn0 = nn.BatchNorm2d(PANNS_MELS)
            chans = [1, 64, 128, 256, 512, 1024, 2048]
            for i in range(6):
                setattr(self, f"conv_block{i + 1}", ConvBlock(chans[i], chans[i + 1]))
            self.fc1 = nn.Linear(2048, 2048)
            self.fc_audioset = nn.Linear(2048, PANNS_CLASSES)

        def forward(self, wav):  # [B, S] -> embedding [B, 2048], logits [B, 527]
            stft = self.spectrogram_extractor.stft
            x = F.pad(wav[:, None, :], (PANNS_N_FFT // 2, PANNS_N_FFT // 2), mode="reflect")
            power = stft.conv_real(x) ** 2 + stft.conv_imag(x) ** 2            # [B, bins, T]
            mel = power.transpose(1, 2) @ self.logmel_extractor.melW           # [B, T, mels]
            x = (10.0 * torch.log10(torch.clamp(mel, min=1e-10)))[:, None]     # ref 1, amin 1e-10
            x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
            for i in range(6):
                x = getattr(self, f"conv_block{i + 1}")(x, (2, 2) if i < 5 else (1, 1))
            x = x.mean(dim=3)
            x = x.max(dim=2).values + x.mean(dim=2)
            emb = F.relu(self.fc1(x))
            return emb, self.fc_audioset(emb)

    return Cnn14()


class Panns:
    """PANNs Cnn14 (16 kHz) from a local safetensors file; CPU, eval mode."""

    def __init__(self, weights: str | Path, threads: int | None = None):
        torch = _torch()
        try:
            from safetensors.torch import load_file
        except ModuleNotFoundError:
            raise EvalError("PANNs weights are read with safetensors: pip install safetensors") from None
        path = Path(weights)
        if path.suffix != ".safetensors":
            raise UsageError(f"PANNs weights must be a .safetensors file (convert the .pth once, see "
                             f"docs/evaluation.md): {path}")
        if not path.is_file():
            raise UsageError(f"PANNs weights not found: {path}")
        try:
            state = load_file(str(path))
        except Exception as exc:
            raise EvalError(f"cannot read PANNs weights {path}: {' '.join(str(exc).split())}") from None
        self.model = _build_cnn14()
        state = {k: v for k, v in state.items() if not k.startswith("spec_augmenter.")}  # no parameters
        detail = _key_report(self.model.state_dict(), state)
        if detail:
            raise EvalError(f"{path} is not a PANNs Cnn14 16 kHz state dict ({detail})")
        self.model.load_state_dict(state)
        self.model.eval()
        self.threads = threads
        self._torch = torch

    def __call__(self, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """16 kHz mono waveform -> (embedding [2048], logits [527]); mean removed, padded to 2 s."""
        torch = self._torch
        x = np.asarray(waveform, np.float32) - np.float32(np.mean(waveform))
        if x.size < PANNS_MIN_SAMPLES:
            x = np.pad(x, (0, PANNS_MIN_SAMPLES - x.size))
        old = torch.get_num_threads()
        try:
            if self.threads:
                torch.set_num_threads(self.threads)
            with torch.inference_mode():
                emb, logits = self.model(torch.from_numpy(x)[None])
        finally:
            torch.set_num_threads(old)
        return emb[0].numpy().astype(np.float64), logits[0].numpy().astype(np.float64)


# ---------------------------------------------------------------------------------------------
# VGGish (FAD)

VGGISH_SAMPLE_RATE = 16000
VGGISH_WIN, VGGISH_HOP, VGGISH_N_FFT = 400, 160, 512      # 25 ms, 10 ms, next power of 2
VGGISH_MELS, VGGISH_FMIN, VGGISH_FMAX = 64, 125.0, 7500.0
VGGISH_LOG_OFFSET = 0.01
VGGISH_EXAMPLE_FRAMES = 96                                # 0.96 s; examples do not overlap
VGGISH_DIM = 128
VGGISH_BATCH = 32


def vggish_mel_matrix() -> np.ndarray:
    """[257, 64] float64: audioset mel_features.spectrogram_to_mel_matrix (triangles in mel space,
    mel = 1127 ln(1 + f/700), 125-7500 Hz, the DC bin zeroed)."""
    hz_to_mel = lambda f: 1127.0 * np.log(1.0 + np.asarray(f, np.float64) / 700.0)  # noqa: E731
    bins_mel = hz_to_mel(np.linspace(0.0, VGGISH_SAMPLE_RATE / 2.0, VGGISH_N_FFT // 2 + 1))[:, None]
    edges = np.linspace(hz_to_mel(VGGISH_FMIN), hz_to_mel(VGGISH_FMAX), VGGISH_MELS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    weights = np.maximum(0.0, np.minimum((bins_mel - lower) / (center - lower),
                                         (upper - bins_mel) / (upper - center)))
    weights[0, :] = 0.0
    return weights


_VGGISH_MEL = vggish_mel_matrix()
_VGGISH_WINDOW = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(VGGISH_WIN) / VGGISH_WIN)  # periodic Hann


def vggish_log_mel(waveform: np.ndarray) -> np.ndarray:
    """16 kHz mono waveform [S] -> log(mel + 0.01) [1 + (S - 400) // 160, 64], float64 (audioset
    mel_features.log_mel_spectrogram: frames without padding, |rfft 512| of the windowed frame)."""
    x = np.asarray(waveform, np.float64).reshape(-1)
    if x.size < VGGISH_WIN:
        return np.zeros((0, VGGISH_MELS))
    frames = np.lib.stride_tricks.sliding_window_view(x, VGGISH_WIN)[::VGGISH_HOP]
    mag = np.abs(np.fft.rfft(frames * _VGGISH_WINDOW, VGGISH_N_FFT, axis=-1))
    return np.log(mag @ _VGGISH_MEL + VGGISH_LOG_OFFSET)


def vggish_examples(waveform: np.ndarray) -> np.ndarray:
    """16 kHz mono waveform -> examples [N, 96, 64] (vggish_input.waveform_to_examples), float64.
    N = number of whole 0.96 s examples; 0 for clips under 0.975 s (nothing is padded)."""
    mel = vggish_log_mel(waveform)
    n = (mel.shape[0] - VGGISH_EXAMPLE_FRAMES) // VGGISH_EXAMPLE_FRAMES + 1 if len(mel) >= VGGISH_EXAMPLE_FRAMES else 0
    return mel[:n * VGGISH_EXAMPLE_FRAMES].reshape(n, VGGISH_EXAMPLE_FRAMES, VGGISH_MELS)


def _build_vggish(pca: bool = True):
    torch = _torch("VGGish FAD")
    nn = torch.nn

    class Postprocessor(nn.Module):
        def __init__(self):
            super().__init__()
            self.pca_eigen_vectors = nn.Parameter(torch.zeros(VGGISH_DIM, VGGISH_DIM), requires_grad=False)
            self.pca_means = nn.Parameter(torch.zeros(VGGISH_DIM, 1), requires_grad=False)

    class VGGish(nn.Module):
        """Inference-only VGGish with torchvggish's parameter names (features.N, embeddings.N, pproc.*)."""

        def __init__(self):
            super().__init__()
            layers, cin = [], 1
            for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
                if v == "M":
                    layers.append(nn.MaxPool2d(2, 2))
                else:
                    layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
                    cin = v
            self.features = nn.Sequential(*layers)
            self.embeddings = nn.Sequential(nn.Linear(512 * 4 * 6, 4096), nn.ReLU(), nn.Linear(4096, 4096),
                                            nn.ReLU(), nn.Linear(4096, VGGISH_DIM), nn.ReLU())
            if pca:
                self.pproc = Postprocessor()

        def forward(self, x):  # [B, 1, 96, 64] log-mel -> [B, 128]
            x = self.features(x)                                   # [B, 512, 6, 4]
            x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)      # TF's NHWC flatten order
            x = self.embeddings(x)
            if pca:                                                # PCA + whitening, no quantisation
                x = (self.pproc.pca_eigen_vectors @ (x.T - self.pproc.pca_means)).T
            return x

    return VGGish()


def _load_safetensors(path: Path, what: str, how: str):
    """The tensors of a local .safetensors file; one-line errors for the wrong suffix, absent or
    unreadable files. `how` tells how to make the file."""
    try:
        from safetensors.torch import load_file
    except ModuleNotFoundError:
        raise EvalError(f"{what} weights are read with safetensors: pip install safetensors") from None
    if path.suffix != ".safetensors":
        raise UsageError(f"{what} weights must be a .safetensors file ({how}): {path}")
    if not path.is_file():
        raise UsageError(f"{what} weights not found: {path}")
    try:
        return load_file(str(path))
    except Exception as exc:
        raise EvalError(f"cannot read {what} weights {path}: {_one_line(exc)}") from None


class Vggish:
    """VGGish from a local safetensors file (torchvggish names); CPU, eval mode.

    `pca=True` (the default, torchvggish's `postprocess`) needs `pproc.pca_eigen_vectors` [128, 128]
    and `pproc.pca_means` [128, 1] and applies them; `pca=False` gives the raw 128-d embedding and
    ignores `pproc.*` tensors in the file."""

    def __init__(self, weights: str | Path, threads: int | None = None, pca: bool = True):
        torch = _torch("VGGish FAD")
        path = Path(weights)
        state = _load_safetensors(path, "VGGish", "convert torchvggish's .pth files once with "
                                  "`python -m impact_rt.evaluation.convert vggish`, see docs/evaluation.md")
        if not pca:
            state = {k: v for k, v in state.items() if not k.startswith("pproc.")}
        elif "pproc.pca_means" in state and tuple(state["pproc.pca_means"].shape) == (VGGISH_DIM,):
            state["pproc.pca_means"] = state["pproc.pca_means"].reshape(VGGISH_DIM, 1)   # npz layout
        with torch.device("meta"):          # no allocation or random init: the file gives every tensor
            self.model = _build_vggish(pca)
        detail = _key_report(self.model.state_dict(), state)
        if detail:
            raise UsageError(f"{path} is not a torchvggish state dict{' with PCA (pproc.*)' if pca else ''} ({detail})")
        self.model.load_state_dict({k: v.float().contiguous() for k, v in state.items()}, assign=True)
        self.model.eval()
        self.pca = pca
        self.threads = threads
        self._torch = torch

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        """16 kHz mono waveform -> one 128-d embedding per 0.96 s example, [N, 128] float64 (N may be 0)."""
        torch = self._torch
        ex = vggish_examples(waveform).astype(np.float32)
        if len(ex) == 0:
            return np.zeros((0, VGGISH_DIM))
        old = torch.get_num_threads()
        out = []
        try:
            if self.threads:
                torch.set_num_threads(self.threads)
            with torch.inference_mode():
                for i in range(0, len(ex), VGGISH_BATCH):
                    out.append(self.model(torch.from_numpy(ex[i:i + VGGISH_BATCH])[:, None]).numpy())
        finally:
            torch.set_num_threads(old)
        return np.concatenate(out).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# CLAP score

CLAP_BATCH = 8


def _clap_files(folder: Path) -> None:
    """One-line UsageError for a missing folder or a missing file of the Hugging Face layout."""
    if not folder.is_dir():
        raise UsageError(f"CLAP model folder not found: {folder}")
    has = lambda *names: all((folder / n).is_file() for n in names)  # noqa: E731
    if not has("config.json"):
        raise UsageError(f"CLAP model folder {folder} has no config.json")
    if not (has("model.safetensors") or has("model.safetensors.index.json")):
        extra = " (only pytorch_model.bin: convert it once, see docs/evaluation.md)" if has("pytorch_model.bin") else ""
        raise UsageError(f"CLAP model folder {folder} has no model.safetensors{extra}")
    if not (has("preprocessor_config.json") or has("processor_config.json")):
        raise UsageError(f"CLAP model folder {folder} has no preprocessor_config.json (the ClapFeatureExtractor settings)")
    if not (has("tokenizer.json") or has("vocab.json", "merges.txt")):
        raise UsageError(f"CLAP model folder {folder} has no tokenizer files (tokenizer.json, or vocab.json and merges.txt)")


class Clap:
    """CLAP (transformers ClapModel + ClapProcessor) from a local Hugging Face folder; CPU, eval mode.

    Audio: the clip at the feature extractor's rate (48 kHz for LAION's models), cut to its first
    `max_length_s` seconds (10 s) so that nothing random happens (no random crop, no fusion of random
    crops: `is_longer` is False), then the extractor's padding (repeatpad) and log-mel, in the layout
    of the model (4 stacked mels for a fused model, else one). Text: the tokenizer, truncated to the model's
    positions. Embeddings are the projections, L2-normalised; the score is their cosine."""

    def __init__(self, folder: str | Path, threads: int | None = None):
        torch = _torch("CLAP scores")
        folder = Path(folder)
        _clap_files(folder)
        try:
            from transformers import ClapModel, ClapProcessor
            from transformers.utils import logging as hf_logging
        except ModuleNotFoundError:
            raise EvalError("CLAP scores need transformers (pip install transformers)") from None
        verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            model, info = ClapModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True,
                                                    output_loading_info=True)
            processor = ClapProcessor.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:
            raise EvalError(f"cannot load the CLAP model in {folder}: {_one_line(exc)}") from None
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
        bad = {what: sorted(str(k) for k in info.get(key) or ()) for what, key in
               (("missing", "missing_keys"), ("wrong shape", "mismatched_keys"))}
        if any(bad.values()):
            detail = "; ".join(f"{w}: {', '.join(map(str, ks[:3]))}{' ...' if len(ks) > 3 else ''}"
                               for w, ks in bad.items() if ks)
            raise UsageError(f"{folder}/model.safetensors does not fit its config.json ({detail})")
        vocab = model.config.text_config.vocab_size
        if len(processor.tokenizer) != vocab:
            raise UsageError(f"the tokenizer in {folder} has {len(processor.tokenizer)} tokens but the model's text "
                             f"vocab_size is {vocab}: tokenizer files missing or from another model")
        self.model = model.eval()
        self.processor = processor
        self.folder = folder
        self.sample_rate = int(processor.feature_extractor.sampling_rate)
        self.max_samples = int(processor.feature_extractor.nb_max_samples)
        # the input layout the model takes: 4 stacked mels (fusion) or one; the extractor's own
        # default may not match (ClapFeatureExtractor() defaults to fusion)
        self.truncation = "fusion" if model.config.audio_config.enable_fusion else "rand_trunc"
        positions = model.config.text_config.max_position_embeddings - 2     # RoBERTa: padding_idx + 1 offset
        self.max_tokens = min(int(getattr(processor.tokenizer, "model_max_length", positions) or positions), positions)
        self.threads = threads
        self._torch = torch

    def _run(self, fn):
        torch = self._torch
        old = torch.get_num_threads()
        try:
            if self.threads:
                torch.set_num_threads(self.threads)
            with torch.inference_mode():
                return fn()
        finally:
            torch.set_num_threads(old)

    @staticmethod
    def _normalised(out) -> np.ndarray:
        emb = getattr(out, "pooler_output", out)          # transformers 5: an output object; 4: a tensor
        emb = emb.double().numpy()
        return emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)

    def audio_embeddings(self, waveforms: list[np.ndarray]) -> np.ndarray:
        """Mono waveforms at `sample_rate` -> L2-normalised audio embeddings [N, projection_dim]."""
        torch = self._torch
        out = []
        for i in range(0, len(waveforms), CLAP_BATCH):
            batch = [np.asarray(w, np.float32)[:self.max_samples] for w in waveforms[i:i + CLAP_BATCH]]
            feats = self.processor.feature_extractor(batch, sampling_rate=self.sample_rate, return_tensors="pt",
                                                     truncation=self.truncation)
            feats["is_longer"] = torch.zeros(len(batch), 1, dtype=torch.bool)   # no random fusion branch
            out.append(self._run(lambda: self._normalised(self.model.get_audio_features(**feats))))
        return np.concatenate(out) if out else np.zeros((0, self.model.config.projection_dim))

    def text_embeddings(self, texts: list[str]) -> np.ndarray:
        """Texts -> L2-normalised text embeddings [N, projection_dim]."""
        out = []
        for i in range(0, len(texts), CLAP_BATCH):
            tok = self.processor.tokenizer(list(texts[i:i + CLAP_BATCH]), padding=True, truncation=True,
                                           max_length=self.max_tokens, return_tensors="pt")
            out.append(self._run(lambda: self._normalised(self.model.get_text_features(
                input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]))))
        return np.concatenate(out) if out else np.zeros((0, self.model.config.projection_dim))

    def scores(self, waveforms: list[np.ndarray], prompts: list[str]) -> np.ndarray:
        """Cosine similarity of each waveform's audio embedding with its prompt's text embedding, [N]."""
        unique = sorted(set(prompts))
        text = dict(zip(unique, self.text_embeddings(unique)))
        audio = self.audio_embeddings(waveforms)
        return np.array([float(a @ text[p]) for a, p in zip(audio, prompts)])
