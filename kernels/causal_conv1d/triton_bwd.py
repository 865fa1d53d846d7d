"""Depthwise causal conv1d backward in Triton, one pass.

A program owns a tile of input positions p (including the W-1 positions of initial_state, p < 0)
and computes, for each tap k, the output position t = p + W-1-k it feeds:
    dpre[t] = dy[t] · silu'(pre[t])      (pre[t] recomputed from x: W shifted loads, cache hits)
    dx[p]  += w[k] · dpre[t]             dw[k] += Σ_p dpre[t] · x[p]          dbias = Σ_t dpre[t]
so every input of the reverse conv comes from x and dy, and nothing but dx (and small dw/dbias
partials per program) is written.

`_conv_bwd_kernel` (version 1, any width) recomputes each of the W pre-activations it needs
from W shifted loads of x: W² + 1 tile loads of x and W of dy per tile. A width-4 version 2 that
loaded the 2W-1 shifted tiles once (2026-12-01) tied with it on the H200 (0.745 ms both: both
are register-bound, 255 registers and spills in the sm_90 compile, kernels/NOTES.md) and was
removed; the rolling version 3 (triton_roll.py, BYTELM_CONV_BWD=roll) replaces it.
"""

from __future__ import annotations


import torch
import triton
import triton.language as tl

from bytelm.kernels.causal_conv1d.triton_fwd import _load_seg, _load_tap, like_layout, tile_for


@triton.jit
def _conv_bwd_kernel(
    X, WEIGHT, BIAS, INIT, SEG, DY, DX, DINIT, DW_PART, DB_PART,
    L, DIM,
    s_xb, s_xd, s_xl, s_ib, s_id, s_il, s_gb, s_gd, s_gl, s_dxb, s_dxd, s_dxl, s_db, s_dd, s_dl,
    W: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEG: tl.constexpr, SILU: tl.constexpr,
):
    i_l, i_d, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    n_l = tl.num_programs(0)
    i_b = i_b.to(tl.int64)
    o_p = i_l * BLOCK_L + tl.arange(0, BLOCK_L) - (W - 1)  # input positions, from -(W-1)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_d = o_d < DIM
    b_xp = _load_tap(X, INIT, i_b, o_p, o_d, m_d, L, s_xb, s_xd, s_xl, s_ib, s_id, s_il, W, HAS_INIT)
    if HAS_SEG:
        b_segp = _load_seg(SEG, i_b, o_p, L)
    b_bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        b_bias = tl.load(BIAS + o_d, mask=m_d, other=0.0).to(tl.float32)
    b_dx = tl.zeros([BLOCK_L, BLOCK_D], dtype=tl.float32)
    p_dw = DW_PART + (i_b * n_l + i_l) * W * DIM + o_d
    for k2 in tl.static_range(W):
        o_t = o_p + (W - 1) - k2  # the output this input feeds through tap k2
        m_t = (o_t >= 0) & (o_t < L)
        p_dy = DY + i_b * s_gb + o_d[None, :].to(tl.int64) * s_gd + o_t[:, None].to(tl.int64) * s_gl
        b_dpre = tl.load(p_dy, mask=m_t[:, None] & m_d[None, :], other=0.0).to(tl.float32)
        if HAS_SEG:
            b_segt = _load_seg(SEG, i_b, o_t, L)
        if SILU:
            b_pre = tl.zeros([BLOCK_L, BLOCK_D], dtype=tl.float32) + b_bias[None, :]
            for k in tl.static_range(W):
                o_q = o_t - (W - 1) + k
                b_x = _load_tap(X, INIT, i_b, o_q, o_d, m_d, L, s_xb, s_xd, s_xl, s_ib, s_id, s_il,
                                W, HAS_INIT)
                if HAS_SEG:
                    b_x = tl.where((_load_seg(SEG, i_b, o_q, L) == b_segt)[:, None], b_x, 0.0)
                b_w = tl.load(WEIGHT + o_d * W + k, mask=m_d, other=0.0).to(tl.float32)
                b_pre += b_x * b_w[None, :]
            b_sig = tl.sigmoid(b_pre)
            b_dpre = b_dpre * b_sig * (1.0 + b_pre * (1.0 - b_sig))
        if HAS_SEG:
            b_dpre = tl.where((b_segt == b_segp)[:, None], b_dpre, 0.0)
        b_w2 = tl.load(WEIGHT + o_d * W + k2, mask=m_d, other=0.0).to(tl.float32)
        b_dx += b_dpre * b_w2[None, :]
        tl.store(p_dw + k2 * DIM, tl.sum(b_dpre * b_xp, axis=0), mask=m_d)
        if k2 == W - 1:  # t == p: each output counted once for dbias
            if HAS_BIAS:
                tl.store(DB_PART + (i_b * n_l + i_l) * DIM + o_d, tl.sum(b_dpre, axis=0), mask=m_d)
    m_x = (o_p[:, None] >= 0) & (o_p[:, None] < L) & m_d[None, :]
    p_dx = DX + i_b * s_dxb + o_d[None, :].to(tl.int64) * s_dxd + o_p[:, None].to(tl.int64) * s_dxl
    tl.store(p_dx, b_dx.to(DX.dtype.element_ty), mask=m_x)
    if HAS_INIT:
        o_j = o_p + (W - 1)
        m_i = (o_p[:, None] < 0) & m_d[None, :]
        p_di = DINIT + i_b * s_db + o_d[None, :].to(tl.int64) * s_dd + o_j[:, None].to(tl.int64) * s_dl
        tl.store(p_di, b_dx.to(DINIT.dtype.element_ty), mask=m_i)

def conv_bwd(x, weight, bias, initial_state, seg, silu, dy):
    """Returns dx (x's layout), dweight (dim, W), dbias or None, dinitial_state or None."""
    batch, dim, seqlen = x.shape
    width = weight.shape[1]
    bl, bd, nw = tile_for(x)
    n_l = triton.cdiv(seqlen + width - 1, bl)
    grid = (n_l, triton.cdiv(dim, bd), batch)
    dx = like_layout(x)
    dinit = torch.empty_like(initial_state) if initial_state is not None else None
    dw_part = torch.empty(batch * n_l, width, dim, device=x.device, dtype=torch.float32)
    db_part = torch.empty(batch * n_l, dim, device=x.device, dtype=torch.float32) if bias is not None else None
    _conv_bwd_kernel[grid](
        x, weight, bias, initial_state, seg, dy, dx, dinit, dw_part, db_part, seqlen, dim,
        *x.stride(), *(initial_state.stride() if initial_state is not None else (0, 0, 0)),
        *dy.stride(), *dx.stride(), *(dinit.stride() if dinit is not None else (0, 0, 0)),
        W=width, BLOCK_L=bl, BLOCK_D=bd, HAS_BIAS=bias is not None, HAS_INIT=initial_state is not None,
        HAS_SEG=seg is not None, SILU=silu, num_warps=nw)
    dw = dw_part.sum(0).t().to(weight.dtype)
    db = db_part.sum(0).to(bias.dtype) if bias is not None else None
    return dx, dw, db, dinit
