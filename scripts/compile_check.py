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

    python scripts/compile_check.py --paths conv --sass [--dump DIR]

adds, per variant, what the cubin says without running it (Triton's bundled cuobjdump): registers
per thread, stack bytes per thread (where ptxas spills registers: LDL/STL traffic), static
shared memory, and the SASS instruction count by class
(global loads / stores, shared-memory traffic, barriers, shuffles, SFU ops, int64-looking address
math). Static counts: a loop body counts once. --dump writes each variant's SASS and TTGIR (the register layouts Triton chose, and the
convert_layout ops between them) to DIR.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from contextlib import contextmanager

import torch

os.environ.pop("TRITON_INTERPRET", None)  # the GPU configs, not the interpreter's

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

MODULES = ["bytelm.kernels.selective_scan.triton_fwd", "bytelm.kernels.selective_scan.triton_fwd_lanes",
           "bytelm.kernels.selective_scan.triton_bwd",
           "bytelm.kernels.selective_scan.triton_bwd_seq",
           "bytelm.kernels.selective_scan.triton_bwd_grouped",
           "bytelm.kernels.ssd.triton_fwd", "bytelm.kernels.ssd.triton_bwd",
           "bytelm.kernels.causal_conv1d.triton_fwd", "bytelm.kernels.causal_conv1d.triton_bwd",
           "bytelm.kernels.causal_conv1d.triton_roll",
           "bytelm.kernels.rms_norm.triton_fwd", "bytelm.kernels.rms_norm.triton_bwd"]

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


def specialize(fn, args, kwargs, target):
    """(signature, constexprs, attrs, options) of one recorded launch, as Triton's launcher would
    compile it on a GPU of `target`: the JIT's own binder turns ints equal to 1 into constexprs
    and marks pointers (16-byte aligned) and ints divisible by 16 (`tt.divisibility`), which is
    what lets the compiler vectorise loads; compiling without these hints gives other code
    (scalar loads, spills) than the GPU runs."""
    from triton.backends.nvidia.compiler import CUDABackend
    from triton.runtime.jit import create_function_from_signature

    backend = CUDABackend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, spec, opts = binder(*args, **kwargs)
    options, sig, const, attrs = fn._pack_args(backend, dict(kwargs), bound, spec, opts)
    return sig, const, attrs, options.__dict__


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


def lanes_path():
    from bytelm.kernels.selective_scan import triton_fwd_lanes as fl

    try:
        for R in (1, 2, 4, 8):
            fl.LANES_CFG["R"] = R
            scan_path("grouped", fwd="lanes", L=1024)
        fl.LANES_CFG["R"] = None
        scan_path("grouped", fwd="lanes", batch=1, dim=32, L=1001)
    finally:
        fl.LANES_CFG["R"] = None


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


def _with_bwd_cfg(path, **cfg):
    """Run a path with triton_bwd.BWD_CFG entries overridden."""
    from bytelm.kernels.ssd import triton_bwd

    saved = dict(triton_bwd.BWD_CFG)
    triton_bwd.BWD_CFG.update(cfg)
    try:
        path()
    finally:
        triton_bwd.BWD_CFG.clear()
        triton_bwd.BWD_CFG.update(saved)


def conv_path(version: str, dim=256, L=600, batch=2, width=4, dtype=torch.bfloat16):
    """causal_conv1d forward + backward (channel-last and contiguous x; plain as in the
    benchmark, with a channel-last cotangent; seq_idx and initial state with an L-contiguous
    one). version: BYTELM_CONV_BWD (roll: the rolling forward too)."""
    from bytelm.kernels.causal_conv1d.triton_op import causal_conv1d

    os.environ["BYTELM_CONV_BWD"] = version
    os.environ["BYTELM_CONV_FWD"] = "roll" if version == "roll" else "tile"
    g = torch.Generator().manual_seed(0)
    w = torch.randn(dim, width, generator=g).requires_grad_()
    b = torch.randn(dim, generator=g).requires_grad_()
    seq_idx = (torch.arange(L) >= L // 3).int().expand(batch, L).contiguous()
    for x in (torch.randn(batch, L, dim, generator=g).to(dtype).transpose(1, 2),
              torch.randn(batch, dim, L, generator=g).to(dtype)):
        x.requires_grad_()
        h0 = torch.randn(batch, dim, width - 1, generator=g).to(dtype).requires_grad_()
        y = causal_conv1d(x, w, b, "silu")
        y.backward(torch.randn_like(y))
        causal_conv1d(x, w, b, "silu", seq_idx=seq_idx).float().sum().backward()
        causal_conv1d(x, w, b, "silu", initial_state=h0).float().sum().backward()
    os.environ.pop("BYTELM_CONV_FWD")


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
    # version 4's forward (lanes) at every R it may pick, a chunked (LOCAL) launch, a ragged L
    "scan-lanes": lambda: lanes_path(),
    # version 3.1: one row of 4096 steps gives several groups (group_grads) at one SM's programs
    "scan-grouped": lambda: scan_path("grouped", L=4096, batch=1),
    "scan-grouped-fwd2": lambda: scan_path("grouped", fwd="chunked", L=4096, batch=1, G=2),
    "ssd": ssd_path,
    "ssd-grouped": lambda: _with_bwd_cfg(ssd_path, grouped=True),  # BWD_CFG["grouped"]'s kernels
    # bytelm synth's Mamba-2 (d_model 64): the padded small-tile launches
    "ssd-small": lambda: [ssd_path(32, n, 64, heads=4) for n in (16, 256)],
    "conv": lambda: [conv_path(v) for v in ("v1", "roll")],
    "conv-roll": lambda: conv_path("roll"),
    "norm": norm_path,
}


# SASS opcode classes for --sass (first match wins; the opcode is the mnemonic before the first '.')
SASS_CLASSES = [("LDG", ("LDG",)), ("STG", ("STG",)), ("RED/ATOM", ("RED", "ATOM", "ATOMG")),
                ("LDS", ("LDS", "LDSM")), ("STS", ("STS",)), ("BAR", ("BAR",)),
                ("SHFL", ("SHFL",)), ("MUFU", ("MUFU",)), ("LDL/STL", ("LDL", "STL")),
                ("MMA", ("HMMA", "HGMMA", "IMMA")), ("FP32", ("FFMA", "FADD", "FMUL", "FMNMX", "FSEL",
                                                          "FSETP")),
                ("INT", ("IMAD", "IADD3", "LEA", "LOP3", "SHF", "ISETP", "SEL", "IMNMX", "PRMT",
                         "IABS", "MOV"))]
_TOOLS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")


def sass_report(kernel, name: str, dump: str | None) -> str:
    """One line: registers, spills, shared memory and SASS opcode counts of a compiled kernel."""
    cuobjdump = os.path.join(_TOOLS, "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        res = subprocess.run([cuobjdump, "-res-usage", f.name], capture_output=True, text=True).stdout
        sass = subprocess.run([cuobjdump, "-sass", f.name], capture_output=True, text=True).stdout
    usage = dict(re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", res))  # STACK: spill space / thread
    ops = Counter()
    for line in sass.splitlines():
        m = re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9]*)", line)
        if m:
            ops[m.group(1)] += 1
    by_class = Counter()
    for op, n in ops.items():
        cls = next((c for c, names in SASS_CLASSES if op in names), "other")
        by_class[cls] += n
    if dump:
        os.makedirs(dump, exist_ok=True)
        with open(os.path.join(dump, f"{name}.sass"), "w") as out:
            out.write(sass)
        with open(os.path.join(dump, f"{name}.ttgir"), "w") as out:  # the layouts Triton chose
            out.write(kernel.asm["ttgir"])
    classes = " ".join(f"{c}={by_class[c]}" for c, _ in SASS_CLASSES + [("other", ())] if by_class[c])
    return (f"      regs={usage.get('REG', '?')} stack={usage.get('STACK', '?')}B "
            f"smem={kernel.metadata.shared}B  sass={sum(ops.values())}: {classes}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: Hopper)")
    p.add_argument("--paths", default=",".join(PATHS), help="comma-separated: " + ", ".join(PATHS))
    p.add_argument("--sass", action="store_true",
                   help="per variant: registers, spills, shared memory, SASS opcode counts")
    p.add_argument("--dump", metavar="DIR", help="with --sass: write each variant's SASS to DIR")
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
        sig, const, attrs, options = specialize(fn, a, k, target)
        key = (fn.__name__, tuple(sorted(sig.items())), repr(sorted(const.items(), key=str)),
               repr(sorted(attrs.items())), repr(sorted(options.items(), key=str)))
        if key in seen:
            continue
        seen.add(key)
        names = [p.name for p in fn.params]
        flags = " ".join(f"{names[i[0]]}={v}" for i, v in const.items()
                         if v not in (None, False) and not names[i[0]].startswith("s_"))[:110]
        try:
            kernel = triton.compile(ASTSource(fn, sig, const, attrs), target=target, options=options)
            print(f"ok    {fn.__name__} {flags}", flush=True)
            if args.sass:
                print(sass_report(kernel, f"{len(seen):02d}_{fn.__name__}", args.dump), flush=True)
        except Exception as err:  # noqa: BLE001 - every failure is reported, the rest still compiled
            failed += 1
            msg = str(err).strip().splitlines()
            print(f"FAIL  {fn.__name__} {flags}\n      {msg[-1][:300] if msg else type(err).__name__}",
                  flush=True)
    print(f"{len(seen)} kernel variants compiled for sm_{args.arch}: {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
