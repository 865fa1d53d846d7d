"""scripts/bench_kernels.py's plumbing on the CPU (the timings themselves need a GPU)."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
sys.path.insert(0, str(SCRIPTS))

import bench_kernels  # noqa: E402
import bench_kernels_mamba2  # noqa: E402
import bench_models  # noqa: E402


def test_mamba2_family_prints_its_own_table(monkeypatch):
    row = bench_kernels_mamba2._row("ssd", "8x2048 H32 P64 N128", "fwd", 0.5, nbytes=3.0e8, anchor_ms=1.0)
    monkeypatch.setattr(bench_kernels_mamba2, "rows", lambda src: [row])
    monkeypatch.setattr(bench_kernels_mamba2, "COPY_BW", 4.0e12)
    table = bench_kernels.mamba2_table(SimpleNamespace(anchor_src="nowhere"))
    lines = table.strip().splitlines()
    assert "4.00 TB/s" in lines[0]
    assert lines[1:3] == bench_kernels_mamba2.HEADER
    # floor 3e8 B / 3e12 B/s (the module's COPY_BW when _row ran) = 0.1 ms: 20% of 0.5 ms; 2x the anchor
    assert lines[3] == "| ssd | 8x2048 H32 P64 N128 | fwd | 0.500 | 0.100 | 20 | 1.000 | 2.00 |"


def test_without_a_gpu_it_says_so_in_one_line():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the script would run")
    for script, args in (("bench_kernels.py", ["--ops", "mamba2"]), ("bench_kernels_mamba2.py", ["--wide-state"])):
        r = subprocess.run([sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True)
        assert r.returncode != 0
        assert r.stderr.strip().splitlines() == [
            f"{script}: no CUDA GPU visible; it times GPU kernels, run it on the GPU machine"]


def test_bench_models_times_blocks_and_rejects_empty_ones():
    """bench_models.block_times: one per-call time per block, the sync around every block;
    --steps / --repeats below 1 are a one-line error, not a division by zero."""
    calls, syncs = [], []
    times = bench_models.block_times(lambda: calls.append(1), steps=4, repeats=3, sync=lambda: syncs.append(1))
    assert len(times) == 3 and all(t >= 0 for t in times)
    assert len(calls) == 12 and len(syncs) == 6
    res = subprocess.run([sys.executable, str(SCRIPTS / "bench_models.py"), "--repeats", "0"],
                         capture_output=True, text=True)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "at least 1" in res.stderr.strip().splitlines()[-1]
