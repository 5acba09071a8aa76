"""Tiny models for tests: built in milliseconds."""
import torch

from impact_rt.config import preset
from impact_rt.model import IMPACT, randomize_
from impact_rt.text_conditioner import HashConditioner


def tiny_model(seed: int = 0, scale: float = 1.0) -> IMPACT:
    torch.manual_seed(seed)
    return randomize_(IMPACT(preset("test")), seed=seed, scale=scale).eval()


def save_bundle(pipe, directory, vocoder: dict | None = None, defaults=None, rerank: dict | None = None):
    """Write ``pipe`` (e.g. ``Pipeline.random("test")``) as a model bundle folder: config.json (its
    conditioner, ``vocoder`` or its own vocoder spec, ``defaults`` or its own, ``rerank``), generator, VAE."""
    from impact_rt import bundle as B
    B.write_config(B.BundleConfig(pipe.model.cfg, pipe.conditioner.spec(), vocoder or pipe.vocoder.spec(),
                                  defaults or pipe.defaults, rerank=rerank), directory)
    B.save_generator(pipe.model, directory)
    pipe.vae.save_pretrained(str(directory), "vae")
    return directory


def tiny_condition(model: IMPACT, prompts):
    cond = HashConditioner(model.cfg.text_len, model.cfg.text_dim)
    states, mask = cond.encode(prompts)
    return model.project_condition(states, mask)


def exit_status(main, argv) -> int:
    """A command's exit status, whether ``main`` returns it or raises SystemExit (argparse, Ctrl-C).

    train_vae and train_vocoder return their result (a dict) and their ``__main__`` ignores it:
    a return that is not an int is success there, as None is.
    """
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
        return 0 if code is None else code
    return code if isinstance(code, int) else 0


def one_line_error(capsys, who: str, *words: str) -> str:
    """Assert stderr is one ``who: error: …`` line, no traceback, holding every one of ``words``."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith(f"{who}: error: "), err
    for w in words:
        assert w in err, err
    return err
