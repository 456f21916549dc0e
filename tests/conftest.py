import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def _shared_data() -> Path | None:
    env = os.environ.get("GASP_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[1].parent / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Real public data (../shared/data or $GASP_SHARED_DATA); tests using it skip when it is absent."""
    root = _shared_data()
    if root is None:
        pytest.skip("real test data not found: set GASP_SHARED_DATA or place it at ../shared/data")
    return root
