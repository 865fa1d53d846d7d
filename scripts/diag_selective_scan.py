"""Where the Mamba-1 scan's time goes on the GPU: per-kernel CUDA times (torch.profiler),
registers and spills of every compiled kernel, and micro-benchmarks of the scan primitives
(forward vs reverse tl.associative_scan, relaxed vs default atomics) on (BLOCK_D, BLOCK_L) tiles.

    python scripts/diag_selective_scan.py [--micro]
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from bytelm.kernels.selective_scan import triton_bwd, triton_fwd
from bytelm.kernels.selective_scan.triton_op import selective_scan


def kernel_stats():
    for name, fn in [("fwd", triton_fwd._fwd_kernel), ("chunk_local", triton_fwd._chunk_local_kernel),
                     ("chunk_carry", triton_fwd._chunk_carry_kernel), ("bwd", triton_bwd._bwd_kernel)]:
        for dev, caches in getattr(fn, "device_caches", {}).items():
            cache = caches[0] if isinstance(caches, tuple) else caches
            for k in cache.values():
                print(f"  {name}: regs {getattr(k, 'n_regs', '?')} spills {getattr(k, 'n_spills', '?')} "
                      f"shared {getattr(k, 'shared', '?')}", flush=True)


def profile(batch=8, L=2048, dim=2048, N=16):
    g = dict(device="cuda")
    dt = torch.bfloat16
    x = dict(u=torch.randn(batch, dim, L, **g).to(dt), delta=(0.5 * torch.randn(batch, dim, L, **g)).to(dt),
             A=-torch.arange(1, N + 1, **g, dtype=torch.float32).repeat(dim, 1),
             B=torch.randn(batch, N, L, **g).to(dt), C=torch.randn(batch, N, L, **g).to(dt),
             D=torch.randn(dim, **g), z=torch.randn(batch, dim, L, **g).to(dt),
             delta_bias=0.3 * torch.randn(dim, **g))
    leaves = {k: v.requires_grad_() for k, v in x.items()}
    params = list(leaves.values())
    dy = torch.randn(batch, dim, L, **g).to(dt)
    for _ in range(3):
        torch.autograd.grad(selective_scan(**leaves, delta_softplus=True), params, dy)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            torch.autograd.grad(selective_scan(**leaves, delta_softplus=True), params, dy)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12), flush=True)


@triton.jit
def _combine(a1, b1, a2, b2):
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _micro(a_ptr, b_ptr, out_ptr, acc_ptr, L, REVERSE: tl.constexpr, ATOMIC: tl.constexpr,
           RELAXED: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, N: tl.constexpr):
    i_d, i_c = tl.program_id(0), tl.program_id(1)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    o_t = i_c * BLOCK_L + tl.arange(0, BLOCK_L)
    p = o_d[:, None].to(tl.int64) * L + o_t[None, :]
    b_a = tl.load(a_ptr + p).to(tl.float32)
    b_b = tl.load(b_ptr + p).to(tl.float32)
    acc = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)
    for n in tl.static_range(N):
        aa = tl.exp2(b_a * (n + 1.0) * -0.1)
        ac, bc = tl.associative_scan((aa, b_b), 1, _combine, reverse=REVERSE)
        acc += ac + bc
        if ATOMIC:
            if RELAXED:
                tl.atomic_add(acc_ptr + n * L + o_t, tl.sum(bc, 0), sem="relaxed")
            else:
                tl.atomic_add(acc_ptr + n * L + o_t, tl.sum(bc, 0))
    tl.store(out_ptr + p, acc)


def micro(dim=16384, L=2048):
    g = dict(device="cuda")
    a = torch.rand(dim, L, **g).to(torch.bfloat16)
    b = torch.randn(dim, L, **g).to(torch.bfloat16)
    out = torch.empty(dim, L, **g)
    acc = torch.zeros(16, L, **g)
    print("micro (16 states x 16384 rows x 2048 steps; exp2 + scan + accumulate per state):")
    for BD, BL, nw in [(4, 256, 4), (1, 1024, 4), (16, 64, 4)]:
        for rev, atom, relaxed in [(False, False, False), (True, False, False), (False, True, False),
                                   (False, True, True)]:
            grid = (dim // BD, L // BL)
            fn = lambda: _micro[grid](a, b, out, acc, L, REVERSE=rev, ATOMIC=atom, RELAXED=relaxed,
                                      BLOCK_D=BD, BLOCK_L=BL, N=16, num_warps=nw)
            ms = triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median")
            k = fn()
            print(f"  BD {BD} BL {BL} w{nw} reverse={rev} atomic={atom} relaxed={relaxed}: {ms:.3f} ms "
                  f"regs {k.n_regs} spills {k.n_spills}", flush=True)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--micro", action="store_true", help="also run the primitive micro-benchmarks")
    args = p.parse_args()
    print(torch.cuda.get_device_name(), torch.__version__, triton.__version__)
    profile()
    profile(1, 32768)
    kernel_stats()
    if args.micro:
        micro()
