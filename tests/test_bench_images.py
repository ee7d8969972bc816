"""reproduce/bench_images.py runs and reports what it claims (tiny settings; issue 11)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import torchvision  # noqa: F401
except (ImportError, RuntimeError):  # absent, or built for another torch
    pytest.skip("the ResNet-18 trunk needs a usable torchvision", allow_module_level=True)

REPRODUCE = Path(__file__).resolve().parents[1] / "reproduce"


def test_bench_images_reports_ratio_and_images_per_second(tmp_path):
    out = tmp_path / "bench_images.json"
    proc = subprocess.run(
        [sys.executable, "bench_images.py", "--image-size", "32", "--batch", "8", "--steps", "2",
         "--warm", "1", "--events", "1", "--read-batches", "2", "--workers", "1",
         "--out", str(out)],
        cwd=REPRODUCE, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads(out.read_text())
    assert m["device"] == "cpu" and m["image_size"] == 32 and m["batch"] == 8
    assert m["ratio"] > 0 and m["mtl_images_per_s"] > 0 and m["reading_images_per_s"] > 0
    assert m["ss_images_per_s"] == pytest.approx(m["mtl_images_per_s"] / m["ratio"])
    assert "ss/mtl step ratio" in proc.stdout and "not real CelebA" in proc.stdout
