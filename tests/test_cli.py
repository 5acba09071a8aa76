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
