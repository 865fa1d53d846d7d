"""Where a kernel op's time goes: CUDA time per launched kernel, one training step (forward +
backward) of each op at the ANCHORS shapes, from torch.profiler.

    python scripts/profile_kernels.py [--ops scan,ssd,conv,norm] [--steps 5]

For a hardware-level look at one kernel (DRAM throughput, stall reasons), run ncu on this
script with a kernel filter, e.g.
    ncu --kernel-name regex:_conv_bwd --launch-count 1 --section SpeedOfLight \\
        --section MemoryWorkloadAnalysis python scripts/profile_kernels.py --ops conv --steps 1
Needs a CUDA GPU.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

SCAN_SHAPES = ((8, 2048), (1, 32768))


def top_kernels(fn, steps: int, rows: int = 12) -> list[tuple[float, int, str]]:
    """(ms per step, launches per step, name) of the kernels fn launches, slowest first."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            fn()
        torch.cuda.synchronize()
    events = sorted(prof.key_averages(), key=lambda e: -e.device_time_total)
    return [(e.device_time_total / 1e3 / steps, e.count // steps, e.key) for e in events[:rows]
            if e.device_time_total > 0]


def report(title: str, fn, steps: int) -> None:
    got = top_kernels(fn, steps)
    total = sum(ms for ms, _, _ in got)
    print(f"\n== {title}: {total:.3f} ms per step in the top {len(got)} kernels", flush=True)
    for ms, n, name in got:
        print(f"  {ms:8.3f} ms  x{n:<3d} {name[:96]}", flush=True)


def grad_step(op, leaves: dict, **kw):
    params = [v for v in leaves.values() if torch.is_tensor(v) and v.requires_grad]

    def step():
        out = op(**leaves, **kw)
        out = out[0] if isinstance(out, tuple) else out
        torch.autograd.grad(out, params, torch.ones_like(out))
    return step


def profile_scan(steps: int) -> None:
    sys.path.insert(0, os.path.dirname(__file__))
    from bench_kernels import scan_inputs

    from bytelm.kernels.selective_scan.triton_op import selective_scan
    for version in ("seq", "grouped", "chunked"):
        os.environ["BYTELM_SCAN_BWD"] = version
        for batch, L in SCAN_SHAPES:
            inp = scan_inputs(batch, L)
            leaves = {k: (v.detach().requires_grad_() if v.is_floating_point() else v) for k, v in inp.items()}
            try:
                report(f"Mamba-1 scan fwd+bwd, BYTELM_SCAN_BWD={version}, {batch}x{L}",
                       grad_step(selective_scan, leaves, delta_softplus=True), steps)
            except Exception as err:  # noqa: BLE001 - one version failing does not hide the others
                print(f"\n== Mamba-1 scan, BYTELM_SCAN_BWD={version}, {batch}x{L}: failed "
                      f"({type(err).__name__}: {str(err).splitlines()[-1][:200]})", flush=True)
            torch.cuda.empty_cache()
    os.environ.pop("BYTELM_SCAN_BWD")


def profile_ssd(steps: int, H=32, P=64, N=128, Q=256) -> None:
    """bytelm's SSD forward (no grad) and fwd+bwd at the ANCHORS shapes, then mamba_ssm's
    mamba_chunk_scan_combined on the same inputs when its source is in ANCHOR_SRC
    (default .carry/mamba_ssm_src)."""
    sys.path.insert(0, os.path.dirname(__file__))
    from bench_kernels_mamba2 import load_anchor
    from bytelm.kernels.ssd.triton_op import ssd
    anchor = load_anchor(os.environ.get("ANCHOR_SRC", ".carry/mamba_ssm_src"))
    bf = torch.bfloat16
    for b, L in ((8, 2048), (2, 8192), (1, 32768)):
        g = dict(device="cuda")
        leaves = dict(x=torch.randn(b, L, H, P, **g, dtype=bf).requires_grad_(),
                      dt=torch.randn(b, L, H, **g, dtype=bf).requires_grad_(),
                      A=-torch.rand(H, **g) - 0.5,
                      B=(torch.randn(b, L, 1, N, **g, dtype=bf) * N ** -0.5).requires_grad_(),
                      C=(torch.randn(b, L, 1, N, **g, dtype=bf) * N ** -0.5).requires_grad_())
        kw = dict(chunk_size=Q, D=torch.randn(H, **g), dt_bias=torch.randn(H, **g) * 0.5 - 1,
                  dt_softplus=True)
        title = f"{b}x{L} H{H} P{P} N{N} chunk {Q}"
        for name, op in (("bytelm", ssd), ("mamba_ssm", anchor)):
            if op is None:
                continue

            def fwd(op=op):
                with torch.no_grad():
                    op(**leaves, **kw)
            report(f"SSD fwd, {name}, {title}", fwd, steps)
            report(f"SSD fwd+bwd, {name}, {title}", grad_step(op, leaves, **kw), steps)
        torch.cuda.empty_cache()


def profile_conv(steps: int, tokens=16384, dim=2048, batch=8) -> None:
    from bytelm.kernels.causal_conv1d.triton_op import causal_conv1d
    for version in ("v1", "roll"):  # roll: the rolling forward as well
        os.environ["BYTELM_CONV_BWD"] = version
        os.environ["BYTELM_CONV_FWD"] = "roll" if version == "roll" else "tile"
        x = torch.randn(batch, tokens // batch, dim, device="cuda", dtype=torch.bfloat16)
        leaves = dict(x=x.transpose(1, 2).requires_grad_(),
                      weight=torch.randn(dim, 4, device="cuda", requires_grad=True),
                      bias=torch.randn(dim, device="cuda", requires_grad=True))
        report(f"causal_conv1d W4 silu fwd+bwd, channel-last, {batch}x{tokens // batch} d{dim}, "
               f"BYTELM_CONV_BWD={version}", grad_step(causal_conv1d, leaves, activation="silu"), steps)
    os.environ.pop("BYTELM_CONV_BWD")
    os.environ.pop("BYTELM_CONV_FWD")


def profile_norm(steps: int, tokens=16384, dim=2048) -> None:
    from bytelm.kernels.rms_norm.triton_op import rms_norm
    bf = torch.bfloat16
    x = torch.randn(tokens, dim, device="cuda", dtype=bf, requires_grad=True)
    w = torch.ones(dim, device="cuda", requires_grad=True)
    z = torch.randn_like(x, requires_grad=True)
    r = torch.randn(tokens, dim, device="cuda", requires_grad=True)
    report(f"rms_norm gated fwd+bwd, {tokens}x{dim}",
           grad_step(rms_norm, dict(x=x, weight=w, gate=z), eps=1e-5), steps)
    report(f"rms_norm +residual fwd+bwd, {tokens}x{dim}",
           grad_step(rms_norm, dict(x=x, weight=w, residual=r), eps=1e-5), steps)


OPS = {"scan": profile_scan, "ssd": profile_ssd, "conv": profile_conv, "norm": profile_norm}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", default=",".join(OPS), help="comma-separated: " + ", ".join(OPS))
    p.add_argument("--steps", type=int, default=5, help="profiled steps per case (after 3 warmup)")
    args = p.parse_args()
    ops = args.ops.split(",")
    bad = [o for o in ops if o not in OPS]
    if bad:
        print(f"error: unknown --ops {', '.join(bad)}; choose from {', '.join(OPS)}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("error: profile_kernels.py profiles CUDA kernels: run it on the GPU machine",
              file=sys.stderr)
        return 2
    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__}")
    for op in ops:
        OPS[op](args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
