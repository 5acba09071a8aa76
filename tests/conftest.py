import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def reference_vectors():
    p = SHARED / "eval" / "reference_vectors.json"
    if not p.is_file():
        pytest.skip(f"oracle vectors not found at {p} (shared/ is laid beside the repository)")
    return json.loads(p.read_text())


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models: thread pools cost more than they give, and CI has 2 cores.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True, scope="session")
def _private_engine_cache(tmp_path_factory):
    # Exported engines go to a per-run folder, never into the user's ~/.cache.
    import os
    old = os.environ.get("IMPACT_RT_CACHE")
    os.environ["IMPACT_RT_CACHE"] = str(tmp_path_factory.mktemp("impact-rt-cache"))
    yield
    if old is None:
        os.environ.pop("IMPACT_RT_CACHE", None)
    else:
        os.environ["IMPACT_RT_CACHE"] = old
