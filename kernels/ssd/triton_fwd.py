"""Mamba-2 SSD forward in Triton: three launches (mamba_ssm uses five).

1. _chunk_state:  per (chunk, batch·head): dt (bias, softplus), cum = cumsum(dt·A) in registers;
                  writes dt, cum and cum_end − cum as a suffix sum (fp32, tiny) and the chunk's
                  own end state X^T·(w ∘ B) (P, N) with w = exp(cum_end − cum)·dt, one (P, Q) ×
                  (Q, N) dot.
2. _state_pass:   per (batch·head, block of P·N): walks the chunks in order, overwriting each
                  chunk's local state with the state entering it; writes the final state.
3. _chunk_out:    per (query block of BLOCK_Q rows, batch·head): y = exp(cum_i)·C_i·S_in
                  + Σ_{j ≤ i} (C_i B_jᵀ ∘ exp(cum_i − cum_j) ∘ dt_j) x_j + D·x_i, then ·silu(z).
seq_idx arrives as a document counter per row (reference.segment_ids): decays across a boundary
are masked to exactly zero, and the carried state only reaches tokens of the document it
belongs to (initial_state belongs to document 0).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


@triton.jit
def _softplus(x):
    return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))


@triton.jit
def _dot(a, b, PREC: tl.constexpr, F32: tl.constexpr):
    # F32: the CPU interpreter (Triton 3.6) computes bf16 x bf16 dots wrongly, so upcast there
    if F32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=PREC)


@triton.jit
def _chunk_state_kernel(
    X, DT, A, B, DT_BIAS, SEG, DT_OUT, CUM_OUT, SUF_OUT, STATES, CHUNK_DECAY,
    L, NC, H, HPG,
    s_xb, s_xl, s_xh, s_xp, s_tb, s_tl, s_th, s_bb, s_bl, s_bg, s_bn,
    P: tl.constexpr, N: tl.constexpr, Q: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, SUB: tl.constexpr, STAGES: tl.constexpr,
    HAS_DT_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_SEG: tl.constexpr,
    PREC: tl.constexpr, F32: tl.constexpr,
):
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_g = i_h // HPG
    i_b64 = i_b.to(tl.int64)
    o_q = tl.arange(0, Q)
    o_t = i_c * Q + o_q  # token positions
    m_t = o_t < L
    b_dt = tl.load(DT + i_b64 * s_tb + o_t.to(tl.int64) * s_tl + i_h * s_th, mask=m_t, other=0.0).to(tl.float32)
    if HAS_DT_BIAS:
        b_dt += tl.load(DT_BIAS + i_h).to(tl.float32)
    if SOFTPLUS:
        b_dt = _softplus(b_dt)
    b_dt = tl.where(m_t, b_dt, 0.0)  # padding steps leave the state unchanged
    b_a = tl.load(A + i_h).to(tl.float32)
    b_dta = b_dt * b_a
    b_cum = tl.cumsum(b_dta, axis=0)
    b_end = tl.sum(b_dta, axis=0)
    # cum_end - cum as its own (exclusive) suffix sum: near the chunk's end, where e^{cum_end - cum}
    # weighs most, it is a sum of a few small terms, not a difference of two large ones (~|cum|·eps)
    b_suffix = tl.cumsum(b_dta, axis=0, reverse=True) - b_dta
    o_buf = (i_bh.to(tl.int64) * NC + i_c) * Q + o_q
    tl.store(DT_OUT + o_buf, b_dt)
    tl.store(CUM_OUT + o_buf, b_cum)
    tl.store(SUF_OUT + o_buf, b_suffix)
    b_carry = tl.exp(b_end)
    if HAS_SEG:
        last = tl.minimum(i_c * Q + Q, L) - 1
        seg_end = tl.load(SEG + i_b64 * L + last)
        seg_prev = tl.load(SEG + i_b64 * L + i_c * Q - 1, mask=i_c > 0, other=0)
        b_carry = tl.where(seg_prev == seg_end, b_carry, 0.0)
    tl.store(CHUNK_DECAY + i_bh.to(tl.int64) * NC + i_c, b_carry)
    o_p = tl.arange(0, BLOCK_P)
    o_n = tl.arange(0, BLOCK_N)
    # the state: X^T (P, SUB) weighted per token times B (SUB, N), summed over the chunk's SUB-token
    # slices; the loop reads the weights' inputs back from the buffers this program just wrote
    # (a barrier makes them visible to every thread) and the compiler pipelines its x / B loads
    tl.debug_barrier()
    o_k = tl.arange(0, SUB)
    b_s = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
    for k in tl.range(0, Q // SUB, num_stages=STAGES):
        o_tk = i_c * Q + k * SUB + o_k
        m_tk = o_tk < L
        o_bk = (i_bh.to(tl.int64) * NC + i_c) * Q + k * SUB + o_k
        b_w = tl.exp(tl.load(SUF_OUT + o_bk)) * tl.load(DT_OUT + o_bk)
        if HAS_SEG:
            b_seg = tl.load(SEG + i_b64 * L + o_tk, mask=m_tk, other=-1)
            b_w = tl.where(b_seg == seg_end, b_w, 0.0)
        p_x = X + i_b64 * s_xb + o_tk[None, :].to(tl.int64) * s_xl + i_h * s_xh + o_p[:, None] * s_xp
        b_xt = tl.load(p_x, mask=m_tk[None, :] & (o_p[:, None] < P), other=0.0)
        b_xt = (b_xt.to(tl.float32) * b_w[None, :]).to(X.dtype.element_ty)
        p_b = B + i_b64 * s_bb + o_tk[:, None].to(tl.int64) * s_bl + i_g * s_bg + o_n[None, :] * s_bn
        b_bm = tl.load(p_b, mask=m_tk[:, None] & (o_n[None, :] < N), other=0.0)
        b_s += _dot(b_xt, b_bm, PREC, F32)  # (P, N) fp32
    p_s = STATES + ((i_bh.to(tl.int64) * NC + i_c) * P + o_p[:, None]) * N + o_n[None, :]
    tl.store(p_s, b_s, mask=(o_p[:, None] < P) & (o_n[None, :] < N))


@triton.jit
def _state_pass_kernel(
    STATES, CHUNK_DECAY, INIT, FINAL, NC, PN,
    BLOCK: tl.constexpr, HAS_INIT: tl.constexpr, STAGES: tl.constexpr,
):
    i_bh, i_k = tl.program_id(0), tl.program_id(1)
    o_k = i_k * BLOCK + tl.arange(0, BLOCK)
    m_k = o_k < PN
    if HAS_INIT:
        b_s = tl.load(INIT + i_bh.to(tl.int64) * PN + o_k, mask=m_k, other=0.0).to(tl.float32)
    else:
        b_s = tl.zeros([BLOCK], dtype=tl.float32)
    p_s = STATES + i_bh.to(tl.int64) * NC * PN + o_k
    # STAGES > 1: the compiler's software pipeline loads the next chunks' states while this one
    # is stored; one chunk in flight per program left the pass latency-bound (PASS_CFG)
    for c in tl.range(0, NC, num_stages=STAGES):
        b_loc = tl.load(p_s + c * PN, mask=m_k, other=0.0)
        tl.store(p_s + c * PN, b_s, mask=m_k)  # now: the state entering chunk c
        b_s = tl.load(CHUNK_DECAY + i_bh.to(tl.int64) * NC + c) * b_s + b_loc
    tl.store(FINAL + i_bh.to(tl.int64) * PN + o_k, b_s, mask=m_k)


@triton.jit
def _chunk_out_kernel(
    X, B, C, Z, D, SEG, DT_BUF, CUM_BUF, STATES, Y,
    L, NC, H, HPG,
    s_xb, s_xl, s_xh, s_xp, s_bb, s_bl, s_bg, s_bn, s_cb, s_cl, s_cg, s_cn,
    s_zb, s_zl, s_zh, s_zp, s_yb, s_yl, s_yh, s_yp,
    P: tl.constexpr, N: tl.constexpr, Q: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_D: tl.constexpr, D_PER_P: tl.constexpr, HAS_Z: tl.constexpr, HAS_SEG: tl.constexpr,
    PREC: tl.constexpr, F32: tl.constexpr,
):
    i_cq, i_bh = tl.program_id(0), tl.program_id(1)
    n_qb: tl.constexpr = Q // BLOCK_Q
    i_c, i_qb = i_cq // n_qb, i_cq % n_qb
    i_b, i_h = i_bh // H, i_bh % H
    i_g = i_h // HPG
    i_b64 = i_b.to(tl.int64)
    o_i = tl.arange(0, BLOCK_Q)
    o_ti = i_c * Q + i_qb * BLOCK_Q + o_i
    m_ti = o_ti < L
    o_p = tl.arange(0, BLOCK_P)
    o_n = tl.arange(0, BLOCK_N)
    m_p, m_n = o_p < P, o_n < N
    buf0 = (i_bh.to(tl.int64) * NC + i_c) * Q
    b_cum_i = tl.load(CUM_BUF + buf0 + i_qb * BLOCK_Q + o_i)
    p_c = C + i_b64 * s_cb + o_ti[:, None].to(tl.int64) * s_cl + i_g * s_cg + o_n[None, :] * s_cn
    b_c = tl.load(p_c, mask=m_ti[:, None] & m_n[None, :], other=0.0)  # (BQ, N)
    # contribution of the state entering the chunk
    p_s = STATES + ((i_bh.to(tl.int64) * NC + i_c) * P + o_p[None, :]) * N + o_n[:, None]
    b_st = tl.load(p_s, mask=m_n[:, None] & m_p[None, :], other=0.0)  # (N, P) = S^T
    b_acc = _dot(b_c, b_st.to(b_c.dtype), PREC, F32)  # (BQ, P)
    b_decay_in = tl.exp(b_cum_i)
    if HAS_SEG:
        b_seg_i = tl.load(SEG + i_b64 * L + o_ti, mask=m_ti, other=-1)
        seg_prev = tl.load(SEG + i_b64 * L + i_c * Q - 1, mask=i_c > 0, other=0)
        b_decay_in = tl.where(b_seg_i == seg_prev, b_decay_in, 0.0)
    b_acc = b_acc * b_decay_in[:, None]
    # in-chunk part, source blocks j <= i
    for i_jb in range(0, i_qb + 1):
        o_tj = i_c * Q + i_jb * BLOCK_Q + o_i
        m_tj = o_tj < L
        b_cum_j = tl.load(CUM_BUF + buf0 + i_jb * BLOCK_Q + o_i)
        b_dt_j = tl.load(DT_BUF + buf0 + i_jb * BLOCK_Q + o_i)
        p_b = B + i_b64 * s_bb + o_tj[None, :].to(tl.int64) * s_bl + i_g * s_bg + o_n[:, None] * s_bn
        b_bt = tl.load(p_b, mask=m_tj[None, :] & m_n[:, None], other=0.0)  # (N, BQ)
        b_cb = _dot(b_c, b_bt, PREC, F32)  # (BQ, BQ)
        m_ij = o_ti[:, None] >= o_tj[None, :]
        if HAS_SEG:
            b_seg_j = tl.load(SEG + i_b64 * L + o_tj, mask=m_tj, other=-2)
            m_ij = m_ij & (b_seg_i[:, None] == b_seg_j[None, :])
        b_dec = tl.exp(tl.where(m_ij, b_cum_i[:, None] - b_cum_j[None, :], -float("inf")))
        b_sc = b_cb * b_dec * b_dt_j[None, :]
        p_xj = X + i_b64 * s_xb + o_tj[:, None].to(tl.int64) * s_xl + i_h * s_xh + o_p[None, :] * s_xp
        b_xj = tl.load(p_xj, mask=m_tj[:, None] & m_p[None, :], other=0.0)
        b_acc += _dot(b_sc.to(b_xj.dtype), b_xj, PREC, F32)
    m_out = m_ti[:, None] & m_p[None, :]
    p_xi = X + i_b64 * s_xb + o_ti[:, None].to(tl.int64) * s_xl + i_h * s_xh + o_p[None, :] * s_xp
    if HAS_D:
        b_xi = tl.load(p_xi, mask=m_out, other=0.0).to(tl.float32)
        if D_PER_P:
            b_d = tl.load(D + i_h * P + o_p, mask=m_p, other=0.0).to(tl.float32)
            b_acc += b_xi * b_d[None, :]
        else:
            b_acc += b_xi * tl.load(D + i_h).to(tl.float32)
    if HAS_Z:
        p_z = Z + i_b64 * s_zb + o_ti[:, None].to(tl.int64) * s_zl + i_h * s_zh + o_p[None, :] * s_zp
        b_z = tl.load(p_z, mask=m_out, other=0.0).to(tl.float32)
        b_acc = b_acc * b_z * tl.sigmoid(b_z)
    p_y = Y + i_b64 * s_yb + o_ti[:, None].to(tl.int64) * s_yl + i_h * s_yh + o_p[None, :] * s_yp
    tl.store(p_y, b_acc.to(Y.dtype.element_ty), mask=m_out)


INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def small_tile_workaround(headdim: int, dstate: int) -> bool:
    """Whether the launches use the Hopper workaround tiles: on a GPU, for head or state widths
    outside the family the GPU tests cover (headdim >= 64, 64 <= dstate <= 128). At headdim 32
    (bytelm synth's Mamba-2, d_model 64) the bf16 kernels hit "illegal memory access" on an H200
    with Triton 3.6 (dstate 16, 64 and 256; a known class of Triton wgmma bugs at small tiles);
    padding the tiles to >= 64 and running 8 warps removed it, as did DISABLE_MMA_V3=1, with
    losses equal to the reference's (kernels/NOTES.md, 2026-12-02). BYTELM_SSD_MIN_BLOCK /
    BYTELM_SSD_WARPS override either choice."""
    return not INTERPRET and (headdim < 64 or dstate < 64 or dstate > 128)


def tile_widths(headdim: int, dstate: int) -> tuple[int, int]:
    """(BLOCK_P, BLOCK_N): the head and state widths of the tiles, powers of two >= 16 (>= 64
    under small_tile_workaround), or >= BYTELM_SSD_MIN_BLOCK when set."""
    least = int(os.environ.get("BYTELM_SSD_MIN_BLOCK", "") or
                (64 if small_tile_workaround(headdim, dstate) else 16))
    return max(least, triton.next_power_of_2(headdim)), max(least, triton.next_power_of_2(dstate))


def warps(default: int, headdim: int, dstate: int) -> int:
    """num_warps of the SSD tile kernels: `default` (8 under small_tile_workaround), or
    BYTELM_SSD_WARPS when set."""
    return int(os.environ.get("BYTELM_SSD_WARPS", "") or
               (8 if small_tile_workaround(headdim, dstate) else default))


# _state_pass_kernel's launch. H200, 2026-12-03 (.carry/sp_exp.py, the kernel alone, states of
# H32 P64 N128, ms at 8x2048 / 2x8192 / 1x32768): block 1024, 4 warps, no pipelining (the former
# launch) 0.131 / 0.202 / 0.789; block 256, 2 warps, 3 stages 0.041 / 0.040 / 0.080 (~3.4 TB/s at
# 1x32768); 2 stages 0.041 / 0.043 / 0.101; a hand-written one-chunk prefetch 0.049 / 0.043 / 0.095.
PASS_CFG = {"block": 256, "warps": 2, "stages": 3}
# _chunk_state_kernel's launch: the chunk's tokens in slices of `sub` in a loop the compiler
# pipelines over `stages`; warps None: 8 at chunk >= 128, else 4. H200, 2026-12-03
# (.carry/ab_bwd.py, whole forward, ms at 8x2048 / 2x8192 / 1x32768, on the shared-CB forward
# measured then): one shot (sub 256, 8 warps) 0.385 / 0.385 / 0.786; sub 64, 2 stages 0.347 /
# 0.346 / 0.714; sub 64, 3 stages, 4 warps 0.335 / 0.335 / 0.690; sub 128, 2 stages, 4 warps
# 0.345 / 0.345 / 0.711.
STATE_CFG = {"sub": 64, "stages": 3, "warps": 4}


def _prec(x):
    return "ieee" if x.dtype in (torch.float32, torch.float64) else "tf32"


def ssd_fwd(x, dt, A, B, C, chunk_size, D, z, dt_bias, dt_softplus, initial_state, seg, keep=False):
    """Returns y (x's shape/dtype) and final_state (batch, H, P, N) fp32; with keep=True also
    what the backward needs: (dt_buf, cum_buf, suf_buf = cum_end − cum as a suffix sum, states
    entering each chunk, chunk_decay)."""
    batch, seqlen, nheads, headdim = x.shape
    ngroups, dstate = B.shape[2], B.shape[3]
    Q = chunk_size
    assert Q >= 16 and Q & (Q - 1) == 0, "chunk_size must be a power of two >= 16"
    nc = triton.cdiv(seqlen, Q)
    dev = x.device
    f32 = torch.float32
    dt_buf = torch.empty(batch * nheads, nc, Q, device=dev, dtype=f32)
    cum_buf = torch.empty_like(dt_buf)
    suf_buf = torch.empty_like(dt_buf)
    states = torch.empty(batch * nheads, nc, headdim, dstate, device=dev, dtype=f32)
    chunk_decay = torch.empty(batch * nheads, nc, device=dev, dtype=f32)
    final = torch.empty(batch, nheads, headdim, dstate, device=dev, dtype=f32)
    bp, bn = tile_widths(headdim, dstate)
    prec = _prec(x)
    _chunk_state_kernel[(nc, batch * nheads)](
        x, dt, A, B, dt_bias, seg, dt_buf, cum_buf, suf_buf, states, chunk_decay,
        seqlen, nc, nheads, nheads // ngroups,
        *x.stride(), *dt.stride(), *B.stride(),
        P=headdim, N=dstate, Q=Q, BLOCK_P=bp, BLOCK_N=bn,
        SUB=min(STATE_CFG["sub"], Q), STAGES=STATE_CFG["stages"],
        HAS_DT_BIAS=dt_bias is not None, SOFTPLUS=dt_softplus, HAS_SEG=seg is not None,
        PREC=prec, F32=INTERPRET,
        num_warps=warps(STATE_CFG["warps"] or (8 if Q >= 128 else 4), headdim, dstate),
    )
    init = initial_state.float().contiguous() if initial_state is not None else None
    pn = headdim * dstate
    block = min(PASS_CFG["block"], triton.next_power_of_2(pn))
    _state_pass_kernel[(batch * nheads, triton.cdiv(pn, block))](
        states, chunk_decay, init, final, nc, pn, BLOCK=block, HAS_INIT=init is not None,
        STAGES=PASS_CFG["stages"], num_warps=PASS_CFG["warps"],
    )
    y = chunk_out(x, B, C, z, D, seg, (dt_buf, cum_buf, states), Q)
    if keep:
        return y, final, (dt_buf, cum_buf, suf_buf, states, chunk_decay)
    return y, final


def chunk_out(x, B, C, z, D, seg, bufs, Q):
    """Launch _chunk_out_kernel: the output from the chunk buffers (dt, cum, states entering each
    chunk) that _chunk_state and _state_pass left; z=None gives the ungated output."""
    batch, seqlen, nheads, headdim = x.shape
    ngroups, dstate = B.shape[2], B.shape[3]
    nc = triton.cdiv(seqlen, Q)
    dt_buf, cum_buf, states = bufs
    bp, bn = tile_widths(headdim, dstate)
    y = torch.empty_like(x)
    block_q = min(64, Q)
    zs = z.stride() if z is not None else (0, 0, 0, 0)
    _chunk_out_kernel[(nc * (Q // block_q), batch * nheads)](
        x, B, C, z, D, seg, dt_buf, cum_buf, states, y,
        seqlen, nc, nheads, nheads // ngroups,
        *x.stride(), *B.stride(), *C.stride(), *zs, *y.stride(),
        P=headdim, N=dstate, Q=Q, BLOCK_Q=block_q, BLOCK_P=bp, BLOCK_N=bn,
        HAS_D=D is not None, D_PER_P=D is not None and D.dim() == 2, HAS_Z=z is not None,
        HAS_SEG=seg is not None, PREC=_prec(x), F32=INTERPRET, num_warps=warps(4, headdim, dstate),
    )
    return y


@triton.jit
def _state_update_kernel(
    STATE, X, DT, A, B, C, D, Z, DT_BIAS, Y, H, HPG,
    P: tl.constexpr, N: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_D: tl.constexpr, D_PER_P: tl.constexpr, HAS_Z: tl.constexpr,
    HAS_DT_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
):
    i_bh = tl.program_id(0)
    i_b, i_h = i_bh // H, i_bh % H
    i_g = i_h // HPG
    o_p, o_n = tl.arange(0, BLOCK_P), tl.arange(0, BLOCK_N)
    m_p, m_n = o_p < P, o_n < N
    b_dt = tl.load(DT + i_bh).to(tl.float32)
    if HAS_DT_BIAS:
        b_dt += tl.load(DT_BIAS + i_h).to(tl.float32)
    if SOFTPLUS:
        b_dt = _softplus(b_dt)
    b_decay = tl.exp(b_dt * tl.load(A + i_h).to(tl.float32))
    b_x = tl.load(X + i_bh.to(tl.int64) * P + o_p, mask=m_p, other=0.0).to(tl.float32)
    bg = (i_b.to(tl.int64) * (H // HPG) + i_g) * N
    b_bv = tl.load(B + bg + o_n, mask=m_n, other=0.0).to(tl.float32)
    b_cv = tl.load(C + bg + o_n, mask=m_n, other=0.0).to(tl.float32)
    p_s = STATE + (i_bh.to(tl.int64) * P + o_p[:, None]) * N + o_n[None, :]
    m_s = m_p[:, None] & m_n[None, :]
    b_s = tl.load(p_s, mask=m_s, other=0.0)
    b_s = b_decay * b_s + (b_dt * b_x)[:, None] * b_bv[None, :]
    tl.store(p_s, b_s, mask=m_s)
    b_y = tl.sum(b_s * b_cv[None, :], axis=1)
    if HAS_D:
        if D_PER_P:
            b_y += b_x * tl.load(D + i_h * P + o_p, mask=m_p, other=0.0).to(tl.float32)
        else:
            b_y += b_x * tl.load(D + i_h).to(tl.float32)
    if HAS_Z:
        b_z = tl.load(Z + i_bh.to(tl.int64) * P + o_p, mask=m_p, other=0.0).to(tl.float32)
        b_y = b_y * b_z * tl.sigmoid(b_z)
    tl.store(Y + i_bh.to(tl.int64) * P + o_p, b_y.to(Y.dtype.element_ty), mask=m_p)


def ssd_state_update_fwd(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus):
    batch, nheads, headdim, dstate = state.shape
    assert state.is_contiguous() and state.dtype == torch.float32
    x, dt, B, C = x.contiguous(), dt.contiguous(), B.contiguous(), C.contiguous()
    z = z.contiguous() if z is not None else None
    y = torch.empty_like(x)
    _state_update_kernel[(batch * nheads,)](
        state, x, dt, A, B, C, D, z, dt_bias, y, nheads, nheads // B.shape[1],
        P=headdim, N=dstate, BLOCK_P=triton.next_power_of_2(headdim), BLOCK_N=triton.next_power_of_2(dstate),
        HAS_D=D is not None, D_PER_P=D is not None and D.dim() == 2, HAS_Z=z is not None,
        HAS_DT_BIAS=dt_bias is not None, SOFTPLUS=dt_softplus, num_warps=4,
    )
    return y
