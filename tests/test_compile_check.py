"""scripts/compile_check.py: the signature of a recorded launch, and a compile for sm_90 on this
CPU machine that rejects what the interpreter lets through (a loop-carried variable changing
shape, the error the grouped backward met on the H200)."""

import subprocess
import sys
import textwrap
from pathlib import Path

import importlib.util

import pytest

# Not importorskip: this process's triton must stay in the interpreter mode tests/conftest.py set;
# the compile runs in a subprocess without TRITON_INTERPRET.
if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)
ROOT = Path(__file__).resolve().parents[1]

KERNELS = '''
import triton
import triton.language as tl


@triton.jit
def good(x_ptr, n, B: tl.constexpr):
    o = tl.arange(0, B)
    acc = tl.zeros([B], dtype=tl.float32)
    for i in range(n):
        acc += tl.load(x_ptr + i * B + o)
    tl.store(x_ptr + o, acc)


@triton.jit
def carried_shape_changes(x_ptr, n, B: tl.constexpr):
    o = tl.arange(0, B)
    t = tl.zeros([B, 1], dtype=tl.float32)
    for i in range(n):
        t = tl.zeros([B, B], dtype=tl.float32) + tl.load(x_ptr + i * B + o)[:, None]
    tl.store(x_ptr + o, tl.sum(t, 1))
'''

CHECK = '''
import sys
sys.path[:0] = [{scripts!r}, {tmp!r}]
import compile_check as cc  # drops TRITON_INTERPRET before triton is imported
import torch, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import kernels_under_test as k

calls = []
class Recorder:  # the same recording as cc.recording, on this module's kernels
    def __init__(self, fn): self.fn = fn
    def __getitem__(self, grid): return lambda *a, **kw: calls.append((self.fn, a, kw))
target = GPUTarget("cuda", 90, 32)
# as the launcher specialises: n == 1 becomes a constexpr, n == 32 an int divisible by 16,
# n == 3 a plain int; the 16-byte-aligned pointer carries tt.divisibility
for n, n_sig, n_attr in ((3, "i32", []), (32, "i32", [["tt.divisibility", 16]]), (1, "constexpr", None)):
    Recorder(k.good)[(1,)](torch.empty(64), n, B=16, num_warps=2)
    fn, args, kwargs = calls[-1]
    sig, const, attrs, options = cc.specialize(fn, args, kwargs, target)
    assert sig == {{"x_ptr": "*fp32", "n": n_sig, "B": "constexpr"}}, sig
    assert const[(2,)] == 16 and options["num_warps"] == 2, (const, options)
    assert attrs[(0,)] == [["tt.divisibility", 16]] and attrs.get((1,)) == n_attr, attrs
    if n == 1:
        assert const[(1,)] == 1, const
triton.compile(ASTSource(k.good, sig, const, attrs), target=target, options=options)
print("good compiled")
Recorder(k.good)[(1,)](torch.empty(64), 3, B=16, num_warps=2)
sig, const, attrs, options = cc.specialize(*calls[-1], target)
try:
    triton.compile(ASTSource(k.carried_shape_changes, sig, const, attrs), target=target, options=options)
except Exception as err:
    print("rejected:", str(err).strip().splitlines()[-1])
else:
    print("NOT rejected")
'''


def test_compile_check_records_launches_and_rejects_a_shape_changing_carry(tmp_path):
    (tmp_path / "kernels_under_test.py").write_text(textwrap.dedent(KERNELS))
    code = CHECK.format(scripts=str(ROOT / "scripts"), tmp=str(tmp_path))
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "good compiled" in out.stdout
    assert "rejected:" in out.stdout and "Loop-carried variable t" in out.stdout, out.stdout
