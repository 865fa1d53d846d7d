"""GPU benchmark rows for the Mamba-2 family: rms_norm, causal_conv1d and SSD, with mamba_ssm's
Triton `mamba_chunk_scan_combined` timed in the same process when its source is importable.

    python scripts/bench_kernels_mamba2.py [--anchor-src .carry/mamba_ssm_src]

`rows()` returns dicts (op, shape, pass, ms, floor_ms, pct_floor, anchor_ms, speedup) for
bench_kernels.py to merge. Floors: bytes each pass must read + write once, over the GPU's
copy bandwidth measured in the same run (3.0 TB/s on the H100 of ANCHORS.md, ~4.3 on an H200).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import types

import torch

COPY_BW = 3.0e12  # bytes/s, read + written (ANCHORS.md measured 3.02 TB/s on the H100); main()
#                   replaces it with this GPU's own copy bandwidth, measured in the same run


def measure_copy_bw(nbytes=2 << 30) -> float:
    """Device-to-device copy bandwidth (bytes read + written per second) of a 2 GiB tensor."""
    src = torch.empty(nbytes // 2, device="cuda", dtype=torch.uint8)
    dst = torch.empty_like(src)
    return nbytes / (bench(lambda: dst.copy_(src)) * 1e-3)


def load_anchor(src):
    """mamba_ssm's Triton SSD from its unpacked source, without its CUDA extension, or None."""
    pkg = os.path.join(src, "mamba_ssm")
    if not os.path.isdir(pkg):
        return None
    if "mamba_ssm" not in sys.modules:
        mod = types.ModuleType("mamba_ssm")
        mod.__path__ = [pkg]
        sys.modules["mamba_ssm"] = mod
        sys.path.insert(0, src)
    try:
        return importlib.import_module("mamba_ssm.ops.triton.ssd_combined").mamba_chunk_scan_combined
    except Exception as err:  # report, don't fail the bench
        print(f"# mamba_ssm anchor not importable: {err!r}")
        return None


def bench(fn):
    from triton.testing import do_bench
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


ECHO = False  # set by the script's main: _row prints each row


def _row(op, shape, pas, ms, nbytes=None, anchor_ms=None):
    floor = nbytes / COPY_BW * 1e3 if nbytes else None
    row = dict(op=op, shape=shape, **{"pass": pas}, ms=ms, floor_ms=floor,
               pct_floor=(100 * floor / ms) if floor else None, anchor_ms=anchor_ms,
               speedup=(anchor_ms / ms) if anchor_ms else None)
    if ECHO:  # the script's own run prints each row as it is measured (a time limit keeps them)
        print(format_rows([row]), flush=True)
    return row


def norm_conv_rows(tokens=16384, dim=2048, batch=8):
    from bytelm.kernels.causal_conv1d.triton_bwd import conv_bwd
    from bytelm.kernels.causal_conv1d.triton_op import causal_conv1d
    from bytelm.kernels.rms_norm.triton_op import rms_norm
    out, bf = [], torch.bfloat16
    n = tokens * dim
    shape = f"{batch}x{tokens // batch} d{dim}"
    w = torch.ones(dim, device="cuda", requires_grad=True)
    # gated (Mamba-2's norm): read x, z, write y | bwd read x, z, dy, write dx, dz
    x = torch.randn(tokens, dim, device="cuda", dtype=bf, requires_grad=True)
    z = torch.randn_like(x, requires_grad=True)
    y = rms_norm(x, w, 1e-5, None, z)
    dy = torch.randn_like(y)
    out.append(_row("rms_norm gated", shape, "fwd", bench(lambda: rms_norm(x, w, 1e-5, None, z)), 6 * n))
    out.append(_row("rms_norm gated", shape, "bwd",
                    bench(lambda: torch.autograd.grad(y, (x, z, w), dy, retain_graph=True)), 10 * n))
    # residual (block pre-norm): read x bf16, r fp32, write y bf16, r_out fp32 | bwd 2+4+2 in, 2+4 out
    r = torch.randn(tokens, dim, device="cuda", requires_grad=True)
    y2, r2 = rms_norm(x, w, 1e-5, r)
    dr = torch.randn_like(r2)
    out.append(_row("rms_norm +residual", shape, "fwd", bench(lambda: rms_norm(x, w, 1e-5, r)), 12 * n))
    out.append(_row("rms_norm +residual", shape, "bwd",
                    bench(lambda: torch.autograd.grad((y2, r2), (x, r, w), (dy, dr), retain_graph=True)),
                    14 * n))
    # backward variants (programs per SM x warps x pipeline stages of the row loop; the default
    # is BWD_CFG: 8 x 4 x 2)
    from bytelm.kernels.rms_norm import triton_bwd as norm_bwd
    saved = dict(norm_bwd.BWD_CFG)
    for pps, nw, st in ((8, 4, 1), (8, 4, 3), (4, 8, 2), (4, 8, 3), (16, 4, 2), (2, 16, 2)):
        norm_bwd.BWD_CFG.update(programs_per_sm=pps, num_warps=nw, num_stages=st)
        tag = f" (bwd {pps}/SM, {nw or 'default'} warps, {st} stages)"
        out.append(_row("rms_norm gated" + tag, shape, "bwd",
                        bench(lambda: torch.autograd.grad(y, (x, z, w), dy, retain_graph=True)), 10 * n))
        out.append(_row("rms_norm +residual" + tag, shape, "bwd",
                        bench(lambda: torch.autograd.grad((y2, r2), (x, r, w), (dy, dr), retain_graph=True)),
                        14 * n))
    norm_bwd.BWD_CFG.clear()
    norm_bwd.BWD_CFG.update(saved)
    # forward variants: rows per program x pipeline stages (the default: rows_per_program, 2)
    from bytelm.kernels.rms_norm import triton_fwd as norm_fwd
    saved = dict(norm_fwd.FWD_CFG)
    with torch.no_grad():
        y_def, (y2_def, r2_def) = rms_norm(x, w, 1e-5, None, z), rms_norm(x, w, 1e-5, r)
    for rows, st in ((4, 1), (8, 2), (16, 2), (16, 3), (32, 3)):
        norm_fwd.FWD_CFG.update(rows=rows, num_stages=st)
        tag = f" (fwd {rows} rows/program, {st} stages)"
        with torch.no_grad():
            got = (rms_norm(x, w, 1e-5, None, z), *rms_norm(x, w, 1e-5, r))
        diff = max(((a.float() - b.float()).abs().max()).item() for a, b in zip(got, (y_def, y2_def, r2_def)))
        print(f"#{tag}: max abs difference to the default forward {diff:.1e}", flush=True)
        if diff > 1e-2:
            tag += f" WRONG {diff:.1e}"
        out.append(_row("rms_norm gated" + tag, shape, "fwd", bench(lambda: rms_norm(x, w, 1e-5, None, z)), 6 * n))
        out.append(_row("rms_norm +residual" + tag, shape, "fwd", bench(lambda: rms_norm(x, w, 1e-5, r)), 12 * n))
    norm_fwd.FWD_CFG.clear()
    norm_fwd.FWD_CFG.update(saved)
    # conv: channel-last (B, D, L) view as the models pass it; read x write y | read x, dy write dx
    xc = torch.randn(batch, tokens // batch, dim, device="cuda", dtype=bf).transpose(1, 2).requires_grad_()
    wc = torch.randn(dim, 4, device="cuda", requires_grad=True)
    bc = torch.randn(dim, device="cuda", requires_grad=True)
    yc = causal_conv1d(xc, wc, bc, "silu")
    dyc = torch.randn_like(yc)
    out.append(_row("causal_conv1d W4 silu", shape, "fwd", bench(lambda: causal_conv1d(xc, wc, bc, "silu")), 4 * n))
    out.append(_row("causal_conv1d W4 silu (bwd v1)", shape, "bwd",
                    bench(lambda: torch.autograd.grad(yc, (xc, wc, bc), dyc, retain_graph=True)), 6 * n))
    # the kernel launch alone (no autograd engine): what the launch overhead hides
    out.append(_row("causal_conv1d W4 silu (bwd v1, kernel only)", shape, "bwd",
                    bench(lambda: conv_bwd(xc.detach(), wc.detach(), bc.detach(), None, None, True, dyc)),
                    6 * n))
    out += conv_roll_rows(xc, wc, bc, dyc, shape, n)
    return out


def conv_roll_rows(xc, wc, bc, dyc, shape, n):
    """The rolling conv kernels (triton_roll.py): checked against the tile kernels here, then
    timed at each configuration (channels per program, unrolled steps, warps, programs per SM
    the chunk length aims at), set for forward and backward alike (ROLL_FWD_CFG, ROLL_BWD_CFG;
    the defaults are 128/8/1w/32 and 512/8/4w/4). bwd rows with an L-contiguous dy (Mamba-1's
    conv) include its channel-last copy."""
    from bytelm.kernels.causal_conv1d import triton_roll as roll
    from bytelm.kernels.causal_conv1d.triton_bwd import conv_bwd
    from bytelm.kernels.causal_conv1d.triton_fwd import conv_fwd

    x, w, b = xc.detach(), wc.detach(), bc.detach()
    y_ref = conv_fwd(x, w, b, None, None, True)
    g_ref = conv_bwd(x, w, b, None, None, True, dyc)
    dy_lc = dyc.contiguous()  # the same values, L-contiguous
    cfgs = (roll.ROLL_FWD_CFG, roll.ROLL_BWD_CFG)
    out, saved = [], [dict(c) for c in cfgs]
    for bd, r, nw, pps in ((128, 8, 1, 16), (128, 8, 1, 8), (128, 8, 1, 32), (64, 8, 1, 16),
                           (256, 8, 1, 8), (128, 4, 1, 16), (128, 16, 1, 16), (256, 8, 2, 8),
                           (512, 8, 4, 4)):
        for c in cfgs:
            c.update(block_d=bd, unroll=r, num_warps=nw, programs_per_sm=pps)
        tag = f"roll {bd}ch/{r}/{nw}w/{pps}"
        y = roll.conv_fwd_roll(x, w, b, None, None, True)
        g = roll.conv_bwd_roll(x, w, b, None, None, True, dyc)
        errs = [((a.float() - e.float()).norm() / e.float().norm()).item() for a, e in zip((y, *g[:3]), (y_ref, *g_ref[:3]))]
        print(f"# {tag}: rel. difference to the tile kernels y {errs[0]:.1e} dx {errs[1]:.1e} "
              f"dw {errs[2]:.1e} db {errs[3]:.1e}", flush=True)
        if max(errs) > 2e-2:
            out.append(_row(f"causal_conv1d W4 silu ({tag}) WRONG: {max(errs):.1e}", shape, "fwd", float("nan"), 4 * n))
            continue
        out.append(_row(f"causal_conv1d W4 silu ({tag})", shape, "fwd",
                        bench(lambda: roll.conv_fwd_roll(x, w, b, None, None, True)), 4 * n))
        out.append(_row(f"causal_conv1d W4 silu ({tag})", shape, "bwd",
                        bench(lambda: roll.conv_bwd_roll(x, w, b, None, None, True, dyc)), 6 * n))
        out.append(_row(f"causal_conv1d W4 silu ({tag}, L-contiguous dy)", shape, "bwd",
                        bench(lambda: roll.conv_bwd_roll(x, w, b, None, None, True, dy_lc)), 6 * n))
    for c, s in zip(cfgs, saved):
        c.clear()
        c.update(s)
    return out


def ssd_rows(anchor, shapes=((8, 2048), (2, 8192), (1, 32768)), H=32, P=64, N=128, Q=256,
             ref_bwd_at=((8, 2048),)):
    from bytelm.kernels.ssd.reference import ssd_ref
    from bytelm.kernels.ssd.triton_op import ssd
    out, bf = [], torch.bfloat16
    for b, L in shapes:
        shape = f"{b}x{L} H{H} P{P} N{N}"
        x = torch.randn(b, L, H, P, device="cuda", dtype=bf)
        dt = torch.randn(b, L, H, device="cuda", dtype=bf)
        A = -torch.rand(H, device="cuda") - 0.5
        B = torch.randn(b, L, 1, N, device="cuda", dtype=bf) * N ** -0.5
        C = torch.randn(b, L, 1, N, device="cuda", dtype=bf) * N ** -0.5
        D = torch.randn(H, device="cuda")
        dtb = torch.randn(H, device="cuda") * 0.5 - 1
        nbytes = 2 * (2 * x.numel() + dt.numel() + B.numel() + C.numel())
        kw = dict(chunk_size=Q, D=D, dt_bias=dtb, dt_softplus=True)
        a_fwd = a_fb = None
        if anchor is not None:
            with torch.no_grad():
                a_fwd = bench(lambda: anchor(x, dt, A, B, C, **kw))
            leaves = [t.clone().requires_grad_() for t in (x, dt, B, C)]
            ya = anchor(leaves[0], leaves[1], A, leaves[2], leaves[3], **kw)
            dya = torch.randn_like(ya)

            def anchor_fb():
                y_ = anchor(leaves[0], leaves[1], A, leaves[2], leaves[3], **kw)
                torch.autograd.grad(y_, leaves, dya)
            a_fb = bench(anchor_fb)
        with torch.no_grad():
            t_fwd = bench(lambda: ssd(x, dt, A, B, C, **kw))
        out.append(_row("ssd (Triton fwd)", shape, "fwd", t_fwd, nbytes, a_fwd))
        leaves = [t.clone().requires_grad_() for t in (x, dt, B, C)]
        dy = torch.randn_like(x)

        def ours_fb():  # BYTELM_SSD_BWD picks the Triton backward or the reference
            y_ = ssd(leaves[0], leaves[1], A, leaves[2], leaves[3], **kw)
            return torch.autograd.grad(y_, leaves, dy)
        # the reference backward only at ref_bwd_at (44 ms a step at 2 x 8192, ~0.4 s at 1 x 32768:
        # at every shape it ran the 2026-12-02 round past its time limit)
        modes = (("triton", "ssd (Triton bwd)"),) + ((("ref", "ssd (ref bwd)"),) if (b, L) in ref_bwd_at else ())
        for mode, label in modes:
            os.environ["BYTELM_SSD_BWD"] = mode
            try:
                out.append(_row(label, shape, "fwd+bwd", bench(ours_fb), None, a_fb))
            except torch.OutOfMemoryError:
                out.append(_row(label, shape, "fwd+bwd OOM", float("nan"), None, a_fb))
            torch.cuda.empty_cache()
        os.environ.pop("BYTELM_SSD_BWD", None)
        out += _ssd_bwd_variants(ours_fb, leaves, shape, a_fb)
    del ssd_ref
    return out


# backward launch variants timed beside the default (triton_bwd.BWD_CFG overrides): the old
# d(dt·A) (rect_dA off, the cost of the precise one; 2026-12-04: +6 %) and the grouped backward
# at 16 and 32 heads per program, and with the carried-state terms in its dx kernel (4 and 8
# warps there), opt-in until timed here with its fused tail
SSD_BWD_VARIANTS = ({"rect_dA": False}, {"grouped": True}, {"grouped": True, "group_heads": 32},
                    {"grouped": True, "group_state": 0},
                    {"grouped": True, "group_state": 0, "dx_warps": 8})


def _ssd_bwd_variants(ours_fb, leaves, shape, a_fb):
    """The Triton backward at each of SSD_BWD_VARIANTS (not the default's values): gradients
    compared with the default's, then timed."""
    from bytelm.kernels.ssd import triton_bwd

    out, saved = [], dict(triton_bwd.BWD_CFG)
    os.environ["BYTELM_SSD_BWD"] = "triton"
    ref_grads = _grads_of(ours_fb, leaves)
    for cfg in SSD_BWD_VARIANTS:
        if all(saved.get(k) == v for k, v in cfg.items()):
            continue
        name = ", ".join(f"{k} {v}" for k, v in cfg.items())
        triton_bwd.BWD_CFG.update(cfg)
        try:
            g = _grads_of(ours_fb, leaves)
            err = max(((a - b).norm() / b.norm()).item() for a, b in zip(g, ref_grads))
            print(f"# ssd bwd {name} at {shape}: gradients within {err:.1e} of the default's", flush=True)
            label = f"ssd (Triton bwd, {name})" + ("" if err < 2e-2 else f" WRONG {err:.1e}")
            out.append(_row(label, shape, "fwd+bwd", bench(ours_fb), None, a_fb))
        except Exception as err:  # noqa: BLE001 - a variant that fails is reported, the table goes on
            print(f"# ssd bwd {name}: failed ({type(err).__name__}: {err})"[:300], flush=True)
        finally:
            triton_bwd.BWD_CFG.clear()
            triton_bwd.BWD_CFG.update(saved)
    os.environ.pop("BYTELM_SSD_BWD", None)
    return out


def wide_state_rows(batch=64, L=512, H=4, P=32, Q=64, states=(16, 64, 256), blocks=(64, 32, 16)):
    """The synth MQAR model's SSD (4 heads of 32, chunk 64), fwd+bwd at d_state 16 / 64 / 256
    with the backward's token block at d_state > 128 (triton_bwd.BWD_CFG["BLOCK_Q_wide_state"])
    at each of `blocks`; gradients compared with the first block's. Not in the default rows."""
    from bytelm.kernels.ssd import triton_bwd
    from bytelm.kernels.ssd.triton_op import ssd
    out, bf, saved = [], torch.bfloat16, dict(triton_bwd.BWD_CFG)
    for N in states:
        shape = f"{batch}x{L} H{H} P{P} N{N} Q{Q}"
        leaves = [torch.randn(batch, L, H, P, device="cuda", dtype=bf).requires_grad_(),
                  torch.randn(batch, L, H, device="cuda", dtype=bf).requires_grad_(),
                  (torch.randn(batch, L, 1, N, device="cuda", dtype=bf) * N ** -0.5).requires_grad_(),
                  (torch.randn(batch, L, 1, N, device="cuda", dtype=bf) * N ** -0.5).requires_grad_()]
        A = -torch.rand(H, device="cuda") - 0.5
        D, dtb = torch.randn(H, device="cuda"), torch.randn(H, device="cuda") * 0.5 - 1
        dy = torch.randn(batch, L, H, P, device="cuda", dtype=bf)

        def fb():
            x, dt, B, C = leaves
            y = ssd(x, dt, A, B, C, Q, D, None, dtb, True)
            return torch.autograd.grad(y, leaves, dy)

        first = None
        for bq in (blocks if N > 128 else blocks[:1]):
            triton_bwd.BWD_CFG["BLOCK_Q_wide_state"] = bq
            try:
                g = _grads_of(fb, leaves)
                first = first or g
                err = max(((a - b).norm() / b.norm()).item() for a, b in zip(g, first))
                label = f"ssd synth, wide-state block {bq}" + ("" if err < 2e-2 else f" WRONG {err:.1e}")
                out.append(_row(label, shape, "fwd+bwd", bench(fb)))
                if g is not first:
                    print(f"# {label} at {shape}: gradients within {err:.1e} of block {blocks[0]}'s", flush=True)
            except Exception as err:  # noqa: BLE001 - a variant that fails is reported, the table goes on
                print(f"# wide-state block {bq} at {shape}: failed ({type(err).__name__}: {err})"[:300], flush=True)
            finally:
                triton_bwd.BWD_CFG.clear()
                triton_bwd.BWD_CFG.update(saved)
    return out


def _grads_of(fb, leaves):
    """fb's gradients (it returns torch.autograd.grad's), in fp32 copies."""
    return [g.float().clone() for g in fb()]


def rows(anchor_src=".carry/mamba_ssm_src"):
    global COPY_BW
    COPY_BW = measure_copy_bw()
    return norm_conv_rows() + ssd_rows(load_anchor(anchor_src))


HEADER = ["| op | shape | pass | ms | floor ms | % of floor | anchor ms | anchor/ours |",
          "|---|---|---|---|---|---|---|---|"]


def format_rows(rs):
    def f(v, fmt):
        return "" if v is None else format(v, fmt)
    lines = []
    for r in rs:
        lines.append(f"| {r['op']} | {r['shape']} | {r['pass']} | {r['ms']:.3f} | {f(r['floor_ms'], '.3f')} | "
                     f"{f(r['pct_floor'], '.0f')} | {f(r['anchor_ms'], '.3f')} | {f(r['speedup'], '.2f')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--anchor-src", default=".carry/mamba_ssm_src")
    ap.add_argument("--wide-state", action="store_true",
                    help="only the synth MQAR model's SSD at d_state 16/64/256, backward token "
                         "block 64 vs 32 vs 16 at d_state 256 (kernels/NOTES.md)")
    ap.add_argument("--ssd-only", action="store_true", help="only the SSD rows (no rms_norm / conv)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_kernels_mamba2.py: no CUDA GPU visible; it times GPU kernels, run it on the GPU machine")
    import datetime
    COPY_BW = measure_copy_bw()
    print(f"# {datetime.date.today()} {torch.cuda.get_device_name()} torch {torch.__version__}; "
          f"floors at this GPU's copy bandwidth, {COPY_BW / 1e12:.2f} TB/s (read + written)")
    print("\n".join(HEADER), flush=True)
    ECHO = True  # _row prints every row as it comes
    if args.wide_state:
        wide_state_rows()
        sys.exit(0)
    if not args.ssd_only:
        norm_conv_rows()
    anchor = load_anchor(args.anchor_src)
    for shape in ((8, 2048), (2, 8192), (1, 32768)):
        ssd_rows(anchor, shapes=(shape,))
