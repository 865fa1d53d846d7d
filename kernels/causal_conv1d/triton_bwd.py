"""Depthwise causal conv1d backward in Triton, one pass.

A program owns a tile of input positions p (including the W-1 positions of initial_state, p < 0)
and computes, for each tap k, the output position t = p + W-1-k it feeds:
    dpre[t] = dy[t] · silu'(pre[t])      (pre[t] recomputed from x: W shifted loads, cache hits)
    dx[p]  += w[k] · dpre[t]             dw[k] += Σ_p dpre[t] · x[p]          dbias = Σ_t dpre[t]
so every input of the reverse conv comes from x and dy, and nothing but dx (and small dw/dbias
partials per program) is written.

Two kernels compute this. `_conv_bwd_kernel` (version 1, any width) recomputes each of the W
pre-activations it needs from W shifted loads of x: W² + 1 tile loads of x and W of dy per tile.
`_conv_bwd4_kernel` (version 2, width 4, what every model uses) loads the 2W-1 = 7 shifted x
tiles once and forms the four pre-activations from registers, with the tile addresses computed
once and moved by a scalar offset per shift: 7 + 4 tile loads instead of 21, and no W² address
and mask arithmetic. Version 2 is opt-in (BYTELM_CONV_BWD=v2) until it has been checked against
the reference on a GPU (Triton 3.6 miscompiles some kernels on Hopper); version 1 is the default.
"""

from __future__ import annotations


import torch
import triton
import triton.language as tl

from bytelm.kernels.dispatch import env_choice
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

BWD4_TILE = {True: (16, 128, 4), False: (64, 32, 4)}   # (BLOCK_L, BLOCK_D, warps) by channel-last
BWD4_TILES_PER_PROGRAM = 16                              # 256 (channel-last) positions a program


@triton.jit
def _x_at(p_x0, p_i0, o_p, r, m_d, L, s_xl, s_il, HAS_INIT: tl.constexpr):
    """x at positions o_p + r for one tile: p_x0 / p_i0 are the tile's pointers at shift 0 into x
    and into initial_state (whose column j holds position j - 3), so a shift is a scalar offset."""
    o_q = o_p + r
    m_x = (o_q[:, None] >= 0) & (o_q[:, None] < L) & m_d[None, :]
    b_x = tl.load(p_x0 + r * s_xl, mask=m_x, other=0.0).to(tl.float32)
    if HAS_INIT:
        m_i = (o_q[:, None] < 0) & (o_q[:, None] >= -3) & m_d[None, :]
        b_x += tl.load(p_i0 + r * s_il, mask=m_i, other=0.0).to(tl.float32)
    return b_x


@triton.jit
def _dpre_at(SEG, i_b, o_p, s, b_pre, b_segp, m_d, o_dy, L, s_gl,
             HAS_SEG: tl.constexpr, SILU: tl.constexpr):
    """dL/dpre at the outputs o_p + s, zeroed where that output is outside [0, L) or in another
    document than the input o_p (so it contributes nothing to dx[o_p] or dw)."""
    o_t = o_p + s
    m_t = (o_t >= 0) & (o_t < L)
    b_dpre = tl.load(o_dy + s * s_gl, mask=m_t[:, None] & m_d[None, :], other=0.0).to(tl.float32)
    if SILU:
        b_sig = tl.sigmoid(b_pre)
        b_dpre = b_dpre * b_sig * (1.0 + b_pre * (1.0 - b_sig))
    if HAS_SEG:
        b_dpre = tl.where((_load_seg(SEG, i_b, o_t, L) == b_segp)[:, None], b_dpre, 0.0)
    return b_dpre


@triton.jit
def _conv_bwd4_kernel(
    X, WEIGHT, BIAS, INIT, SEG, DY, DX, DINIT, DW_PART, DB_PART,
    L, DIM,
    s_xb, s_xd, s_xl, s_ib, s_id, s_il, s_gb, s_gd, s_gl, s_dxb, s_dxd, s_dxl, s_db, s_dd, s_dl,
    BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, TILES: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEG: tl.constexpr, SILU: tl.constexpr,
):
    """Width 4. A program walks TILES tiles of BLOCK_L input positions o_p (the first from -3:
    initial_state's columns) and shifts r = -3..3:
        pre[o_p + s] = bias + sum_k w_k x[o_p + s - 3 + k]          s = 0..3
        dx[o_p]      = sum_s w_{3-s} dpre[o_p + s]      dw_{3-s} += sum_p dpre[o_p + s] x[o_p]
    with the segment rule applied to the taps of pre (as in the forward) and to dpre; dw and
    dbias are summed over the program's tiles in registers and stored once."""
    i_c, i_d, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    n_c = tl.num_programs(0)
    i_b = i_b.to(tl.int64)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_d = o_d < DIM
    w0 = tl.load(WEIGHT + o_d * 4 + 0, mask=m_d, other=0.0).to(tl.float32)[None, :]
    w1 = tl.load(WEIGHT + o_d * 4 + 1, mask=m_d, other=0.0).to(tl.float32)[None, :]
    w2 = tl.load(WEIGHT + o_d * 4 + 2, mask=m_d, other=0.0).to(tl.float32)[None, :]
    w3 = tl.load(WEIGHT + o_d * 4 + 3, mask=m_d, other=0.0).to(tl.float32)[None, :]
    b_bias = tl.zeros([1, BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        b_bias = tl.load(BIAS + o_d, mask=m_d, other=0.0).to(tl.float32)[None, :]
    acc_w0 = tl.zeros([BLOCK_D], dtype=tl.float32)
    acc_w1 = tl.zeros([BLOCK_D], dtype=tl.float32)
    acc_w2 = tl.zeros([BLOCK_D], dtype=tl.float32)
    acc_w3 = tl.zeros([BLOCK_D], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK_D], dtype=tl.float32)
    for it in range(TILES):
        o_p = (i_c * TILES + it) * BLOCK_L + tl.arange(0, BLOCK_L) - 3
        # tile pointers at shift 0; shifting by r adds the scalar r * stride
        p_x0 = X + i_b * s_xb + o_d[None, :].to(tl.int64) * s_xd + o_p[:, None].to(tl.int64) * s_xl
        if HAS_INIT:
            p_i0 = INIT + i_b * s_ib + o_d[None, :].to(tl.int64) * s_id + (o_p[:, None] + 3).to(tl.int64) * s_il
        else:
            p_i0 = p_x0  # not read
        o_dy = DY + i_b * s_gb + o_d[None, :].to(tl.int64) * s_gd + o_p[:, None].to(tl.int64) * s_gl
        x_m3 = _x_at(p_x0, p_i0, o_p, -3, m_d, L, s_xl, s_il, HAS_INIT)
        x_m2 = _x_at(p_x0, p_i0, o_p, -2, m_d, L, s_xl, s_il, HAS_INIT)
        x_m1 = _x_at(p_x0, p_i0, o_p, -1, m_d, L, s_xl, s_il, HAS_INIT)
        x_0 = _x_at(p_x0, p_i0, o_p, 0, m_d, L, s_xl, s_il, HAS_INIT)
        x_1 = _x_at(p_x0, p_i0, o_p, 1, m_d, L, s_xl, s_il, HAS_INIT)
        x_2 = _x_at(p_x0, p_i0, o_p, 2, m_d, L, s_xl, s_il, HAS_INIT)
        x_3 = _x_at(p_x0, p_i0, o_p, 3, m_d, L, s_xl, s_il, HAS_INIT)
        b_segp = tl.zeros([BLOCK_L], dtype=tl.int32)
        if HAS_SEG:  # the output at o_p + s keeps tap x[o_p + r] when seg(o_p + r) == seg(o_p + s)
            g_m3 = _load_seg(SEG, i_b, o_p - 3, L)
            g_m2 = _load_seg(SEG, i_b, o_p - 2, L)
            g_m1 = _load_seg(SEG, i_b, o_p - 1, L)
            b_segp = _load_seg(SEG, i_b, o_p, L)
            g_1 = _load_seg(SEG, i_b, o_p + 1, L)
            g_2 = _load_seg(SEG, i_b, o_p + 2, L)
            g_3 = _load_seg(SEG, i_b, o_p + 3, L)
            pre0 = b_bias + w0 * tl.where((g_m3 == b_segp)[:, None], x_m3, 0.0) \
                + w1 * tl.where((g_m2 == b_segp)[:, None], x_m2, 0.0) \
                + w2 * tl.where((g_m1 == b_segp)[:, None], x_m1, 0.0) + w3 * x_0
            pre1 = b_bias + w0 * tl.where((g_m2 == g_1)[:, None], x_m2, 0.0) \
                + w1 * tl.where((g_m1 == g_1)[:, None], x_m1, 0.0) \
                + w2 * tl.where((b_segp == g_1)[:, None], x_0, 0.0) + w3 * x_1
            pre2 = b_bias + w0 * tl.where((g_m1 == g_2)[:, None], x_m1, 0.0) \
                + w1 * tl.where((b_segp == g_2)[:, None], x_0, 0.0) \
                + w2 * tl.where((g_1 == g_2)[:, None], x_1, 0.0) + w3 * x_2
            pre3 = b_bias + w0 * tl.where((b_segp == g_3)[:, None], x_0, 0.0) \
                + w1 * tl.where((g_1 == g_3)[:, None], x_1, 0.0) \
                + w2 * tl.where((g_2 == g_3)[:, None], x_2, 0.0) + w3 * x_3
        else:
            pre0 = b_bias + w0 * x_m3 + w1 * x_m2 + w2 * x_m1 + w3 * x_0
            pre1 = b_bias + w0 * x_m2 + w1 * x_m1 + w2 * x_0 + w3 * x_1
            pre2 = b_bias + w0 * x_m1 + w1 * x_0 + w2 * x_1 + w3 * x_2
            pre3 = b_bias + w0 * x_0 + w1 * x_1 + w2 * x_2 + w3 * x_3
        d0 = _dpre_at(SEG, i_b, o_p, 0, pre0, b_segp, m_d, o_dy, L, s_gl, HAS_SEG, SILU)
        d1 = _dpre_at(SEG, i_b, o_p, 1, pre1, b_segp, m_d, o_dy, L, s_gl, HAS_SEG, SILU)
        d2 = _dpre_at(SEG, i_b, o_p, 2, pre2, b_segp, m_d, o_dy, L, s_gl, HAS_SEG, SILU)
        d3 = _dpre_at(SEG, i_b, o_p, 3, pre3, b_segp, m_d, o_dy, L, s_gl, HAS_SEG, SILU)
        acc_w3 += tl.sum(d0 * x_0, axis=0)   # tap k = 3 - s
        acc_w2 += tl.sum(d1 * x_0, axis=0)
        acc_w1 += tl.sum(d2 * x_0, axis=0)
        acc_w0 += tl.sum(d3 * x_0, axis=0)
        acc_b += tl.sum(d0, axis=0)          # each output t = o_p >= 0 counted once
        b_dx = d0 * w3 + d1 * w2 + d2 * w1 + d3 * w0
        m_x = (o_p[:, None] >= 0) & (o_p[:, None] < L) & m_d[None, :]
        p_dx = DX + i_b * s_dxb + o_d[None, :].to(tl.int64) * s_dxd + o_p[:, None].to(tl.int64) * s_dxl
        tl.store(p_dx, b_dx.to(DX.dtype.element_ty), mask=m_x)
        if HAS_INIT:
            m_i = (o_p[:, None] < 0) & m_d[None, :]
            p_di = DINIT + i_b * s_db + o_d[None, :].to(tl.int64) * s_dd + (o_p[:, None] + 3).to(tl.int64) * s_dl
            tl.store(p_di, b_dx.to(DINIT.dtype.element_ty), mask=m_i)
    p_dw = DW_PART + (i_b * n_c + i_c) * 4 * DIM + o_d
    tl.store(p_dw + 0 * DIM, acc_w0, mask=m_d)
    tl.store(p_dw + 1 * DIM, acc_w1, mask=m_d)
    tl.store(p_dw + 2 * DIM, acc_w2, mask=m_d)
    tl.store(p_dw + 3 * DIM, acc_w3, mask=m_d)
    if HAS_BIAS:
        tl.store(DB_PART + (i_b * n_c + i_c) * DIM + o_d, acc_b, mask=m_d)

def conv_bwd(x, weight, bias, initial_state, seg, silu, dy):
    """Returns dx (x's layout), dweight (dim, W), dbias or None, dinitial_state or None."""
    batch, dim, seqlen = x.shape
    width = weight.shape[1]
    v2 = width == 4 and env_choice("BYTELM_CONV_BWD", ("v1", "v2", "roll"), "version 1") == "v2"
    # version 2 holds 7 shifted x tiles and 4 pre-activations at once: 16 fp32 values per
    # thread and tile (BWD4_TILE), not the forward's 32 (tile_for)
    bl, bd, nw = (BWD4_TILE[x.stride(1) == 1] if v2 else tile_for(x))
    n_l = triton.cdiv(seqlen + width - 1, bl)
    tiles = 1
    if v2:  # each program walks `tiles` tiles, so dw/dbias partials stay small (S/512 at most)
        tiles = max(1, min(BWD4_TILES_PER_PROGRAM, n_l))
        n_l = triton.cdiv(n_l, tiles)
    grid = (n_l, triton.cdiv(dim, bd), batch)
    dx = like_layout(x)
    dinit = torch.empty_like(initial_state) if initial_state is not None else None
    dw_part = torch.empty(batch * n_l, width, dim, device=x.device, dtype=torch.float32)
    db_part = torch.empty(batch * n_l, dim, device=x.device, dtype=torch.float32) if bias is not None else None
    args = (x, weight, bias, initial_state, seg, dy, dx, dinit, dw_part, db_part, seqlen, dim,
            *x.stride(), *(initial_state.stride() if initial_state is not None else (0, 0, 0)),
            *dy.stride(), *dx.stride(), *(dinit.stride() if dinit is not None else (0, 0, 0)))
    flags = dict(HAS_BIAS=bias is not None, HAS_INIT=initial_state is not None,
                 HAS_SEG=seg is not None, SILU=silu)
    if v2:
        _conv_bwd4_kernel[grid](*args, BLOCK_L=bl, BLOCK_D=bd, TILES=tiles, **flags, num_warps=nw)
    else:
        _conv_bwd_kernel[grid](*args, W=width, BLOCK_L=bl, BLOCK_D=bd, **flags, num_warps=nw)
    dw = dw_part.sum(0).t().to(weight.dtype)
    db = db_part.sum(0).to(bias.dtype) if bias is not None else None
    return dx, dw, db, dinit
