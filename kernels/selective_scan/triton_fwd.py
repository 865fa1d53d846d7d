"""Mamba-1 selective scan in Triton: forward kernels, chunk-state passes, decode step.

Symbols as in reference.py: per (batch b, channel d, state n)
    a_t = exp(Δ_t A[d, n])  (= exp2(Δ_t A2), A2 = A log2 e),   b_t = Δ_t u_t B_t[n]
    h_t = a_t h_{t-1} + b_t,   y_t = (Σ_n C_t[n] h_t + D u_t) silu(z_t)

How the work is cut (why: kernels/NOTES.md, "Mamba-1 selective scan"):
- One program owns BLOCK_D channels x all N states of one (batch row, chunk of T steps) and walks
  the chunk in tiles of BLOCK_L steps. Inside a tile each state n (a static loop over N) is one
  tl.associative_scan over (a, b) pairs along time on a 2-D (BLOCK_D, BLOCK_L) register tile;
  the state between tiles is a (BLOCK_D, BLOCK_N) register tensor read and written one column at
  a time. The (batch, dim, L, N) state never touches memory.
- When batch x dim alone gives too few programs (long sequences), the length is split into
  chunks: `_chunk_local_kernel` computes each chunk's end state from a zero start and its total
  decay, `_chunk_carry_kernel` walks the (few) chunks sequentially to get every chunk's true
  start state, then `_fwd_kernel` reruns each chunk from its start state and writes y.
  The same two small kernels also give the backward its chunk-boundary states (triton_bwd.py).
- seq_idx: where seq_idx[t] != seq_idx[t-1], a_t is replaced by 0, which zeroes the carried state
  exactly (no -inf arithmetic), in the scan, the chunk decays and the backward alike.
- Tiles past the sequence end load Δ = 0, so a = 1 and b = 0: the state passes through unchanged
  and "the last column of the tile" is always the state after the last real step.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from bytelm.kernels.dispatch import env_choice

LOG2E = tl.constexpr(1.4426950408889634)  # a constexpr: jit code may read it


@triton.jit
def _combine(a1, b1, a2, b2):
    # (a1, b1) then (a2, b2): h -> a2 (a1 h + b1) + b2. Also the reverse scan's combine:
    # tl.associative_scan(reverse=True) walks from the end, giving x_t = α_t x_{t+1} + β_t.
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _delta_tile(p_delta, m, b_bias, SOFTPLUS: tl.constexpr):
    """Δ for a (BLOCK_D, BLOCK_L) tile: (Δ after bias/softplus, 0 where masked; pre-softplus x)."""
    b_x = tl.load(p_delta, mask=m, other=0.0).to(tl.float32) + b_bias[:, None]
    if SOFTPLUS:
        b_dt = tl.where(b_x > 20.0, b_x, tl.log(1.0 + tl.exp(b_x)))
    else:
        b_dt = b_x
    return tl.where(m, b_dt, 0.0), b_x


@triton.jit
def _reset_tile(p_seq_row, o_t, m_t, HAS_SEQ: tl.constexpr):
    """(BLOCK_L,) bool: True where a new document starts at step t (never at t = 0)."""
    if HAS_SEQ:
        m = m_t & (o_t > 0)
        s_cur = tl.load(p_seq_row + o_t, mask=m, other=0)
        s_prev = tl.load(p_seq_row + o_t - 1, mask=m, other=0)
        reset = m & (s_cur != s_prev)
    else:
        reset = o_t < 0
    return reset


@triton.jit
def _col(t, sel):
    """Column n of a (BLOCK_D, BLOCK_N) register tile, sel = (o_n == n)[None, :]."""
    return tl.sum(tl.where(sel, t, 0.0), 1)


@triton.jit
def _set_col(t, sel, v):
    return tl.where(sel, v[:, None], t)


@triton.jit
def _chunk_local_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, z_ptr, dout_ptr, bias_ptr, seq_ptr,
    hloc_ptr, hdec_ptr, gloc_ptr, gdec_ptr,
    dim, L, T, dpg,
    s_ub, s_ud, s_db, s_dd, s_zb, s_zd, s_Bb, s_Bg, s_Bn, s_Cb, s_Cg, s_Cn,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_SEQ: tl.constexpr, HAS_Z: tl.constexpr,
    FWD: tl.constexpr, BWD: tl.constexpr, N: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):
    """Per (channel block, chunk, batch row), from a zero boundary state:
    FWD: the chunk's end state (hloc) and total decay Π a_t (hdec);
    BWD: dL/dh at the chunk's first step with zero gradient entering from the right (gloc), and
         Π a_{t+1} over the chunk (gdec), the factor that carries the right-hand gradient in.
    Outputs are (batch, nchunks, dim, N) fp32. Tiles are walked last to first (the backward's
    order); the forward part accumulates tile end states with the decay of the tiles after them.
    Each state n is a 2-D (BLOCK_D, BLOCK_L) scan of its own (static loop over n)."""
    i_d, i_c, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b64 = i_b.to(tl.int64)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_d = o_d < dim
    o_n = tl.arange(0, BLOCK_N)
    m_n = o_n < N
    i_g = (i_d * BLOCK_D) // dpg  # BLOCK_D divides dpg: one group per block
    m_dn = m_d[:, None] & m_n[None, :]
    if HAS_BIAS:
        b_bias = tl.load(bias_ptr + o_d, mask=m_d, other=0.0).to(tl.float32)
    else:
        b_bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    t_lo = i_c * T
    t_hi = tl.minimum(t_lo + T, L)
    n_tiles = tl.cdiv(t_hi - t_lo, BLOCK_L)
    last = (tl.arange(0, BLOCK_L) == BLOCK_L - 1)[None, :]
    first = (tl.arange(0, BLOCK_L) == 0)[None, :]

    b_h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    b_p = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32) + 1.0
    b_g = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    b_q = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32) + 1.0
    o_dl = o_d[:, None].to(tl.int64)
    p_delta = delta_ptr + i_b64 * s_db + o_dl * s_dd
    p_seq = seq_ptr + i_b64 * L
    p_B = B_ptr + i_b64 * s_Bb + i_g * s_Bg
    p_C = C_ptr + i_b64 * s_Cb + i_g * s_Cg
    for k in range(n_tiles):
        o_t = t_lo + (n_tiles - 1 - k) * BLOCK_L + tl.arange(0, BLOCK_L)
        m_t = o_t < t_hi
        m_dt = m_d[:, None] & m_t[None, :]
        if FWD:
            b_dt, _ = _delta_tile(p_delta + o_t[None, :], m_dt, b_bias, SOFTPLUS)
            reset = _reset_tile(p_seq, o_t, m_t, HAS_SEQ)
            b_u = tl.load(u_ptr + i_b64 * s_ub + o_dl * s_ud + o_t[None, :],
                          mask=m_dt, other=0.0).to(tl.float32)
            b_du = b_dt * b_u
            for n in tl.static_range(N):
                sel = (o_n == n)[None, :]
                b_A2 = tl.load(A_ptr + o_d * N + n, mask=m_d, other=0.0) * LOG2E
                b_B = tl.load(p_B + n * s_Bn + o_t, mask=m_t, other=0.0).to(tl.float32)
                b_a = tl.exp2(b_dt * b_A2[:, None])
                if HAS_SEQ:
                    b_a = tl.where(reset[None, :], 0.0, b_a)
                b_ac, b_bc = tl.associative_scan((b_a, b_du * b_B[None, :]), 1, _combine)
                b_pn = _col(b_p, sel)
                b_h = _set_col(b_h, sel, _col(b_h, sel) + b_pn * tl.sum(tl.where(last, b_bc, 0.0), 1))
                b_p = _set_col(b_p, sel, b_pn * tl.sum(tl.where(last, b_ac, 0.0), 1))
        if BWD:
            # α_t = a_{t+1}: the factor by which dh_{t+1} reaches h_t (1 past the sequence end).
            m_next = m_t & (o_t + 1 < L)
            b_dtn, _ = _delta_tile(p_delta + o_t[None, :] + 1, m_d[:, None] & m_next[None, :],
                                   b_bias, SOFTPLUS)
            reset_n = _reset_tile(p_seq, o_t + 1, m_next, HAS_SEQ)
            o_row = o_dl * L + o_t[None, :]
            b_dy = tl.load(dout_ptr + i_b64 * dim * L + o_row, mask=m_dt, other=0.0).to(tl.float32)
            if HAS_Z:
                b_z = tl.load(z_ptr + i_b64 * s_zb + o_dl * s_zd + o_t[None, :],
                              mask=m_dt, other=0.0).to(tl.float32)
                b_dy = b_dy * b_z * tl.sigmoid(b_z)
            for n in tl.static_range(N):
                sel = (o_n == n)[None, :]
                b_A2 = tl.load(A_ptr + o_d * N + n, mask=m_d, other=0.0) * LOG2E
                b_C = tl.load(p_C + n * s_Cn + o_t, mask=m_t, other=0.0).to(tl.float32)
                b_al = tl.exp2(b_dtn * b_A2[:, None])
                if HAS_SEQ:
                    b_al = tl.where(reset_n[None, :], 0.0, b_al)
                b_alc, b_cc = tl.associative_scan((b_al, b_C[None, :] * b_dy), 1, _combine,
                                                  reverse=True)
                b_alf = tl.sum(tl.where(first, b_alc, 0.0), 1)
                b_g = _set_col(b_g, sel, b_alf * _col(b_g, sel) + tl.sum(tl.where(first, b_cc, 0.0), 1))
                b_q = _set_col(b_q, sel, b_alf * _col(b_q, sel))
    o_out = ((i_b64 * tl.num_programs(1) + i_c) * dim + o_d[:, None]) * N + o_n[None, :]
    if FWD:
        tl.store(hloc_ptr + o_out, b_h, mask=m_dn)
        tl.store(hdec_ptr + o_out, b_p, mask=m_dn)
    if BWD:
        tl.store(gloc_ptr + o_out, b_g, mask=m_dn)
        tl.store(gdec_ptr + o_out, b_q, mask=m_dn)


@triton.jit
def _chunk_carry_kernel(
    loc_ptr, dec_ptr, init_ptr, dim, N, nc,
    HAS_INIT: tl.constexpr, REVERSE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Sequential pass over chunks, in place: loc[c] <- the state entering chunk c, where
    entering(next) = dec[c] * entering(c) + loc[c]. Forward: left to right from initial_state.
    REVERSE: right to left from dL/dfinal_state (the backward's gradient entering each chunk)."""
    i_d, i_b = tl.program_id(0), tl.program_id(1)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    o_n = tl.arange(0, BLOCK_N)
    m = (o_d < dim)[:, None] & (o_n < N)[None, :]
    o_dn = o_d[:, None] * N + o_n[None, :]
    if HAS_INIT:
        b_h = tl.load(init_ptr + i_b.to(tl.int64) * dim * N + o_dn, mask=m, other=0.0).to(tl.float32)
    else:
        b_h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    for i in range(nc):
        if REVERSE:
            c = nc - 1 - i
        else:
            c = i
        p = (i_b.to(tl.int64) * nc + c) * dim * N + o_dn
        b_loc = tl.load(loc_ptr + p, mask=m, other=0.0)
        b_dec = tl.load(dec_ptr + p, mask=m, other=0.0)
        tl.store(loc_ptr + p, b_h, mask=m)
        b_h = b_dec * b_h + b_loc


@triton.jit
def _fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, seq_ptr,
    h0_ptr, y_ptr, final_ptr, ck_ptr,
    dim, L, T, dpg, NT,
    s_ub, s_ud, s_db, s_dd, s_zb, s_zd, s_Bb, s_Bg, s_Bn, s_Cb, s_Cg, s_Cn,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_SEQ: tl.constexpr, HAS_H0: tl.constexpr, HAS_FINAL: tl.constexpr, HAS_CK: tl.constexpr,
    N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):
    """y for one (channel block, chunk, batch row), starting from h0[b, chunk] (zeros if absent).
    y is (batch, dim, L) contiguous; final_state written by the last chunk's programs.
    HAS_CK: the state before each tile also goes to ck (batch, NT tiles, dim, N) fp32, for the
    sequential backward (its chunks are these tiles: no forward recomputation of chunk states).
    Per tile: Δ, u, z loaded once as (BLOCK_D, BLOCK_L); then for each state n (static loop) one
    2-D scan along time, y += C_n h_n, and the state's last column kept as the next tile's carry."""
    i_d, i_c, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    nc = tl.num_programs(1)
    i_b64 = i_b.to(tl.int64)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_d = o_d < dim
    o_n = tl.arange(0, BLOCK_N)
    m_n = o_n < N
    i_g = (i_d * BLOCK_D) // dpg
    m_dn = m_d[:, None] & m_n[None, :]
    o_dn = o_d[:, None] * N + o_n[None, :]
    if HAS_BIAS:
        b_bias = tl.load(bias_ptr + o_d, mask=m_d, other=0.0).to(tl.float32)
    else:
        b_bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_D:
        b_D = tl.load(D_ptr + o_d, mask=m_d, other=0.0).to(tl.float32)
    if HAS_H0:
        b_h = tl.load(h0_ptr + (i_b64 * nc + i_c) * dim * N + o_dn, mask=m_dn, other=0.0).to(tl.float32)
    else:
        b_h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    last = (tl.arange(0, BLOCK_L) == BLOCK_L - 1)[None, :]
    t_lo = i_c * T
    t_hi = tl.minimum(t_lo + T, L)
    o_dl = o_d[:, None].to(tl.int64)
    p_u = u_ptr + i_b64 * s_ub + o_dl * s_ud
    p_delta = delta_ptr + i_b64 * s_db + o_dl * s_dd
    p_z = z_ptr + i_b64 * s_zb + o_dl * s_zd
    p_y = y_ptr + i_b64 * dim * L + o_dl * L
    p_B = B_ptr + i_b64 * s_Bb + i_g * s_Bg
    p_C = C_ptr + i_b64 * s_Cb + i_g * s_Cg
    for t0 in range(t_lo, t_hi, BLOCK_L):
        o_t = t0 + tl.arange(0, BLOCK_L)
        m_t = o_t < t_hi
        m_dt = m_d[:, None] & m_t[None, :]
        if HAS_CK:
            tl.store(ck_ptr + (i_b64 * NT + t0 // BLOCK_L) * dim * N + o_dn, b_h, mask=m_dn)
        b_dt, _ = _delta_tile(p_delta + o_t[None, :], m_dt, b_bias, SOFTPLUS)
        reset = _reset_tile(seq_ptr + i_b64 * L, o_t, m_t, HAS_SEQ)
        b_u = tl.load(p_u + o_t[None, :], mask=m_dt, other=0.0).to(tl.float32)
        b_du = b_dt * b_u
        if HAS_D:
            b_y = b_D[:, None] * b_u
        else:
            b_y = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)
        for n in tl.static_range(N):
            sel = (o_n == n)[None, :]
            b_A2 = tl.load(A_ptr + o_d * N + n, mask=m_d, other=0.0) * LOG2E
            b_B = tl.load(p_B + n * s_Bn + o_t, mask=m_t, other=0.0).to(tl.float32)
            b_C = tl.load(p_C + n * s_Cn + o_t, mask=m_t, other=0.0).to(tl.float32)
            b_a = tl.exp2(b_dt * b_A2[:, None])
            if HAS_SEQ:
                b_a = tl.where(reset[None, :], 0.0, b_a)
            b_ac, b_bc = tl.associative_scan((b_a, b_du * b_B[None, :]), 1, _combine)
            b_hs = b_ac * _col(b_h, sel)[:, None] + b_bc  # h_t for state n
            b_y += b_hs * b_C[None, :]
            b_h = _set_col(b_h, sel, tl.sum(tl.where(last, b_hs, 0.0), 1))
        if HAS_Z:
            b_z = tl.load(p_z + o_t[None, :], mask=m_dt, other=0.0).to(tl.float32)
            b_y *= b_z * tl.sigmoid(b_z)
        tl.store(p_y + o_t[None, :], b_y.to(y_ptr.dtype.element_ty), mask=m_dt)
    if HAS_FINAL:
        if i_c == nc - 1:
            tl.store(final_ptr + i_b64 * dim * N + o_dn, b_h, mask=m_dn)


@triton.jit
def _cols8(x):
    """The 8 columns of an (R, 8) register tile, in order, by reshape + split (in-thread moves
    when a thread holds a row's 8 steps, as the row-contiguous loads lay them out)."""
    R: tl.constexpr = x.shape[0]
    a, b = tl.split(tl.reshape(x, [R, 4, 2]))          # columns 0 2 4 6 | 1 3 5 7
    a0, a1 = tl.split(tl.reshape(a, [R, 2, 2]))        # 0 4 | 2 6
    b0, b1 = tl.split(tl.reshape(b, [R, 2, 2]))        # 1 5 | 3 7
    c0, c4 = tl.split(a0)
    c2, c6 = tl.split(a1)
    c1, c5 = tl.split(b0)
    c3, c7 = tl.split(b1)
    return c0, c1, c2, c3, c4, c5, c6, c7


@triton.jit
def _join8(c0, c1, c2, c3, c4, c5, c6, c7):
    """Inverse of _cols8: eight (R,) columns back into an (R, 8) tile."""
    R: tl.constexpr = c0.shape[0]
    a = tl.reshape(tl.join(tl.reshape(tl.join(c0, c4), [R, 2]), tl.reshape(tl.join(c2, c6), [R, 2])), [R, 4])
    b = tl.reshape(tl.join(tl.reshape(tl.join(c1, c5), [R, 2]), tl.reshape(tl.join(c3, c7), [R, 2])), [R, 4])
    return tl.reshape(tl.join(a, b), [R, 8])


@triton.jit
def _keep_tile(p_seq_row, o_t, m_t, HAS_SEQ: tl.constexpr, BLOCK_D: tl.constexpr):
    """(BLOCK_D, 8) fp32 factor on the decay of 8 steps: 0 where a document starts, else 1."""
    reset = _reset_tile(p_seq_row, o_t, m_t, HAS_SEQ)
    return tl.where(reset[None, :], 0.0, 1.0) + tl.zeros([BLOCK_D, 8], dtype=tl.float32)


@triton.jit
def _seq_step(b_h, b_A2, dt, du, keep, b_B, b_C, HAS_SEQ: tl.constexpr):
    """One time step of every (channel, state) pair in registers: h = a h + Δ u B, y = C·h."""
    b_a = tl.exp2(dt[:, None] * b_A2)
    if HAS_SEQ:
        b_a = b_a * keep[:, None]
    b_h = b_a * b_h + du[:, None] * b_B[None, :]
    return b_h, tl.sum(b_h * b_C[None, :], 1)


@triton.jit
def _fwd_seq_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, seq_ptr,
    h0_ptr, y_ptr, final_ptr, hloc_ptr, hdec_ptr, ck_ptr,
    dim, L, T, dpg, TCK, NCK,
    s_ub, s_ud, s_db, s_dd, s_zb, s_zd, s_Bb, s_Bg, s_Bn, s_Cb, s_Cg, s_Cn,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_SEQ: tl.constexpr, HAS_H0: tl.constexpr, HAS_FINAL: tl.constexpr, LOCAL: tl.constexpr,
    HAS_CK: tl.constexpr, N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Version 3 forward (sequential in time; the default, BYTELM_SCAN_FWD=chunked selects
    version 2, `_fwd_kernel`): one program per
    (channel block, chunk, batch row); the (BLOCK_D, N) state lives in registers and the chunk is
    walked 8 steps at a time: u, Δ, z as (BLOCK_D, 8) tiles (one 16-byte load per row in bf16),
    B and C as (N, 8) tiles, split into columns in registers, then 8 unrolled steps of
    exp2 + 2 FMA + the C reduction per (channel, state). No scan, no shuffles along time.
    LOCAL: the chunk pass of the chunked forward instead: start from zero, write the chunk's end
    state (hloc) and total decay Π a_t (hdec, 0 after a document start), no y.
    HAS_CK (not LOCAL): the state before every TCK-th step also goes to ck (batch, NCK, dim, N)
    fp32, the chunk start states of the sequential backward."""
    i_d, i_c, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    nc = tl.num_programs(1)
    i_b64 = i_b.to(tl.int64)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_d = o_d < dim
    o_n = tl.arange(0, BLOCK_N)
    m_n = o_n < N
    i_g = (i_d * BLOCK_D) // dpg
    m_dn = m_d[:, None] & m_n[None, :]
    o_dn = o_d[:, None] * N + o_n[None, :]
    b_A2 = tl.load(A_ptr + o_dn, mask=m_dn, other=0.0).to(tl.float32) * LOG2E
    if HAS_BIAS:
        b_bias = tl.load(bias_ptr + o_d, mask=m_d, other=0.0).to(tl.float32)
    else:
        b_bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_D:
        b_D = tl.load(D_ptr + o_d, mask=m_d, other=0.0).to(tl.float32)
    if HAS_H0 and not LOCAL:
        b_h = tl.load(h0_ptr + (i_b64 * nc + i_c) * dim * N + o_dn, mask=m_dn, other=0.0).to(tl.float32)
    else:
        b_h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    b_dsum = tl.zeros([BLOCK_D], dtype=tl.float32)      # LOCAL: Σ Δ over the chunk
    b_alive = tl.zeros([BLOCK_D], dtype=tl.float32) + 1.0  # LOCAL: 0 once a document starts
    t_lo = i_c * T
    t_hi = tl.minimum(t_lo + T, L)
    o_dl = o_d[:, None].to(tl.int64)
    p_u = u_ptr + i_b64 * s_ub + o_dl * s_ud
    p_delta = delta_ptr + i_b64 * s_db + o_dl * s_dd
    p_z = z_ptr + i_b64 * s_zb + o_dl * s_zd
    p_y = y_ptr + i_b64 * dim * L + o_dl * L
    p_B = B_ptr + i_b64 * s_Bb + i_g * s_Bg + o_n[:, None] * s_Bn
    p_C = C_ptr + i_b64 * s_Cb + i_g * s_Cg + o_n[:, None] * s_Cn
    for t0 in range(t_lo, t_hi, 8):
        o_t = t0 + tl.arange(0, 8)
        m_t = o_t < t_hi
        m_dt = m_d[:, None] & m_t[None, :]
        m_nt = m_n[:, None] & m_t[None, :]
        b_dt, _ = _delta_tile(p_delta + o_t[None, :], m_dt, b_bias, SOFTPLUS)
        b_u = tl.load(p_u + o_t[None, :], mask=m_dt, other=0.0).to(tl.float32)
        b_Bt = tl.load(p_B + o_t[None, :], mask=m_nt, other=0.0).to(tl.float32)
        b_keep = _keep_tile(seq_ptr + i_b64 * L, o_t, m_t, HAS_SEQ, BLOCK_D)
        if HAS_CK:
            if t0 % TCK == 0:
                tl.store(ck_ptr + (i_b64 * NCK + t0 // TCK) * dim * N + o_dn, b_h, mask=m_dn)
        if LOCAL:
            b_dsum += tl.sum(b_dt, 1)
            b_alive *= tl.min(b_keep, 1)
        dt0, dt1, dt2, dt3, dt4, dt5, dt6, dt7 = _cols8(b_dt)
        du0, du1, du2, du3, du4, du5, du6, du7 = _cols8(b_dt * b_u)
        k0, k1, k2, k3, k4, k5, k6, k7 = _cols8(b_keep)
        B0, B1, B2, B3, B4, B5, B6, B7 = _cols8(b_Bt)
        if LOCAL:  # C unused: the state alone
            b_h, _ = _seq_step(b_h, b_A2, dt0, du0, k0, B0, B0, HAS_SEQ)
            b_h, _ = _seq_step(b_h, b_A2, dt1, du1, k1, B1, B1, HAS_SEQ)
            b_h, _ = _seq_step(b_h, b_A2, dt2, du2, k2, B2, B2, HAS_SEQ)
            b_h, _ = _seq_step(b_h, b_A2, dt3, du3, k3, B3, B3, HAS_SEQ)
            b_h, _ = _seq_step(b_h, b_A2, dt4, du4, k4, B4, B4, HAS_SEQ)
            b_h, _ = _seq_step(b_h, b_A2, dt5, du5, k5, B5, B5, HAS_SEQ)
            b_h, _ = _seq_step(b_h, b_A2, dt6, du6, k6, B6, B6, HAS_SEQ)
            b_h, _ = _seq_step(b_h, b_A2, dt7, du7, k7, B7, B7, HAS_SEQ)
        else:
            b_Ct = tl.load(p_C + o_t[None, :], mask=m_nt, other=0.0).to(tl.float32)
            C0, C1, C2, C3, C4, C5, C6, C7 = _cols8(b_Ct)
            b_h, y0 = _seq_step(b_h, b_A2, dt0, du0, k0, B0, C0, HAS_SEQ)
            b_h, y1 = _seq_step(b_h, b_A2, dt1, du1, k1, B1, C1, HAS_SEQ)
            b_h, y2 = _seq_step(b_h, b_A2, dt2, du2, k2, B2, C2, HAS_SEQ)
            b_h, y3 = _seq_step(b_h, b_A2, dt3, du3, k3, B3, C3, HAS_SEQ)
            b_h, y4 = _seq_step(b_h, b_A2, dt4, du4, k4, B4, C4, HAS_SEQ)
            b_h, y5 = _seq_step(b_h, b_A2, dt5, du5, k5, B5, C5, HAS_SEQ)
            b_h, y6 = _seq_step(b_h, b_A2, dt6, du6, k6, B6, C6, HAS_SEQ)
            b_h, y7 = _seq_step(b_h, b_A2, dt7, du7, k7, B7, C7, HAS_SEQ)
            b_y = _join8(y0, y1, y2, y3, y4, y5, y6, y7)
            if HAS_D:
                b_y += b_D[:, None] * b_u
            if HAS_Z:
                b_z = tl.load(p_z + o_t[None, :], mask=m_dt, other=0.0).to(tl.float32)
                b_y *= b_z * tl.sigmoid(b_z)
            tl.store(p_y + o_t[None, :], b_y.to(y_ptr.dtype.element_ty), mask=m_dt)
    if LOCAL:
        o_out = (i_b64 * nc + i_c) * dim * N + o_dn
        tl.store(hloc_ptr + o_out, b_h, mask=m_dn)
        tl.store(hdec_ptr + o_out, b_alive[:, None] * tl.exp2(b_dsum[:, None] * b_A2), mask=m_dn)
    else:
        if HAS_FINAL:
            if i_c == nc - 1:
                tl.store(final_ptr + i_b64 * dim * N + o_dn, b_h, mask=m_dn)


@triton.jit
def _state_update_kernel(
    state_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr,
    dim, dpg, N, s_sb, s_sd, s_xb, s_tb, s_zb, s_Bb, s_Bg, s_Cb, s_Cg,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """One decode step for (channel block, batch row); state (batch, dim, N) fp32 updated in place."""
    i_d, i_b = tl.program_id(0), tl.program_id(1)
    i_b64 = i_b.to(tl.int64)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_d = o_d < dim
    o_n = tl.arange(0, BLOCK_N)
    m_n = o_n < N
    m_dn = m_d[:, None] & m_n[None, :]
    i_g = (i_d * BLOCK_D) // dpg
    p_s = state_ptr + i_b64 * s_sb + o_d[:, None] * s_sd + o_n[None, :]
    b_s = tl.load(p_s, mask=m_dn, other=0.0)
    b_x = tl.load(x_ptr + i_b64 * s_xb + o_d, mask=m_d, other=0.0).to(tl.float32)
    b_dt = tl.load(dt_ptr + i_b64 * s_tb + o_d, mask=m_d, other=0.0).to(tl.float32)
    if HAS_BIAS:
        b_dt += tl.load(bias_ptr + o_d, mask=m_d, other=0.0).to(tl.float32)
    if SOFTPLUS:
        b_dt = tl.where(b_dt > 20.0, b_dt, tl.log(1.0 + tl.exp(b_dt)))
    b_A2 = tl.load(A_ptr + o_d[:, None] * N + o_n[None, :], mask=m_dn, other=0.0) * LOG2E
    b_B = tl.load(B_ptr + i_b64 * s_Bb + i_g * s_Bg + o_n, mask=m_n, other=0.0).to(tl.float32)
    b_C = tl.load(C_ptr + i_b64 * s_Cb + i_g * s_Cg + o_n, mask=m_n, other=0.0).to(tl.float32)
    b_s = tl.exp2(b_dt[:, None] * b_A2) * b_s + (b_dt * b_x)[:, None] * b_B[None, :]
    tl.store(p_s, b_s.to(state_ptr.dtype.element_ty), mask=m_dn)
    b_y = tl.sum(b_s * b_C[None, :], 1)
    if HAS_D:
        b_y += tl.load(D_ptr + o_d, mask=m_d, other=0.0).to(tl.float32) * b_x
    if HAS_Z:
        b_z = tl.load(z_ptr + i_b64 * s_zb + o_d, mask=m_d, other=0.0).to(tl.float32)
        b_y *= b_z * tl.sigmoid(b_z)
    tl.store(y_ptr + i_b64 * dim + o_d, b_y.to(y_ptr.dtype.element_ty), mask=m_d)


# ------------------------------------------------------------------ host side

def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# Tile shapes: (channels, steps) per program; the 3-D register tile is BLOCK_D x N x BLOCK_L.
# Under the interpreter, short tiles so that the tests cross tile and chunk boundaries.
FWD_CFG = dict(BLOCK_D=4, BLOCK_L=256, num_warps=4, programs_per_sm=4)
FWD_CFG_INTERP = dict(BLOCK_D=8, BLOCK_L=8, num_warps=1, programs_per_sm=1)


def new_empty(*shape, device, dtype):
    """Every buffer the kernels must fully write comes from here (tests poison it with NaN)."""
    return torch.empty(*shape, device=device, dtype=dtype)


def cfg(gpu_cfg: dict, interp_cfg: dict) -> dict:
    return interp_cfg if interpreting() else gpu_cfg


def grad_buffers(u, delta, z, B, D, delta_bias, need_dh0):
    """The backward's outputs: du, ddelta, dz (in their inputs' layout, fully written by the
    kernel), and the atomically accumulated dB, dC (batch, G, N, L), dA, dD, dbias (fp32, zeroed),
    dh0 (batch, dim, N) fp32 or None."""
    batch, dim, L = u.shape
    G, N = B.shape[1], B.shape[2]
    f32 = dict(device=u.device, dtype=torch.float32)
    du = new_empty(batch, dim, L, device=u.device, dtype=u.dtype)
    ddelta = new_empty(batch, dim, L, device=u.device, dtype=delta.dtype)
    dz = new_empty(batch, dim, L, device=u.device, dtype=z.dtype) if z is not None else None
    dB = torch.zeros(batch, G, N, L, **f32)
    dC = torch.zeros(batch, G, N, L, **f32)
    dA = torch.zeros(dim, N, **f32)
    dD = torch.zeros(dim, **f32) if D is not None else None
    dbias = torch.zeros(dim, **f32) if delta_bias is not None else None
    dh0 = new_empty(batch, dim, N, **f32) if need_dh0 else None
    return du, ddelta, dz, dB, dC, dA, dD, dbias, dh0


def sm_count(t) -> int:
    if t.is_cuda:
        return torch.cuda.get_device_properties(t.device).multi_processor_count
    return 1


def launch_dims(u, B, want_bd: int):
    """(batch, dim, L, G, N, dpg, BD, BN, nbd) of a launch over u (batch, dim, L) and B (batch,
    G, N, L) with up to want_bd channels per program: dpg channels per group, BD channels per
    program (block_d), BN the padded state width, nbd channel blocks."""
    batch, dim, L = u.shape
    G, N = B.shape[1], B.shape[2]
    dpg = dim // G
    BD = block_d(want_bd, dim, dpg)
    return batch, dim, L, G, N, dpg, BD, triton.next_power_of_2(N), triton.cdiv(dim, BD)


def block_d(want: int, dim: int, dpg: int) -> int:
    """Channels per program: a power of two that divides the channels of one group."""
    return max(1, min(want, dpg & (-dpg), triton.next_power_of_2(dim)))


def chunk_steps(L: int, block_l: int, chunk_size, n_programs: int, want_programs: int) -> int:
    """Steps per chunk T (a multiple of block_l): chunk_size if given, else the longest chunk
    that still gives about want_programs programs."""
    tiles = triton.cdiv(L, block_l)
    if chunk_size:
        return triton.cdiv(int(chunk_size), block_l) * block_l
    nc = max(1, min(triton.cdiv(want_programs, n_programs), tiles))
    T = triton.cdiv(tiles, nc) * block_l
    return T


def bc_strides(t):
    return t.stride(0), t.stride(1), t.stride(2)


def chunk_states(u, delta, A, B, C, z, dout, delta_bias, softplus, seq_idx, T, nc, BD,
                 fwd: bool, bwd: bool, initial_state=None, dfinal=None, BLOCK_L=8, num_warps=4):
    """Chunk-boundary states for chunking T: (start states (batch, nc, dim, N) or None,
    gradients entering each chunk from the right (batch, nc, dim, N) or None)."""
    batch, dim, L = u.shape
    G, N = B.shape[1], B.shape[2]
    dpg = dim // G
    f32 = dict(device=u.device, dtype=torch.float32)
    hloc = new_empty(batch, nc, dim, N, **f32) if fwd else u
    hdec = new_empty(batch, nc, dim, N, **f32) if fwd else u
    gloc = new_empty(batch, nc, dim, N, **f32) if bwd else u
    gdec = new_empty(batch, nc, dim, N, **f32) if bwd else u
    BN = triton.next_power_of_2(N)
    nbd = triton.cdiv(dim, BD)
    _chunk_local_kernel[(nbd, nc, batch)](
        u, delta, A, B, C, z if z is not None else u, dout if dout is not None else u,
        delta_bias if delta_bias is not None else u, seq_idx if seq_idx is not None else u,
        hloc, hdec, gloc, gdec, dim, L, T, dpg,
        u.stride(0), u.stride(1), delta.stride(0), delta.stride(1),
        z.stride(0) if z is not None else 0, z.stride(1) if z is not None else 0,
        *bc_strides(B), *bc_strides(C),
        HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus, HAS_SEQ=seq_idx is not None,
        HAS_Z=z is not None, FWD=fwd, BWD=bwd, N=N,
        BLOCK_D=BD, BLOCK_N=BN, BLOCK_L=BLOCK_L, num_warps=num_warps)
    BDc = min(32, triton.next_power_of_2(dim))
    grid = (triton.cdiv(dim, BDc), batch)
    starts = grads = None
    if fwd:
        _chunk_carry_kernel[grid](hloc, hdec, initial_state if initial_state is not None else hloc,
                                  dim, N, nc, HAS_INIT=initial_state is not None, REVERSE=False,
                                  BLOCK_D=BDc, BLOCK_N=BN)
        starts = hloc
    if bwd:
        _chunk_carry_kernel[grid](gloc, gdec, dfinal if dfinal is not None else gloc,
                                  dim, N, nc, HAS_INIT=dfinal is not None, REVERSE=True,
                                  BLOCK_D=BDc, BLOCK_N=BN)
        grads = gloc
    return starts, grads


def scan_fwd(u, delta, A, B, C, D, z, delta_bias, softplus, initial_state, seq_idx, chunk_size,
             want_final, save_states=False):
    """(y, final_state, saved): y (batch, dim, L) in u's dtype, final_state (batch, dim, N) fp32
    or None; with save_states, saved = (states, T): the state before every T-step tile, (batch,
    cdiv(L, T), dim, N) fp32 (T = BLOCK_L; 1/8 of a bf16 (batch, dim, L) tensor at T 256, N 16),
    for the sequential backward; else None.
    Inputs already normalized by triton_op.py (B, C 4-D, unit stride along L, fp32 A/D/bias).
    BYTELM_SCAN_FWD (forward_version()): auto, the default, runs version 4
    (triton_fwd_lanes.py) where it needs no chunk pass (`lanes_fit`: batch x dim large enough,
    d_state <= 32), with or without saving states for the backward, else version 3; lanes
    forces version 4, seq version 3 (`scan_fwd_seq`), chunked version 2 (`_fwd_kernel`)."""
    version = forward_version()
    if version in ("auto", "lanes"):
        from bytelm.kernels.selective_scan.triton_fwd_lanes import lanes_fit, scan_fwd_lanes
        if version == "auto":
            version = "lanes" if lanes_fit(u, B) else "seq"
    if version == "lanes":
        return scan_fwd_lanes(u, delta, A, B, C, D, z, delta_bias, softplus, initial_state,
                              seq_idx, chunk_size, want_final, save_states)
    if version == "seq":
        return scan_fwd_seq(u, delta, A, B, C, D, z, delta_bias, softplus, initial_state, seq_idx,
                            chunk_size, want_final, save_states)
    c = cfg(FWD_CFG, FWD_CFG_INTERP)
    batch, dim, L, G, N, dpg, BD, BN, nbd = launch_dims(u, B, c["BLOCK_D"])
    BL = c["BLOCK_L"]
    T = chunk_steps(L, BL, chunk_size, batch * nbd, c["programs_per_sm"] * sm_count(u))
    nc = triton.cdiv(L, T)
    if nc > 1:
        h0, _ = chunk_states(u, delta, A, B, C, z, None, delta_bias, softplus, seq_idx, T, nc, BD,
                             fwd=True, bwd=False, initial_state=initial_state,
                             BLOCK_L=BL, num_warps=c["num_warps"])
    else:
        h0 = initial_state
    y = new_empty(batch, dim, L, device=u.device, dtype=u.dtype)
    final = new_empty(batch, dim, N, device=u.device, dtype=torch.float32) if want_final else None
    NT = triton.cdiv(L, BL)
    ck = new_empty(batch, NT, dim, N, device=u.device, dtype=torch.float32) if save_states else None
    _fwd_kernel[(nbd, nc, batch)](
        u, delta, A, B, C, D if D is not None else u, z if z is not None else u,
        delta_bias if delta_bias is not None else u, seq_idx if seq_idx is not None else u,
        h0 if h0 is not None else u, y, final if final is not None else u,
        ck if ck is not None else u,
        dim, L, T, dpg, NT,
        u.stride(0), u.stride(1), delta.stride(0), delta.stride(1),
        z.stride(0) if z is not None else 0, z.stride(1) if z is not None else 0,
        *bc_strides(B), *bc_strides(C),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        SOFTPLUS=softplus, HAS_SEQ=seq_idx is not None, HAS_H0=h0 is not None,
        HAS_FINAL=final is not None, HAS_CK=ck is not None, N=N, BLOCK_D=BD, BLOCK_N=BN,
        BLOCK_L=BL, num_warps=c["num_warps"])
    return y, final, (None if ck is None else (ck, BL))


FWD_ENV = "BYTELM_SCAN_FWD"


def forward_version() -> str:
    """'auto' (the default: version 4 where it fits the shape, else 3),
    'seq' (version 3, `_fwd_seq_kernel`), 'lanes' (version 4, triton_fwd_lanes.py) or
    'chunked' (version 2, `_fwd_kernel`)."""
    return env_choice(FWD_ENV, ("auto", "seq", "lanes", "chunked"),
                      "version 4 where it fits the shape, else 3")


# Version 3: channels per program, warps, programs per SM (the chunk length is a multiple of 8
# steps, chosen for about programs_per_sm x SMs programs). H200, 2026-12-02, ms at 8x2048 /
# 2x8192 / 1x32768 (bench_kernels.py --sweep): BLOCK_D 32, 1 warp, 8/SM 0.538 / 0.673 / 2.996;
# 16, 1, 8: 0.813 / 1.055 / 1.837; version 2 0.633 / 0.856 / 2.806. So 32 channels when batch x
# dim gives >= 128 such blocks (no more than ~8 chunks per row), else 16 (SEQ_CFG_NARROW).
SEQ_CFG = dict(BLOCK_D=32, num_warps=1, programs_per_sm=8)
SEQ_CFG_NARROW = dict(BLOCK_D=16, num_warps=1, programs_per_sm=8)
SEQ_CFG_INTERP = dict(BLOCK_D=8, num_warps=1, programs_per_sm=1)
SEQ_CK_T = dict(gpu=256, interp=16)  # steps between the states saved for the backward


def scan_fwd_seq(u, delta, A, B, C, D, z, delta_bias, softplus, initial_state, seq_idx,
                 chunk_size, want_final, save_states=False):
    """scan_fwd with `_fwd_seq_kernel`: when batch x dim / BLOCK_D programs are too few, the
    same kernel in LOCAL mode gives each chunk's end state and decay, `_chunk_carry_kernel`
    the chunk start states, then the kernel reruns each chunk writing y (and, with
    save_states, the state before every SEQ_CK_T-th step)."""
    c = cfg(SEQ_CFG, SEQ_CFG_INTERP)
    if not interpreting() and u.shape[0] * u.shape[1] < 128 * SEQ_CFG["BLOCK_D"]:
        c = SEQ_CFG_NARROW
    batch, dim, L, G, N, dpg, BD, BN, nbd = launch_dims(u, B, c["BLOCK_D"])
    T = chunk_steps(L, 8, chunk_size, batch * nbd, c["programs_per_sm"] * sm_count(u))
    return run_sequential_forward(_fwd_seq_kernel, nbd, T, u, delta, A, B, C, D, z, delta_bias,
                                  seq_idx, initial_state, want_final, save_states,
                                  SOFTPLUS=softplus, BLOCK_D=BD, BLOCK_N=BN,
                                  num_warps=c["num_warps"])


def run_sequential_forward(kernel, nbd, T, u, delta, A, B, C, D, z, delta_bias, seq_idx,
                           initial_state, want_final, save_states, **flags):
    """Launch a sequential-in-time forward kernel (`_fwd_seq_kernel`, or version 4's
    `_fwd_lanes_kernel`: same arguments) over (nbd channel blocks, chunks of T steps, rows):
    with several chunks, its LOCAL pass gives each chunk's end state and decay,
    `_chunk_carry_kernel` the chunk start states, then the main pass writes y (and, with
    save_states, the state before every SEQ_CK_T-th step). `flags`: the kernel's own
    constexprs and launch options. Returns scan_fwd's (y, final, saved)."""
    batch, dim, L = u.shape
    N = B.shape[2]
    nc = triton.cdiv(L, T)
    f32 = dict(device=u.device, dtype=torch.float32)
    y = new_empty(batch, dim, L, device=u.device, dtype=u.dtype)
    final = new_empty(batch, dim, N, **f32) if want_final else None
    TCK = SEQ_CK_T["interp" if interpreting() else "gpu"]
    NCK = triton.cdiv(L, TCK)
    ck = new_empty(batch, NCK, dim, N, **f32) if save_states else None
    common = (dim, L, T, dim // B.shape[1], TCK, NCK, u.stride(0), u.stride(1), delta.stride(0),
              delta.stride(1), z.stride(0) if z is not None else 0,
              z.stride(1) if z is not None else 0, *bc_strides(B), *bc_strides(C))
    flags.update(HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
                 HAS_SEQ=seq_idx is not None, N=N)
    ins = (u, delta, A, B, C, D if D is not None else u, z if z is not None else u,
           delta_bias if delta_bias is not None else u, seq_idx if seq_idx is not None else u)
    h0 = initial_state
    if nc > 1:
        hloc, hdec = new_empty(batch, nc, dim, N, **f32), new_empty(batch, nc, dim, N, **f32)
        kernel[(nbd, nc, batch)](*ins, u, u, u, hloc, hdec, u, *common, HAS_H0=False,
                                 HAS_FINAL=False, LOCAL=True, HAS_CK=False, **flags)
        BDc = min(32, triton.next_power_of_2(dim))
        _chunk_carry_kernel[(triton.cdiv(dim, BDc), batch)](
            hloc, hdec, initial_state if initial_state is not None else hloc, dim, N, nc,
            HAS_INIT=initial_state is not None, REVERSE=False, BLOCK_D=BDc,
            BLOCK_N=triton.next_power_of_2(N))
        h0 = hloc
    kernel[(nbd, nc, batch)](*ins, h0 if h0 is not None else u, y,
                             final if final is not None else u, u, u,
                             ck if ck is not None else u, *common,
                             HAS_H0=h0 is not None, HAS_FINAL=final is not None,
                             LOCAL=False, HAS_CK=ck is not None, **flags)
    return y, final, (None if ck is None else (ck, TCK))


def state_update(state, x, dt, A, B, C, D, z, dt_bias, softplus):
    """Decode step; B, C (batch, G, N). Returns y (batch, dim) in x's dtype; state updated."""
    batch, dim, N = state.shape
    G = B.shape[1]
    dpg = dim // G
    BD = block_d(16, dim, dpg)
    BN = triton.next_power_of_2(N)
    y = new_empty(batch, dim, device=x.device, dtype=x.dtype)
    _state_update_kernel[(triton.cdiv(dim, BD), batch)](
        state, x, dt, A, B, C, D if D is not None else x, z if z is not None else x,
        dt_bias if dt_bias is not None else x, y,
        dim, dpg, N, state.stride(0), state.stride(1), x.stride(0), dt.stride(0),
        z.stride(0) if z is not None else 0, B.stride(0), B.stride(1), C.stride(0), C.stride(1),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None, SOFTPLUS=softplus,
        BLOCK_D=BD, BLOCK_N=BN, num_warps=4 if not interpreting() else 1)
    return y
