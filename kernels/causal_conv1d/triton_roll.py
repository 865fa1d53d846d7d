"""Width-4 causal conv1d, forward and backward, as rolling walks along the sequence (version 3).

Why (kernels/NOTES.md, 2026-12-02): the tile kernels (triton_fwd / triton_bwd) hold 2-D
(positions x channels) tiles and reach the W-1 neighbouring positions by shifted loads of the
same tile. Compiled for sm_90 with the launcher's specialisation (scripts/compile_check.py
--sass), the backward needs 255 registers per thread and still spills (120-800 bytes of stack
per thread), so one or two programs fit on an SM and the kernel waits on memory with 8 warps per
SM; it computes each pre-activation and its sigmoid W = 4 times.

Here a program owns a strip of BLOCK_D channels (contiguous in the channel-last layout the
models use: one vector load per thread per position) and a chunk of CH positions, and walks the
positions one at a time keeping the last three inputs (and, backward, the last three dpre) in
registers, renamed from step to step: every element of x and dy is loaded once, each
pre-activation and sigmoid is computed once, nothing is reduced across threads until the end
(dweight and dbias accumulate per thread and are written once per program). The walk is
unrolled R positions at a time so R loads per operand are in flight.

    forward:   y[t]  = act(b + w0 x[t-3] + w1 x[t-2] + w2 x[t-1] + w3 x[t])
    backward:  dpre[t] = dy[t] act'(pre[t]);  dx[p] = sum_s w[3-s] dpre[p+s]  (s = 0..3);
               dw[k] = sum_t dpre[t] x[t-3+k];  db = sum_t dpre[t]

seq_idx (as a per-row document counter, segment_ids) drops a tap x[q] from pre[t] and a term
dpre[t] from dx[p] when the two positions are in different documents; positions before 0 read
initial_state, which counts as document 0. A chunk c covers the input positions p in
[c CH - 3, (c + 1) CH - 3), so the first chunk also produces d initial_state; it walks three
positions past its end to have the dpre its last dx needs, and counts dw / db only for its own
outputs. The default where it applies (BYTELM_CONV_FWD=tile / BYTELM_CONV_BWD=v1 pick the tile
kernels). H200, 2026-12-02, 8x2048 d 2048 bf16 (bench_kernels_mamba2.py): forward 0.059 ms
(tile 0.122), backward 0.121 ms with a channel-last dy, 0.33 ms with an L-contiguous one (its
copy included; v1 0.742).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from bytelm.kernels.causal_conv1d.triton_fwd import like_layout

# channels per program, positions per unrolled step, warps (channels per thread = block_d /
# (32 * warps)), and the programs per SM the chunk length aims at (chunk_for); forward and
# backward apart. Picked from the H200 sweep of bench_kernels_mamba2.py (2026-12-02, 8x2048 d
# 2048, ms): forward 128/8/1w/32 0.059, 128/8/1w/16 0.085, 256/8/2w/8 0.083; backward
# 512/8/4w/4 0.121, 256/8/1w/8 0.139, 128/8/1w/32 0.135, 128/8/1w/16 0.183.
ROLL_FWD_CFG = dict(block_d=128, unroll=8, num_warps=1, programs_per_sm=32)
ROLL_BWD_CFG = dict(block_d=512, unroll=8, num_warps=4, programs_per_sm=4)


def roll_supported(x, weight) -> bool:
    """The rolling kernels need width 4 and channel-last x (stride 1 along dim)."""
    return weight.shape[1] == 4 and x.stride(1) == 1 and x.shape[2] > 1


def channel_last(t):
    """t (batch, dim, L) with stride 1 along dim: itself if it is, else a copy."""
    return t if t.stride(1) == 1 else t.transpose(1, 2).contiguous().transpose(1, 2)


def chunk_for(batch, dim, seqlen, block_d, programs_per_sm, device):
    """Positions per program: the longest power of two from 1024 down to 64 that still gives
    the GPU programs_per_sm programs per SM (each program walks its chunk serially, so the
    parallelism along L comes from the chunks)."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
    strips = batch * triton.cdiv(dim, block_d)
    ch = 1024
    while ch > 64 and strips * triton.cdiv(seqlen + 3, ch) < programs_per_sm * sms:
        ch //= 2
    return ch


@triton.jit
def _x_row(X, INIT, i_b, t, o_d, m_d, L, s_xb, s_xl, s_ib, s_id, s_il, HAS_INIT: tl.constexpr):
    """x[t] for the strip's channels (fp32); initial_state's column t + 3 for -3 <= t < 0."""
    b_x = tl.load(X + i_b * s_xb + t.to(tl.int64) * s_xl + o_d, mask=m_d & (t >= 0) & (t < L),
                  other=0.0).to(tl.float32)
    if HAS_INIT:
        b_x += tl.load(INIT + i_b * s_ib + o_d.to(tl.int64) * s_id + (t + 3) * s_il,
                       mask=m_d & (t < 0) & (t >= -3), other=0.0).to(tl.float32)
    return b_x


@triton.jit
def _seg_at(SEG, i_b, t, L):
    """document counter at position t (a scalar); 0 outside [0, L)."""
    return tl.load(SEG + i_b * L + t, mask=(t >= 0) & (t < L), other=0)


@triton.jit
def _strip(WEIGHT, BIAS, i_d, DIM, BLOCK_D: tl.constexpr, HAS_BIAS: tl.constexpr):
    """The program's channels, their mask, the four taps and the bias (fp32)."""
    o_d = i_d * BLOCK_D + tl.arange(0, BLOCK_D)
    m_d = o_d < DIM
    w0 = tl.load(WEIGHT + o_d * 4 + 0, mask=m_d, other=0.0).to(tl.float32)
    w1 = tl.load(WEIGHT + o_d * 4 + 1, mask=m_d, other=0.0).to(tl.float32)
    w2 = tl.load(WEIGHT + o_d * 4 + 2, mask=m_d, other=0.0).to(tl.float32)
    w3 = tl.load(WEIGHT + o_d * 4 + 3, mask=m_d, other=0.0).to(tl.float32)
    b_bias = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_BIAS:
        b_bias = tl.load(BIAS + o_d, mask=m_d, other=0.0).to(tl.float32)
    return o_d, m_d, w0, w1, w2, w3, b_bias


@triton.jit
def _before(X, INIT, SEG, i_b, t0, o_d, m_d, L, s_xb, s_xl, s_ib, s_id, s_il,
            HAS_INIT: tl.constexpr, HAS_SEG: tl.constexpr):
    """What a walk starting at t0 carries in: x[t0-3], x[t0-2], x[t0-1] and their documents."""
    x_m3 = _x_row(X, INIT, i_b, t0 - 3, o_d, m_d, L, s_xb, s_xl, s_ib, s_id, s_il, HAS_INIT)
    x_m2 = _x_row(X, INIT, i_b, t0 - 2, o_d, m_d, L, s_xb, s_xl, s_ib, s_id, s_il, HAS_INIT)
    x_m1 = _x_row(X, INIT, i_b, t0 - 1, o_d, m_d, L, s_xb, s_xl, s_ib, s_id, s_il, HAS_INIT)
    g_m3 = tl.zeros([], dtype=tl.int32)
    g_m2 = tl.zeros([], dtype=tl.int32)
    g_m1 = tl.zeros([], dtype=tl.int32)
    if HAS_SEG:
        g_m3 = _seg_at(SEG, i_b, t0 - 3, L)
        g_m2 = _seg_at(SEG, i_b, t0 - 2, L)
        g_m1 = _seg_at(SEG, i_b, t0 - 1, L)
    return x_m3, x_m2, x_m1, g_m3, g_m2, g_m1


@triton.jit
def _conv_fwd_roll_kernel(
    X, WEIGHT, BIAS, INIT, SEG, Y,
    L, DIM, CH,
    s_xb, s_xl, s_ib, s_id, s_il, s_yb, s_yl,
    BLOCK_D: tl.constexpr, R: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEG: tl.constexpr, SILU: tl.constexpr,
):
    i_d, i_c, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b = i_b.to(tl.int64)
    o_d, m_d, w0, w1, w2, w3, b_bias = _strip(WEIGHT, BIAS, i_d, DIM, BLOCK_D, HAS_BIAS)
    t0 = i_c * CH
    x_m3, x_m2, x_m1, g_m3, g_m2, g_m1 = _before(X, INIT, SEG, i_b, t0, o_d, m_d, L, s_xb, s_xl,
                                                 s_ib, s_id, s_il, HAS_INIT, HAS_SEG)
    p_y = Y + i_b * s_yb + o_d
    t_end = tl.minimum(t0 + CH, L)
    for tb in range(t0, t_end, R):
        for j in tl.static_range(R):
            t = tb + j
            x_t = _x_row(X, INIT, i_b, t, o_d, m_d, L, s_xb, s_xl, s_ib, s_id, s_il, HAS_INIT)
            if HAS_SEG:
                g_t = _seg_at(SEG, i_b, t, L)
                pre = b_bias + tl.where(g_m3 == g_t, w0 * x_m3, 0.0) \
                    + tl.where(g_m2 == g_t, w1 * x_m2, 0.0) \
                    + tl.where(g_m1 == g_t, w2 * x_m1, 0.0) + w3 * x_t
                g_m3, g_m2, g_m1 = g_m2, g_m1, g_t
            else:
                pre = b_bias + w0 * x_m3 + w1 * x_m2 + w2 * x_m1 + w3 * x_t
            if SILU:
                pre = pre * tl.sigmoid(pre)
            tl.store(p_y + t.to(tl.int64) * s_yl, pre.to(Y.dtype.element_ty), mask=m_d & (t < t_end))
            x_m3, x_m2, x_m1 = x_m2, x_m1, x_t


@triton.jit
def _conv_bwd_roll_kernel(
    X, WEIGHT, BIAS, INIT, SEG, DY, DX, DINIT, DW_PART, DB_PART,
    L, DIM, CH,
    s_xb, s_xl, s_ib, s_id, s_il, s_gb, s_gl, s_dxb, s_dxl, s_db, s_dd, s_dl,
    BLOCK_D: tl.constexpr, R: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, HAS_SEG: tl.constexpr, SILU: tl.constexpr,
):
    i_d, i_c, i_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    n_c = tl.num_programs(1)
    i_b = i_b.to(tl.int64)
    o_d, m_d, w0, w1, w2, w3, b_bias = _strip(WEIGHT, BIAS, i_d, DIM, BLOCK_D, HAS_BIAS)
    p0 = i_c * CH - 3                     # this program's first input position
    p_end = tl.minimum(p0 + CH, L)        # dx for p in [p0, p_end); dw / db for t in [p0, p_end)
    # inputs x[t-3..t-1] and their documents, and dpre[t-3..t-1] (none before the walk starts)
    x_m3, x_m2, x_m1, g_m3, g_m2, g_m1 = _before(X, INIT, SEG, i_b, p0, o_d, m_d, L, s_xb, s_xl,
                                                 s_ib, s_id, s_il, HAS_INIT, HAS_SEG)
    d_m3 = tl.zeros([BLOCK_D], dtype=tl.float32)
    d_m2 = tl.zeros([BLOCK_D], dtype=tl.float32)
    d_m1 = tl.zeros([BLOCK_D], dtype=tl.float32)
    acc_w0 = tl.zeros([BLOCK_D], dtype=tl.float32)
    acc_w1 = tl.zeros([BLOCK_D], dtype=tl.float32)
    acc_w2 = tl.zeros([BLOCK_D], dtype=tl.float32)
    acc_w3 = tl.zeros([BLOCK_D], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK_D], dtype=tl.float32)
    p_dy = DY + i_b * s_gb + o_d
    p_dx = DX + i_b * s_dxb + o_d
    for tb in range(p0, p_end + 3, R):    # three positions past the end: dpre for the last dx
        for j in tl.static_range(R):
            t = tb + j
            x_t = _x_row(X, INIT, i_b, t, o_d, m_d, L, s_xb, s_xl, s_ib, s_id, s_il, HAS_INIT)
            # dy outside [0, L) is zero, so is dpre
            dy_t = tl.load(p_dy + t.to(tl.int64) * s_gl, mask=m_d & (t >= 0) & (t < L),
                           other=0.0).to(tl.float32)
            if HAS_SEG:
                g_t = _seg_at(SEG, i_b, t, L)
                t3 = tl.where(g_m3 == g_t, x_m3, 0.0)   # the taps pre[t] uses
                t2 = tl.where(g_m2 == g_t, x_m2, 0.0)
                t1 = tl.where(g_m1 == g_t, x_m1, 0.0)
            else:
                t3, t2, t1 = x_m3, x_m2, x_m1
            if SILU:
                pre = b_bias + w0 * t3 + w1 * t2 + w2 * t1 + w3 * x_t
                sig = tl.sigmoid(pre)
                d_t = dy_t * sig * (1.0 + pre * (1.0 - sig))
            else:
                d_t = dy_t
            own = t < p_end                        # t's dw / db belong to this program
            d_own = tl.where(own, d_t, 0.0)
            acc_w0 += d_own * t3
            acc_w1 += d_own * t2
            acc_w2 += d_own * t1
            acc_w3 += d_own * x_t
            acc_b += d_own
            # dx at p = t - 3 from dpre[p..p+3], each only within p's document
            if HAS_SEG:
                dx_p = w3 * d_m3 + tl.where(g_m2 == g_m3, w2 * d_m2, 0.0) \
                    + tl.where(g_m1 == g_m3, w1 * d_m1, 0.0) + tl.where(g_t == g_m3, w0 * d_t, 0.0)
                g_m3, g_m2, g_m1 = g_m2, g_m1, g_t
            else:
                dx_p = w3 * d_m3 + w2 * d_m2 + w1 * d_m1 + w0 * d_t
            p = t - 3
            in_walk = (p >= p0) & (p < p_end)
            tl.store(p_dx + p.to(tl.int64) * s_dxl, dx_p.to(DX.dtype.element_ty),
                     mask=m_d & in_walk & (p >= 0))
            if HAS_INIT:
                tl.store(DINIT + i_b * s_db + o_d.to(tl.int64) * s_dd + (p + 3) * s_dl,
                         dx_p.to(DINIT.dtype.element_ty), mask=m_d & in_walk & (p < 0))
            x_m3, x_m2, x_m1 = x_m2, x_m1, x_t
            d_m3, d_m2, d_m1 = d_m2, d_m1, d_t
    p_dw = DW_PART + (i_b * n_c + i_c) * 4 * DIM + o_d
    tl.store(p_dw + 0 * DIM, acc_w0, mask=m_d)
    tl.store(p_dw + 1 * DIM, acc_w1, mask=m_d)
    tl.store(p_dw + 2 * DIM, acc_w2, mask=m_d)
    tl.store(p_dw + 3 * DIM, acc_w3, mask=m_d)
    if HAS_BIAS:
        tl.store(DB_PART + (i_b * n_c + i_c) * DIM + o_d, acc_b, mask=m_d)


def _init_strides(initial_state):
    return initial_state.stride() if initial_state is not None else (0, 0, 0)


def conv_fwd_roll(x, weight, bias, initial_state, seg, silu):
    """Version 3 forward; x channel-last (roll_supported). y keeps x's layout."""
    batch, dim, seqlen = x.shape
    y = like_layout(x)
    c = ROLL_FWD_CFG
    bd, r = c["block_d"], c["unroll"]
    ch = chunk_for(batch, dim, seqlen, bd, c["programs_per_sm"], x.device)
    grid = (triton.cdiv(dim, bd), triton.cdiv(seqlen, ch), batch)
    _conv_fwd_roll_kernel[grid](
        x, weight, bias, initial_state, seg, y, seqlen, dim, ch,
        x.stride(0), x.stride(2), *_init_strides(initial_state), y.stride(0), y.stride(2),
        BLOCK_D=bd, R=r, HAS_BIAS=bias is not None, HAS_INIT=initial_state is not None,
        HAS_SEG=seg is not None, SILU=silu, num_warps=c["num_warps"],
    )
    return y


def conv_bwd_roll(x, weight, bias, initial_state, seg, silu, dy):
    """Version 3 backward; x channel-last (roll_supported). dy in another layout is copied to
    channel-last first (one read and write of dy; a strip-walk over an L-contiguous dy would
    load every element separately). Returns dx (x's layout), dweight, dbias, dinitial_state."""
    batch, dim, seqlen = x.shape
    dy = channel_last(dy)
    c = ROLL_BWD_CFG
    bd, r = c["block_d"], c["unroll"]
    ch = chunk_for(batch, dim, seqlen, bd, c["programs_per_sm"], x.device)
    n_c = triton.cdiv(seqlen + 3, ch)
    dx = like_layout(x)
    dinit = torch.empty_like(initial_state) if initial_state is not None else None
    dw_part = torch.empty(batch * n_c, 4, dim, device=x.device, dtype=torch.float32)
    db_part = torch.empty(batch * n_c, dim, device=x.device, dtype=torch.float32) if bias is not None else None
    _conv_bwd_roll_kernel[(triton.cdiv(dim, bd), n_c, batch)](
        x, weight, bias, initial_state, seg, dy, dx, dinit, dw_part, db_part, seqlen, dim, ch,
        x.stride(0), x.stride(2), *_init_strides(initial_state), dy.stride(0), dy.stride(2),
        dx.stride(0), dx.stride(2), *(dinit.stride() if dinit is not None else (0, 0, 0)),
        BLOCK_D=bd, R=r, HAS_BIAS=bias is not None, HAS_INIT=initial_state is not None,
        HAS_SEG=seg is not None, SILU=silu, num_warps=c["num_warps"],
    )
    dw = dw_part.sum(0).t().to(weight.dtype)
    db = db_part.sum(0).to(bias.dtype) if bias is not None else None
    return dx, dw, db, dinit
