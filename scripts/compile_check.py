"""Compile, for a GPU target and without a GPU, every Triton kernel that a code path launches.

    python scripts/compile_check.py [--arch 90] [--paths scan-seq,scan-grouped,...]

The CPU interpreter (TRITON_INTERPRET=1) runs kernels as NumPy and checks no types: a kernel can
pass every interpreted test and still fail to compile on the GPU (2026-12-02: a loop-carried
variable changed shape inside a loop, which only the compiler rejects). Here each kernel object
of the Triton modules is replaced by a recorder; the public op then runs its host code on small
CPU tensors (forward and backward), recording every launch (arguments, constexprs, num_warps)
instead of running it; each distinct launch is then compiled to a cubin for sm_<arch> with the
installed Triton and ptxas. It checks compilation only: numerics still need the GPU tests.
Prints one line per kernel variant and exits non-zero if any fails.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from contextlib import contextmanager

import torch

os.environ.pop("TRITON_INTERPRET", None)  # the GPU configs, not the interpreter's

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

MODULES = ["bytelm.kernels.selective_scan.triton_fwd", "bytelm.kernels.selective_scan.triton_bwd",
           "bytelm.kernels.selective_scan.triton_bwd_seq",
           "bytelm.kernels.selective_scan.triton_bwd_grouped",
           "bytelm.kernels.ssd.triton_fwd", "bytelm.kernels.ssd.triton_bwd",
           "bytelm.kernels.causal_conv1d.triton_fwd", "bytelm.kernels.causal_conv1d.triton_bwd",
           "bytelm.kernels.rms_norm.triton_fwd", "bytelm.kernels.rms_norm.triton_bwd"]
PTR = {torch.float32: "*fp32", torch.bfloat16: "*bf16", torch.float16: "*fp16",
       torch.int32: "*i32", torch.int64: "*i64", torch.float64: "*fp64"}


@contextmanager
def recording(calls: list):
    """Every JITFunction of MODULES, under every name a module binds it to, records its launches."""
    mods = [importlib.import_module(m) for m in MODULES]
    saved = []

    class Recorder:
        def __init__(self, fn):
            self.fn = fn

        def __getitem__(self, grid):
            return lambda *args, **kwargs: calls.append((self.fn, args, kwargs))

    for mod in mods:
        for name, obj in list(vars(mod).items()):
            if isinstance(obj, triton.runtime.jit.JITFunction):
                saved.append((mod, name, obj))
                setattr(mod, name, Recorder(obj))
    try:
        yield
    finally:
        for mod, name, obj in saved:
            setattr(mod, name, obj)


def signature_of(fn, args, kwargs):
    """(signature, constexprs, options) of one recorded launch."""
    options = {k: kwargs[k] for k in ("num_warps", "num_stages") if k in kwargs}
    values = dict(zip(fn.arg_names, args))
    values.update({k: v for k, v in kwargs.items() if k not in options})
    sig, const = {}, {}
    for p in fn.params:
        v = values.get(p.name)
        if p.is_constexpr:
            sig[p.name], const[p.name] = "constexpr", v
        elif isinstance(v, torch.Tensor):
            sig[p.name] = PTR[v.dtype]
        elif isinstance(v, bool):
            sig[p.name] = "i1"
        elif isinstance(v, int):
            sig[p.name] = "i32" if -2**31 <= v < 2**31 else "i64"
        elif isinstance(v, float):
            sig[p.name] = "fp32"
        elif v is None:
            sig[p.name], const[p.name] = "constexpr", None
        else:
            raise TypeError(f"{fn.__name__}: argument {p.name} of type {type(v).__name__}")
    return sig, const, options


def scan_path(bwd: str, fwd: str = "seq", batch=2, dim=64, L=1000, N=16, G=1, dtype=torch.bfloat16):
    """Forward + backward of the public Mamba-1 scan with BYTELM_SCAN_FWD/BWD set."""
    from bytelm.kernels.selective_scan.triton_op import selective_scan

    os.environ["BYTELM_SCAN_FWD"], os.environ["BYTELM_SCAN_BWD"] = fwd, bwd
    g = torch.Generator().manual_seed(0)
    bc = (batch, G, N, L) if G > 1 else (batch, N, L)
    leaves = dict(u=torch.randn(batch, dim, L, generator=g).to(dtype),
                  delta=torch.randn(batch, dim, L, generator=g).to(dtype),
                  A=-torch.rand(dim, N, generator=g), B=torch.randn(*bc, generator=g).to(dtype),
                  C=torch.randn(*bc, generator=g).to(dtype), D=torch.randn(dim, generator=g),
                  z=torch.randn(batch, dim, L, generator=g).to(dtype),
                  delta_bias=torch.randn(dim, generator=g),
                  initial_state=torch.randn(batch, dim, N, generator=g))
    leaves = {k: v.requires_grad_() for k, v in leaves.items()}
    seq_idx = (torch.arange(L) >= L // 3).int().expand(batch, L).contiguous()
    y, final = selective_scan(**leaves, delta_softplus=True, seq_idx=seq_idx, return_final_state=True)
    (y.float().sum() + final.sum()).backward()


def ssd_path(headdim=64, dstate=128, chunk=256, heads=2, batch=2, L=600, dtype=torch.bfloat16):
    """Forward + backward of the public SSD with every option (z, D, dt_bias, initial and final
    state, seq_idx), then its no-grad forward."""
    from bytelm.kernels.ssd.triton_op import ssd

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, L, heads, headdim, generator=g).to(dtype).requires_grad_()
    dt = torch.randn(batch, L, heads, generator=g).to(dtype).requires_grad_()
    A = -torch.rand(heads, generator=g)
    B, C = (torch.randn(batch, L, 1, dstate, generator=g).to(dtype).requires_grad_() for _ in range(2))
    D, bias = torch.randn(heads, generator=g).requires_grad_(), torch.randn(heads, generator=g).requires_grad_()
    z = torch.randn(batch, L, heads, headdim, generator=g).to(dtype).requires_grad_()
    init = torch.randn(batch, heads, headdim, dstate, generator=g).requires_grad_()
    seq_idx = (torch.arange(L) >= L // 3).int().expand(batch, L).contiguous()
    y, final = ssd(x, dt, A, B, C, chunk, D, z, bias, True, init, seq_idx, True)
    (y.float().sum() + final.sum()).backward()
    with torch.no_grad():
        ssd(x, dt, A, B, C, chunk, D, z, bias, True, init, seq_idx)


def conv_path(version: str, dim=256, L=600, batch=2, width=4, dtype=torch.bfloat16):
    """causal_conv1d forward + backward (channel-last and contiguous, seq_idx, initial state)."""
    from bytelm.kernels.causal_conv1d.triton_op import causal_conv1d

    os.environ["BYTELM_CONV_BWD"] = version
    g = torch.Generator().manual_seed(0)
    w = torch.randn(dim, width, generator=g).requires_grad_()
    b = torch.randn(dim, generator=g).requires_grad_()
    seq_idx = (torch.arange(L) >= L // 3).int().expand(batch, L).contiguous()
    for x in (torch.randn(batch, L, dim, generator=g).to(dtype).transpose(1, 2),
              torch.randn(batch, dim, L, generator=g).to(dtype)):
        x.requires_grad_()
        h0 = torch.randn(batch, dim, width - 1, generator=g).to(dtype).requires_grad_()
        causal_conv1d(x, w, b, "silu", seq_idx=seq_idx).float().sum().backward()
        causal_conv1d(x, w, b, "silu", initial_state=h0).float().sum().backward()


def norm_path(dim=2048, rows=64, dtype=torch.bfloat16):
    """rms_norm forward + backward: gated (Mamba-2's norm, one and several groups), +residual."""
    from bytelm.kernels.rms_norm.triton_op import rms_norm

    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, dim, generator=g).to(dtype).requires_grad_()
    w = torch.randn(dim, generator=g).requires_grad_()
    z = torch.randn(rows, dim, generator=g).to(dtype).requires_grad_()
    r = torch.randn(rows, dim, generator=g).requires_grad_()
    rms_norm(x, w, 1e-5, None, z).float().sum().backward()
    rms_norm(x, w, 1e-5, None, z, group_size=dim // 4).float().sum().backward()
    y, res = rms_norm(x, w, 1e-5, r)
    (y.float().sum() + res.sum()).backward()


PATHS = {
    # version 3's backward at the ANCHORS-like widths (one group of chunks: 8 rows x 2048)
    "scan-seq": lambda: scan_path("seq"),
    # the version 3 forward's wide configuration (32 channels per program: batch x dim >= 4096)
    "scan-seq-wide": lambda: scan_path("seq", dim=2048, L=256),
    "scan-chunked": lambda: scan_path("chunked", fwd="chunked"),
    # version 3.1: one row of 4096 steps gives several groups (group_grads) at one SM's programs
    "scan-grouped": lambda: scan_path("grouped", L=4096, batch=1),
    "scan-grouped-fwd2": lambda: scan_path("grouped", fwd="chunked", L=4096, batch=1, G=2),
    "ssd": ssd_path,
    # bytelm synth's Mamba-2 (d_model 64): the padded small-tile launches
    "ssd-small": lambda: [ssd_path(32, n, 64, heads=4) for n in (16, 256)],
    "conv": lambda: [conv_path(v) for v in ("v1", "v2")],
    "norm": norm_path,
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: Hopper)")
    p.add_argument("--paths", default=",".join(PATHS), help="comma-separated: " + ", ".join(PATHS))
    args = p.parse_args()
    target = GPUTarget("cuda", args.arch, 32)
    calls: list = []
    for name in args.paths.split(","):
        if name not in PATHS:
            sys.exit(f"unknown path {name!r}; choose from {', '.join(PATHS)}")
        with recording(calls):
            PATHS[name]()
    seen, failed = set(), 0
    for fn, a, k in calls:
        sig, const, options = signature_of(fn, a, k)
        key = (fn.__name__, tuple(sorted(sig.items())), tuple(sorted(const.items(), key=str)),
               tuple(sorted(options.items())))
        if key in seen:
            continue
        seen.add(key)
        flags = " ".join(f"{n}={v}" for n, v in const.items() if v not in (None, False))[:110]
        try:
            triton.compile(ASTSource(fn, sig, const), target=target, options=options)
            print(f"ok    {fn.__name__} {flags}", flush=True)
        except Exception as err:  # noqa: BLE001 - every failure is reported, the rest still compiled
            failed += 1
            msg = str(err).strip().splitlines()
            print(f"FAIL  {fn.__name__} {flags}\n      {msg[-1][:300] if msg else type(err).__name__}",
                  flush=True)
    print(f"{len(seen)} kernel variants compiled for sm_{args.arch}: {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
