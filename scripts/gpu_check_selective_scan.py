"""GPU correctness of the Triton Mamba-1 scan at real shapes (d_inner 2048, d_state 16).

    python scripts/gpu_check_selective_scan.py

Compares forward, final state and every gradient with the PyTorch reference evaluated in float64
on the same inputs (‖out − ref‖ / ‖ref‖), output buffers pre-filled with NaN, for fp32 and bf16,
groups 1 and 2, several lengths and chunkings, seq_idx packing, and the decode step. Triton 3.6 is
known to miscompile some kernels on Hopper, so every kernel is checked here, not only in the
interpreter. Prints one line per case and exits non-zero if any error is over its tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from bytelm.kernels.selective_scan import triton_bwd, triton_fwd
from bytelm.kernels.selective_scan.reference import selective_scan_ref, selective_state_update_ref
from bytelm.kernels.selective_scan.triton_op import selective_scan, selective_state_update

TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


def nan_empty(*shape, device, dtype):
    t = torch.empty(*shape, device=device, dtype=dtype)
    return t.fill_(float("nan")) if t.is_floating_point() else t


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def case(batch, dim, N, L, G, dtype, chunk=None, seq=False, h0=True, z=True):
    g = dict(device="cuda")
    bc = (batch, G, N, L) if G > 1 else (batch, N, L)
    x = dict(u=torch.randn(batch, dim, L, **g).to(dtype),
             delta=(0.5 * torch.randn(batch, dim, L, **g)).to(dtype),
             A=-(0.2 + torch.rand(dim, N, **g) * 4), B=torch.randn(*bc, **g).to(dtype),
             C=torch.randn(*bc, **g).to(dtype), D=torch.randn(dim, **g),
             z=torch.randn(batch, dim, L, **g).to(dtype) if z else None,
             delta_bias=0.3 * torch.randn(dim, **g),
             initial_state=torch.randn(batch, dim, N, **g) if h0 else None)
    x = {k: v for k, v in x.items() if v is not None}
    seq_idx = torch.randint(0, 4, (batch, L), **g).sort(-1).values.int() if seq else None
    ours = {k: v.clone().requires_grad_() for k, v in x.items()}
    ref = {k: v.double().requires_grad_() for k, v in x.items()}
    y, f = selective_scan(**ours, delta_softplus=True, seq_idx=seq_idx, return_final_state=True,
                          chunk_size=chunk)
    yr, fr = selective_scan_ref(**ref, delta_softplus=True, seq_idx=seq_idx, return_final_state=True)
    gy, gf = torch.randn_like(yr), torch.randn_like(fr)
    ((y * gy.to(y.dtype)).float().sum() + (f * gf.float()).sum()).backward()
    ((yr * gy.to(y.dtype).double()).sum() + (fr * gf).sum()).backward()
    errs = {"y": rel(y, yr), "final": rel(f, fr)}
    errs.update({"d" + k: rel(ours[k].grad, ref[k].grad) for k in x})
    return errs


def decode_check(batch=4, dim=2048, N=16, L=8, G=1):
    g = dict(device="cuda")
    u, dt, zz = (torch.randn(batch, dim, L, **g) for _ in range(3))
    A = -(0.2 + torch.rand(dim, N, **g))
    B, C = torch.randn(batch, G, N, L, **g), torch.randn(batch, G, N, L, **g)
    D, bias = torch.randn(dim, **g), 0.3 * torch.randn(dim, **g)
    h0 = torch.randn(batch, dim, N, **g)
    y, f = selective_scan(u, dt, A, B, C, D=D, z=zz, delta_bias=bias, delta_softplus=True,
                          initial_state=h0, return_final_state=True)
    s, s_ref = h0.clone(), h0.clone()
    worst = 0.0
    for t in range(L):
        kw = dict(A=A, B=B[..., t], C=C[..., t], D=D, z=zz[..., t], dt_bias=bias, dt_softplus=True)
        yt = selective_state_update(s, u[..., t], dt[..., t], **kw)
        yr = selective_state_update_ref(s_ref, u[..., t], dt[..., t], **kw)
        worst = max(worst, rel(yt, y[..., t]), rel(yt, yr))
    return {"y_steps": worst, "state": max(rel(s, f), rel(s, s_ref))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fwd-cfg", type=json.loads, default={}, help="JSON overrides of FWD_CFG")
    p.add_argument("--bwd-cfg", type=json.loads, default={}, help="JSON overrides of BWD_CFG")
    args = p.parse_args()
    triton_fwd.FWD_CFG.update(args.fwd_cfg)
    triton_bwd.BWD_CFG.update(args.bwd_cfg)
    print("FWD_CFG", triton_fwd.FWD_CFG, "BWD_CFG", triton_bwd.BWD_CFG)
    triton_fwd.new_empty = nan_empty  # poison every kernel-written buffer
    torch.manual_seed(0)
    print(torch.cuda.get_device_name(), torch.__version__)
    cases = [
        dict(batch=2, dim=2048, N=16, L=1000, G=1, dtype=torch.float32),
        dict(batch=2, dim=2048, N=16, L=4096, G=1, dtype=torch.float32),
        dict(batch=2, dim=2048, N=16, L=4096, G=2, dtype=torch.float32, chunk=256, seq=True),
        dict(batch=2, dim=2048, N=16, L=1000, G=2, dtype=torch.float32, chunk=96, h0=False, z=False),
        dict(batch=2, dim=2048, N=16, L=17, G=1, dtype=torch.float32),
        dict(batch=2, dim=2048, N=16, L=1, G=1, dtype=torch.float32),
        dict(batch=2, dim=2048, N=16, L=4096, G=1, dtype=torch.bfloat16),
        dict(batch=2, dim=2048, N=16, L=4096, G=2, dtype=torch.bfloat16, seq=True),
        dict(batch=3, dim=2048, N=16, L=63, G=2, dtype=torch.bfloat16),
        dict(batch=1, dim=2048, N=16, L=8192, G=1, dtype=torch.bfloat16, h0=False),
    ]
    failed = False
    for c in cases:
        errs = case(**c)
        tol = TOL[c["dtype"]]
        ok = all(v <= tol for v in errs.values())
        failed |= not ok
        desc = ", ".join(f"{k}={v}" for k, v in c.items() if k not in ("dim", "N")).replace("torch.", "")
        print(f"{'ok  ' if ok else 'FAIL'} {desc}: max {max(errs.values()):.2e}  "
              + " ".join(f"{k}={v:.1e}" for k, v in errs.items()), flush=True)
        torch.cuda.empty_cache()
    for G in (1, 2):
        errs = decode_check(G=G)
        ok = all(v <= 1e-5 for v in errs.values())
        failed |= not ok
        print(f"{'ok  ' if ok else 'FAIL'} decode step G={G}: " + " ".join(f"{k}={v:.1e}" for k, v in errs.items()))
    print("GPU CHECK", "FAILED" if failed else "PASSED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
