"""Mamba-1 selective scan in Triton: backward, version 2 (chunked tiles; BYTELM_SCAN_BWD=chunked).

The default backward is version 3, sequential in time (triton_bwd_seq.py): 1.4-1.5x faster on
an H200 at the ANCHORS shapes (kernels/NOTES.md, 2026-12-02); version 3.1 (triton_bwd_grouped.py,
BYTELM_SCAN_BWD=grouped) is experimental. `scan_bwd` dispatches.

Gradients, per (b, d, n, t), with dh_t = dL/dh_t (total) and dy_t = dL/dy_t before the gate:
    dh_t = C_t[n] dy_t + a_{t+1} dh_{t+1}            (dh at the sequence end += dL/dfinal_state)
    dC_t[n] += Σ_d dy_t h_t          dB_t[n] += Σ_d dh_t Δ_t u_t
    du_t = Δ_t Σ_n dh_t B_t + D dy_t
    dΔ_t = u_t Σ_n dh_t B_t + Σ_n A dh_t (h_t - b_t)     (a_t h_{t-1} = h_t - b_t: no shifted h)
    dA   += Σ_t Δ_t dh_t (h_t - b_t)       dinitial = a_0 dh_0
The reverse recurrence is a reverse tl.associative_scan over (α_t = a_{t+1}, C_t dy_t): the shifted
decay is recomputed from Δ_{t+1} (one more exp2 per element) rather than shifted in registers.

Work split: the sequence is cut into chunks of BLOCK_L steps and every chunk is one register
tile. triton_fwd.chunk_states gives each chunk its true start state h (forward carry) and the
gradient entering it from the right (reverse carry), in one extra read of the inputs; then
`_bwd_kernel` runs one program per (channel block, chunk, batch row) and, for each state n in a
static loop, a forward scan (h_t) and a reverse scan (dh_t) over 2-D (BLOCK_D, BLOCK_L) tiles.
dB, dC are reduced over the program's BLOCK_D channels before one atomic add per (n, t); dA, dD,
d(delta_bias) are reduced over the tile before theirs. No scratch memory.
"""

from __future__ import annotations


import triton
import triton.language as tl

from bytelm.kernels.dispatch import env_choice
from bytelm.kernels.selective_scan import triton_fwd
from bytelm.kernels.selective_scan.triton_bwd_grouped import scan_bwd_grouped
from bytelm.kernels.selective_scan.triton_bwd_seq import scan_bwd_seq
from bytelm.kernels.selective_scan.triton_fwd import (
    LOG2E, _col, _combine, _delta_tile, _reset_tile, _set_col, bc_strides, cfg,
    chunk_states,
)


@triton.jit
def _bwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, seq_ptr, dout_ptr,
    h0_ptr, g_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, dh0_ptr,
    dim, L, dpg,
    s_ub, s_ud, s_db, s_dd, s_zb, s_zd, s_Bb, s_Bg, s_Bn, s_Cb, s_Cg, s_Cn,
    s_dBb, s_dBg, s_dBn,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_SEQ: tl.constexpr, HAS_H0: tl.constexpr, HAS_G: tl.constexpr, HAS_DH0: tl.constexpr,
    N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
    LEAN: tl.constexpr,
):
    """One (channel block, chunk of BLOCK_L steps, batch row). The chunk's start state h0 and the
    gradient entering it from the right g come from chunk_states; per state n (static loop) a
    forward scan gives h_t, a reverse scan dh_t, and their per-element products are summed over n
    in registers (du, dΔ) or over the block's channels before one atomic add per (n, t) (dB, dC).
    LEAN: u, dout, z and the pre-softplus Δ are re-read after the state loop instead of held in
    registers across it (the kernel spills otherwise; kernels/NOTES.md). Off by default until it
    has been checked and timed on the GPU."""
    i_d, i_c, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    nc = tl.num_programs(1)
    i_b64 = i_b.to(tl.int64)
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_d = o_d < dim
    o_n = tl.arange(0, BLOCK_N)
    m_n = o_n < N
    m_dn = m_d[:, None] & m_n[None, :]
    o_dn = o_d[:, None] * N + o_n[None, :]
    i_g = (i_d * BLOCK_D) // dpg
    o_l = tl.arange(0, BLOCK_L)
    first = (o_l == 0)[None, :]
    o_t = i_c * BLOCK_L + o_l
    m_t = o_t < L
    m_dt = m_d[:, None] & m_t[None, :]
    m_next = m_t & (o_t + 1 < L)
    if HAS_BIAS:
        b_bias = tl.load(bias_ptr + o_d, mask=m_d, other=0.0).to(tl.float32)
    else:
        b_bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    o_dl = o_d[:, None].to(tl.int64)
    o_row = i_b64 * dim * L + o_dl * L + o_t[None, :]  # dout, du, ddelta, dz: (batch, dim, L)
    p_seq = seq_ptr + i_b64 * L
    p_delta = delta_ptr + i_b64 * s_db + o_dl * s_dd + o_t[None, :]
    b_dt, b_x = _delta_tile(p_delta, m_dt, b_bias, SOFTPLUS)
    b_dtn, _ = _delta_tile(p_delta + 1, m_d[:, None] & m_next[None, :], b_bias, SOFTPLUS)
    reset = _reset_tile(p_seq, o_t, m_t, HAS_SEQ)
    reset_n = _reset_tile(p_seq, o_t + 1, m_next, HAS_SEQ)
    b_u = tl.load(u_ptr + i_b64 * s_ub + o_dl * s_ud + o_t[None, :], mask=m_dt, other=0.0).to(tl.float32)
    b_do = tl.load(dout_ptr + o_row, mask=m_dt, other=0.0).to(tl.float32)
    if HAS_Z:
        b_z = tl.load(z_ptr + i_b64 * s_zb + o_dl * s_zd + o_t[None, :], mask=m_dt, other=0.0).to(tl.float32)
        b_sg = tl.sigmoid(b_z)
        b_dy = b_do * b_z * b_sg
    else:
        b_dy = b_do
    if HAS_H0:
        b_h0 = tl.load(h0_ptr + (i_b64 * nc + i_c) * dim * N + o_dn, mask=m_dn, other=0.0)
    else:
        b_h0 = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    if HAS_G:
        b_g = tl.load(g_ptr + (i_b64 * nc + i_c) * dim * N + o_dn, mask=m_dn, other=0.0)
    else:
        b_g = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    b_du = b_dt * b_u
    b_y = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)     # Σ_n C h (for dz)
    b_fB = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)    # Σ_n dh B
    b_fA = tl.zeros([BLOCK_D, BLOCK_L], dtype=tl.float32)    # Σ_n A dh a h_{t-1}
    b_dA = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    b_dh0 = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    p_B = B_ptr + i_b64 * s_Bb + i_g * s_Bg + o_t
    p_C = C_ptr + i_b64 * s_Cb + i_g * s_Cg + o_t
    o_dBC = i_b64 * s_dBb + i_g * s_dBg + o_t  # dB, dC: fp32 (batch, G, N, L)
    for n in tl.static_range(N):
        sel = (o_n == n)[None, :]
        b_A = tl.load(A_ptr + o_d * N + n, mask=m_d, other=0.0)
        b_A2 = b_A * LOG2E
        b_B = tl.load(p_B + n * s_Bn, mask=m_t, other=0.0).to(tl.float32)
        b_C = tl.load(p_C + n * s_Cn, mask=m_t, other=0.0).to(tl.float32)
        b_a = tl.exp2(b_dt * b_A2[:, None])
        b_al = tl.exp2(b_dtn * b_A2[:, None])
        if HAS_SEQ:
            b_a = tl.where(reset[None, :], 0.0, b_a)
            b_al = tl.where(reset_n[None, :], 0.0, b_al)
        b_b = b_du * b_B[None, :]
        b_ac, b_bc = tl.associative_scan((b_a, b_b), 1, _combine)
        b_hs = b_ac * _col(b_h0, sel)[:, None] + b_bc  # h_t
        b_alc, b_cc = tl.associative_scan((b_al, b_dy * b_C[None, :]), 1, _combine, reverse=True)
        b_f = b_alc * _col(b_g, sel)[:, None] + b_cc  # dh_t
        if HAS_Z:
            b_y += b_hs * b_C[None, :]
        tl.atomic_add(dC_ptr + o_dBC + n * s_dBn, tl.sum(b_dy * b_hs, 0), mask=m_t, sem="relaxed")
        tl.atomic_add(dB_ptr + o_dBC + n * s_dBn, tl.sum(b_f * b_du, 0), mask=m_t, sem="relaxed")
        b_fB += b_f * b_B[None, :]
        b_ah = b_f * (b_hs - b_b)  # dh_t a_t h_{t-1}
        b_fA += b_ah * b_A[:, None]
        b_dA = _set_col(b_dA, sel, tl.sum(b_ah * b_dt, 1))
        if HAS_DH0:
            b_dh0 = _set_col(b_dh0, sel, tl.sum(tl.where(first, b_a * b_f, 0.0), 1))
    if LEAN:  # reload what the state loop does not need, instead of keeping it in registers
        b_u = tl.load(u_ptr + i_b64 * s_ub + o_dl * s_ud + o_t[None, :], mask=m_dt, other=0.0).to(tl.float32)
        b_do = tl.load(dout_ptr + o_row, mask=m_dt, other=0.0).to(tl.float32)
        if SOFTPLUS:
            _, b_x = _delta_tile(p_delta, m_dt, b_bias, SOFTPLUS)
        if HAS_Z:
            b_z = tl.load(z_ptr + i_b64 * s_zb + o_dl * s_zd + o_t[None, :], mask=m_dt, other=0.0).to(tl.float32)
            b_sg = tl.sigmoid(b_z)
    b_ddt = b_fB * b_u + b_fA
    b_dU = b_fB * b_dt
    if HAS_D:
        b_D = tl.load(D_ptr + o_d, mask=m_d, other=0.0).to(tl.float32)
        b_dU += b_D[:, None] * b_dy
        tl.atomic_add(dD_ptr + o_d, tl.sum(b_dy * b_u, 1), mask=m_d, sem="relaxed")
    if HAS_Z:
        if HAS_D:
            b_y += b_D[:, None] * b_u
        b_dz = b_do * b_y * b_sg * (1.0 + b_z * (1.0 - b_sg))
        tl.store(dz_ptr + o_row, b_dz.to(dz_ptr.dtype.element_ty), mask=m_dt)
    if SOFTPLUS:
        b_ddt = b_ddt * tl.sigmoid(b_x)
    b_ddt = tl.where(m_dt, b_ddt, 0.0)
    tl.store(du_ptr + o_row, b_dU.to(du_ptr.dtype.element_ty), mask=m_dt)
    tl.store(ddelta_ptr + o_row, b_ddt.to(ddelta_ptr.dtype.element_ty), mask=m_dt)
    tl.atomic_add(dA_ptr + o_dn, b_dA, mask=m_dn, sem="relaxed")
    if HAS_BIAS:
        tl.atomic_add(dbias_ptr + o_d, tl.sum(b_ddt, 1), mask=m_d, sem="relaxed")
    if HAS_DH0:
        if i_c == 0:  # dL/dinitial_state = a_0 dh_0 (t = 0 never resets)
            tl.store(dh0_ptr + i_b64 * dim * N + o_dn, b_dh0, mask=m_dn)


BWD_ENV = "BYTELM_SCAN_BWD"


BWD_VERSIONS = ("grouped", "seq", "chunked")


def backward_version() -> str:
    """'grouped' (version 3.1, triton_bwd_grouped.py; the default since its H200 sweep of
    2026-12-02), 'seq' (version 3, triton_bwd_seq.py) or 'chunked' (version 2, this file)."""
    return env_choice(BWD_ENV, BWD_VERSIONS, "the grouped backward")


# One program per (channel block, chunk of BLOCK_L steps, row): the chunk is one register tile.
BWD_CFG = dict(BLOCK_D=4, BLOCK_L=128, num_warps=4, LEAN=False)
BWD_CFG_INTERP = dict(BLOCK_D=4, BLOCK_L=8, num_warps=1, LEAN=False)


def scan_bwd(dout, dfinal, u, delta, A, B, C, D, z, delta_bias, softplus, initial_state, seq_idx,
             chunk_size, need_dh0, version="grouped", saved=None):
    """(du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dinitial_state); inputs normalized as in
    scan_fwd, dout contiguous (batch, dim, L), dfinal (batch, dim, N) fp32 or None.
    chunk_size does not apply: the backward's chunk is its tile (BWD_CFG["BLOCK_L"]).
    version: backward_version() as the forward read it (seq, chunked or grouped); saved: the
    forward's chunk states (scan_fwd(save_states=True)), which 'grouped' needs."""
    if version == "seq":
        return scan_bwd_seq(dout, dfinal, u, delta, A, B, C, D, z, delta_bias, softplus,
                            initial_state, seq_idx, chunk_size, need_dh0)
    if version == "grouped":
        return scan_bwd_grouped(dout, dfinal, u, delta, A, B, C, D, z, delta_bias, softplus,
                                initial_state, seq_idx, need_dh0, saved)
    c = cfg(BWD_CFG, BWD_CFG_INTERP)
    batch, dim, L, G, N, dpg, BD, BN, nbd = triton_fwd.launch_dims(u, B, c["BLOCK_D"])
    BL = min(c["BLOCK_L"], max(16, triton.next_power_of_2(L)))
    nc = triton.cdiv(L, BL)
    if nc > 1:
        h0, g = chunk_states(u, delta, A, B, C, z, dout, delta_bias, softplus, seq_idx, BL, nc, BD,
                             fwd=True, bwd=True, initial_state=initial_state, dfinal=dfinal,
                             BLOCK_L=BL, num_warps=c["num_warps"])
    else:
        h0, g = initial_state, dfinal
    du, ddelta, dz, dB, dC, dA, dD, dbias, dh0 = triton_fwd.grad_buffers(
        u, delta, z, B, D, delta_bias, need_dh0)
    dummy = du
    _bwd_kernel[(nbd, nc, batch)](
        u, delta, A, B, C, D if D is not None else dummy, z if z is not None else dummy,
        delta_bias if delta_bias is not None else dummy, seq_idx if seq_idx is not None else dummy,
        dout, h0 if h0 is not None else dummy, g if g is not None else dummy,
        du, ddelta, dz if dz is not None else dummy, dB, dC, dA,
        dD if dD is not None else dummy, dbias if dbias is not None else dummy,
        dh0 if dh0 is not None else dummy,
        dim, L, dpg,
        u.stride(0), u.stride(1), delta.stride(0), delta.stride(1),
        z.stride(0) if z is not None else 0, z.stride(1) if z is not None else 0,
        *bc_strides(B), *bc_strides(C), *bc_strides(dB),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        SOFTPLUS=softplus, HAS_SEQ=seq_idx is not None, HAS_H0=h0 is not None,
        HAS_G=g is not None, HAS_DH0=need_dh0, N=N,
        BLOCK_D=BD, BLOCK_N=BN, BLOCK_L=BL, LEAN=c.get("LEAN", False), num_warps=c["num_warps"])
    return du, ddelta, dA, dB, dC, dD, dz, dbias, dh0
