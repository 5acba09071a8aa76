"""`impact-rt eval`: argument parsing, the text table and the JSON output."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..fileio import atomic_write_text, output_file_problem, probe_writable
from .errors import EvalError, UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("generated_dir", metavar="GENERATED_DIR", help="folder of generated clips (wav/flac/ogg)")
    parser.add_argument("--reference", metavar="DIR", help="folder of reference clips: FD, and KL over files of the same name")
    parser.add_argument("--prompts", metavar="TSV",
                        help="prompts with expected YAMNet classes (default: ../shared/eval/prompts.tsv from the repo root)")
    parser.add_argument("--manifest", metavar="FILE",
                        help="clip -> prompt sidecar (default: clips.jsonl or manifest.csv inside GENERATED_DIR)")
    parser.add_argument("--top-k", type=int, default=5, metavar="K", help="a clip adheres if one expected class is in its top K (default 5)")
    parser.add_argument("--is-splits", type=int, default=1, metavar="N", help="splits for the inception score (default 1)")
    parser.add_argument("--threads", type=int, default=None, metavar="N", help="ONNX Runtime intra-op threads, and torch threads for --panns/--vggish/--clap (default: runtime's choice)")
    parser.add_argument("--panns", metavar="WEIGHTS",
                        help="also FD/KL/IS on PANNs Cnn14 16 kHz (audioldm_eval's network): a .safetensors state dict")
    parser.add_argument("--vggish", metavar="WEIGHTS",
                        help="also VGGish FAD (needs --reference): Frechet distance between the 128-d PCA-whitened "
                             "VGGish embeddings of every 0.96 s frame of each folder; WEIGHTS: a .safetensors of "
                             "torchvggish's state dict (features.*, embeddings.*, pproc.*), made once with "
                             "`python -m impact_rt.evaluation.convert vggish`")
    parser.add_argument("--clap", metavar="DIR",
                        help="also the CLAP score (needs the clips.jsonl/manifest.csv): mean cosine between each "
                             "clip's CLAP audio embedding and its prompt's text embedding; DIR: a local Hugging Face "
                             "ClapModel folder (config.json, model.safetensors, preprocessor_config.json, tokenizer "
                             "files), e.g. a copy of laion/clap-htsat-unfused")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    parser.add_argument("--out", metavar="FILE", help="also write the JSON report to FILE (an existing FILE needs --force)")
    parser.add_argument("--force", action="store_true", help="let --out overwrite an existing file")
    parser.add_argument("--clips", action="store_true", help="list every clip's prompt, hit and top classes in the table")


def _n(n, word: str) -> str:
    """'1 clip', '2 clips'."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def _check_out(out: str, force: bool) -> Path:
    """Refuse an --out that cannot be written, before any work is done (exit 2, or 1 if unwritable)."""
    problem = output_file_problem(out, force)
    if problem:
        raise UsageError(problem)
    path = Path(out)
    try:
        probe_writable(path.absolute().parent)
    except OSError as exc:
        raise EvalError(f"folder of --out is not writable: {path.absolute().parent} ({exc.strerror or exc})") from None
    return path


def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def format_table(report: dict, show_clips: bool = False) -> str:
    m = report["metrics"]
    lines = [f"generated: {report['generated_dir']} ({_n(report['n_generated'], 'clip')})"]
    if report["reference_dir"]:
        lines.append(f"reference: {report['reference_dir']} ({_n(report['n_reference'], 'clip')})")
    rows = [
        ("FD (YAMNet, clip embeddings)", _fmt(m["fd"])),
        ("FD (YAMNet, frame embeddings)", _fmt(m["fd_frames"])),
        (f"KL softmax ({_n(m['kl_pairs'], 'pair')})", _fmt(m["kl_softmax"])),
        (f"KL sigmoid ({_n(m['kl_pairs'], 'pair')})", _fmt(m["kl_sigmoid"])),
        (f"IS ({_n(m['is_splits'], 'split')})", f"{_fmt(m['is_mean'])} ± {_fmt(m['is_std'])}"),
    ]
    if "silent_share" in m:
        ref = m.get("silent_share_reference")
        rows.append(("silent 32 ms frames (< -50 dBFS)",
                     f"{_fmt(m['silent_share'])}" + (f" (reference {_fmt(ref)})" if ref is not None else "")))
    if "vggish_fad" in m:
        frames = m.get("vggish_frames") or ["-", "-"]
        rows.append((f"FAD (VGGish, {frames[0]}/{frames[1]} frames)", _fmt(m["vggish_fad"])))
    if "clap_score" in m:
        rows.append((f"CLAP score ({_n(m['clap_pairs'], 'clip')})", f"{_fmt(m['clap_score'])} ± {_fmt(m['clap_score_std'])}"))
    p = report.get("panns")
    if p is not None:
        rows += [
            ("FD (PANNs Cnn14, 2048-d)", _fmt(p["fd"])),
            (f"KL softmax, PANNs ({_n(p['kl_pairs'], 'pair')})", _fmt(p["kl_softmax"])),
            (f"KL sigmoid, PANNs ({_n(p['kl_pairs'], 'pair')})", _fmt(p["kl_sigmoid"])),
            ("IS (PANNs)", f"{_fmt(p['is_mean'])} ± {_fmt(p['is_std'])}"),
        ]
    a = report["adherence"]
    if a is not None:
        ci = a.get("wilson95")
        rows.append((f"adherence (top-{a['top_k']})", f"{a['hits']}/{a['clips']} = {_fmt(a['rate'])}"
                     + (f" (95 % interval {_fmt(ci[0])}–{_fmt(ci[1])})" if ci and a["clips"] else "")))
    w = max(len(r[0]) for r in rows)
    lines += ["", f"{'metric'.ljust(w)}  value", f"{'-' * w}  -----"] + [f"{k.ljust(w)}  {v}" for k, v in rows]
    if a is not None and a["per_prompt"]:
        w = max(len(r["prompt"]) for r in a["per_prompt"])
        lines += ["", f"{'prompt'.ljust(w)}  hits/clips  95 % interval", f"{'-' * w}  ----------  -------------"]
        lines += [f"{r['prompt'].ljust(w)}  {(str(r['hits']) + '/' + str(r['clips'])).ljust(10)}  "
                  f"{100 * r['wilson95'][0]:.0f}–{100 * r['wilson95'][1]:.0f} %" for r in a["per_prompt"]]
    if show_clips:
        lines += ["", "file\thit\tprompt\ttop classes"]
        for c in report["clips"]:
            hit = "-" if c["hit"] is None else ("yes" if c["hit"] else "no")
            top = "; ".join(f"{n} {s:.2f}" for n, s in c["top"])
            lines.append(f"{c['file']}\t{hit}\t{c['prompt'] or '-'}\t{top}")
    if report["notes"]:
        lines += [""] + [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """0 on success, 2 on usage errors, 1 on runtime errors; errors are one line on stderr."""
    from .evaluator import evaluate

    try:
        if args.top_k < 1:
            raise UsageError("--top-k must be at least 1")
        if args.is_splits < 1:
            raise UsageError("--is-splits must be at least 1")
        if args.threads is not None and args.threads < 1:
            raise UsageError("--threads must be at least 1")
        out = _check_out(args.out, args.force) if args.out else None
        report = evaluate(args.generated_dir, args.reference, args.prompts, args.manifest,
                          threads=args.threads, top_k=args.top_k, is_splits=args.is_splits,
                          panns_weights=args.panns, vggish_weights=args.vggish, clap_model=args.clap)
        text = json.dumps(report, indent=2)
        if out is not None:
            if (out.exists() or out.is_symlink()) and not args.force:   # appeared while we worked
                raise UsageError(f"{out} exists (use --force to overwrite)")
            try:   # temporary file + rename: never a partial report
                atomic_write_text(out, text + "\n")
            except OSError as exc:
                raise EvalError(f"cannot write {out}: {exc.strerror or exc}") from None
    except EvalError as exc:
        print(f"impact-rt eval: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(text if args.json else format_table(report, args.clips))
    return 0
