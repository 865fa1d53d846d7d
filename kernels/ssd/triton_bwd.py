"""Mamba-2 SSD backward in Triton: three launches plus a few elementwise torch ops.

Notation per chunk c of Q tokens and head h (as in triton_fwd.py): cum_t = Σ_{u≤t} dt_u·A inside
the chunk, S_c the state entering chunk c (saved by the forward, the only (P, N) tensors kept),
dY the gradient of the ungated output. The forward is
    Y_t   = Σ_{s≤t} (C_t·B_s) e^{cum_t − cum_s} dt_s x_s  +  e^{cum_t} S_c C_t  +  D x_t
    S_c+1 = e^{cum_end} S_c + Σ_s e^{cum_end − cum_s} dt_s x_s ⊗ B_s
1. _dstate_local: per (chunk, batch·head): dS_loc_c = Σ_t e^{cum_t} dY_t ⊗ C_t, one (P, Q)·(Q, N) dot.
2. _dstate_pass:  per (batch·head, block of P·N): walks the chunks backwards, G_c+1 (the gradient of
                  the state leaving chunk c) overwrites dS_loc_c; the chunk decay's gradient
                  e^{cum_end}·<G_c+1, S_c>; writes d initial_state = G_0.
3. _chunk_bwd:    per (block of BLOCK_Q tokens, batch·head), the block both as queries t (dC and
                  the row sums of dcum, looping over source blocks s ≤ t) and as sources s (dx, dB,
                  the explicit ddt and the column sums of dcum, looping over query blocks t ≥ s),
                  plus the carried-in state (S_c) and carried-out state (G_c+1) terms and D.
                  dB and dC are summed over the heads of a group with fp32 atomic adds.
Then torch, in float64: d(dt·A) from the kernel's rectangle sums (BWD_CFG["rect_dA"]) and the
reverse cumsum of the carried-state terms inside each chunk, then ddt, dA and the dt_bias /
softplus chain.
BWD_CFG["grouped"] (opt-in) replaces step 3 by a kernel per group and block pair that computes
C·B^T, dB and dC once for a run of heads, a kernel for dx per head, and a float64 tail kernel for
d(dt·A) (see BWD_CFG). seq_idx masks exactly the terms the forward masks.

Status: checked against the float64 reference in the CPU interpreter and at real shapes on an
H200 (tests/test_ssd_triton.py, 2026-12-02); the default training path (BYTELM_SSD_BWD=ref
selects the reference). Timings in kernels/NOTES.md.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from bytelm.kernels.ssd.triton_fwd import INTERPRET, _dot, _prec, chunk_out, tile_widths, warps


@triton.jit
def _dstate_local_kernel(
    DY, C, SEG, CUM_BUF, DSTATES,
    L, NC, H, HPG,
    s_yb, s_yl, s_yh, s_yp, s_cb, s_cl, s_cg, s_cn,
    P: tl.constexpr, N: tl.constexpr, Q: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, HAS_SEG: tl.constexpr,
    PREC: tl.constexpr, F32: tl.constexpr,
):
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_g = i_h // HPG
    i_b64 = i_b.to(tl.int64)
    o_q = tl.arange(0, Q)
    o_t = i_c * Q + o_q
    m_t = o_t < L
    o_p = tl.arange(0, BLOCK_P)
    o_n = tl.arange(0, BLOCK_N)
    b_w = tl.exp(tl.load(CUM_BUF + (i_bh.to(tl.int64) * NC + i_c) * Q + o_q))
    if HAS_SEG:
        b_seg = tl.load(SEG + i_b64 * L + o_t, mask=m_t, other=-1)
        seg_prev = tl.load(SEG + i_b64 * L + i_c * Q - 1, mask=i_c > 0, other=0)
        b_w = tl.where(b_seg == seg_prev, b_w, 0.0)
    b_w = tl.where(m_t, b_w, 0.0)
    p_dy = DY + i_b64 * s_yb + o_t[None, :].to(tl.int64) * s_yl + i_h * s_yh + o_p[:, None] * s_yp
    b_dyt = tl.load(p_dy, mask=m_t[None, :] & (o_p[:, None] < P), other=0.0).to(tl.float32)
    b_dyt = (b_dyt * b_w[None, :]).to(DY.dtype.element_ty)  # (P, Q)
    p_c = C + i_b64 * s_cb + o_t[:, None].to(tl.int64) * s_cl + i_g * s_cg + o_n[None, :] * s_cn
    b_c = tl.load(p_c, mask=m_t[:, None] & (o_n[None, :] < N), other=0.0)  # (Q, N)
    b_ds = _dot(b_dyt, b_c.to(b_dyt.dtype), PREC, F32)  # (P, N)
    p_s = DSTATES + ((i_bh.to(tl.int64) * NC + i_c) * P + o_p[:, None]) * N + o_n[None, :]
    tl.store(p_s, b_ds, mask=(o_p[:, None] < P) & (o_n[None, :] < N))


@triton.jit
def _dstate_pass_kernel(
    DSTATES, STATES, CHUNK_DECAY, DFINAL, DINIT, DDECAY, NC, PN, NK,
    BLOCK: tl.constexpr, HAS_DFINAL: tl.constexpr,
):
    i_bh, i_k = tl.program_id(0), tl.program_id(1)
    o_k = i_k * BLOCK + tl.arange(0, BLOCK)
    m_k = o_k < PN
    if HAS_DFINAL:
        b_g = tl.load(DFINAL + i_bh.to(tl.int64) * PN + o_k, mask=m_k, other=0.0).to(tl.float32)
    else:
        b_g = tl.zeros([BLOCK], dtype=tl.float32)
    o_bh = i_bh.to(tl.int64) * NC * PN + o_k
    p_dec = CHUNK_DECAY + i_bh.to(tl.int64) * NC
    # each step loads the next (earlier) chunk's tiles before it stores this one's: with one
    # chunk in flight per program the pass was latency-bound (3-6x slower, PASS_CFG)
    c = NC - 1
    b_loc_next = tl.load(DSTATES + o_bh + c * PN, mask=m_k, other=0.0)
    b_s_next = tl.load(STATES + o_bh + c * PN, mask=m_k, other=0.0)
    b_decay_next = tl.load(p_dec + c)
    for i in range(0, NC):
        c = NC - 1 - i
        b_loc, b_s, b_decay = b_loc_next, b_s_next, b_decay_next
        b_loc_next = tl.load(DSTATES + o_bh + (c - 1) * PN, mask=m_k & (c > 0), other=0.0)
        b_s_next = tl.load(STATES + o_bh + (c - 1) * PN, mask=m_k & (c > 0), other=0.0)
        b_decay_next = tl.load(p_dec + c - 1, mask=c > 0, other=0.0)
        tl.store(DSTATES + o_bh + c * PN, b_g, mask=m_k)  # now: G_{c+1}, the gradient of the state leaving c
        # d/d cum_end of e^{cum_end}·S_c is e^{cum_end}·S_c (zero where the chunk does not carry)
        tl.store(DDECAY + (i_bh.to(tl.int64) * NC + c) * NK + i_k, b_decay * tl.sum(b_g * b_s, axis=0))
        b_g = b_decay * b_g + b_loc
    tl.store(DINIT + i_bh.to(tl.int64) * PN + o_k, b_g, mask=m_k)


@triton.jit
def _d_skip_bwd(b_dx, b_dy, b_x, D, DD, i_h, o_p, m_p, P: tl.constexpr, D_PER_P: tl.constexpr):
    """The D skip (y += D·x) of one (tokens, P) tile: returns dx + D·dY; adds Σ dY·x to dD."""
    b_dyf = b_dy.to(tl.float32)
    if D_PER_P:
        b_d = tl.load(D + i_h * P + o_p, mask=m_p, other=0.0).to(tl.float32)
        tl.atomic_add(DD + i_h * P + o_p, tl.sum(b_dyf * b_x.to(tl.float32), axis=0), mask=m_p)
        return b_dx + b_dyf * b_d[None, :]
    tl.atomic_add(DD + i_h, tl.sum(tl.sum(b_dyf * b_x.to(tl.float32), axis=1), axis=0))
    return b_dx + b_dyf * tl.load(D + i_h).to(tl.float32)


@triton.jit
def _query_block(C, DY, SEG, CUM_BUF, buf0, i_ib, o_s, b_cum_s, b_seg_s, i_b64, i_c, i_h, i_g, L,
                 s_cb, s_cl, s_cg, s_cn, s_yb, s_yl, s_yh, s_yp, o_n, m_n, o_p, m_p,
                 Q: tl.constexpr, BLOCK_Q: tl.constexpr, HAS_SEG: tl.constexpr):
    """Query block i_ib of the chunk, seen from source tokens o_s: C_t (BQ, N), dY_t (BQ, P) and
    the (s, t) decay e^{cum_t − cum_s}, zero where t < s, past L or across documents
    (b_seg_s: the sources' documents; unused without HAS_SEG)."""
    o_i = tl.arange(0, BLOCK_Q)
    o_t = i_c * Q + i_ib * BLOCK_Q + o_i
    m_t = o_t < L
    b_cum_t = tl.load(CUM_BUF + buf0 + i_ib * BLOCK_Q + o_i)
    p_c = C + i_b64 * s_cb + o_t[:, None].to(tl.int64) * s_cl + i_g * s_cg + o_n[None, :] * s_cn
    b_c = tl.load(p_c, mask=m_t[:, None] & m_n[None, :], other=0.0)  # (BQ, N)
    p_dy = DY + i_b64 * s_yb + o_t[:, None].to(tl.int64) * s_yl + i_h * s_yh + o_p[None, :] * s_yp
    b_dy = tl.load(p_dy, mask=m_t[:, None] & m_p[None, :], other=0.0)  # (BQ, P)
    m_st = (o_t[None, :] >= o_s[:, None]) & m_t[None, :]
    if HAS_SEG:
        b_seg_t = tl.load(SEG + i_b64 * L + o_t, mask=m_t, other=-2)
        m_st = m_st & (b_seg_s[:, None] == b_seg_t[None, :])
    b_dec = tl.exp(tl.where(m_st, b_cum_t[None, :] - b_cum_s[:, None], -float("inf")))  # (s, t)
    return b_c, b_dy, b_dec


@triton.jit
def _carried_in_bwd(b_c, b_dy, b_s, b_in, PREC: tl.constexpr, F32: tl.constexpr):
    """One query block's terms of the state S entering the chunk ((P, N), in the dot dtype):
    the d cum_t (BQ,) and dC (BQ, N) of e^{cum_t} C_t S^T; b_in = e^{cum_t}, masked."""
    b_cs = _dot(b_c, tl.trans(b_s), PREC, F32)  # (BQ, P) = C S^T
    b_dcum_t = b_in * tl.sum(b_dy.to(tl.float32) * b_cs, axis=1)
    return b_dcum_t, _dot(b_dy, b_s.to(b_dy.dtype), PREC, F32) * b_in[:, None]


@triton.jit
def _chunk_bwd_kernel(
    X, B, C, DY, D, SEG, DT_BUF, CUM_BUF, SUF_BUF, STATES, GSTATES,
    DX, DB, DC, DD, DDT, DCUM_T, DCUM_S, DCUM_END, RECT,
    L, NC, H, HPG,
    s_xb, s_xl, s_xh, s_xp, s_bb, s_bl, s_bg, s_bn, s_cb, s_cl, s_cg, s_cn,
    s_yb, s_yl, s_yh, s_yp, s_gb, s_gl, s_gg, s_gn,
    P: tl.constexpr, N: tl.constexpr, Q: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_D: tl.constexpr, D_PER_P: tl.constexpr, HAS_SEG: tl.constexpr, RECT_DA: tl.constexpr,
    PREC: tl.constexpr, F32: tl.constexpr,
):
    i_cq, i_bh = tl.program_id(0), tl.program_id(1)
    n_qb: tl.constexpr = Q // BLOCK_Q
    i_c, i_qb = i_cq // n_qb, i_cq % n_qb
    i_b, i_h = i_bh // H, i_bh % H
    i_g = i_h // HPG
    i_b64 = i_b.to(tl.int64)
    o_i = tl.arange(0, BLOCK_Q)
    o_p = tl.arange(0, BLOCK_P)
    o_n = tl.arange(0, BLOCK_N)
    m_p, m_n = o_p < P, o_n < N
    buf0 = (i_bh.to(tl.int64) * NC + i_c) * Q
    o_s0 = (i_bh.to(tl.int64) * NC + i_c) * P * N
    # this program's block: tokens o_tb, as queries (t) and as sources (s)
    o_tb = i_c * Q + i_qb * BLOCK_Q + o_i
    m_tb = o_tb < L
    m_bp = m_tb[:, None] & m_p[None, :]
    m_bn = m_tb[:, None] & m_n[None, :]
    b_cum = tl.load(CUM_BUF + buf0 + i_qb * BLOCK_Q + o_i)
    b_dt = tl.load(DT_BUF + buf0 + i_qb * BLOCK_Q + o_i)
    p_x = X + i_b64 * s_xb + o_tb[:, None].to(tl.int64) * s_xl + i_h * s_xh + o_p[None, :] * s_xp
    p_dy = DY + i_b64 * s_yb + o_tb[:, None].to(tl.int64) * s_yl + i_h * s_yh + o_p[None, :] * s_yp
    p_b = B + i_b64 * s_bb + o_tb[:, None].to(tl.int64) * s_bl + i_g * s_bg + o_n[None, :] * s_bn
    p_c = C + i_b64 * s_cb + o_tb[:, None].to(tl.int64) * s_cl + i_g * s_cg + o_n[None, :] * s_cn
    b_x = tl.load(p_x, mask=m_bp, other=0.0)  # (BQ, P)
    b_dy = tl.load(p_dy, mask=m_bp, other=0.0)  # (BQ, P)
    b_b = tl.load(p_b, mask=m_bn, other=0.0)  # (BQ, N)
    b_c = tl.load(p_c, mask=m_bn, other=0.0)  # (BQ, N)
    b_decay_in = tl.exp(b_cum)
    b_decay_out = tl.exp(tl.load(SUF_BUF + buf0 + i_qb * BLOCK_Q + o_i))  # e^{cum_end − cum}
    if HAS_SEG:
        b_seg = tl.load(SEG + i_b64 * L + o_tb, mask=m_tb, other=-1)
        seg_prev = tl.load(SEG + i_b64 * L + i_c * Q - 1, mask=i_c > 0, other=0)
        seg_end = tl.load(SEG + i_b64 * L + tl.minimum(i_c * Q + Q, L) - 1)
        b_decay_in = tl.where(b_seg == seg_prev, b_decay_in, 0.0)
        b_decay_out = tl.where(b_seg == seg_end, b_decay_out, 0.0)
    else:
        b_seg = o_tb  # no documents: a placeholder for _query_block, unused
    b_decay_in = tl.where(m_tb, b_decay_in, 0.0)
    b_decay_out = tl.where(m_tb, b_decay_out, 0.0)

    # -- the block as queries: Y_t's gradient w.r.t. C_t and cum_t ---------------------------
    # carried-in state: Y_off_t = e^{cum_t} S C_t; S (P, N) loaded once, cast to the dot dtype
    p_s = STATES + o_s0 + o_p[:, None] * N + o_n[None, :]
    b_s = tl.load(p_s, mask=m_p[:, None] & m_n[None, :], other=0.0).to(b_c.dtype)  # (P, N)
    b_cs = _dot(b_c, tl.trans(b_s), PREC, F32)  # (BQ, P) = C_t S^T
    b_dcum_t = b_decay_in * tl.sum(b_dy.to(tl.float32) * b_cs, axis=1)
    b_dc = _dot(b_dy, b_s.to(b_dy.dtype), PREC, F32) * b_decay_in[:, None]  # (BQ, N)
    b_run = tl.zeros([BLOCK_Q], dtype=tl.float32)  # RECT_DA: Σ_s M_ts over the source blocks so far
    for i_jb in range(0, i_qb + 1):  # source blocks s <= t
        o_tj = i_c * Q + i_jb * BLOCK_Q + o_i
        m_tj = o_tj < L
        b_cum_j = tl.load(CUM_BUF + buf0 + i_jb * BLOCK_Q + o_i)
        b_dt_j = tl.load(DT_BUF + buf0 + i_jb * BLOCK_Q + o_i)
        p_bj = B + i_b64 * s_bb + o_tj[:, None].to(tl.int64) * s_bl + i_g * s_bg + o_n[None, :] * s_bn
        b_bj = tl.load(p_bj, mask=m_tj[:, None] & m_n[None, :], other=0.0)  # (BQ, N)
        p_xj = X + i_b64 * s_xb + o_tj[None, :].to(tl.int64) * s_xl + i_h * s_xh + o_p[:, None] * s_xp
        b_xjt = tl.load(p_xj, mask=m_tj[None, :] & m_p[:, None], other=0.0)  # (P, BQ)
        m_ij = (o_tb[:, None] >= o_tj[None, :]) & m_tj[None, :]
        if HAS_SEG:
            b_seg_j = tl.load(SEG + i_b64 * L + o_tj, mask=m_tj, other=-2)
            m_ij = m_ij & (b_seg[:, None] == b_seg_j[None, :])
        b_dec = tl.exp(tl.where(m_ij, b_cum[:, None] - b_cum_j[None, :], -float("inf")))
        b_dyx = _dot(b_dy, b_xjt.to(b_dy.dtype), PREC, F32)  # (BQ_t, BQ_s) = dY_t · x_s
        b_cb = _dot(b_c, tl.trans(b_bj).to(b_c.dtype), PREC, F32)  # (BQ_t, BQ_s) = C_t · B_s
        b_wdx = b_dyx * b_dec * b_dt_j[None, :]
        b_m = b_wdx * b_cb  # M_ts: d out / d (cum_t - cum_s)
        if RECT_DA:
            # d(dt·A)_u gets Σ_{t ≥ u > s} M_ts: for u in block j, the row sums over the earlier
            # source blocks (b_run) plus the exclusive prefix sum inside block j, summed over
            # this block's t ≥ u; summed over t-blocks (programs) by the caller
            b_pre = tl.cumsum(b_m, axis=1) - b_m + b_run[:, None]
            b_pre = tl.where(o_tb[:, None] >= o_tj[None, :], b_pre, 0.0)
            p_rect = RECT + ((i_bh.to(tl.int64) * NC + i_c) * n_qb + i_qb) * Q + i_jb * BLOCK_Q + o_i
            tl.store(p_rect, tl.sum(b_pre, axis=0))
            b_run += tl.sum(b_m, axis=1)
        else:
            b_dcum_t += tl.sum(b_m, axis=1)
        b_dc += _dot(b_wdx.to(b_bj.dtype), b_bj, PREC, F32)

    # -- the block as sources: the gradient of every term that reads x_s, B_s, dt_s ----------
    # carried-out state: S_c+1 gets e^{cum_end − cum_s} dt_s x_s ⊗ B_s; G = G_{c+1} (P, N)
    p_g = GSTATES + o_s0 + o_p[:, None] * N + o_n[None, :]
    b_g = tl.load(p_g, mask=m_p[:, None] & m_n[None, :], other=0.0).to(b_b.dtype)  # (P, N)
    b_gb = _dot(b_b, tl.trans(b_g), PREC, F32)  # (BQ, P) = G B_s
    b_xg = _dot(b_x, b_g.to(b_x.dtype), PREC, F32)  # (BQ, N) = x_s^T G
    b_f = b_decay_out * b_dt
    b_e = b_decay_out * tl.sum(b_x.to(tl.float32) * b_gb, axis=1)  # d/d dt_s (explicit)
    b_dx = b_gb * b_f[:, None]
    b_db = b_xg * b_f[:, None]
    b_ddt = b_e
    b_dcum_s = -b_e * b_dt
    if not RECT_DA:  # else the caller sums -dcum_s (only these terms then) in float64
        tl.atomic_add(DCUM_END + i_bh.to(tl.int64) * NC + i_c, tl.sum(b_e * b_dt, axis=0))
    for i_ib in range(i_qb, n_qb):  # query blocks t >= s
        b_ci, b_dyi, b_dec = _query_block(
            C, DY, SEG, CUM_BUF, buf0, i_ib, o_tb, b_cum, b_seg, i_b64, i_c, i_h, i_g, L,
            s_cb, s_cl, s_cg, s_cn, s_yb, s_yl, s_yh, s_yp, o_n, m_n, o_p, m_p, Q, BLOCK_Q, HAS_SEG)
        b_bc = _dot(b_b, tl.trans(b_ci).to(b_b.dtype), PREC, F32)  # (BQ_s, BQ_t) = B_s · C_t
        b_xdy = _dot(b_x, tl.trans(b_dyi).to(b_x.dtype), PREC, F32)  # (BQ_s, BQ_t) = x_s · dY_t
        b_k = b_bc * b_dec  # (s, t)
        b_dx += _dot((b_k * b_dt[:, None]).to(b_dyi.dtype), b_dyi, PREC, F32)
        b_db += _dot((b_xdy * b_dec * b_dt[:, None]).to(b_ci.dtype), b_ci, PREC, F32)
        b_kx = tl.sum(b_k * b_xdy, axis=1)
        b_ddt += b_kx
        if not RECT_DA:
            b_dcum_s -= b_kx * b_dt
    if HAS_D:
        b_dx = _d_skip_bwd(b_dx, b_dy, b_x, D, DD, i_h, o_p, m_p, P, D_PER_P)

    p_dx = DX + i_b64 * s_xb + o_tb[:, None].to(tl.int64) * s_xl + i_h * s_xh + o_p[None, :] * s_xp
    tl.store(p_dx, b_dx.to(DX.dtype.element_ty), mask=m_bp)
    # dB, dC: (batch, L, G, N) fp32, summed over the group's heads
    p_db = DB + i_b64 * s_gb + o_tb[:, None].to(tl.int64) * s_gl + i_g * s_gg + o_n[None, :] * s_gn
    tl.atomic_add(p_db, b_db, mask=m_bn)
    p_dc = DC + i_b64 * s_gb + o_tb[:, None].to(tl.int64) * s_gl + i_g * s_gg + o_n[None, :] * s_gn
    tl.atomic_add(p_dc, b_dc, mask=m_bn)
    o_buf = buf0 + i_qb * BLOCK_Q + o_i
    tl.store(DDT + o_buf, b_ddt)
    tl.store(DCUM_T + o_buf, b_dcum_t)
    tl.store(DCUM_S + o_buf, b_dcum_s)


@triton.jit
def _chunk_bwd_group_kernel(
    X, B, C, DY, SEG, DT_BUF, CUM_BUF, SUF_BUF, STATES, GSTATES,
    DB, DC, ROWS, COLS, DIAG, DCUM_T,
    L, NC, H, HPG, HPP,
    s_xb, s_xl, s_xh, s_xp, s_bb, s_bl, s_bg, s_bn, s_cb, s_cl, s_cg, s_cn,
    s_yb, s_yl, s_yh, s_yp, s_gb, s_gl, s_gg, s_gn,
    P: tl.constexpr, N: tl.constexpr, Q: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, HAS_SEG: tl.constexpr,
    STATE_HERE: tl.constexpr, PREC: tl.constexpr, F32: tl.constexpr,
):
    """BWD_CFG["grouped"], part 1: per (chunk, query block i, batch, group, run of HPP heads).
    C_i·B_j^T once per block pair for the run's heads; per head only dY_i·x_j^T and elementwise
    work; dcb = Σ_h W_h (W = dY·x^T·decay·dt) then feeds one dC and one dB dot per pair. Writes
    the per-(head, pair) row sums of M = W∘CB (ROWS), column sums of M/dt (COLS), the diagonal
    pair's rectangle sum (DIAG); adds dC and dB with fp32 atomics. STATE_HERE: also the
    carried-state terms of block i (its d cum_t into DCUM_T, dC and dB), else part 2 does them."""
    i_cq, i_bgs = tl.program_id(0), tl.program_id(1)
    n_qb: tl.constexpr = Q // BLOCK_Q
    i_c = i_cq // n_qb
    i_qb = n_qb - 1 - i_cq % n_qb  # the blocks with most pairs first
    n_split = HPG // HPP
    i_bg, i_sp = i_bgs // n_split, i_bgs % n_split
    G = H // HPG
    i_b, i_g = i_bg // G, i_bg % G
    i_b64 = i_b.to(tl.int64)
    o_i = tl.arange(0, BLOCK_Q)
    o_p = tl.arange(0, BLOCK_P)
    o_n = tl.arange(0, BLOCK_N)
    m_p, m_n = o_p < P, o_n < N
    o_ti = i_c * Q + i_qb * BLOCK_Q + o_i
    m_ti = o_ti < L
    m_ip = m_ti[:, None] & m_p[None, :]
    m_in = m_ti[:, None] & m_n[None, :]
    p_ci = C + i_b64 * s_cb + o_ti[:, None].to(tl.int64) * s_cl + i_g * s_cg + o_n[None, :] * s_cn
    b_ci = tl.load(p_ci, mask=m_in, other=0.0)  # (BQ, N)
    w_ok = m_ti
    if HAS_SEG:
        b_seg_i = tl.load(SEG + i_b64 * L + o_ti, mask=m_ti, other=-1)
        seg_prev = tl.load(SEG + i_b64 * L + i_c * Q - 1, mask=i_c > 0, other=0)
        seg_end = tl.load(SEG + i_b64 * L + tl.minimum(i_c * Q + Q, L) - 1)
        w_ok = w_ok & (b_seg_i == seg_prev)
    # -- per head: the carried-in state's dC and d cum_t; block i as a source of the carried-out
    # state, dB_i += f_i x_i G (f = e^{cum_end − cum} dt)
    b_dc = tl.zeros([BLOCK_Q, BLOCK_N], dtype=tl.float32)
    if STATE_HERE:
        b_db_out = tl.zeros([BLOCK_Q, BLOCK_N], dtype=tl.float32)
        for hh in range(0, HPP):
            i_h = i_g * HPG + i_sp * HPP + hh
            i_bh64 = (i_b * H + i_h).to(tl.int64)
            buf0 = (i_bh64 * NC + i_c) * Q + i_qb * BLOCK_Q
            o_s0 = (i_bh64 * NC + i_c) * P * N
            b_cum = tl.load(CUM_BUF + buf0 + o_i)
            b_dt = tl.load(DT_BUF + buf0 + o_i)
            b_in = tl.where(w_ok, tl.exp(b_cum), 0.0)
            b_out = tl.exp(tl.load(SUF_BUF + buf0 + o_i))  # e^{cum_end − cum}
            if HAS_SEG:
                b_out = tl.where(b_seg_i == seg_end, b_out, 0.0)
            b_out = tl.where(m_ti, b_out, 0.0) * b_dt
            p_dy = DY + i_b64 * s_yb + o_ti[:, None].to(tl.int64) * s_yl + i_h * s_yh + o_p[None, :] * s_yp
            b_dy = tl.load(p_dy, mask=m_ip, other=0.0)  # (BQ, P)
            p_x = X + i_b64 * s_xb + o_ti[:, None].to(tl.int64) * s_xl + i_h * s_xh + o_p[None, :] * s_xp
            b_x = tl.load(p_x, mask=m_ip, other=0.0)  # (BQ, P)
            m_pn = m_p[:, None] & m_n[None, :]
            p_pn = o_s0 + o_p[:, None] * N + o_n[None, :]
            b_s = tl.load(STATES + p_pn, mask=m_pn, other=0.0).to(b_ci.dtype)  # (P, N)
            b_g = tl.load(GSTATES + p_pn, mask=m_pn, other=0.0).to(b_ci.dtype)  # (P, N)
            b_dcum_t, b_dc_h = _carried_in_bwd(b_ci, b_dy, b_s, b_in, PREC, F32)
            tl.store(DCUM_T + buf0 + o_i, b_dcum_t)
            b_dc += b_dc_h
            b_db_out += _dot(b_x, b_g.to(b_x.dtype), PREC, F32) * b_out[:, None]
        p_dbi = DB + i_b64 * s_gb + o_ti[:, None].to(tl.int64) * s_gl + i_g * s_gg + o_n[None, :] * s_gn
        tl.atomic_add(p_dbi, b_db_out, mask=m_in)
    # -- the block pairs (i, j), j <= i
    for i_jb in range(0, i_qb + 1):
        o_tj = i_c * Q + i_jb * BLOCK_Q + o_i
        m_tj = o_tj < L
        m_jn = m_tj[:, None] & m_n[None, :]
        p_bj = B + i_b64 * s_bb + o_tj[:, None].to(tl.int64) * s_bl + i_g * s_bg + o_n[None, :] * s_bn
        b_bj = tl.load(p_bj, mask=m_jn, other=0.0)  # (BQ, N)
        b_cb = _dot(b_ci, tl.trans(b_bj).to(b_ci.dtype), PREC, F32)  # (BQ_t, BQ_s) = C_t · B_s
        m_ij = (o_ti[:, None] >= o_tj[None, :]) & m_tj[None, :]
        if HAS_SEG:
            b_seg_j = tl.load(SEG + i_b64 * L + o_tj, mask=m_tj, other=-2)
            m_ij = m_ij & (b_seg_i[:, None] == b_seg_j[None, :])
        b_dcb = tl.zeros([BLOCK_Q, BLOCK_Q], dtype=tl.float32)
        for hh in range(0, HPP):
            i_h = i_g * HPG + i_sp * HPP + hh
            i_bh64 = (i_b * H + i_h).to(tl.int64)
            buf0 = (i_bh64 * NC + i_c) * Q
            b_cum = tl.load(CUM_BUF + buf0 + i_qb * BLOCK_Q + o_i)
            b_cum_j = tl.load(CUM_BUF + buf0 + i_jb * BLOCK_Q + o_i)
            b_dt_j = tl.load(DT_BUF + buf0 + i_jb * BLOCK_Q + o_i)
            p_dy = DY + i_b64 * s_yb + o_ti[:, None].to(tl.int64) * s_yl + i_h * s_yh + o_p[None, :] * s_yp
            b_dy = tl.load(p_dy, mask=m_ip, other=0.0)  # (BQ, P)
            p_xj = X + i_b64 * s_xb + o_tj[None, :].to(tl.int64) * s_xl + i_h * s_xh + o_p[:, None] * s_xp
            b_xjt = tl.load(p_xj, mask=m_tj[None, :] & m_p[:, None], other=0.0)  # (P, BQ)
            b_dec = tl.exp(tl.where(m_ij, b_cum[:, None] - b_cum_j[None, :], -float("inf")))
            b_wn = _dot(b_dy, b_xjt.to(b_dy.dtype), PREC, F32) * b_dec  # dY_t·x_s e^{cum_t − cum_s}
            b_mn = b_wn * b_cb  # M_ts / dt_s
            o_row = ((i_bh64 * NC + i_c) * n_qb + i_jb) * Q + i_qb * BLOCK_Q + o_i
            o_col = ((i_bh64 * NC + i_c) * n_qb + i_qb) * Q + i_jb * BLOCK_Q + o_i
            tl.store(COLS + o_col, tl.sum(b_mn, axis=0))
            tl.store(ROWS + o_row, tl.sum(b_mn * b_dt_j[None, :], axis=1))
            b_w = b_wn * b_dt_j[None, :]
            if i_jb == i_qb:  # Σ_{t ≥ u > s} M_ts inside the diagonal block
                # M formed here as W·CB, not as the row sums' (M/dt)·dt: one value used by both
                # made the compiler move the whole tile to the scan's layout at every pair
                b_md = b_w * b_cb
                b_pre = tl.where(m_ij, tl.cumsum(b_md, axis=1) - b_md, 0.0)
                tl.store(DIAG + buf0 + i_qb * BLOCK_Q + o_i, tl.sum(b_pre, axis=0))
            b_dcb += b_w
        b_dc += _dot(b_dcb.to(b_bj.dtype), b_bj, PREC, F32)
        b_dbj = _dot(tl.trans(b_dcb).to(b_ci.dtype), b_ci, PREC, F32)  # (BQ_s, N)
        p_dbj = DB + i_b64 * s_gb + o_tj[:, None].to(tl.int64) * s_gl + i_g * s_gg + o_n[None, :] * s_gn
        tl.atomic_add(p_dbj, b_dbj, mask=m_jn)
    p_dc = DC + i_b64 * s_gb + o_ti[:, None].to(tl.int64) * s_gl + i_g * s_gg + o_n[None, :] * s_gn
    tl.atomic_add(p_dc, b_dc, mask=m_in)


@triton.jit
def _chunk_bwd_dx_kernel(
    X, B, C, DY, D, SEG, DT_BUF, CUM_BUF, SUF_BUF, STATES, GSTATES,
    DX, DD, DDT, DCUM_S, DB, DC, DCUM_T,
    L, NC, H, HPG,
    s_xb, s_xl, s_xh, s_xp, s_bb, s_bl, s_bg, s_bn, s_cb, s_cl, s_cg, s_cn,
    s_yb, s_yl, s_yh, s_yp, s_gb, s_gl, s_gg, s_gn,
    P: tl.constexpr, N: tl.constexpr, Q: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_D: tl.constexpr, D_PER_P: tl.constexpr, HAS_SEG: tl.constexpr, STATE_HERE: tl.constexpr,
    PREC: tl.constexpr, F32: tl.constexpr,
):
    """BWD_CFG["grouped"], part 2: per (chunk, source block j, batch·head): dx_j (the in-chunk
    term Σ_{t ≥ s} C_t·B_s e^{cum_t − cum_s} dt_s dY_t, the carried-out state's f_j G B_j and D),
    and the carried-out state's explicit ddt_j and d cum_s (the in-chunk ones come from part 1's
    column sums). STATE_HERE: also block j's carried-state terms of d cum_t, dC and dB (atomics
    over the group's heads), which part 1 then skips."""
    i_cq, i_bh = tl.program_id(0), tl.program_id(1)
    n_qb: tl.constexpr = Q // BLOCK_Q
    i_c = i_cq // n_qb
    i_jb = i_cq % n_qb
    i_b, i_h = i_bh // H, i_bh % H
    i_g = i_h // HPG
    i_b64 = i_b.to(tl.int64)
    o_i = tl.arange(0, BLOCK_Q)
    o_p = tl.arange(0, BLOCK_P)
    o_n = tl.arange(0, BLOCK_N)
    m_p, m_n = o_p < P, o_n < N
    buf0 = (i_bh.to(tl.int64) * NC + i_c) * Q
    o_tj = i_c * Q + i_jb * BLOCK_Q + o_i
    m_tj = o_tj < L
    m_jp = m_tj[:, None] & m_p[None, :]
    b_cum_j = tl.load(CUM_BUF + buf0 + i_jb * BLOCK_Q + o_i)
    b_dt_j = tl.load(DT_BUF + buf0 + i_jb * BLOCK_Q + o_i)
    p_xj = X + i_b64 * s_xb + o_tj[:, None].to(tl.int64) * s_xl + i_h * s_xh + o_p[None, :] * s_xp
    b_xj = tl.load(p_xj, mask=m_jp, other=0.0)  # (BQ, P)
    p_bj = B + i_b64 * s_bb + o_tj[:, None].to(tl.int64) * s_bl + i_g * s_bg + o_n[None, :] * s_bn
    b_bj = tl.load(p_bj, mask=m_tj[:, None] & m_n[None, :], other=0.0)  # (BQ, N)
    b_out = tl.exp(tl.load(SUF_BUF + buf0 + i_jb * BLOCK_Q + o_i))  # e^{cum_end − cum}
    if HAS_SEG:
        b_seg_j = tl.load(SEG + i_b64 * L + o_tj, mask=m_tj, other=-1)
        seg_end = tl.load(SEG + i_b64 * L + tl.minimum(i_c * Q + Q, L) - 1)
        b_out = tl.where(b_seg_j == seg_end, b_out, 0.0)
    else:
        b_seg_j = o_tj  # no documents: a placeholder for _query_block, unused
    b_out = tl.where(m_tj, b_out, 0.0)
    p_g = GSTATES + (i_bh.to(tl.int64) * NC + i_c) * P * N + o_p[:, None] * N + o_n[None, :]
    b_g = tl.load(p_g, mask=m_p[:, None] & m_n[None, :], other=0.0).to(b_bj.dtype)  # (P, N)
    b_gb = _dot(b_bj, tl.trans(b_g), PREC, F32)  # (BQ, P) = G B_s
    b_e = b_out * tl.sum(b_xj.to(tl.float32) * b_gb, axis=1)  # d/d dt_s (explicit)
    b_dx = b_gb * (b_out * b_dt_j)[:, None]
    if HAS_D or STATE_HERE:
        p_dyj = DY + i_b64 * s_yb + o_tj[:, None].to(tl.int64) * s_yl + i_h * s_yh + o_p[None, :] * s_yp
        b_dyj = tl.load(p_dyj, mask=m_jp, other=0.0)  # (BQ, P)
    if STATE_HERE:  # block j as queries of the carried-in state S, as sources of the carried-out one
        m_jn = m_tj[:, None] & m_n[None, :]
        p_cj = C + i_b64 * s_cb + o_tj[:, None].to(tl.int64) * s_cl + i_g * s_cg + o_n[None, :] * s_cn
        b_cj = tl.load(p_cj, mask=m_jn, other=0.0)  # (BQ, N)
        p_s = STATES + (i_bh.to(tl.int64) * NC + i_c) * P * N + o_p[:, None] * N + o_n[None, :]
        b_s = tl.load(p_s, mask=m_p[:, None] & m_n[None, :], other=0.0).to(b_cj.dtype)  # (P, N)
        b_in = tl.exp(b_cum_j)
        if HAS_SEG:
            seg_prev = tl.load(SEG + i_b64 * L + i_c * Q - 1, mask=i_c > 0, other=0)
            b_in = tl.where(b_seg_j == seg_prev, b_in, 0.0)
        b_in = tl.where(m_tj, b_in, 0.0)
        b_dcum_t, b_dc = _carried_in_bwd(b_cj, b_dyj, b_s, b_in, PREC, F32)
        tl.store(DCUM_T + buf0 + i_jb * BLOCK_Q + o_i, b_dcum_t)
        o_gj = i_b64 * s_gb + o_tj[:, None].to(tl.int64) * s_gl + i_g * s_gg + o_n[None, :] * s_gn
        tl.atomic_add(DC + o_gj, b_dc, mask=m_jn)
        tl.atomic_add(DB + o_gj, _dot(b_xj, b_g.to(b_xj.dtype), PREC, F32) * (b_out * b_dt_j)[:, None],
                      mask=m_jn)
    for i_ib in range(i_jb, n_qb):  # query blocks t >= s
        b_ci, b_dyi, b_dec = _query_block(
            C, DY, SEG, CUM_BUF, buf0, i_ib, o_tj, b_cum_j, b_seg_j, i_b64, i_c, i_h, i_g, L,
            s_cb, s_cl, s_cg, s_cn, s_yb, s_yl, s_yh, s_yp, o_n, m_n, o_p, m_p, Q, BLOCK_Q, HAS_SEG)
        b_bc = _dot(b_bj, tl.trans(b_ci).to(b_bj.dtype), PREC, F32)  # (BQ_s, BQ_t) = B_s · C_t
        b_dx += _dot((b_bc * b_dec * b_dt_j[:, None]).to(b_dyi.dtype), b_dyi, PREC, F32)
    if HAS_D:
        b_dx = _d_skip_bwd(b_dx, b_dyj, b_xj, D, DD, i_h, o_p, m_p, P, D_PER_P)
    p_dx = DX + i_b64 * s_xb + o_tj[:, None].to(tl.int64) * s_xl + i_h * s_xh + o_p[None, :] * s_xp
    tl.store(p_dx, b_dx.to(DX.dtype.element_ty), mask=m_jp)
    o_buf = buf0 + i_jb * BLOCK_Q + o_i
    tl.store(DDT + o_buf, b_e)
    tl.store(DCUM_S + o_buf, -b_e * b_dt_j)


@triton.jit
def _grouped_tail_kernel(
    ROWS, COLS, DIAG, DCUM_T, DCUM_S, DCUM_END, DT_BUF, DDT, D_DTA,
    Q: tl.constexpr, BLOCK_Q: tl.constexpr,
):
    """BWD_CFG["grouped"], part 3, per (batch·head, chunk), in float64: d(dt·A)_u = the reverse
    cumsum of the carried-state terms (the carried-out total summed here, not by atomics) plus
    Σ_{t ≥ u > s} M_ts assembled from part 1's per-pair sums; for u in block k: the diagonal
    pair's rectangle, over pairs i > j the exclusive prefix of the column sums (k = j), the
    suffix of the row sums (k = i) and the pair's total (j < k < i). Adds the in-chunk explicit
    ddt (Σ over pairs of the column sums) to DDT in place. Tiles are (block k, token r)."""
    i_bc = tl.program_id(0).to(tl.int64)
    n_qb: tl.constexpr = Q // BLOCK_Q
    o_k = tl.arange(0, n_qb)
    o_q = o_k[:, None] * BLOCK_Q + tl.arange(0, BLOCK_Q)[None, :]  # (n, BQ): token in chunk
    base = i_bc * Q
    f64 = tl.float64
    b_dcum_s = tl.load(DCUM_S + base + o_q).to(f64)
    b_dcum = tl.load(DCUM_T + base + o_q).to(f64) + b_dcum_s
    last = o_q == Q - 1
    b_dcum += tl.where(last, tl.load(DCUM_END + i_bc).to(f64) - tl.sum(tl.sum(b_dcum_s, axis=1), axis=0), 0.0)
    b_tot = tl.sum(b_dcum, axis=1)  # (n,)
    b_d = tl.cumsum(b_dcum, axis=1, reverse=True) + (tl.cumsum(b_tot, axis=0, reverse=True) - b_tot)[:, None]
    b_d += tl.load(DIAG + base + o_q).to(f64)
    b_dt = tl.load(DT_BUF + base + o_q).to(f64)
    b_ddt = tl.zeros([n_qb, BLOCK_Q], dtype=f64)
    # only the pairs j <= i were written: the loads are masked to them
    for i in tl.static_range(n_qb):  # COLS[i, :]: pair (i, j = k) column sums of M / dt, s in block k
        b_c = tl.load(COLS + (i_bc * n_qb + i) * Q + o_q, mask=o_k[:, None] <= i, other=0.0).to(f64)
        b_ddt += b_c
        b_cm = b_c * b_dt
        b_d += tl.where(o_k[:, None] < i, tl.cumsum(b_cm, axis=1) - b_cm, 0.0)
    for j in tl.static_range(n_qb):  # ROWS[j, :]: pair (i = k, j) row sums of M, t in block k
        b_r = tl.load(ROWS + (i_bc * n_qb + j) * Q + o_q, mask=o_k[:, None] > j, other=0.0).to(f64)
        b_d += tl.cumsum(b_r, axis=1, reverse=True)
        b_rt = tl.sum(b_r, axis=1)  # (n,) over i: the pair (i, j) totals
        b_d += tl.where(o_k > j, tl.cumsum(b_rt, axis=0, reverse=True) - b_rt, 0.0)[:, None]
    tl.store(D_DTA + base + o_q, b_d)
    p_ddt = DDT + base + o_q
    tl.store(p_ddt, (tl.load(p_ddt).to(f64) + b_ddt).to(tl.float32))


# Launch settings of the backward; BLOCK_Q must divide the chunk size (tests shrink it so that a
# chunk spans several blocks in the interpreter).
# chunk_bwd_warps: num_warps of _chunk_bwd_kernel at the tested widths. At the base shapes
# (headdim 64, dstate 128) compile_check --sass gives 4 warps 255 registers + 640 bytes of spill
# stack per thread, 8 warps 255 + 160 (its 141 KB of shared memory allow one program per SM
# either way). H200, 2026-12-02, fwd+bwd ms at 8x2048 / 2x8192 / 1x32768: 4 warps 3.189 / 3.445
# / 8.253, 8 warps 2.677 / 2.894 / 6.844 (gradients within 3.6e-5 of 4 warps').
# BLOCK_Q_wide_state: BLOCK_Q when the state tile is wider than 128 (d_state 256, as MQAR sweeps
# it). There the program holds dB and dC (BLOCK_Q, N) fp32 accumulators plus B and C tiles, which
# at 64 x 256 spill: a profile of the synth MQAR model (H200, 2026-12-03) has _chunk_bwd_kernel at
# 4.7 ms of a 7.8 ms step at N = 256, against 0.2 ms at N = 16. compile_check --sass (sm_90,
# 8 warps, tiles padded by the small-tile workaround): BLOCK_Q 64 -> 1176 bytes of stack and 478
# LDL/STL, 32 -> 648 and 180, 16 -> 8 and 4 (as at N = 16). The candidates pass the CPU
# interpreter, but their GPU check did not finish (the N = 256 compile and float64 reference
# used the call's time), so the default stays the checked 64.
# rect_dA: the in-chunk part of d(dt·A)_u summed over its rectangle t >= u > s directly, not as a
# reverse cumsum of fp32 row sums minus column sums, and the carried-out terms' chunk total in
# float64, not by fp32 atomics: both cancelled. Interpreter at chunk 256 (2 heads, fp32, L 1000,
# 2026-12-03): dA 2.1e-5 / 2.7e-5 -> 5.8e-8 / 7.7e-7 off float64, dt_bias 2.8e-5 / 1.7e-5 -> 6.3e-7
# / 5.0e-7 (without / with documents, initial state, z). sm_90 (compile_check --sass): 255
# registers + 208 B of spill, 157 KB of shared memory (112 B and 145 KB without). The default since
# its GPU check (H200, 2026-12-04, scripts/ssd_grad_errors.py at the test's shapes: every fp32
# gradient of the 6 cases within 3.7e-6 of float64, dA 6.8e-7 / 1.3e-6 / 3.7e-6 at L 1000, where
# the old form missed 1e-5 with 1.1e-5 / 1.2e-5 / 1.2e-5); it costs ~6 % of fwd+bwd (2026-12-03:
# 2.667 against 2.516 ms at 8x2048).
# pass_block, pass_warps: _dstate_pass_kernel's launch. H200, 2026-12-03 (.carry/sp_exp.py, the
# kernel alone, ms at 8x2048 / 2x8192 / 1x32768): block 1024, 4 warps, one chunk in flight (the
# former kernel) 0.140 / 0.297 / 0.737; the one-chunk prefetch at block 1024 0.059 / 0.058 / 0.138,
# at block 512 0.060 / 0.056 / 0.125 (adding the compiler's 2-stage pipeline: no change).
# grouped (group_heads, group_warps, group_stages, dx_warps, dx_stages): the chunk backward as
# _chunk_bwd_group_kernel (per group, block pair and run of group_heads heads: C·B^T, dB and dC
# once for the run; per head only dY·x^T) + _chunk_bwd_dx_kernel (dx per head) +
# _grouped_tail_kernel (d(dt·A) in float64 from per-pair sums; always the rectangle form, so
# rect_dA does not apply): ~2x fewer FLOPs than _chunk_bwd_kernel's 7 dots per head and pair.
# H200, 2026-12-04, bf16 H32 P64 N128, group_heads 16 (8: 4.23 / 3.28 / 4.63 ms wall, 32: 3.22 /
# 3.22 / 4.88), before the fused tail (its float64
# assembly was ~25 torch ops): CUDA time of the two kernels 0.849 + 0.285 = 1.134 ms against
# _chunk_bwd_kernel's 2.019 at 8x2048, 1.561 + 0.582 against 4.648 at 1x32768; the whole fwd+bwd
# 1.903 against 2.624 ms of CUDA time at 8x2048. Wall time then was worse (3.17-3.35 against
# 2.68 ms at 8x2048 / 2x8192; better at 1x32768, 4.49 against 5.84), where the torch assembly
# cost 0.86 ms of float64 scans at 1x32768 and launches elsewhere; the fused tail kernel that
# replaced it is checked in the CPU interpreter and compiled for sm_90 only. One float64 case at
# the GPU test shapes (L 1000, groups 2, documents, state, z) matched: every gradient within
# 3.7e-6. Opt-in until the fused tail's GPU check and timing (gpu_kernel_round.sh pending).
# group_state 0 moves the carried-state terms (12.6 of the group kernel's ~19.8 MFLOP per chunk
# and head, per head and not shared) to the dx kernel, with dB / dC atomics there: sm_90, group
# kernel 247 registers and 82 KB of shared memory (140 KB with them), dx kernel 255 + 208 B of
# spill at 4 warps (221, none, without them). Interpreter only; timed by the SSD table.
BWD_CFG = {"BLOCK_Q": 64, "BLOCK_Q_wide_state": 64, "chunk_bwd_warps": 8,
           "pass_block": 512, "pass_warps": 4, "rect_dA": True,
           "grouped": False, "group_heads": 16, "group_warps": 8, "group_stages": 2,
           "dx_warps": 4, "dx_stages": 2, "group_state": 1}


def ssd_bwd(dy, x, dt, A, B, C, chunk_size, D, z, dt_bias, dt_softplus, seg, saved, dfinal,
            grouped=None):
    """Gradients (dx, ddt, dA, dB, dC, dD, dz, ddt_bias, dinit) of ssd_fwd's (y, final_state).
    grouped: the grouped chunk backward (None: BWD_CFG["grouped"]).

    saved = (dt_buf, cum_buf, suf_buf, states, chunk_decay) from ssd_fwd(..., keep=True); dfinal
    may be None.
    Returned gradients are fp32 except dx and dz (x's and z's dtype); dD / ddt_bias / dA follow
    the parameters' shapes.
    """
    dt_buf, cum_buf, suf_buf, states, chunk_decay = saved
    batch, seqlen, nheads, headdim = x.shape
    ngroups, dstate = B.shape[2], B.shape[3]
    Q = chunk_size
    nc = triton.cdiv(seqlen, Q)
    dev, f32 = x.device, torch.float32
    prec = _prec(x)
    bp, bn = tile_widths(headdim, dstate)
    block_q = min(BWD_CFG["BLOCK_Q"] if bn <= 128 else BWD_CFG["BLOCK_Q_wide_state"], Q)
    hpg = nheads // ngroups
    dy = dy.contiguous()
    dz = None
    if z is not None:  # the gate: recompute the ungated output (one chunk-out pass, not stored)
        y_pre = chunk_out(x, B, C, None, D, seg, (dt_buf, cum_buf, states), Q)
        zf = z.float()
        sig = torch.sigmoid(zf)
        dyf = dy.float()
        dz = (dyf * y_pre.float() * sig * (1 + zf * (1 - sig))).to(z.dtype)
        dy = (dyf * zf * sig).to(x.dtype)
        del y_pre
    dstates = torch.empty_like(states)
    _dstate_local_kernel[(nc, batch * nheads)](
        dy, C, seg, cum_buf, dstates, seqlen, nc, nheads, hpg,
        *dy.stride(), *C.stride(),
        P=headdim, N=dstate, Q=Q, BLOCK_P=bp, BLOCK_N=bn, HAS_SEG=seg is not None,
        PREC=prec, F32=INTERPRET, num_warps=warps(8 if Q >= 128 else 4, headdim, dstate),
    )
    pn = headdim * dstate
    block = min(BWD_CFG["pass_block"], triton.next_power_of_2(pn))
    nk = triton.cdiv(pn, block)
    dinit = torch.empty(batch, nheads, headdim, dstate, device=dev, dtype=f32)
    ddecay = torch.empty(batch * nheads, nc, nk, device=dev, dtype=f32)
    dfin = dfinal.float().contiguous() if dfinal is not None else None
    _dstate_pass_kernel[(batch * nheads, nk)](
        dstates, states, chunk_decay, dfin, dinit, ddecay, nc, pn, nk,
        BLOCK=block, HAS_DFINAL=dfin is not None, num_warps=BWD_CFG["pass_warps"],
    )
    dx = torch.empty_like(x)
    dB = torch.zeros(batch, seqlen, ngroups, dstate, device=dev, dtype=f32)
    dC = torch.zeros_like(dB)
    dD = torch.zeros(D.shape, device=dev, dtype=f32) if D is not None else None
    ddt_e = torch.empty_like(dt_buf)
    dcum_t = torch.empty_like(dt_buf)
    dcum_s = torch.empty_like(dt_buf)
    dcum_end = ddecay.sum(-1)  # (batch·H, nc); the kernel adds the carried-out terms
    if BWD_CFG["grouped"] if grouped is None else grouped:
        d_dta, ddt_e = _grouped_chunk_bwd(
            x, B, C, dy, D, seg, saved, dstates, dx, dB, dC, dD, ddt_e, dcum_t, dcum_s, dcum_end,
            Q, block_q, hpg, prec, bp, bn)
        return _bwd_tail(d_dta, ddt_e, dt_buf, A, dt, dt_bias, dt_softplus, batch, nheads, nc, Q,
                         seqlen, dx, dB, dC, dD, dz, dinit)
    rect = BWD_CFG["rect_dA"]
    # rect_dA: the in-chunk part of d(dt·A)_u as Σ_{t ≥ u > s} M_ts, one partial per query block
    rect_parts = torch.zeros(batch * nheads, nc, Q // block_q, Q, device=dev, dtype=f32) if rect else None
    _chunk_bwd_kernel[(nc * (Q // block_q), batch * nheads)](
        x, B, C, dy, D, seg, dt_buf, cum_buf, suf_buf, states, dstates,
        dx, dB, dC, dD, ddt_e, dcum_t, dcum_s, dcum_end, rect_parts,
        seqlen, nc, nheads, hpg,
        *x.stride(), *B.stride(), *C.stride(), *dy.stride(), *dB.stride(),
        P=headdim, N=dstate, Q=Q, BLOCK_Q=block_q, BLOCK_P=bp, BLOCK_N=bn,
        HAS_D=D is not None, D_PER_P=D is not None and D.dim() == 2, HAS_SEG=seg is not None,
        RECT_DA=rect,
        PREC=prec, F32=INTERPRET, num_warps=warps(BWD_CFG["chunk_bwd_warps"], headdim, dstate),
    )
    # dcum -> d(dt·A): cum is an inclusive cumsum inside the chunk, cum_end its last entry. In
    # float64 (one value per token and head, ~1/P of x's size): the reverse cumsum and dA's sum
    # over every token cancel terms of opposite sign, which costs fp32 ~1e-5 of relative error
    dcum = dcum_t.double() + dcum_s
    dcum[:, :, -1] += dcum_end
    if rect:  # the carried-out terms' total, which the kernel left to this float64 sum: as an fp32
        # atomic sum it cancelled against their suffix sums below (dA ~2e-5 off through dfinal)
        dcum[:, :, -1] -= dcum_s.double().sum(-1)
    d_dta = dcum.flip(-1).cumsum(-1).flip(-1)  # (batch·H, nc, Q)
    if rect:  # the kernel left the in-chunk M terms out of dcum_t / dcum_s
        d_dta += rect_parts.double().sum(2)
    return _bwd_tail(d_dta, ddt_e, dt_buf, A, dt, dt_bias, dt_softplus, batch, nheads, nc, Q,
                     seqlen, dx, dB, dC, dD, dz, dinit)


def _bwd_tail(d_dta, ddt_e, dt_buf, A, dt, dt_bias, dt_softplus, batch, nheads, nc, Q, seqlen,
              dx, dB, dC, dD, dz, dinit):
    """d(dt·A) (batch·H, nc, Q; float64) and the explicit ddt -> ddt, dA, ddt_bias; the rest as is."""
    ddt_eff = (ddt_e + d_dta * A.double().repeat(batch)[:, None, None]).float()
    dA = (d_dta * dt_buf).view(batch, nheads, -1).sum((0, 2)).float()  # padded steps have dt = 0

    def to_blh(t):  # (batch·H, nc, Q) -> (batch, L, H)
        return t.view(batch, nheads, nc * Q)[:, :, :seqlen].transpose(1, 2)

    ddt = to_blh(ddt_eff)
    raw = dt.float() + (dt_bias.float() if dt_bias is not None else 0.0)
    if dt_softplus:
        ddt = ddt * torch.where(raw > 20.0, torch.ones_like(raw), torch.sigmoid(raw))
    ddt_bias = ddt.sum((0, 1)) if dt_bias is not None else None
    return dx, ddt, dA, dB, dC, dD, dz, ddt_bias, dinit


def _grouped_chunk_bwd(x, B, C, dy, D, seg, saved, gstates, dx, dB, dC, dD, ddt_e, dcum_t, dcum_s,
                       dcum_end, Q, block_q, hpg, prec, bp, bn):
    """BWD_CFG["grouped"]: _chunk_bwd_group_kernel (C·B^T, dB and dC once per group and block
    pair) and _chunk_bwd_dx_kernel (dx per head), then _grouped_tail_kernel: d(dt·A) in float64
    from their per-pair row and column sums, and the in-chunk explicit ddt added to ddt_e.
    Returns (d_dta, ddt_e) as (batch·H, nc, Q): float64 and fp32."""
    dt_buf, cum_buf, suf_buf, states, _ = saved
    batch, seqlen, nheads, headdim = x.shape
    ngroups, dstate = B.shape[2], B.shape[3]
    nc, n_qb = dt_buf.shape[1], Q // block_q
    dev, f32 = x.device, torch.float32
    bh = batch * nheads
    hpp = max(1, min(BWD_CFG["group_heads"], hpg))
    while hpg % hpp:
        hpp -= 1
    rows = torch.empty(bh, nc, n_qb, Q, device=dev, dtype=f32)  # [j, t]: Σ_s M_ts over pair (i, j)
    cols = torch.empty(bh, nc, n_qb, Q, device=dev, dtype=f32)  # [i, s]: Σ_t M_ts / dt_s
    diag = torch.empty(bh, nc, Q, device=dev, dtype=f32)
    strides = (*x.stride(), *B.stride(), *C.stride(), *dy.stride())
    w = warps(BWD_CFG["group_warps"], headdim, dstate)
    state_in_group = bool(BWD_CFG["group_state"])  # the carried-state terms: part 1 or part 2
    _chunk_bwd_group_kernel[(nc * n_qb, batch * ngroups * (hpg // hpp))](
        x, B, C, dy, seg, dt_buf, cum_buf, suf_buf, states, gstates,
        dB, dC, rows, cols, diag, dcum_t,
        seqlen, nc, nheads, hpg, hpp, *strides, *dB.stride(),
        P=headdim, N=dstate, Q=Q, BLOCK_Q=block_q, BLOCK_P=bp, BLOCK_N=bn, HAS_SEG=seg is not None,
        STATE_HERE=state_in_group, PREC=prec, F32=INTERPRET, num_warps=w,
        num_stages=BWD_CFG["group_stages"] if bn <= 128 else 1,  # 2 stages at N 256: 254 KB of smem
    )
    _chunk_bwd_dx_kernel[(nc * n_qb, bh)](
        x, B, C, dy, D, seg, dt_buf, cum_buf, suf_buf, states, gstates,
        dx, dD, ddt_e, dcum_s, dB, dC, dcum_t,
        seqlen, nc, nheads, hpg, *strides, *dB.stride(),
        P=headdim, N=dstate, Q=Q, BLOCK_Q=block_q, BLOCK_P=bp, BLOCK_N=bn,
        HAS_D=D is not None, D_PER_P=D is not None and D.dim() == 2, HAS_SEG=seg is not None,
        STATE_HERE=not state_in_group,
        PREC=prec, F32=INTERPRET, num_warps=BWD_CFG["dx_warps"], num_stages=BWD_CFG["dx_stages"],
    )
    d_dta = torch.empty(bh, nc, Q, device=dev, dtype=torch.float64)
    _grouped_tail_kernel[(bh * nc,)](
        rows, cols, diag, dcum_t, dcum_s, dcum_end, dt_buf, ddt_e, d_dta,
        Q=Q, BLOCK_Q=block_q, num_warps=4,
    )
    return d_dta, ddt_e
