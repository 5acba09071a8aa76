"""The Python examples of the README and docs/api.md run as written (the shipped model, this CPU)."""
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _first_python_block(path: Path) -> str:
    m = re.search(r"```python\n(.*?)```", path.read_text(), re.S)
    assert m, f"{path} has no python block"
    return m.group(1)


def test_the_package_exports_its_public_names():
    import impact_rt
    from impact_rt import BundleError, ConfigError, Generation, Pipeline
    assert Pipeline.__name__ == "Pipeline" and Generation.__name__ == "Generation"
    assert issubclass(ConfigError, ValueError) and issubclass(BundleError, Exception)
    assert set(impact_rt.__all__) <= set(dir(impact_rt))
    with pytest.raises(AttributeError, match="no attribute 'Pipelines'"):
        impact_rt.Pipelines


@pytest.mark.parametrize("doc, wavs", [("README.md", ["thunder.wav"]), ("docs/api.md", ["thunder.wav", "dog.wav"])])
def test_the_python_example_runs(doc, wavs, tmp_path, monkeypatch):
    import soundfile as sf
    monkeypatch.chdir(tmp_path)
    code = _first_python_block(ROOT / doc)
    exec(compile(code, str(ROOT / doc), "exec"), {"__name__": "__doc_example__"})
    for name in wavs:
        info = sf.info(os.path.join(tmp_path, name))
        assert (info.samplerate, info.frames) == (16000, 163840)


def test_the_evaluation_api_names_exist():
    line = _first_python_block(ROOT / "docs/evaluation.md").splitlines()[0]
    names = [n.strip() for n in line.split("import", 1)[1].split(",")]
    import impact_rt.evaluation as E
    assert [n for n in names if not hasattr(E, n)] == []
