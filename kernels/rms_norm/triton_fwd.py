"""RMSNorm forward in Triton: one pass over each row, residual add and SiLU gate fused.

A row of D features is held as a (groups, group_size) tile, so group_size (Mamba-2's
RMSNormGated with ngroups > 1) costs nothing extra: the mean of squares is reduced along axis 1.
Saved for backward: rstd per (row, group) in fp32; the pre-gate sum s is the residual output
when a residual is given (no extra write), otherwise x itself.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _fwd_row(X, RES, GATE, Y, RES_OUT, RSTD, i_row, b_w, o_g, o_tile, m_tile, eps,
             D: tl.constexpr, GS: tl.constexpr, NG: tl.constexpr,
             HAS_RES: tl.constexpr, HAS_GATE: tl.constexpr):
    """One row: s = x (+ residual, stored), h = s (· silu(z)), y = h · rstd · w, and rstd."""
    base = i_row.to(tl.int64) * D
    b_s = tl.load(X + base + o_tile, mask=m_tile, other=0.0).to(tl.float32)
    if HAS_RES:
        b_s += tl.load(RES + base + o_tile, mask=m_tile, other=0.0).to(tl.float32)
        tl.store(RES_OUT + base + o_tile, b_s.to(RES_OUT.dtype.element_ty), mask=m_tile)
    b_h = b_s
    if HAS_GATE:
        b_z = tl.load(GATE + base + o_tile, mask=m_tile, other=0.0).to(tl.float32)
        b_h = b_s * b_z * tl.sigmoid(b_z)
    b_rstd = 1.0 / tl.sqrt(tl.sum(b_h * b_h, axis=1) / GS + eps)  # (BLOCK_G,)
    b_y = b_h * b_rstd[:, None] * b_w
    tl.store(Y + base + o_tile, b_y.to(Y.dtype.element_ty), mask=m_tile)
    tl.store(RSTD + i_row.to(tl.int64) * NG + o_g, b_rstd, mask=o_g < NG)


@triton.jit
def _rms_norm_fwd_kernel(
    X, RES, GATE, W, Y, RES_OUT, RSTD,
    n_rows, eps,
    D: tl.constexpr, GS: tl.constexpr, NG: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_S: tl.constexpr, ROWS: tl.constexpr,
    HAS_RES: tl.constexpr, HAS_GATE: tl.constexpr, STAGES: tl.constexpr,
):
    i_p = tl.program_id(0)
    o_g = tl.arange(0, BLOCK_G)
    o_s = tl.arange(0, BLOCK_S)
    m_tile = (o_g[:, None] < NG) & (o_s[None, :] < GS)
    o_tile = o_g[:, None] * GS + o_s[None, :]  # (BLOCK_G, BLOCK_S) feature index
    b_w = tl.load(W + o_tile, mask=m_tile, other=0.0).to(tl.float32)
    if STAGES == 1:  # the measured kernel: rows one after the other
        for r in range(ROWS):
            i_row = i_p * ROWS + r
            if i_row < n_rows:
                _fwd_row(X, RES, GATE, Y, RES_OUT, RSTD, i_row, b_w, o_g, o_tile, m_tile, eps,
                         D, GS, NG, HAS_RES, HAS_GATE)
    else:  # software-pipelined: the next rows' loads are prefetched (cp.async) during this one
        for r in tl.range(0, tl.minimum(ROWS, n_rows - i_p * ROWS), num_stages=STAGES):
            _fwd_row(X, RES, GATE, Y, RES_OUT, RSTD, i_p * ROWS + r, b_w, o_g, o_tile, m_tile, eps,
                     D, GS, NG, HAS_RES, HAS_GATE)


def tile_shape(dim: int, group_size: int):
    ngroups = dim // group_size
    return ngroups, triton.next_power_of_2(ngroups), triton.next_power_of_2(group_size)


# rows: rows per program (None: rows_per_program's choice, 4 at d 2048); num_stages: the row
# loop's software-pipeline depth (1: rows one after the other; 2 prefetches the next row's loads
# while this one reduces). H200, 2026-12-02, d 2048, 16K rows, fwd ms gated / +residual:
# 1 stage 0.128 / 0.160; 4 rows, 2 stages 0.060 / 0.106; 8 rows, 2 stages 0.061 / 0.109;
# 16 rows, 3 stages 0.068 / 0.110 (bench_kernels_mamba2.py; floors 0.047 / 0.095).
FWD_CFG = dict(rows=None, num_stages=2)


def rows_per_program(n_rows: int, dim: int) -> int:
    # small rows: several per program so each program moves >= ~16 KB and the launch stays short
    if FWD_CFG["rows"]:
        return max(1, min(FWD_CFG["rows"], n_rows))
    return max(1, min(16, 8192 // max(dim, 1), n_rows))


def num_warps_for(dim: int) -> int:
    return 4 if dim <= 1024 else (8 if dim <= 4096 else 16)


def rms_norm_fwd(x2, weight, eps, res2, gate2, res_dtype, group_size):
    """x2, res2, gate2: (M, D) contiguous. Returns y (M, D), res_out (M, D) or None, rstd (M, G)."""
    n_rows, dim = x2.shape
    ngroups, block_g, block_s = tile_shape(dim, group_size)
    y = torch.empty_like(x2)
    res_out = torch.empty(n_rows, dim, device=x2.device, dtype=res_dtype) if res2 is not None else None
    rstd = torch.empty(n_rows, ngroups, device=x2.device, dtype=torch.float32)
    rows = rows_per_program(n_rows, dim)
    grid = (triton.cdiv(n_rows, rows),)
    _rms_norm_fwd_kernel[grid](
        x2, res2, gate2, weight, y, res_out, rstd, n_rows, eps,
        D=dim, GS=group_size, NG=ngroups, BLOCK_G=block_g, BLOCK_S=block_s, ROWS=rows,
        HAS_RES=res2 is not None, HAS_GATE=gate2 is not None, STAGES=FWD_CFG["num_stages"],
        num_warps=num_warps_for(dim),
    )
    return y, res_out, rstd
