"""The pure grouping module imports and runs with torch unavailable (the ``core.grouping``
wall), so analysis/ can replay decisions on a machine without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json, sys

    class BlockTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, BlockTorch())
    import numpy as np
    from selective_sharing.core.grouping import GroupingConfig, dense_projection, grouping_event

    rng = np.random.default_rng(0)
    base = rng.standard_normal((2, 6, 10))
    x = np.concatenate([base[0] + 0.05 * rng.standard_normal((3, 6, 10)),
                        base[1] + 0.05 * rng.standard_normal((3, 6, 10))]).astype(np.float32)
    r = grouping_event(x, np.arange(6), None, GroupingConfig())
    sketch = x.reshape(6, -1) @ dense_projection(60, 8, seed=1)
    print(json.dumps({
        "assignment": r.assignment_after.tolist(),
        "sketch_shape": list(sketch.shape),
        "torch_loaded": any(m == "torch" or m.startswith("torch.") for m in sys.modules),
        "analysis_loaded": any(m.startswith("selective_sharing.analysis") for m in sys.modules),
    }))
    """
)


def test_grouping_runs_with_torch_blocked():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["assignment"] == [0, 0, 0, 1, 1, 1]
    assert out["sketch_shape"] == [6, 8]
    assert not out["torch_loaded"] and not out["analysis_loaded"]
