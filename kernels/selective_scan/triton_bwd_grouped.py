"""Mamba-1 selective scan backward, version 3.1 (the default; BYTELM_SCAN_BWD=grouped). On the
H200, 2026-12-02: fwd+bwd 2.51 / 3.04 / 6.53 ms at 8x2048 / 2x8192 / 1x32768 against version
3's 5.12 / 5.29 / 11.03 (kernels/NOTES.md).

Version 3 (triton_bwd_seq.py) spends most of its time in chunk_states (5.8 of 8.5 ms at 8x2048):
a forward and a reverse pass over the inputs to give every chunk its start state and the
gradient entering it from the right. Here:
- the start states come from the forward, which saves the state before every T-step tile
  (scan_fwd(save_states=True): (batch, L/T, dim, N) fp32, 1/8 of a bf16 (batch, dim, L) tensor
  at T 256, N 16): no forward recomputation;
- chunks are grouped so that batch x channel blocks x groups gives about programs_per_sm x SMs
  work items, and a work item walks its group's chunks last to first, carrying dh and the decay
  in registers from one chunk into the previous: one group (no reverse pass at all) when the
  batch alone fills the GPU (8 x 2048 at d_inner 2048);
- with several groups, `group_grads` gives the gradient entering each group: a sequential
  reverse pass per group (`_bwd_local_seq_kernel`, one exp2 per (channel, state, step), no scan)
  and the reverse `_chunk_carry_kernel`.
Inside a chunk the work is version 3's (forward walk to a per-program scratch slot, reverse walk
recomputing 8 states per tile), with its helpers.
Prediction (H200, 8x2048): fwd 0.54 + backward kernel ~2.0 ms = ~2.6 ms fwd+bwd, 3.3x version 3.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from bytelm.kernels.selective_scan import triton_fwd
from bytelm.kernels.selective_scan.triton_bwd_seq import _recompute8, _rev_step
from bytelm.kernels.selective_scan.triton_fwd import (
    LOG2E, _chunk_carry_kernel, _cols8, _delta_tile, _join8, _keep_tile, _reset_tile, bc_strides, cfg,
    launch_dims, sm_count,
)


@triton.jit
def _state_inputs(p_delta, p_u, p_B, p_seq, o_t, m_dt, m_n, m_t, b_bias, SOFTPLUS: tl.constexpr,
                  HAS_SEQ: tl.constexpr, BLOCK_D: tl.constexpr):
    """What an 8-step tile's state recursion reads, for both walks: (Δ, pre-softplus Δ, u, B
    (N, 8), the document-reset factor), fp32."""
    b_dt, b_x = _delta_tile(p_delta + o_t[None, :], m_dt, b_bias, SOFTPLUS)
    b_u = tl.load(p_u + o_t[None, :], mask=m_dt, other=0.0).to(tl.float32)
    b_Bt = tl.load(p_B + o_t[None, :], mask=m_n[:, None] & m_t[None, :], other=0.0).to(tl.float32)
    return b_dt, b_x, b_u, b_Bt, _keep_tile(p_seq, o_t, m_t, HAS_SEQ, BLOCK_D)


@triton.jit
def _walk8(b_h, b_A2, b_dt, b_du, b_keep, b_Bt, HAS_SEQ: tl.constexpr):
    """8 forward steps from the state b_h: (a_0..a_7, h_0..h_7)."""
    dt0, dt1, dt2, dt3, dt4, dt5, dt6, dt7 = _cols8(b_dt)
    du0, du1, du2, du3, du4, du5, du6, du7 = _cols8(b_du)
    k0, k1, k2, k3, k4, k5, k6, k7 = _cols8(b_keep)
    B0, B1, B2, B3, B4, B5, B6, B7 = _cols8(b_Bt)
    a0, h0 = _recompute8(b_h, b_A2, dt0, du0, k0, B0, HAS_SEQ)
    a1, h1 = _recompute8(h0, b_A2, dt1, du1, k1, B1, HAS_SEQ)
    a2, h2 = _recompute8(h1, b_A2, dt2, du2, k2, B2, HAS_SEQ)
    a3, h3 = _recompute8(h2, b_A2, dt3, du3, k3, B3, HAS_SEQ)
    a4, h4 = _recompute8(h3, b_A2, dt4, du4, k4, B4, HAS_SEQ)
    a5, h5 = _recompute8(h4, b_A2, dt5, du5, k5, B5, HAS_SEQ)
    a6, h6 = _recompute8(h5, b_A2, dt6, du6, k6, B6, HAS_SEQ)
    a7, h7 = _recompute8(h6, b_A2, dt7, du7, k7, B7, HAS_SEQ)
    return a0, a1, a2, a3, a4, a5, a6, a7, h0, h1, h2, h3, h4, h5, h6, h7


@triton.jit
def _bwd_grouped_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, seq_ptr, dout_ptr,
    h0_ptr, g_ptr, ck_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, dh0_ptr,
    dim, L, T, dpg, nbd, nc, cpg, ngrp, n_work,
    s_ub, s_ud, s_db, s_dd, s_zb, s_zd, s_Bb, s_Bg, s_Bn, s_Cb, s_Cg, s_Cn,
    s_dBb, s_dBg, s_dBn,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_SEQ: tl.constexpr, HAS_G: tl.constexpr, HAS_DH0: tl.constexpr,
    N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Persistent: program p takes work items p, p + P, ... of (channel block, chunk group, row)
    and walks the group's cpg chunks last to first, carrying dh and the decay a_next from one
    chunk to the previous in registers. h0: the state before every chunk (batch, nc, dim, N);
    g: the gradient entering each group from the right (batch, ngrp, dim, N)."""
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    o_n = tl.arange(0, BLOCK_N)
    m_n = o_n < N
    o_r = tl.arange(0, BLOCK_D)
    p_ck = ck_ptr + pid.to(tl.int64) * (T // 8) * (BLOCK_D * BLOCK_N) + o_r[:, None] * BLOCK_N + o_n[None, :]
    for w in range(pid, n_work, nprog):
        i_d = w % nbd
        i_grp = (w // nbd) % ngrp
        i_b = w // (nbd * ngrp)
        i_b64 = i_b.to(tl.int64)
        o_d = i_d * BLOCK_D + o_r
        m_d = o_d < dim
        i_g = (i_d * BLOCK_D) // dpg
        m_dn = m_d[:, None] & m_n[None, :]
        o_dn = o_d[:, None] * N + o_n[None, :]
        b_A = tl.load(A_ptr + o_dn, mask=m_dn, other=0.0).to(tl.float32)
        b_A2 = b_A * LOG2E
        if HAS_BIAS:
            b_bias = tl.load(bias_ptr + o_d, mask=m_d, other=0.0).to(tl.float32)
        else:
            b_bias = tl.zeros([BLOCK_D], dtype=tl.float32)
        if HAS_D:
            b_D = tl.load(D_ptr + o_d, mask=m_d, other=0.0).to(tl.float32)
        c_lo = i_grp * cpg
        c_hi = tl.minimum(c_lo + cpg, nc)
        o_dl = o_d[:, None].to(tl.int64)
        p_u = u_ptr + i_b64 * s_ub + o_dl * s_ud
        p_delta = delta_ptr + i_b64 * s_db + o_dl * s_dd
        p_z = z_ptr + i_b64 * s_zb + o_dl * s_zd
        p_row = i_b64 * dim * L + o_dl * L              # dout, du, ddelta, dz: (batch, dim, L)
        p_B = B_ptr + i_b64 * s_Bb + i_g * s_Bg + o_n[:, None] * s_Bn
        p_C = C_ptr + i_b64 * s_Cb + i_g * s_Cg + o_n[:, None] * s_Cn
        p_seq = seq_ptr + i_b64 * L
        o_dBC = i_b64 * s_dBb + i_g * s_dBg + o_n[:, None] * s_dBn  # dB, dC: fp32 (batch, G, N, L)
        # dh starts as the gradient entering the group from the right, carried in by the decay of
        # step t_end (1 past the group's end; Δ reads as 0 past L, and a is 0 at a document start)
        if HAS_G:
            b_dh = tl.load(g_ptr + (i_b64 * ngrp + i_grp) * dim * N + o_dn, mask=m_dn, other=0.0).to(tl.float32)
        else:
            b_dh = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
        t_end = tl.minimum(c_hi * T, L)
        m_hi = (t_end < L) & m_d
        b_dtn, _x_next = _delta_tile(p_delta + t_end + tl.zeros([1, 1], dtype=tl.int32), m_hi[:, None],
                               b_bias, SOFTPLUS)
        a_next = tl.exp2(tl.sum(b_dtn, 1)[:, None] * b_A2)
        if HAS_SEQ:
            reset_hi = _reset_tile(p_seq, t_end + tl.zeros([1], dtype=tl.int32), t_end < L, HAS_SEQ)
            a_next = a_next * tl.where(tl.sum(reset_hi.to(tl.int32), 0) > 0, 0.0, 1.0)
        b_dA = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
        b_dDacc = tl.zeros([BLOCK_D], dtype=tl.float32)
        b_dbias = tl.zeros([BLOCK_D], dtype=tl.float32)
        for cc in range(0, c_hi - c_lo):
            i_c = c_hi - 1 - cc
            t_lo = i_c * T
            t_hi = tl.minimum(t_lo + T, L)
            n_tiles = tl.cdiv(t_hi - t_lo, 8)
            b_h = tl.load(h0_ptr + (i_b64 * nc + i_c) * dim * N + o_dn, mask=m_dn, other=0.0)
            # 1. forward walk over the chunk: the state before each 8-step tile to the scratch slot
            for k in range(0, n_tiles):
                t0 = t_lo + 8 * k
                o_t = t0 + tl.arange(0, 8)
                m_t = o_t < t_hi
                m_dt = m_d[:, None] & m_t[None, :]
                tl.store(p_ck + k * (BLOCK_D * BLOCK_N), b_h)
                b_dt, b_x, b_u, b_Bt, b_keep = _state_inputs(p_delta, p_u, p_B, p_seq, o_t, m_dt, m_n,
                                                             m_t, b_bias, SOFTPLUS, HAS_SEQ, BLOCK_D)
                b_h = _walk8(b_h, b_A2, b_dt, b_dt * b_u, b_keep, b_Bt, HAS_SEQ)[15]
            tl.debug_barrier()  # the scratch writes are read back below, maybe by other threads
            # 2. reverse walk over the chunk; dh and a_next carry on into the previous chunk
            for kk in range(0, n_tiles):
                k = n_tiles - 1 - kk
                t0 = t_lo + 8 * k
                o_t = t0 + tl.arange(0, 8)
                m_t = o_t < t_hi
                m_dt = m_d[:, None] & m_t[None, :]
                m_nt = m_n[:, None] & m_t[None, :]
                b_hp = tl.load(p_ck + k * (BLOCK_D * BLOCK_N))
                b_dt, b_x, b_u, b_Bt, b_keep = _state_inputs(p_delta, p_u, p_B, p_seq, o_t, m_dt, m_n,
                                                             m_t, b_bias, SOFTPLUS, HAS_SEQ, BLOCK_D)
                b_Ct = tl.load(p_C + o_t[None, :], mask=m_nt, other=0.0).to(tl.float32)
                b_do = tl.load(dout_ptr + p_row + o_t[None, :], mask=m_dt, other=0.0).to(tl.float32)
                if HAS_Z:
                    b_z = tl.load(p_z + o_t[None, :], mask=m_dt, other=0.0).to(tl.float32)
                    b_sg = tl.sigmoid(b_z)
                    b_dy = b_do * b_z * b_sg
                else:
                    b_dy = b_do
                b_du = b_dt * b_u
                dt0, dt1, dt2, dt3, dt4, dt5, dt6, dt7 = _cols8(b_dt)
                du0, du1, du2, du3, du4, du5, du6, du7 = _cols8(b_du)
                dy0, dy1, dy2, dy3, dy4, dy5, dy6, dy7 = _cols8(b_dy)
                B0, B1, B2, B3, B4, B5, B6, B7 = _cols8(b_Bt)
                C0, C1, C2, C3, C4, C5, C6, C7 = _cols8(b_Ct)
                a0, a1, a2, a3, a4, a5, a6, a7, h0, h1, h2, h3, h4, h5, h6, h7 = _walk8(
                    b_hp, b_A2, b_dt, b_du, b_keep, b_Bt, HAS_SEQ)
                b_dh, b_dA, dC7, dB7, fB7, fA7, y7 = _rev_step(b_dh, a_next, a7, h7, h6, dy7, du7, dt7, B7, C7, b_A, b_dA)
                b_dh, b_dA, dC6, dB6, fB6, fA6, y6 = _rev_step(b_dh, a7, a6, h6, h5, dy6, du6, dt6, B6, C6, b_A, b_dA)
                b_dh, b_dA, dC5, dB5, fB5, fA5, y5 = _rev_step(b_dh, a6, a5, h5, h4, dy5, du5, dt5, B5, C5, b_A, b_dA)
                b_dh, b_dA, dC4, dB4, fB4, fA4, y4 = _rev_step(b_dh, a5, a4, h4, h3, dy4, du4, dt4, B4, C4, b_A, b_dA)
                b_dh, b_dA, dC3, dB3, fB3, fA3, y3 = _rev_step(b_dh, a4, a3, h3, h2, dy3, du3, dt3, B3, C3, b_A, b_dA)
                b_dh, b_dA, dC2, dB2, fB2, fA2, y2 = _rev_step(b_dh, a3, a2, h2, h1, dy2, du2, dt2, B2, C2, b_A, b_dA)
                b_dh, b_dA, dC1, dB1, fB1, fA1, y1 = _rev_step(b_dh, a2, a1, h1, h0, dy1, du1, dt1, B1, C1, b_A, b_dA)
                b_dh, b_dA, dC0, dB0, fB0, fA0, y0 = _rev_step(b_dh, a1, a0, h0, b_hp, dy0, du0, dt0, B0, C0, b_A, b_dA)
                a_next = a0
                o_BCt = o_dBC + o_t[None, :]
                tl.atomic_add(dC_ptr + o_BCt, _join8(dC0, dC1, dC2, dC3, dC4, dC5, dC6, dC7), mask=m_nt, sem="relaxed")
                tl.atomic_add(dB_ptr + o_BCt, _join8(dB0, dB1, dB2, dB3, dB4, dB5, dB6, dB7), mask=m_nt, sem="relaxed")
                b_fB = _join8(fB0, fB1, fB2, fB3, fB4, fB5, fB6, fB7)
                b_ddt = b_fB * b_u + _join8(fA0, fA1, fA2, fA3, fA4, fA5, fA6, fA7)
                b_dU = b_fB * b_dt
                if HAS_D:
                    b_dU += b_D[:, None] * b_dy
                    b_dDacc += tl.sum(tl.where(m_dt, b_dy * b_u, 0.0), 1)
                if HAS_Z:
                    b_y = _join8(y0, y1, y2, y3, y4, y5, y6, y7)
                    if HAS_D:
                        b_y += b_D[:, None] * b_u
                    b_dz = b_do * b_y * b_sg * (1.0 + b_z * (1.0 - b_sg))
                    tl.store(dz_ptr + p_row + o_t[None, :], b_dz.to(dz_ptr.dtype.element_ty), mask=m_dt)
                if SOFTPLUS:
                    b_ddt = b_ddt * tl.sigmoid(b_x)
                b_ddt = tl.where(m_dt, b_ddt, 0.0)
                b_dbias += tl.sum(b_ddt, 1)
                tl.store(du_ptr + p_row + o_t[None, :], b_dU.to(du_ptr.dtype.element_ty), mask=m_dt)
                tl.store(ddelta_ptr + p_row + o_t[None, :], b_ddt.to(ddelta_ptr.dtype.element_ty), mask=m_dt)
            tl.debug_barrier()  # the next chunk (or work item) overwrites the scratch slot
        tl.atomic_add(dA_ptr + o_dn, b_dA, mask=m_dn, sem="relaxed")
        if HAS_D:
            tl.atomic_add(dD_ptr + o_d, b_dDacc, mask=m_d, sem="relaxed")
        if HAS_BIAS:
            tl.atomic_add(dbias_ptr + o_d, b_dbias, mask=m_d, sem="relaxed")
        if HAS_DH0:
            if i_grp == 0:  # dL/dinitial_state = a_0 dh_0 (a_next is a_0 after the last tile)
                tl.store(dh0_ptr + i_b64 * dim * N + o_dn, a_next * b_dh, mask=m_dn)


@triton.jit
def _bwd_local_seq_kernel(
    delta_ptr, A_ptr, C_ptr, z_ptr, bias_ptr, seq_ptr, dout_ptr, gloc_ptr, gdec_ptr,
    dim, L, T, dpg,
    s_db, s_dd, s_zb, s_zd, s_Cb, s_Cg, s_Cn,
    HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, HAS_SEQ: tl.constexpr,
    N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Per (channel block, chunk of T steps, row), walking the chunk last to first 8 steps at a
    time: gloc = dL/dh at the chunk's first step from the chunk's own outputs (zero gradient
    entering from the right: g = a_{t+1} g + C_t dy_t, one exp2 per (channel, state, step)), and
    gdec = Π a_s over s in (t_lo, t_hi], the factor carrying the right-hand gradient in
    (exp2(A ΣΔ), 0 if a document starts in that range). The reverse `_chunk_carry_kernel`
    turns them into the gradient entering each chunk: chunk_states(bwd=True)'s contract."""
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
    t_lo = i_c * T
    t_hi = tl.minimum(t_lo + T, L)
    o_dl = o_d[:, None].to(tl.int64)
    p_delta = delta_ptr + i_b64 * s_db + o_dl * s_dd
    p_z = z_ptr + i_b64 * s_zb + o_dl * s_zd
    p_dout = dout_ptr + i_b64 * dim * L + o_dl * L
    p_C = C_ptr + i_b64 * s_Cb + i_g * s_Cg + o_n[:, None] * s_Cn
    p_seq = seq_ptr + i_b64 * L
    # the decay of step t_hi (the next chunk's first step; Δ reads as 0 past L)
    m_hi = (t_hi < L) & m_d
    b_dtn, _x_next = _delta_tile(p_delta + t_hi + tl.zeros([1, 1], dtype=tl.int32), m_hi[:, None],
                           b_bias, SOFTPLUS)
    b_dsum = tl.sum(b_dtn, 1)                            # Σ Δ over (t_lo, t_hi]
    b_alive = tl.zeros([BLOCK_D], dtype=tl.float32) + 1.0
    if HAS_SEQ:
        reset_hi = _reset_tile(p_seq, t_hi + tl.zeros([1], dtype=tl.int32), t_hi < L, HAS_SEQ)
        b_alive = b_alive * tl.where(tl.sum(reset_hi.to(tl.int32), 0) > 0, 0.0, 1.0)
    b_g = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    a_nx = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)  # g starts at 0: its first factor is moot
    n_tiles = tl.cdiv(t_hi - t_lo, 8)
    for kk in range(0, n_tiles):
        t0 = t_lo + 8 * (n_tiles - 1 - kk)
        o_t = t0 + tl.arange(0, 8)
        m_t = o_t < t_hi
        m_dt = m_d[:, None] & m_t[None, :]
        b_dt, _ = _delta_tile(p_delta + o_t[None, :], m_dt, b_bias, SOFTPLUS)
        b_do = tl.load(p_dout + o_t[None, :], mask=m_dt, other=0.0).to(tl.float32)
        if HAS_Z:
            b_z = tl.load(p_z + o_t[None, :], mask=m_dt, other=0.0).to(tl.float32)
            b_do = b_do * b_z * tl.sigmoid(b_z)
        b_Ct = tl.load(p_C + o_t[None, :], mask=m_n[:, None] & m_t[None, :], other=0.0).to(tl.float32)
        b_keep = _keep_tile(p_seq, o_t, m_t, HAS_SEQ, BLOCK_D)
        inner = (o_t > t_lo)[None, :]
        b_dsum += tl.sum(tl.where(inner, b_dt, 0.0), 1)
        if HAS_SEQ:
            b_alive *= tl.min(tl.where(inner, b_keep, 1.0), 1)
        dt0, dt1, dt2, dt3, dt4, dt5, dt6, dt7 = _cols8(b_dt)
        dy0, dy1, dy2, dy3, dy4, dy5, dy6, dy7 = _cols8(b_do)
        k0, k1, k2, k3, k4, k5, k6, k7 = _cols8(b_keep)
        C0, C1, C2, C3, C4, C5, C6, C7 = _cols8(b_Ct)
        b_g, a_nx = _local_rev_step(b_g, a_nx, b_A2, dt7, dy7, k7, C7, HAS_SEQ)
        b_g, a_nx = _local_rev_step(b_g, a_nx, b_A2, dt6, dy6, k6, C6, HAS_SEQ)
        b_g, a_nx = _local_rev_step(b_g, a_nx, b_A2, dt5, dy5, k5, C5, HAS_SEQ)
        b_g, a_nx = _local_rev_step(b_g, a_nx, b_A2, dt4, dy4, k4, C4, HAS_SEQ)
        b_g, a_nx = _local_rev_step(b_g, a_nx, b_A2, dt3, dy3, k3, C3, HAS_SEQ)
        b_g, a_nx = _local_rev_step(b_g, a_nx, b_A2, dt2, dy2, k2, C2, HAS_SEQ)
        b_g, a_nx = _local_rev_step(b_g, a_nx, b_A2, dt1, dy1, k1, C1, HAS_SEQ)
        b_g, a_nx = _local_rev_step(b_g, a_nx, b_A2, dt0, dy0, k0, C0, HAS_SEQ)
    o_out = (i_b64 * nc + i_c) * dim * N + o_dn
    tl.store(gloc_ptr + o_out, b_g, mask=m_dn)
    tl.store(gdec_ptr + o_out, b_alive[:, None] * tl.exp2(b_dsum[:, None] * b_A2), mask=m_dn)


@triton.jit
def _local_rev_step(b_g, a_nx, b_A2, dt, dy, keep, b_C, HAS_SEQ: tl.constexpr):
    """g_t = a_{t+1} g_{t+1} + C_t dy_t; returns (g_t, a_t)."""
    b_g = a_nx * b_g + dy[:, None] * b_C[None, :]
    b_a = tl.exp2(dt[:, None] * b_A2)
    if HAS_SEQ:
        b_a = b_a * keep[:, None]
    return b_g, b_a


def group_grads(u, delta, A, C, z, dout, delta_bias, softplus, seq_idx, T, nc, dfinal, BD,
                num_warps):
    """The gradient entering each chunk of T steps from the right, (batch, nc, dim, N) fp32:
    `_bwd_local_seq_kernel` then the reverse `_chunk_carry_kernel` from dfinal."""
    batch, dim, L = u.shape
    G, N = C.shape[1], C.shape[2]
    BN = triton.next_power_of_2(N)
    f32 = dict(device=u.device, dtype=torch.float32)
    gloc, gdec = triton_fwd.new_empty(batch, nc, dim, N, **f32), triton_fwd.new_empty(batch, nc, dim, N, **f32)
    _bwd_local_seq_kernel[(triton.cdiv(dim, BD), nc, batch)](
        delta, A, C, z if z is not None else u, delta_bias if delta_bias is not None else u,
        seq_idx if seq_idx is not None else u, dout, gloc, gdec,
        dim, L, T, dim // G,
        delta.stride(0), delta.stride(1),
        z.stride(0) if z is not None else 0, z.stride(1) if z is not None else 0, *bc_strides(C),
        HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus,
        HAS_SEQ=seq_idx is not None, N=N, BLOCK_D=BD, BLOCK_N=BN, num_warps=num_warps)
    BDc = min(32, triton.next_power_of_2(dim))
    _chunk_carry_kernel[(triton.cdiv(dim, BDc), batch)](
        gloc, gdec, dfinal if dfinal is not None else gloc, dim, N, nc,
        HAS_INIT=dfinal is not None, REVERSE=True, BLOCK_D=BDc, BLOCK_N=BN)
    return gloc


# Channels per program, warps, persistent programs per SM (the chunk length is the forward's
# saved-state spacing). H200 sweep, 2026-12-02 (fwd+bwd ms, 8x2048 / 2x8192 / 1x32768):
# 8 ch x 16/SM 2.511 / 3.037 / 6.528; 8 x 8/SM 2.504 / 3.171 / 6.843; 16 x 8/SM 2.633 / 3.183 / 6.984.
GROUPED_CFG = dict(BLOCK_D=8, num_warps=1, programs_per_sm=16)
GROUPED_CFG_INTERP = dict(BLOCK_D=8, num_warps=1, programs_per_sm=3)


def scan_bwd_grouped(dout, dfinal, u, delta, A, B, C, D, z, delta_bias, softplus, initial_state,
                     seq_idx, need_dh0, saved):
    """scan_bwd's contract (triton_bwd.py) with `_bwd_grouped_kernel`; saved = (states, T) from
    scan_fwd(save_states=True): the state before every T-step chunk, (batch, cdiv(L, T), dim, N).
    Work split: chunks are grouped so that batch x channel blocks x groups gives about
    programs_per_sm x SMs work items; each walks its group's chunks last to first. With more
    than one group, group_grads gives the gradient entering each group."""
    c = cfg(GROUPED_CFG, GROUPED_CFG_INTERP)
    batch, dim, L, G, N, dpg, BD, BN, nbd = launch_dims(u, B, c["BLOCK_D"])
    h0, T = saved
    nc = h0.shape[1]
    assert T % 8 == 0, f"chunk length {T} is not a multiple of 8"
    nprog_want = c["programs_per_sm"] * sm_count(u)
    ngrp = max(1, min(nc, round(nprog_want / (batch * nbd))))
    cpg = triton.cdiv(nc, ngrp)
    ngrp = triton.cdiv(nc, cpg)
    if ngrp > 1:
        g = group_grads(u, delta, A, C, z, dout, delta_bias, softplus, seq_idx, cpg * T, ngrp,
                        dfinal, BD, c["num_warps"])
    else:  # (batch, dim, N) reads as (batch, 1, dim, N)
        g = dfinal
    n_work = batch * ngrp * nbd
    nprog = max(1, min(n_work, nprog_want))
    ck = torch.empty(nprog, T // 8, BD, BN, device=u.device, dtype=torch.float32)  # scratch, written before read
    du, ddelta, dz, dB, dC, dA, dD, dbias, dh0 = triton_fwd.grad_buffers(
        u, delta, z, B, D, delta_bias, need_dh0)
    dummy = du
    _bwd_grouped_kernel[(nprog,)](
        u, delta, A, B, C, D if D is not None else dummy, z if z is not None else dummy,
        delta_bias if delta_bias is not None else dummy, seq_idx if seq_idx is not None else dummy,
        dout, h0, g if g is not None else dummy, ck,
        du, ddelta, dz if dz is not None else dummy, dB, dC, dA,
        dD if dD is not None else dummy, dbias if dbias is not None else dummy,
        dh0 if dh0 is not None else dummy,
        dim, L, T, dpg, nbd, nc, cpg, ngrp, n_work,
        u.stride(0), u.stride(1), delta.stride(0), delta.stride(1),
        z.stride(0) if z is not None else 0, z.stride(1) if z is not None else 0,
        *bc_strides(B), *bc_strides(C), *bc_strides(dB),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        SOFTPLUS=softplus, HAS_SEQ=seq_idx is not None,
        HAS_G=g is not None, HAS_DH0=need_dh0, N=N, BLOCK_D=BD, BLOCK_N=BN,
        num_warps=c["num_warps"])
    return du, ddelta, dA, dB, dC, dD, dz, dbias, dh0
