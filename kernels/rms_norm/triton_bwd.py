"""RMSNorm backward in Triton: one pass over the rows, dweight reduced per program.

With h = s·silu(z) (or s), ĥ = h·rstd, y = ĥ·w:
    dh = rstd · (dy·w − ĥ · mean(dy·w·ĥ))   per group
    ds = dh·silu(z) + d(residual_out);  dz = dh · s · silu'(z);  dw = Σ_rows dy·ĥ
A fixed grid of programs (a few per SM) walks the rows so dw is accumulated in registers and
written once per program, then summed by torch over a small (programs, D) buffer.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from bytelm.kernels.rms_norm.triton_fwd import num_warps_for, tile_shape


@triton.jit
def _rms_norm_bwd_kernel(
    S, GATE, W, RSTD, DY, DRES_OUT, DX, DRES, DGATE, DW_PART,
    n_rows, rows_per_prog,
    D: tl.constexpr, GS: tl.constexpr, NG: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_S: tl.constexpr,
    HAS_GATE: tl.constexpr, HAS_DRES_OUT: tl.constexpr, HAS_DRES: tl.constexpr,
    STAGES: tl.constexpr,
):
    i_p = tl.program_id(0)
    o_g = tl.arange(0, BLOCK_G)
    o_s = tl.arange(0, BLOCK_S)
    m_tile = (o_g[:, None] < NG) & (o_s[None, :] < GS)
    o_tile = o_g[:, None] * GS + o_s[None, :]
    b_w = tl.load(W + o_tile, mask=m_tile, other=0.0).to(tl.float32)
    b_dw = tl.zeros([BLOCK_G, BLOCK_S], dtype=tl.float32)
    row_start = i_p * rows_per_prog
    row_end = tl.minimum(row_start + rows_per_prog, n_rows)
    # STAGES > 1: the compiler's software pipeline prefetches the next rows (cp.async into shared
    # memory) while this one is computed; 1: each row's loads wait for the previous row's stores
    for r in tl.range(0, row_end - row_start, num_stages=STAGES):
        i_row = row_start + r
        base = i_row.to(tl.int64) * D
        b_s = tl.load(S + base + o_tile, mask=m_tile, other=0.0).to(tl.float32)
        b_rstd = tl.load(RSTD + i_row.to(tl.int64) * NG + o_g, mask=o_g < NG, other=0.0)
        b_dy = tl.load(DY + base + o_tile, mask=m_tile, other=0.0).to(tl.float32)
        if HAS_GATE:
            b_z = tl.load(GATE + base + o_tile, mask=m_tile, other=0.0).to(tl.float32)
            b_sig = tl.sigmoid(b_z)
            b_silu = b_z * b_sig
            b_h = b_s * b_silu
        else:
            b_h = b_s
        b_hn = b_h * b_rstd[:, None]
        b_dw += b_dy * b_hn
        b_dhn = b_dy * b_w
        b_c = tl.sum(b_dhn * b_hn, axis=1) / GS
        b_dh = (b_dhn - b_hn * b_c[:, None]) * b_rstd[:, None]
        if HAS_GATE:
            b_ds = b_dh * b_silu
            b_dz = b_dh * b_s * b_sig * (1.0 + b_z * (1.0 - b_sig))
            tl.store(DGATE + base + o_tile, b_dz.to(DGATE.dtype.element_ty), mask=m_tile)
        else:
            b_ds = b_dh
        if HAS_DRES_OUT:
            b_ds += tl.load(DRES_OUT + base + o_tile, mask=m_tile, other=0.0).to(tl.float32)
        tl.store(DX + base + o_tile, b_ds.to(DX.dtype.element_ty), mask=m_tile)
        if HAS_DRES:
            tl.store(DRES + base + o_tile, b_ds.to(DRES.dtype.element_ty), mask=m_tile)
    tl.store(DW_PART + i_p.to(tl.int64) * D + o_tile, b_dw, mask=m_tile)


# Programs per SM of the persistent grid, and warps per program (None: num_warps_for(dim), the
# forward's choice). scripts/bench_kernels_mamba2.py times variants of both (kernels/NOTES.md).
# H200, 2026-12-02, d 2048, 16K rows, bwd ms gated / +residual: (8/SM, 4 warps) 0.251 / 0.211;
# (4/SM, 8 warps: the former default) 0.253 / 0.355; (2/SM, 16) 0.217 / 0.307; (16/SM, 4) 0.427
# / 0.424; (8/SM, 8) 0.367 / 0.370. num_stages: the row loop's software-pipeline depth (1: none,
# as measured above; 2-3 prefetch rows through shared memory, 24 KB (gated) / 45 KB (+residual)
# per program at 3; compile_check --sass shows the loads become LDGSTS). Same run, 2026-12-02:
# (8/SM, 4 warps) 1 stage 0.504 / 0.364, 2 stages 0.249 / 0.258, 3 stages 0.295 / 0.301;
# (4/SM, 8 warps, 2) 0.244 / 0.402; (2/SM, 16, 2) 0.275 / 0.265 (floors 0.079 / 0.111).
BWD_CFG = dict(programs_per_sm=8, num_warps=4, num_stages=2)


def _num_programs(device, n_rows):
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return max(1, min(n_rows, BWD_CFG["programs_per_sm"] * sms))
    return max(1, min(n_rows, 4))


def rms_norm_bwd(s2, gate2, weight, rstd, dy2, dres_out2, x_dtype, res_dtype, group_size, has_res):
    """Returns dx, dres (or None), dgate (or None), dweight; all (M, D) except dweight (D,)."""
    n_rows, dim = s2.shape
    ngroups, block_g, block_s = tile_shape(dim, group_size)
    dx = torch.empty(n_rows, dim, device=s2.device, dtype=x_dtype)
    dres = torch.empty(n_rows, dim, device=s2.device, dtype=res_dtype) if has_res else None
    dgate = torch.empty(n_rows, dim, device=s2.device, dtype=gate2.dtype) if gate2 is not None else None
    nprog = _num_programs(s2.device, n_rows)
    rows_per_prog = triton.cdiv(n_rows, nprog)
    nprog = triton.cdiv(n_rows, rows_per_prog)
    dw_part = torch.empty(nprog, dim, device=s2.device, dtype=torch.float32)
    _rms_norm_bwd_kernel[(nprog,)](
        s2, gate2, weight, rstd, dy2, dres_out2, dx, dres, dgate, dw_part, n_rows, rows_per_prog,
        D=dim, GS=group_size, NG=ngroups, BLOCK_G=block_g, BLOCK_S=block_s,
        HAS_GATE=gate2 is not None, HAS_DRES_OUT=dres_out2 is not None, HAS_DRES=has_res,
        STAGES=BWD_CFG["num_stages"], num_warps=BWD_CFG["num_warps"] or num_warps_for(dim),
    )
    return dx, dres, dgate, dw_part.sum(0).to(weight.dtype)
