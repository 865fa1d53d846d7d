"""Mamba-1 selective scan, forward version 4 ("lanes"): R lanes per channel, states in registers.

Why (kernels/NOTES.md, "Version 4 forward"): version 3 keeps the (BLOCK_D, N) state as one 2-D
register tensor. Triton lays that tensor out from the 16-byte load of A (4 states per thread, 4
threads per channel), while the 8-step u / Δ / z tiles come one channel per thread; every step
then moves Δ, Δu, B and C between the two layouts through shared memory (the SASS of
`_fwd_seq_kernel`: 16 barriers and ~80 shared-memory ops per 8 steps), which is why it runs at
0.54 ms where its arithmetic needs ~0.2.

Here nothing is 2-D across states. A warp's 32 lanes are M = BLOCK_D x R rows: row m is channel
m // R, lane-group m % R, and holds S = N / R of that channel's states as a tuple of (M,) fp32
vectors (a static loop over s). Every tensor of the loop is an (M,) vector or an (M, 8) tile of 8
consecutive steps with one row per thread, all in the one layout the 16-byte loads give:
    u, Δ, z      (M, 8): the row's channel, loaded by each of its R lanes (same address: one
                 transaction);
    B_s, C_s     (M, 8): state r S + s of the row's lane group, 8 steps (broadcast loads);
    a = exp2(Δ A2_s), b = Δu B_s as tiles, then the 8 steps h = a h + b in-thread, the 8 states
    joined back into a tile H_s, and y += C_s H_s as a tile.
With R > 1 the R partial sums of y meet through log2(R) shuffles (tl.sum over the lane axis of
an (BLOCK_D, R, 8) view). R trades that reduction for programs: batch x dim / BLOCK_D warps are
few at long sequences (2 x 8192: 128 one-warp programs at R = 1, 512 at R = 4). No LOCAL chunk
pass is needed while batch x dim x R / 32 warps fill the GPU; when they do not, version 3's
chunked path (LOCAL pass, carry, main pass) runs with this kernel (LOCAL mode).
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra.cuda import libdevice

from bytelm.kernels.selective_scan.triton_fwd import (
    LOG2E, _cols8, _join8, chunk_steps, interpreting, run_sequential_forward, sm_count)

LN2 = tl.constexpr(0.6931471805599453)


@triton.jit
def _softplus(x, SOFTPLUS: tl.constexpr, FAST: tl.constexpr):
    """softplus as version 3 computes it (log(1 + e^x), x above 20 passed through); FAST (on a
    GPU): with the SFU's ex2 / lg2 (tl.log is a ~20-instruction polynomial)."""
    if SOFTPLUS:
        if FAST:
            sp = libdevice.fast_log2f(1.0 + tl.exp2(x * LOG2E)) * LN2
        else:
            sp = tl.log(1.0 + tl.exp(x))
        x = tl.where(x > 20.0, x, sp)
    return x


@triton.jit
def _silu(z, FAST: tl.constexpr):
    """z sigmoid(z); FAST: the reciprocal on the SFU (tl.sigmoid divides exactly)."""
    if FAST:
        return z * libdevice.fast_dividef(1.0, 1.0 + tl.exp2(-z * LOG2E))
    return z * tl.sigmoid(z)


@triton.jit
def _zeros_states(M: tl.constexpr, S: tl.constexpr):
    h = ()
    for s in tl.static_range(S):
        h = h + (tl.zeros([M], dtype=tl.float32),)
    return h


@triton.jit
def _load_states(p, m_row, S: tl.constexpr):
    """S (M,) fp32 vectors p[s] (p: the row's first state; states are contiguous)."""
    h = ()
    for s in tl.static_range(S):
        h = h + (tl.load(p + s, mask=m_row, other=0.0).to(tl.float32),)
    return h


@triton.jit
def _store_states(p, h, m_row, S: tl.constexpr):
    for s in tl.static_range(S):
        tl.store(p + s, h[s], mask=m_row)


@triton.jit
def _raw(p, m, EVEN: tl.constexpr):
    """A masked load (0 outside; unmasked when every tile is full) in the stored dtype
    (converted where used: fewer registers while prefetched)."""
    if EVEN:
        return tl.load(p)
    return tl.load(p, mask=m, other=0.0)


@triton.jit
def _ld(p, m, EVEN: tl.constexpr):
    """_raw, in fp32."""
    return _raw(p, m, EVEN).to(tl.float32)


@triton.jit
def _tile_loads(p_delta, p_u, p_z, p_B, p_C, s_Bn, s_Cn, t0, t_hi, m_row, S: tl.constexpr,
                HAS_Z: tl.constexpr, LOCAL: tl.constexpr, EVEN: tl.constexpr, BC: tl.constexpr):
    """The raw (M, 8) tiles of the 8 steps from t0: Δ, u, z (Δ again without z) and, with BC,
    the S tiles of B and of C (C: empty in LOCAL mode), else empty tuples."""
    o_t = t0 + tl.arange(0, 8)
    m_mt = m_row[:, None] & (o_t < t_hi)[None, :]
    dt = _raw(p_delta + o_t[None, :], m_mt, EVEN)
    u = _raw(p_u + o_t[None, :], m_mt, EVEN)
    z = dt
    if HAS_Z and not LOCAL:
        z = _raw(p_z + o_t[None, :], m_mt, EVEN)
    Bs = ()
    Cs = ()
    if BC:
        for s in tl.static_range(S):
            Bs = Bs + (_raw(p_B + s * s_Bn + o_t[None, :], m_mt, EVEN),)
            if not LOCAL:
                Cs = Cs + (_raw(p_C + s * s_Cn + o_t[None, :], m_mt, EVEN),)
    return dt, u, z, Bs, Cs


@triton.jit
def _keep_rows(p_seq_row, o_t, m_mt):
    """(M, 8) fp32 factor on a_t: 0 where a document starts at step t (never at t = 0), else 1.
    Read per row (every row the same addresses) so that it has the tiles' own layout."""
    o = o_t[None, :] + tl.zeros(m_mt.shape, dtype=tl.int32)
    m = m_mt & (o > 0)
    s_cur = tl.load(p_seq_row + o, mask=m, other=0)
    s_prev = tl.load(p_seq_row + o - 1, mask=m, other=0)
    return tl.where(m & (s_cur != s_prev), 0.0, 1.0)


@triton.jit
def _walk8(h, a, b):
    """8 steps h_t = a_t h_{t-1} + b_t of one state, a and b (M, 8) tiles: (h_8, H (M, 8))."""
    a0, a1, a2, a3, a4, a5, a6, a7 = _cols8(a)
    b0, b1, b2, b3, b4, b5, b6, b7 = _cols8(b)
    h0 = a0 * h + b0
    h1 = a1 * h0 + b1
    h2 = a2 * h1 + b2
    h3 = a3 * h2 + b3
    h4 = a4 * h3 + b4
    h5 = a5 * h4 + b5
    h6 = a6 * h5 + b6
    h7 = a7 * h6 + b7
    return h7, _join8(h0, h1, h2, h3, h4, h5, h6, h7)


@triton.jit
def _fwd_lanes_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, seq_ptr,
    h0_ptr, y_ptr, final_ptr, hloc_ptr, hdec_ptr, ck_ptr,
    dim, L, T, dpg, TCK, NCK,
    s_ub, s_ud, s_db, s_dd, s_zb, s_zd, s_Bb, s_Bg, s_Bn, s_Cb, s_Cg, s_Cn,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_SEQ: tl.constexpr, HAS_H0: tl.constexpr, HAS_FINAL: tl.constexpr, LOCAL: tl.constexpr,
    HAS_CK: tl.constexpr, N: tl.constexpr, BLOCK_D: tl.constexpr, R: tl.constexpr,
    EVEN: tl.constexpr, FAST: tl.constexpr, NUM_STAGES: tl.constexpr, PREFETCH: tl.constexpr,
):
    """One program per (BLOCK_D channels, chunk of T steps, batch row); R lanes per channel.
    Same arguments and modes as version 3's `_fwd_seq_kernel` (LOCAL: the chunk pass, HAS_CK:
    the states saved for the sequential backward), with R in place of BLOCK_N. PREFETCH: 0
    loads each tile where it is used; 1 loads the next tile's Δ, u, z while this one computes;
    2 also the next tile's B and C (2 S x 8 more registers per thread)."""
    S: tl.constexpr = N // R
    M: tl.constexpr = BLOCK_D * R
    i_d, i_c, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    nc = tl.num_programs(1)
    i_b64 = i_b.to(tl.int64)
    o_m = tl.arange(0, M)
    o_ch = i_d * BLOCK_D + o_m // R            # the row's channel
    o_s0 = (o_m % R) * S                       # the row's first state
    m_row = o_ch < dim
    i_g = (i_d * BLOCK_D) // dpg
    o_dn = o_ch * N + o_s0                     # (channel, first state) in a (dim, N) array
    A2 = ()
    for s in tl.static_range(S):
        A2 = A2 + (tl.load(A_ptr + o_dn + s, mask=m_row, other=0.0).to(tl.float32) * LOG2E,)
    if HAS_BIAS:
        b_bias = tl.load(bias_ptr + o_ch, mask=m_row, other=0.0).to(tl.float32)
    else:
        b_bias = tl.zeros([M], dtype=tl.float32)
    if HAS_D:
        b_D = tl.load(D_ptr + o_ch, mask=m_row, other=0.0).to(tl.float32)
        if R > 1:  # the skip term once per channel, on lane group 0
            b_D = tl.where(o_m % R == 0, b_D, 0.0)
    if HAS_H0 and not LOCAL:
        h = _load_states(h0_ptr + (i_b64 * nc + i_c) * dim * N + o_dn, m_row, S)
    else:
        h = _zeros_states(M, S)
    b_dsum = tl.zeros([M], dtype=tl.float32)      # LOCAL: Σ Δ over the chunk
    b_alive = tl.zeros([M], dtype=tl.float32) + 1.0  # LOCAL: 0 once a document starts
    t_lo = i_c * T
    t_hi = tl.minimum(t_lo + T, L)
    o_cl = o_ch[:, None].to(tl.int64)
    p_u = u_ptr + i_b64 * s_ub + o_cl * s_ud
    p_delta = delta_ptr + i_b64 * s_db + o_cl * s_dd
    p_z = z_ptr + i_b64 * s_zb + o_cl * s_zd
    p_y = y_ptr + i_b64 * dim * L + o_cl * L
    p_B = B_ptr + i_b64 * s_Bb + i_g * s_Bg + o_s0[:, None] * s_Bn
    p_C = C_ptr + i_b64 * s_Cb + i_g * s_Cg + o_s0[:, None] * s_Cn
    t_last = t_lo + ((t_hi - t_lo - 1) // 8) * 8   # the last tile's first step
    if PREFETCH > 0:
        nx_dt, nx_u, nx_z, nx_B, nx_C = _tile_loads(p_delta, p_u, p_z, p_B, p_C, s_Bn, s_Cn, t_lo,
                                                    t_hi, m_row, S, HAS_Z, LOCAL, EVEN, PREFETCH > 1)
    for t0 in tl.range(t_lo, t_hi, 8, num_stages=NUM_STAGES):
        o_t = t0 + tl.arange(0, 8)
        m_t = o_t < t_hi
        m_mt = m_row[:, None] & m_t[None, :]
        if PREFETCH > 0:  # this tile's loads were issued one tile ago; issue the next tile's
            r_dt, r_u, r_z, r_B, r_C = nx_dt, nx_u, nx_z, nx_B, nx_C
            nx_dt, nx_u, nx_z, nx_B, nx_C = _tile_loads(
                p_delta, p_u, p_z, p_B, p_C, s_Bn, s_Cn, tl.minimum(t0 + 8, t_last), t_hi, m_row,
                S, HAS_Z, LOCAL, EVEN, PREFETCH > 1)
        else:
            r_dt, r_u, r_z, r_B, r_C = _tile_loads(p_delta, p_u, p_z, p_B, p_C, s_Bn, s_Cn, t0,
                                                   t_hi, m_row, S, HAS_Z, LOCAL, EVEN, False)
        b_dt = _softplus(r_dt.to(tl.float32) + b_bias[:, None], SOFTPLUS, FAST)
        if not EVEN:
            b_dt = tl.where(m_mt, b_dt, 0.0)  # a = 1, b = 0 past the end: h passes through
        b_u = r_u.to(tl.float32)
        b_du = b_dt * b_u
        if HAS_SEQ:
            b_keep = _keep_rows(seq_ptr + i_b64 * L, o_t, m_mt)
        if HAS_CK:
            if t0 % TCK == 0:
                _store_states(ck_ptr + (i_b64 * NCK + t0 // TCK) * dim * N + o_dn, h, m_row, S)
        if LOCAL:
            b_dsum += tl.sum(b_dt, 1)
            if HAS_SEQ:
                b_alive *= tl.min(b_keep, 1)
        b_y = tl.zeros([M, 8], dtype=tl.float32)
        h_new = ()
        for s in tl.static_range(S):
            b_a = tl.exp2(b_dt * A2[s][:, None])
            if HAS_SEQ:
                b_a = b_a * b_keep
            if PREFETCH > 1:
                b_B = r_B[s].to(tl.float32)
            else:
                b_B = _ld(p_B + s * s_Bn + o_t[None, :], m_mt, EVEN)
            h_s, b_H = _walk8(h[s], b_a, b_du * b_B)
            h_new = h_new + (h_s,)
            if not LOCAL:
                if PREFETCH > 1:
                    b_C = r_C[s].to(tl.float32)
                else:
                    b_C = _ld(p_C + s * s_Cn + o_t[None, :], m_mt, EVEN)
                b_y += b_C * b_H
        h = h_new
        if not LOCAL:
            if HAS_D:
                b_y += b_D[:, None] * b_u
            if R > 1:  # the R lane groups' partial sums of each channel
                b_y = tl.reshape(tl.sum(tl.reshape(b_y, [BLOCK_D, R, 8]), 1)[:, None, :]
                                 + tl.zeros([BLOCK_D, R, 8], dtype=tl.float32), [M, 8])
            if HAS_Z:
                b_y = b_y * _silu(r_z.to(tl.float32), FAST)
            if R > 1:  # one lane group stores
                tl.store(p_y + o_t[None, :], b_y.to(y_ptr.dtype.element_ty),
                         mask=m_mt & (o_m % R == 0)[:, None])
            elif EVEN:
                tl.store(p_y + o_t[None, :], b_y.to(y_ptr.dtype.element_ty))
            else:
                tl.store(p_y + o_t[None, :], b_y.to(y_ptr.dtype.element_ty), mask=m_mt)
    if LOCAL:
        o_out = (i_b64 * nc + i_c) * dim * N + o_dn
        _store_states(hloc_ptr + o_out, h, m_row, S)
        dec = ()
        for s in tl.static_range(S):
            dec = dec + (b_alive * tl.exp2(b_dsum * A2[s]),)
        _store_states(hdec_ptr + o_out, dec, m_row, S)
    else:
        if HAS_FINAL:
            if i_c == nc - 1:
                _store_states(final_ptr + i_b64 * dim * N + o_dn, h, m_row, S)


# R lanes per channel: the smallest power of two (dividing N, at most max_R) that gives at least
# warps_per_sm x SMs one-warp programs; chunks (LOCAL pass + carry) only when that fills less
# than min_fill of them. Measured choices: kernels/NOTES.md, "Version 4 forward".
# R: a fixed number of lanes instead (it must divide N). prefetch: see the kernel. bc_fp32: read
# fp32 copies of B and C (no conversions in the loop, twice the registers for their prefetch):
# slower on the H200 (2026-12-03, fwd ms at 8x2048 / 2x8192 / 1x32768: 0.399 / 0.824 / 1.935
# against 0.344 / 0.795 / 1.876 with bf16 B and C) and, saving states, it spills (fwd+bwd 9.75
# ms at 8x2048 against 2.34).
LANES_CFG = dict(num_warps=1, warps_per_sm=4, min_fill=0.5, max_R=2, num_stages=1, R=None,
                 prefetch=2, bc_fp32=False)
LANES_CFG_INTERP = dict(num_warps=1, warps_per_sm=1, min_fill=0.5, max_R=2, num_stages=1,
                        R=None, prefetch=2, bc_fp32=False)
MAX_STATES_PER_LANE = 16  # beyond this the per-lane state tuple no longer fits in registers


def lanes_per_channel(rows_x_dim: int, N: int, want_warps: int, max_R: int, threads: int) -> int:
    """R: lanes per channel for rows_x_dim (batch x dim) channels, `threads` per program."""
    R = 1
    while R < max_R and N % (2 * R) == 0 and rows_x_dim * R < want_warps * threads:
        R *= 2
    return R


def lanes_plan(u, B, c) -> tuple[int, int, int, int]:
    """(R, BLOCK_D, channel blocks, programs to aim for) for version 4 at u's shape: R from
    lanes_per_channel; chunks (a LOCAL pass) only when the programs without them would fill
    less than min_fill of warps_per_sm x SMs."""
    batch, dim, _ = u.shape
    G, N = B.shape[1], B.shape[2]
    dpg = dim // G
    threads = 32 * c["num_warps"]
    want = c["warps_per_sm"] * sm_count(u) // c["num_warps"]  # programs wanted
    R = c["R"] or lanes_per_channel(batch * dim, N, want, c["max_R"], threads)
    if N % R or R > threads:
        raise ValueError(f"{R} lanes per channel must divide d_state {N} and fit {threads} threads")
    BD = max(1, min(threads // R, dpg & (-dpg)))
    nbd = triton.cdiv(dim, BD)
    programs = batch * nbd
    return R, BD, nbd, (programs if programs >= c["min_fill"] * want else want)


def lanes_fit(u, B) -> bool:
    """Whether version 4 covers this shape without a chunk pass and with at most
    MAX_STATES_PER_LANE states per lane (else version 3, whose state is a 2-D register tile,
    is the better forward; kernels/NOTES.md). Training forwards too: with bf16 B / C, version 4
    saving the backward's states gave fwd+bwd 2.34 ms at 8 x 2048 on the H200 (2026-12-03)
    against 2.52 with version 3 (with fp32 B / C that variant spills: 9.75 ms)."""
    c = LANES_CFG_INTERP if interpreting() else LANES_CFG
    R, _, nbd, aim = lanes_plan(u, B, c)
    return B.shape[2] // R <= MAX_STATES_PER_LANE and u.shape[0] * nbd >= aim


def scan_fwd_lanes(u, delta, A, B, C, D, z, delta_bias, softplus, initial_state, seq_idx,
                   chunk_size, want_final, save_states=False):
    """scan_fwd with `_fwd_lanes_kernel` (same contract as triton_fwd.scan_fwd_seq). With
    bc_fp32, B and C are read as fp32 copies (every lane converts the B and C values it uses;
    the copies cost 2 x N x L fp32 per row, and registers)."""
    c = LANES_CFG_INTERP if interpreting() else LANES_CFG
    batch, dim, L = u.shape
    R, BD, nbd, aim = lanes_plan(u, B, c)
    T = chunk_steps(L, 8, chunk_size, batch * nbd, aim)
    if c["bc_fp32"]:
        B, C = B.float().contiguous(), C.float().contiguous()
    return run_sequential_forward(
        _fwd_lanes_kernel, nbd, T, u, delta, A, B, C, D, z, delta_bias, seq_idx, initial_state,
        want_final, save_states, SOFTPLUS=softplus, BLOCK_D=BD, R=R,
        EVEN=L % 8 == 0 and T % 8 == 0 and dim % BD == 0, FAST=not interpreting(),
        NUM_STAGES=c["num_stages"], PREFETCH=c["prefetch"], num_warps=c["num_warps"])
