import json
import subprocess
import sys

import pytest

from impact_rt.cli import _prompt_slug, main


def run_cli(*args, cwd=None):
    p = subprocess.run([sys.executable, "-m", "impact_rt.cli", *args], capture_output=True, text=True, cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def test_info_json_has_counts_and_backends(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    base, large = info["presets"]["base"], info["presets"]["large"]
    assert abs(base["total"] - 193e6) / 193e6 < 0.05 and abs(large["total"] - 427e6) / 427e6 < 0.05
    assert base["latent_encoder"] + base["diffusion_head"] <= base["total"]
    assert info["backends"]["torch"]["available"] is True
    for name, b in info["backends"].items():
        assert b["available"] or b["reason"]


def test_generate_writes_a_clip_and_refuses_to_overwrite(tmp_path):
    import soundfile as sf
    rc, out, err = run_cli("generate", "thunder", "--seed", "1", "-T", "2", "-K", "3", "--json", cwd=tmp_path)
    assert rc == 0, err
    rec = json.loads(out.strip())
    assert rec["file"] == "thunder.wav" and rec["seed"] == 1 and rec["sample_rate"] == 16000
    data, sr = sf.read(tmp_path / "thunder.wav")
    assert sr == 16000 and data.shape == (163840,)
    before = (tmp_path / "thunder.wav").read_bytes()
    rc, out, err = run_cli("generate", "thunder", "-T", "2", "-K", "3", cwd=tmp_path)
    assert rc == 2 and "exists" in err and "Traceback" not in err
    assert (tmp_path / "thunder.wav").read_bytes() == before


@pytest.mark.parametrize("args,code,needle", [
    (["generate", ""], 2, "empty"),
    (["generate", "x", "-T", "0"], 2, "iterations"),
    (["generate", "x", "-T", "257"], 2, "iterations"),
    (["generate", "x", "-K", "0"], 2, "diffusion steps"),
    (["generate", "x", "--guidance", "nan"], 2, "guidance"),
    (["generate", "x", "--backend", "tensorrt"], 2, "not available"),
    (["generate", "x", "--model", "/nonexistent"], 1, "not found"),
    (["generate", "x", "--out-dir", "/nonexistent"], 2, "does not exist"),
])
def test_bad_input_one_line_no_traceback(tmp_path, args, code, needle):
    rc, out, err = run_cli(*args, cwd=tmp_path)
    assert rc == code
    lines = [l for l in err.splitlines() if "error" in l]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_prompt_slug_is_filesystem_safe():
    assert _prompt_slug("A dog / barks: twice?") == "a-dog-barks-twice"
    assert _prompt_slug("¡¿…!") == "clip"
    assert _prompt_slug("x" * 500) == "x" * 60


def test_prompts_file_csv_many_clips_formats_and_spectrograms(tmp_path):
    import soundfile as sf
    (tmp_path / "caps.csv").write_text('audiocap_id,caption\n1,"a dog barks, twice"\n2,rain on a roof\n')
    rc, out, err = run_cli("generate", "--prompts-file", "caps.csv", "-n", "2", "--seed", "5", "-T", "1", "-K", "2",
                           "--format", "flac", "--spectrogram", "--json", "--out-dir", ".", cwd=tmp_path)
    assert rc == 0, err
    recs = [json.loads(l) for l in out.strip().splitlines()]
    assert [r["file"] for r in recs] == ["a-dog-barks-twice-1.flac", "a-dog-barks-twice-2.flac",
                                         "rain-on-a-roof-1.flac", "rain-on-a-roof-2.flac"]
    assert [r["seed"] for r in recs] == [5, 6, 7, 8]
    for key in ("file", "prompt", "seed", "backend", "iterations", "diffusion_steps", "guidance", "sample_rate",
                "seconds", "latency_s"):
        assert key in recs[0]
    for r in recs:
        info = sf.info(tmp_path / r["file"])
        assert info.format == "FLAC" and info.samplerate == 16000 and info.frames == 163840
        png = (tmp_path / r["file"]).with_suffix(".png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
    # ogg through -o, text prompts file
    (tmp_path / "p.txt").write_text("thunder\n\n")
    rc, out, err = run_cli("generate", "--prompts-file", "p.txt", "-o", "t.ogg", "-T", "1", "-K", "2", "-q", cwd=tmp_path)
    assert rc == 0, err
    assert sf.info(tmp_path / "t.ogg").format == "OGG"


def test_format_flag_is_honoured_with_o_and_a_byte_order_mark_is_not_part_of_a_prompt(tmp_path):
    """--format names the file's format: with an -o that has no extension it is used (before, the file
    was written as WAV whatever --format said); a UTF-8 byte-order mark (Excel) is not read as text."""
    import soundfile as sf
    (tmp_path / "bom.csv").write_bytes("\ufeffcaption\r\nthunder\r\n".encode("utf-8"))
    rc, out, err = run_cli("generate", "--prompts-file", "bom.csv", "-o", "clip", "--format", "flac", "-T", "1",
                           "-K", "2", "--json", cwd=tmp_path)
    assert rc == 0, err
    assert json.loads(out)["prompt"] == "thunder"
    assert sf.info(tmp_path / "clip").format == "FLAC"
    (tmp_path / "bom.txt").write_bytes("\ufeffrain\n".encode("utf-8"))
    rc, out, err = run_cli("generate", "--prompts-file", "bom.txt", "-o", "r.flac", "--format", "flac", "-T", "1",
                           "-K", "2", "--json", cwd=tmp_path)
    assert rc == 0, err
    assert json.loads(out)["prompt"] == "rain" and sf.info(tmp_path / "r.flac").format == "FLAC"
    # the record's prompt is the prompt as used (whitespace-normalised), as Generation.prompts is
    rc, out, err = run_cli("generate", "  thunder \t rumbling ", "-o", "t.wav", "-T", "1", "-K", "2", "--json",
                           cwd=tmp_path)
    assert rc == 0, err
    assert json.loads(out)["prompt"] == "thunder rumbling"


@pytest.mark.parametrize("cmd", ["generate", "info", "bench", "eval", "export"])
def test_every_command_has_help(cmd):
    rc, out, err = run_cli(cmd, "--help")
    assert rc == 0 and "usage:" in out
    if cmd in ("generate", "bench", "export"):
        assert "default" in out
    assert "(default: None)" not in out and "(default: False)" not in out


def test_help_and_usage_errors_do_not_import_torch():
    """--help and a mistyped option answer before torch is imported (~0.9 s of every run)."""
    code = ("import sys; from impact_rt.cli import _build_parser; _build_parser().format_help(); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_the_progress_bar_moves_while_a_batch_decodes():
    """A batch of 4 clips after 8 done, T = 3: the bar moves by fractions of a clip each decoding
    iteration and stops short of 12 until the audio is written (the CLI then sets it)."""
    from impact_rt.cli import batch_progress

    class Bar:
        n, refreshed = 0, 0

        def refresh(self):
            self.refreshed += 1
    bar = Bar()
    step = batch_progress(bar, 8, 4)
    seen = []
    for t in range(3):
        step(t, 3)
        seen.append(bar.n)
    assert seen == [9.0, 10.0, 11.0] and bar.refreshed == 3
