"""Metrics on models whose weights the user supplies by local path.

- PANNs Cnn14 (16 kHz: window 512, hop 160, 64 mel bands 50-8000 Hz, 527 AudioSet classes), the
  network behind audioldm_eval's FD ("2048" embedding = ReLU(fc1)), KL and IS ("logits" =
  fc_audioset before the sigmoid). Weights: a safetensors file holding the checkpoint's "model"
  state dict (`Cnn14_16k_mAP=0.438.pth` converted once; see docs/evaluation.md). Nothing is
  unpickled here. Needs torch and safetensors.
- VGGish FAD and CLAP score: not implemented (EvalError saying so).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import EvalError, UsageError

PANNS_SAMPLE_RATE = 16000
PANNS_N_FFT, PANNS_HOP, PANNS_MELS, PANNS_CLASSES = 512, 160, 64, 527
PANNS_MIN_SAMPLES = 32000   # audioldm_eval pads shorter clips to 2 s


def _torch():
    try:
        import torch
        return torch
    except ModuleNotFoundError:
        raise EvalError("PANNs metrics need PyTorch (pip install torch)") from None


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
        expected = self.model.state_dict()
        state = {k: v for k, v in state.items() if not k.startswith("spec_augmenter.")}  # no parameters
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        bad = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
        if missing or unexpected or bad:
            detail = "; ".join(f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                               for what, keys in (("missing", missing), ("unexpected", unexpected),
                                                  ("wrong shape", bad)) if keys)
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


def not_implemented(what: str) -> EvalError:
    return UsageError(f"{what} is not implemented in impact-rt eval yet (YAMNet FD/KL/IS and PANNs --panns are)")
