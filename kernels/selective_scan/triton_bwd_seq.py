"""Mamba-1 selective scan backward, version 3: sequential in time (the default; BYTELM_SCAN_BWD=
chunked selects version 2, triton_bwd.py, and =grouped the experimental triton_bwd_grouped.py).

The gradients are those of triton_bwd.py (its docstring has the formulas); what changes is the
work split, the one of the sequential forward (`_fwd_seq_kernel`): a program owns BLOCK_D
channels x all N states, the (BLOCK_D, N) state and its gradient live in registers, and time is
walked 8 steps at a time with no associative scan.

Per chunk of T steps (T a multiple of 8; chunk_states gives its start state and the gradient
entering from the right, as for version 2):
1. forward walk over the chunk's 8-step tiles, writing the state before each tile to a
   per-program scratch slot (T/8 states of BLOCK_D x N fp32, reused by the program's next
   chunk: a persistent grid of about programs_per_sm x SMs programs, so the scratch is
   programs x T/8 x BLOCK_D x N x 4 bytes, about 35 MB at the default config, whatever the
   batch and length, and mostly L2-resident);
2. reverse walk over the tiles: reload the tile's start state, recompute its 8 states in
   registers (h_0..h_7, one exp2 each), then 8 reverse steps dh = a_{t+1} dh + C_t dy_t giving
   dC_t, dB_t (reduced over the program's channels: one atomic add per (state, step) per program),
   Σ_n dh B, Σ_n A dh a h_{t-1} (du, dΔ) and dA in registers.
exp2 per (channel, state, step): 2 here + 2 in chunk_states (its forward and reverse passes).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from bytelm.kernels.selective_scan import triton_fwd
from bytelm.kernels.selective_scan.triton_fwd import (
    LOG2E, _cols8, _delta_tile, _join8, _keep_tile, _reset_tile, bc_strides, cfg, chunk_states, launch_dims,
    sm_count,
)


@triton.jit
def _recompute8(b_h, b_A2, dt, du, keep, b_B, HAS_SEQ: tl.constexpr):
    """One forward step from b_h; returns (decay a_t, new state)."""
    b_a = tl.exp2(dt[:, None] * b_A2)
    if HAS_SEQ:
        b_a = b_a * keep[:, None]
    return b_a, b_a * b_h + du[:, None] * b_B[None, :]


@triton.jit
def _rev_step(b_dh, a_next, a_t, h_t, h_prev, dy, du, dt, b_B, b_C, b_A, b_dA):
    """One reverse step at t: dh_t = a_{t+1} dh_{t+1} + C_t dy_t and what step t contributes."""
    b_dh = a_next * b_dh + dy[:, None] * b_C[None, :]
    ah = b_dh * a_t * h_prev                          # dh_t a_t h_{t-1}
    b_dA += ah * dt[:, None]
    dC = tl.sum(dy[:, None] * h_t, 0)                 # (N,): Σ over the block's channels
    dB = tl.sum(b_dh * du[:, None], 0)
    fB = tl.sum(b_dh * b_B[None, :], 1)               # (BLOCK_D,): Σ_n dh B
    fA = tl.sum(ah * b_A, 1)                          # Σ_n A dh a h_{t-1}
    y = tl.sum(h_t * b_C[None, :], 1)                 # Σ_n C h (for dz)
    return b_dh, b_dA, dC, dB, fB, fA, y


@triton.jit
def _bwd_seq_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, seq_ptr, dout_ptr,
    h0_ptr, g_ptr, ck_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, dh0_ptr,
    dim, L, T, dpg, nbd, nc, n_work,
    s_ub, s_ud, s_db, s_dd, s_zb, s_zd, s_Bb, s_Bg, s_Bn, s_Cb, s_Cg, s_Cn,
    s_dBb, s_dBg, s_dBn,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_SEQ: tl.constexpr, HAS_H0: tl.constexpr, HAS_G: tl.constexpr, HAS_DH0: tl.constexpr,
    N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Persistent: program p takes work items p, p + P, ... of (channel block, chunk, row)."""
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    o_n = tl.arange(0, BLOCK_N)
    m_n = o_n < N
    o_r = tl.arange(0, BLOCK_D)
    p_ck = ck_ptr + pid.to(tl.int64) * (T // 8) * (BLOCK_D * BLOCK_N) + o_r[:, None] * BLOCK_N + o_n[None, :]
    for w in range(pid, n_work, nprog):
        i_d = w % nbd
        i_c = (w // nbd) % nc
        i_b = w // (nbd * nc)
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
        o_state = (i_b64 * nc + i_c) * dim * N + o_dn
        if HAS_H0:
            b_h = tl.load(h0_ptr + o_state, mask=m_dn, other=0.0).to(tl.float32)
        else:
            b_h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
        t_lo = i_c * T
        t_hi = tl.minimum(t_lo + T, L)
        n_tiles = tl.cdiv(t_hi - t_lo, 8)
        o_dl = o_d[:, None].to(tl.int64)
        p_u = u_ptr + i_b64 * s_ub + o_dl * s_ud
        p_delta = delta_ptr + i_b64 * s_db + o_dl * s_dd
        p_z = z_ptr + i_b64 * s_zb + o_dl * s_zd
        p_row = i_b64 * dim * L + o_dl * L              # dout, du, ddelta, dz: (batch, dim, L)
        p_B = B_ptr + i_b64 * s_Bb + i_g * s_Bg + o_n[:, None] * s_Bn
        p_C = C_ptr + i_b64 * s_Cb + i_g * s_Cg + o_n[:, None] * s_Cn
        p_seq = seq_ptr + i_b64 * L
        o_dBC = i_b64 * s_dBb + i_g * s_dBg + o_n[:, None] * s_dBn  # dB, dC: fp32 (batch, G, N, L)
        # 1. forward walk: the state before each 8-step tile goes to the scratch slot
        for k in range(0, n_tiles):
            t0 = t_lo + 8 * k
            o_t = t0 + tl.arange(0, 8)
            m_t = o_t < t_hi
            m_dt = m_d[:, None] & m_t[None, :]
            tl.store(p_ck + k * (BLOCK_D * BLOCK_N), b_h)
            b_dt, _ = _delta_tile(p_delta + o_t[None, :], m_dt, b_bias, SOFTPLUS)
            b_u = tl.load(p_u + o_t[None, :], mask=m_dt, other=0.0).to(tl.float32)
            b_Bt = tl.load(p_B + o_t[None, :], mask=m_n[:, None] & m_t[None, :], other=0.0).to(tl.float32)
            b_keep = _keep_tile(p_seq, o_t, m_t, HAS_SEQ, BLOCK_D)
            dt0, dt1, dt2, dt3, dt4, dt5, dt6, dt7 = _cols8(b_dt)
            du0, du1, du2, du3, du4, du5, du6, du7 = _cols8(b_dt * b_u)
            k0, k1, k2, k3, k4, k5, k6, k7 = _cols8(b_keep)
            B0, B1, B2, B3, B4, B5, B6, B7 = _cols8(b_Bt)
            _, b_h = _recompute8(b_h, b_A2, dt0, du0, k0, B0, HAS_SEQ)
            _, b_h = _recompute8(b_h, b_A2, dt1, du1, k1, B1, HAS_SEQ)
            _, b_h = _recompute8(b_h, b_A2, dt2, du2, k2, B2, HAS_SEQ)
            _, b_h = _recompute8(b_h, b_A2, dt3, du3, k3, B3, HAS_SEQ)
            _, b_h = _recompute8(b_h, b_A2, dt4, du4, k4, B4, HAS_SEQ)
            _, b_h = _recompute8(b_h, b_A2, dt5, du5, k5, B5, HAS_SEQ)
            _, b_h = _recompute8(b_h, b_A2, dt6, du6, k6, B6, HAS_SEQ)
            _, b_h = _recompute8(b_h, b_A2, dt7, du7, k7, B7, HAS_SEQ)
        tl.debug_barrier()  # the scratch writes are read back below, maybe by other threads
        # 2. reverse walk. dh starts as the gradient entering from the right, carried in by the
        # decay of step t_hi (1 past the sequence's end, where Δ reads as 0; 0 at a document start)
        if HAS_G:
            b_dh = tl.load(g_ptr + o_state, mask=m_dn, other=0.0).to(tl.float32)
        else:
            b_dh = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
        m_hi = (t_hi < L) & m_d
        b_dtn, _ = _delta_tile(p_delta + t_hi + tl.zeros([1, 1], dtype=tl.int32), m_hi[:, None],
                               b_bias, SOFTPLUS)
        a_next = tl.exp2(tl.sum(b_dtn, 1)[:, None] * b_A2)
        if HAS_SEQ:
            reset_hi = _reset_tile(p_seq, t_hi + tl.zeros([1], dtype=tl.int32), t_hi < L, HAS_SEQ)
            a_next = a_next * tl.where(tl.sum(reset_hi.to(tl.int32), 0) > 0, 0.0, 1.0)
        b_dA = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
        b_dDacc = tl.zeros([BLOCK_D], dtype=tl.float32)
        b_dbias = tl.zeros([BLOCK_D], dtype=tl.float32)
        for kk in range(0, n_tiles):
            k = n_tiles - 1 - kk
            t0 = t_lo + 8 * k
            o_t = t0 + tl.arange(0, 8)
            m_t = o_t < t_hi
            m_dt = m_d[:, None] & m_t[None, :]
            m_nt = m_n[:, None] & m_t[None, :]
            b_hp = tl.load(p_ck + k * (BLOCK_D * BLOCK_N))
            b_dt, b_x = _delta_tile(p_delta + o_t[None, :], m_dt, b_bias, SOFTPLUS)
            b_u = tl.load(p_u + o_t[None, :], mask=m_dt, other=0.0).to(tl.float32)
            b_Bt = tl.load(p_B + o_t[None, :], mask=m_nt, other=0.0).to(tl.float32)
            b_Ct = tl.load(p_C + o_t[None, :], mask=m_nt, other=0.0).to(tl.float32)
            b_do = tl.load(dout_ptr + p_row + o_t[None, :], mask=m_dt, other=0.0).to(tl.float32)
            if HAS_Z:
                b_z = tl.load(p_z + o_t[None, :], mask=m_dt, other=0.0).to(tl.float32)
                b_sg = tl.sigmoid(b_z)
                b_dy = b_do * b_z * b_sg
            else:
                b_dy = b_do
            b_keep = _keep_tile(p_seq, o_t, m_t, HAS_SEQ, BLOCK_D)
            b_du = b_dt * b_u
            dt0, dt1, dt2, dt3, dt4, dt5, dt6, dt7 = _cols8(b_dt)
            du0, du1, du2, du3, du4, du5, du6, du7 = _cols8(b_du)
            k0, k1, k2, k3, k4, k5, k6, k7 = _cols8(b_keep)
            dy0, dy1, dy2, dy3, dy4, dy5, dy6, dy7 = _cols8(b_dy)
            B0, B1, B2, B3, B4, B5, B6, B7 = _cols8(b_Bt)
            C0, C1, C2, C3, C4, C5, C6, C7 = _cols8(b_Ct)
            a0, h0 = _recompute8(b_hp, b_A2, dt0, du0, k0, B0, HAS_SEQ)
            a1, h1 = _recompute8(h0, b_A2, dt1, du1, k1, B1, HAS_SEQ)
            a2, h2 = _recompute8(h1, b_A2, dt2, du2, k2, B2, HAS_SEQ)
            a3, h3 = _recompute8(h2, b_A2, dt3, du3, k3, B3, HAS_SEQ)
            a4, h4 = _recompute8(h3, b_A2, dt4, du4, k4, B4, HAS_SEQ)
            a5, h5 = _recompute8(h4, b_A2, dt5, du5, k5, B5, HAS_SEQ)
            a6, h6 = _recompute8(h5, b_A2, dt6, du6, k6, B6, HAS_SEQ)
            a7, h7 = _recompute8(h6, b_A2, dt7, du7, k7, B7, HAS_SEQ)
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
        tl.atomic_add(dA_ptr + o_dn, b_dA, mask=m_dn, sem="relaxed")
        if HAS_D:
            tl.atomic_add(dD_ptr + o_d, b_dDacc, mask=m_d, sem="relaxed")
        if HAS_BIAS:
            tl.atomic_add(dbias_ptr + o_d, b_dbias, mask=m_d, sem="relaxed")
        if HAS_DH0:
            if i_c == 0:  # dL/dinitial_state = a_0 dh_0 (a_next is a_0 after the last tile)
                tl.store(dh0_ptr + i_b64 * dim * N + o_dn, a_next * b_dh, mask=m_dn)
        tl.debug_barrier()  # the next work item overwrites the scratch slot


# Channels per program, warps, steps per chunk (a multiple of 8), persistent programs per SM.
# H200, 2026-12-02 (scripts/bench_kernels.py --sweep-parts bwd3), fwd+bwd ms at 8x2048 / 2x8192
# / 1x32768 with version 2's forward: (16, 1 warp, 256, 8/SM) 8.71 / 9.02 / 19.19; (32, 2, 256,
# 4) 9.73 / 10.06 / 21.29; (32, 1, 256, 8) 19.26 / 19.53 / 40.69. Version 2: 12.67 / 12.98 / 27.01.
# Profile at 8x2048 (16, 1, 256, 8): chunk_states' _chunk_local_kernel 5.84 ms (its 16-channel,
# 1-warp tiles), _bwd_seq_kernel 1.96, forward 0.62: triton_bwd_grouped.py removes the first.
# states: the tiling of chunk_states' pass when there are several chunks: "v2" (version 2's
# BWD_CFG, 4 channels x 4 warps x 128 steps) or "own" (this kernel's 16 channels x 1 warp x 64,
# the measured 5.84 ms at 8x2048 where version 2's backward ran the same pass over the same
# elements in 2.72). Its outputs do not depend on the tiling. compile_check --sass (2026-12-02,
# CPU): "own" compiles `_chunk_local_kernel` to 168 registers + 10,976 bytes of spill stack per
# thread (14,495 LDL/STL), "v2" to 255 + 208 bytes. "v2" is the default on that evidence: its
# binary is the one version 2's GPU tests ran (same constexprs; only the runtime chunk length
# differs, 256 instead of 128, and multi-block chunks ran on the GPU with "own"); its timing
# on the GPU is still to come (bench_kernels.py --sweep-parts bwd3).
SEQ_BWD_CFG = dict(BLOCK_D=16, num_warps=1, T=256, programs_per_sm=8, states="v2")
SEQ_BWD_CFG_INTERP = dict(BLOCK_D=8, num_warps=1, T=16, programs_per_sm=3, states="v2")


def scan_bwd_seq(dout, dfinal, u, delta, A, B, C, D, z, delta_bias, softplus, initial_state,
                 seq_idx, chunk_size, need_dh0):
    """scan_bwd's contract (triton_bwd.py) with `_bwd_seq_kernel`; chunk_size, when given, is
    the chunk length T (rounded up to a multiple of 8), else SEQ_BWD_CFG["T"]."""
    c = cfg(SEQ_BWD_CFG, SEQ_BWD_CFG_INTERP)
    batch, dim, L, G, N, dpg, BD, BN, nbd = launch_dims(u, B, c["BLOCK_D"])
    T = triton.cdiv(int(chunk_size or c["T"]), 8) * 8
    T = min(T, triton.cdiv(L, 8) * 8)
    nc = triton.cdiv(L, T)
    if nc > 1:
        if c["states"] == "v2":
            from bytelm.kernels.selective_scan import triton_bwd  # imports this module
            sc = cfg(triton_bwd.BWD_CFG, triton_bwd.BWD_CFG_INTERP)
            s_bd, s_bl, s_nw = sc["BLOCK_D"], sc["BLOCK_L"], sc["num_warps"]
        else:
            s_bd, s_bl, s_nw = BD, 64, c["num_warps"]
        h0, g = chunk_states(u, delta, A, B, C, z, dout, delta_bias, softplus, seq_idx, T, nc, s_bd,
                             fwd=True, bwd=True, initial_state=initial_state, dfinal=dfinal,
                             BLOCK_L=next(b for b in (s_bl, 64, 32, 16, 8) if b <= s_bl and T % b == 0),
                             num_warps=s_nw)
    else:  # (batch, dim, N) reads as (batch, 1, dim, N)
        h0, g = initial_state, dfinal
    n_work = batch * nc * nbd
    nprog = max(1, min(n_work, c["programs_per_sm"] * sm_count(u)))
    ck = torch.empty(nprog, T // 8, BD, BN, device=u.device, dtype=torch.float32)  # scratch, written before read
    du, ddelta, dz, dB, dC, dA, dD, dbias, dh0 = triton_fwd.grad_buffers(
        u, delta, z, B, D, delta_bias, need_dh0)
    dummy = du
    _bwd_seq_kernel[(nprog,)](
        u, delta, A, B, C, D if D is not None else dummy, z if z is not None else dummy,
        delta_bias if delta_bias is not None else dummy, seq_idx if seq_idx is not None else dummy,
        dout, h0 if h0 is not None else dummy, g if g is not None else dummy, ck,
        du, ddelta, dz if dz is not None else dummy, dB, dC, dA,
        dD if dD is not None else dummy, dbias if dbias is not None else dummy,
        dh0 if dh0 is not None else dummy,
        dim, L, T, dpg, nbd, nc, n_work,
        u.stride(0), u.stride(1), delta.stride(0), delta.stride(1),
        z.stride(0) if z is not None else 0, z.stride(1) if z is not None else 0,
        *bc_strides(B), *bc_strides(C), *bc_strides(dB),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        SOFTPLUS=softplus, HAS_SEQ=seq_idx is not None, HAS_H0=h0 is not None,
        HAS_G=g is not None, HAS_DH0=need_dh0, N=N, BLOCK_D=BD, BLOCK_N=BN,
        num_warps=c["num_warps"])
    return du, ddelta, dA, dB, dC, dD, dz, dbias, dh0
