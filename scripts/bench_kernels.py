"""Time bytelm's kernels against the anchors at the ANCHORS.md shapes; print the tables.

    python scripts/bench_kernels.py [--ops selective_scan mamba2] [--no-compile-ref] [--sweep]
                                    [--anchor-src .carry/mamba_ssm_src]

Run on the GPU machine. Each op family has one function `<family>_rows(args) -> list[dict]`
returning rows with the columns of COLUMNS (missing ones print as "-"); main() concatenates the
families' rows and prints a single table at the end. The Mamba-2 family (rms_norm, causal_conv1d
and SSD against mamba_ssm's `mamba_chunk_scan_combined`, from scripts/bench_kernels_mamba2.py)
is timed per pass (fwd, bwd, fwd+bwd) against the copy-bandwidth floor, so it prints as a second
table with its own columns after the first.

Columns: ms are `triton.testing.do_bench` medians; "vs anchor" is anchor_ms / ours (> 1: faster
than the anchor); "floor %" is the byte floor (bytes read + written once, at BANDWIDTH) over the
measured time; "extra mem" is the peak memory of forward+backward beyond inputs, outputs and
gradients, in units of one (batch, dim, L) bf16 tensor.
Anchors that cannot be imported on the machine are quoted from ANCHORS.md (marked "table").
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import time

import torch
import triton

BANDWIDTH = 3.0e12  # bytes/s, the H100's measured device-to-device copy (ANCHORS.md)
SHAPES = [(8, 2048), (2, 8192), (1, 32768)]  # (batch, length), ANCHORS.md

COLUMNS = ["op", "shape", "impl", "fwd ms", "fwd vs anchor", "fwd floor %",
           "fwd+bwd ms", "f+b vs anchor", "f+b floor %", "extra mem"]


def bench_ms(fn) -> float:
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if v < 100 else f"{v:.1f}"
    return str(v)


def print_table(rows: list[dict], title: str) -> None:
    cells = [[fmt(r.get(c)) for c in COLUMNS] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(COLUMNS)]
    print(f"\n{title}")
    print("| " + " | ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")


class _Timeout(Exception):
    pass


def with_time_limit(seconds: float, fn):
    """fn() or raise _Timeout after `seconds` (SIGALRM; for compile steps that may take long)."""
    def _raise(*_):
        raise _Timeout()
    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------ Mamba-1 selective scan

SCAN_ANCHOR = {  # mamba_ssm 2.3.2 selective_scan_cuda, ANCHORS.md (not importable on the GPU box)
    (8, 2048): (0.593, 3.03), (2, 8192): (0.727, 3.28), (1, 32768): (1.486, 7.24),
}


def scan_inputs(batch, L, dim=2048, N=16, dtype=torch.bfloat16):
    g = dict(device="cuda")
    return dict(
        u=torch.randn(batch, dim, L, **g).to(dtype),
        delta=(0.5 * torch.randn(batch, dim, L, **g)).to(dtype),
        A=-torch.arange(1, N + 1, **g, dtype=torch.float32).repeat(dim, 1),
        B=torch.randn(batch, N, L, **g).to(dtype),
        C=torch.randn(batch, N, L, **g).to(dtype),
        D=torch.randn(dim, **g),
        z=torch.randn(batch, dim, L, **g).to(dtype),
        delta_bias=0.3 * torch.randn(dim, **g),
    )


def scan_floor_bytes(batch, L, dim=2048, N=16, elt=2):
    act = batch * dim * L * elt  # one (batch, dim, L) tensor
    bc = batch * N * L * elt  # B or C
    fwd = 4 * act + 2 * bc  # read u, delta, z, B, C; write y
    bwd = 4 * act + 2 * bc + 3 * act + 2 * bc  # read u, delta, z, dy, B, C; write du, ddelta, dz, dB, dC
    return fwd, fwd + bwd


def time_scan(fn, inputs, grads=True):
    """(fwd ms, fwd+bwd ms, extra memory in bytes) of fn(**inputs) -> y."""
    fwd = bench_ms(lambda: fn(**inputs))
    if not grads:
        return fwd, None, None
    leaves = {k: (v.detach().requires_grad_() if v.is_floating_point() else v) for k, v in inputs.items()}
    y = fn(**leaves)
    dy = torch.randn_like(y)
    params = [v for v in leaves.values() if v.requires_grad]

    def step():
        return torch.autograd.grad(fn(**leaves), params, dy)

    fb = bench_ms(step)
    del y
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn(**leaves)
    gs = torch.autograd.grad(out, params, dy)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    held = out.numel() * out.element_size() + sum(g.numel() * g.element_size() for g in gs)
    return fwd, fb, peak - base - held


def selective_scan_rows(args) -> list[dict]:
    from bytelm.kernels.selective_scan.reference import selective_scan_ref
    from bytelm.kernels.selective_scan.triton_op import selective_scan

    rows = []
    compiled = None
    compile_budget = args.compile_budget_s
    for batch, L in SHAPES:
        inputs = scan_inputs(batch, L)
        act_bytes = batch * 2048 * L * 2
        fl_fwd, fl_fb = scan_floor_bytes(batch, L)
        fl_fwd_ms, fl_fb_ms = fl_fwd / BANDWIDTH * 1e3, fl_fb / BANDWIDTH * 1e3
        a_fwd, a_fb = SCAN_ANCHOR[(batch, L)]
        shape = f"{batch}x{L}"

        def ours(**kw):
            return selective_scan(**kw, delta_softplus=True)

        fwd, fb, extra = time_scan(ours, inputs)
        rows.append({"op": "selective_scan", "shape": shape, "impl": "bytelm triton",
                     "fwd ms": fwd, "fwd vs anchor": a_fwd / fwd, "fwd floor %": 100 * fl_fwd_ms / fwd,
                     "fwd+bwd ms": fb, "f+b vs anchor": a_fb / fb, "f+b floor %": 100 * fl_fb_ms / fb,
                     "extra mem": f"{extra / act_bytes:.2f}x"})
        rows.append({"op": "selective_scan", "shape": shape, "impl": "mamba_ssm CUDA (table)",
                     "fwd ms": a_fwd, "fwd vs anchor": 1.0, "fwd floor %": 100 * fl_fwd_ms / a_fwd,
                     "fwd+bwd ms": a_fb, "f+b vs anchor": 1.0, "f+b floor %": 100 * fl_fb_ms / a_fb})
        if args.compile_ref and compile_budget > 0:
            t0 = time.time()
            try:
                if compiled is None:
                    compiled = torch.compile(selective_scan_ref)

                def ref(**kw):
                    return compiled(**kw, delta_softplus=True)

                rfwd, rfb, _ = with_time_limit(compile_budget, lambda inputs=inputs: time_scan(ref, inputs))
                rows.append({"op": "selective_scan", "shape": shape, "impl": "reference torch.compile",
                             "fwd ms": rfwd, "fwd vs anchor": a_fwd / rfwd,
                             "fwd floor %": 100 * fl_fwd_ms / rfwd, "fwd+bwd ms": rfb,
                             "f+b vs anchor": a_fb / rfb, "f+b floor %": 100 * fl_fb_ms / rfb})
            except _Timeout:
                print(f"reference torch.compile at {shape}: skipped (over the compile budget)")
            except Exception as err:  # noqa: BLE001 - a failed compile is reported, not fatal
                print(f"reference torch.compile at {shape}: skipped ({type(err).__name__}: {err})"[:300])
                compile_budget = 0
            compile_budget -= time.time() - t0
        del inputs
        torch.cuda.empty_cache()
    return rows


def _scan_outputs(inputs):
    """y and every gradient at the current kernel configs (for the sweep's agreement check)."""
    from bytelm.kernels.selective_scan.triton_op import selective_scan

    leaves = {k: (v.detach().requires_grad_() if v.is_floating_point() else v) for k, v in inputs.items()}
    y = selective_scan(**leaves, delta_softplus=True)
    params = [v for v in leaves.values() if v.requires_grad]
    gen = torch.Generator(device="cuda").manual_seed(1)
    dy = torch.randn(y.shape, device="cuda", generator=gen).to(y.dtype)
    return [y.detach().float()] + [g.float() for g in torch.autograd.grad(y, params, dy)]


def _max_rel(outs, refs) -> float:
    return max(((a - b).norm() / b.norm().clamp_min(1e-30)).item() for a, b in zip(outs, refs))


def _sweep_forward(title, cfg, configs, check, ref, train=False) -> None:
    """Time the forward (train: forward+backward) at SHAPES under each config (updates of the
    dict `cfg`, restored after); "agree" compares y (train: y and every gradient) at 8x2048 with
    `ref`, the default configs' outputs."""
    from bytelm.kernels.selective_scan.triton_op import selective_scan

    def scan(**kw):
        return selective_scan(**kw, delta_softplus=True)

    saved = dict(cfg)
    print(f"\nsweep: {title}, {'fwd+bwd ' if train else ''}ms at " + " / ".join(f"{b}x{L}" for b, L in SHAPES))
    n_out = None if train else 1
    for c in configs:
        cfg.update(c)
        try:
            ms = []
            for batch, L in SHAPES:
                inputs = scan_inputs(batch, L)
                ms.append(time_scan(scan, inputs)[1] if train else bench_ms(lambda: scan(**inputs)))
            agree = _max_rel(_scan_outputs(check)[:n_out], ref[:n_out])
            print(f"  {c}: " + "  ".join(f"{m:.3f}" for m in ms) + f"  agree {agree:.1e}", flush=True)
        except Exception as err:  # noqa: BLE001 - a config that fails to compile is reported
            print(f"  {c}: failed ({type(err).__name__}: {err})"[:300], flush=True)
        finally:
            cfg.clear()
            cfg.update(saved)


def selective_scan_sweep(parts=("fwd3", "fwd4", "bwd2", "bwd3", "bwd31")) -> None:
    """Tile-shape variants of the forward and backward (printed, not in the main table). Each
    variant's y and gradients at 8x2048 are compared with the default configs' ("agree"), which
    gpu_check_selective_scan.py checks against the reference. `parts`: which groups to time
    (fwd3: sequential forward, fwd4: the lanes forward, bwd2: version 2 backward, bwd3: version 3 (sequential) backward,
    bwd31: version 3.1 (grouped), train4: version 4 as the training forward)."""
    check = scan_inputs(8, 2048)
    ref = _scan_outputs(check)
    # version 2's forward configs were swept already (kernels/NOTES.md); version 3 (sequential in
    # time, BYTELM_SCAN_FWD=seq): channels per program x warps x programs per SM
    if "fwd3" in parts:
        _sweep_forward_v3(check, ref)
    if "fwd4" in parts:
        _sweep_forward_v4(check, ref)
    if "train4" in parts:
        _sweep_train_v4(check, ref)
    if "bwd2" in parts:
        _sweep_backward_v2(check, ref)
    if "bwd3" in parts:
        _sweep_backward_v3(check, ref)
    if "bwd31" in parts:
        _sweep_backward_v3(check, ref, grouped=True)


def _sweep_forward_v3(check, ref) -> None:
    from bytelm.kernels.selective_scan import triton_fwd
    os.environ["BYTELM_SCAN_FWD"] = "seq"
    _sweep_forward("forward version 3 (sequential)", triton_fwd.SEQ_CFG, [
        dict(BLOCK_D=32, num_warps=1, programs_per_sm=4),
        dict(BLOCK_D=32, num_warps=1, programs_per_sm=8),
        dict(BLOCK_D=64, num_warps=2, programs_per_sm=4),
        dict(BLOCK_D=128, num_warps=4, programs_per_sm=2),
        dict(BLOCK_D=16, num_warps=1, programs_per_sm=8)], check, ref)
    os.environ.pop("BYTELM_SCAN_FWD")


def _sweep_forward_v4(check, ref) -> None:
    """Version 4 (BYTELM_SCAN_FWD=lanes, forced at every shape): the default config, B and C as
    fp32 copies, a lower fill before chunking (min_fill), R fixed at 4 or at 1 (without
    chunks at 8 x 2048). The first sweep
    (prefetch 0 / 1 / 2 x R, Triton's pipeliner, 2 warps) is in kernels/NOTES.md."""
    from bytelm.kernels.selective_scan import triton_fwd_lanes
    os.environ["BYTELM_SCAN_FWD"] = "lanes"
    _sweep_forward("forward version 4 (lanes)", triton_fwd_lanes.LANES_CFG, [
        {}, dict(bc_fp32=False), dict(min_fill=0.4), dict(min_fill=0.4, bc_fp32=False),
        dict(R=4), dict(R=4, bc_fp32=False)],
        check, ref)
    os.environ.pop("BYTELM_SCAN_FWD")


def _sweep_train_v4(check, ref) -> None:
    """Version 4 as the training forward (BYTELM_SCAN_FWD=lanes: it saves the chunk states the
    grouped backward reads), fwd+bwd ms, with fp32 and with bf16 B / C (the fp32 variant spills
    when it saves states, kernels/NOTES.md); "agree" compares y and every gradient at 8x2048."""
    from bytelm.kernels.selective_scan import triton_fwd_lanes
    os.environ["BYTELM_SCAN_FWD"] = "lanes"
    _sweep_forward("version 4 as the training forward (+ the default backward)",
                   triton_fwd_lanes.LANES_CFG,
                   [dict(bc_fp32=True), dict(bc_fp32=False), dict(bc_fp32=False, prefetch=1)],
                   check, ref, train=True)
    os.environ.pop("BYTELM_SCAN_FWD")


def _sweep_backward_v2(check, ref) -> None:
    from bytelm.kernels.selective_scan import triton_bwd
    from bytelm.kernels.selective_scan.triton_op import selective_scan
    bwd0 = dict(triton_bwd.BWD_CFG)
    os.environ["BYTELM_SCAN_BWD"] = "chunked"
    print("\nsweep: backward version 2 (chunked) configs, fwd+bwd ms")
    for c in [dict(BLOCK_D=4, BLOCK_L=128, num_warps=4, LEAN=True),
              dict(BLOCK_D=4, BLOCK_L=256, num_warps=4, LEAN=True),
              dict(BLOCK_D=4, BLOCK_L=128, num_warps=4, LEAN=False)]:
        triton_bwd.BWD_CFG.update(c)
        ms = []
        for batch, L in SHAPES:
            inputs = scan_inputs(batch, L)
            ms.append(time_scan(lambda **kw: selective_scan(**kw, delta_softplus=True), inputs)[1])
        agree = _max_rel(_scan_outputs(check), ref)
        print(f"  {c}: " + "  ".join(f"{m:.3f}" for m in ms) + f"  agree {agree:.1e}", flush=True)
    triton_bwd.BWD_CFG.clear()
    triton_bwd.BWD_CFG.update(bwd0)
    os.environ.pop("BYTELM_SCAN_BWD")


def _sweep_backward_v3(check, ref, grouped=False) -> None:
    """Version 3 (BYTELM_SCAN_BWD=seq) or 3.1 (=grouped) of the backward: channels per program,
    warps, chunk length (version 3; 3.1 takes the forward's), persistent programs per SM."""
    from bytelm.kernels.selective_scan import triton_bwd_grouped, triton_bwd_seq
    from bytelm.kernels.selective_scan.triton_op import selective_scan
    cfg = triton_bwd_grouped.GROUPED_CFG if grouped else triton_bwd_seq.SEQ_BWD_CFG
    saved = dict(cfg)
    os.environ["BYTELM_SCAN_BWD"] = "grouped" if grouped else "seq"
    print(f"\nsweep: backward version {'3.1 (grouped)' if grouped else '3 (sequential)'}, fwd+bwd ms")
    for c in [dict(BLOCK_D=16, num_warps=1, T=256, programs_per_sm=8),
              *([dict(BLOCK_D=16, num_warps=1, T=256, programs_per_sm=8, states="own")]
                if not grouped else []),
              # 8 channels: the sm_90 compiles without spills (16: 712 / 400 bytes of stack)
              dict(BLOCK_D=8, num_warps=1, T=256, programs_per_sm=16),
              dict(BLOCK_D=8, num_warps=1, T=256, programs_per_sm=8),
              dict(BLOCK_D=32, num_warps=2, T=256, programs_per_sm=4),
              dict(BLOCK_D=16, num_warps=1, T=256, programs_per_sm=16),
              dict(BLOCK_D=32, num_warps=1, T=256, programs_per_sm=8),
              dict(BLOCK_D=16, num_warps=2, T=128, programs_per_sm=8)]:
        cfg.update(c)
        try:
            ms, mem = [], []
            for batch, L in SHAPES:
                inputs = scan_inputs(batch, L)
                _, fb, extra = time_scan(lambda **kw: selective_scan(**kw, delta_softplus=True), inputs)
                ms.append(fb)
                mem.append(extra / (inputs["u"].numel() * 2))  # in (batch, dim, L) bf16 tensors
            agree = _max_rel(_scan_outputs(check), ref)
            print(f"  {c}: " + "  ".join(f"{m:.3f}" for m in ms) + f"  agree {agree:.1e}  extra mem "
                  + " ".join(f"{x:.2f}x" for x in mem), flush=True)
        except Exception as err:  # noqa: BLE001 - a config that fails to compile is reported
            print(f"  {c}: failed ({type(err).__name__}: {err})"[:300], flush=True)
        finally:
            cfg.clear()
            cfg.update(saved)
    os.environ.pop("BYTELM_SCAN_BWD")


def mamba2_table(args) -> str:
    """The Mamba-2 family's rows (bench_kernels_mamba2.rows), as a markdown table with a title."""
    import bench_kernels_mamba2 as m2  # scripts/ is on sys.path when this file runs as a script

    rs = m2.rows(args.anchor_src)
    return (f"\nbytelm Mamba-2 kernels, floors at this GPU's copy bandwidth "
            f"({m2.COPY_BW / 1e12:.2f} TB/s read + written, measured in this run)\n"
            + "\n".join(m2.HEADER) + "\n" + m2.format_rows(rs))


FAMILIES = {"selective_scan": selective_scan_rows}
TABLES = {"mamba2": mamba2_table}  # families with their own columns: printed after the first table
SWEEPS = {"selective_scan": selective_scan_sweep}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", nargs="*", default=[*FAMILIES, *TABLES], choices=[*FAMILIES, *TABLES])
    p.add_argument("--anchor-src", default=".carry/mamba_ssm_src",
                   help="mamba_ssm source tree for the SSD anchor (mamba2 family)")
    p.add_argument("--no-compile-ref", dest="compile_ref", action="store_false",
                   help="skip timing the PyTorch references under torch.compile")
    p.add_argument("--compile-budget-s", type=float, default=120.0,
                   help="seconds allowed for compiling+timing each family's reference")
    p.add_argument("--sweep", action="store_true", help="also time tile-shape variants")
    p.add_argument("--sweep-only", action="store_true", help="time the variants, skip the table")
    p.add_argument("--sweep-parts", default="fwd3,fwd4,bwd2,bwd3,bwd31",
                   help="comma-separated sweep groups: fwd3 (sequential forward), fwd4 (lanes "
                        "forward), train4 (lanes as the training forward, fwd+bwd), bwd2 (chunked "
                        "backward), bwd3 (sequential backward), bwd31 (grouped backward)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_kernels.py: no CUDA GPU visible; it times GPU kernels, run it on the GPU machine")
    if args.sweep or args.sweep_only:
        for op in args.ops:
            if op in SWEEPS:
                SWEEPS[op](tuple(args.sweep_parts.split(",")))
    if args.sweep_only:
        return
    rows = []
    for op in args.ops:
        if op in FAMILIES:
            rows += FAMILIES[op](args)
    tables = [TABLES[op](args) for op in args.ops if op in TABLES]
    gpu = torch.cuda.get_device_name()
    if rows:
        print_table(rows, f"bytelm kernels, {datetime.date.today()}, {gpu}, torch {torch.__version__}, "
                          f"triton {triton.__version__}; anchors from ANCHORS.md (H100, 2026-11-23)")
    for table in tables:
        print(table)


if __name__ == "__main__":
    main()
