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
