"""Triton implementations of the public Mamba-1 ops (picked up lazily by op.py / dispatch.py).

`selective_scan` and `selective_state_update` have exactly op.py's signatures and reference.py's
semantics. Forward and backward kernels: triton_fwd.py, triton_bwd.py; design and timings:
kernels/NOTES.md. seq_idx is handled inside the kernels (no reference fallback).
"""

from __future__ import annotations

import torch

from bytelm.kernels.selective_scan.triton_bwd import backward_version, scan_bwd
from bytelm.kernels.selective_scan.triton_fwd import scan_fwd, state_update


def _unit_last(t):
    """The kernels read along the last axis with unit stride; other strides are passed through."""
    return t if t is None or t.stride(-1) == 1 else t.contiguous()


def _f32(t):
    return None if t is None else t.detach().float().contiguous()


class SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx,
                delta_softplus, chunk_size, return_final_state):
        u, delta, z = _unit_last(u), _unit_last(delta), _unit_last(z)
        squeeze_groups = B.dim() == 3
        B4 = (B.unsqueeze(1) if squeeze_groups else B)
        C4 = (C.unsqueeze(1) if C.dim() == 3 else C)
        B4, C4 = _unit_last(B4), _unit_last(C4)
        batch, dim, L = u.shape
        G = B4.shape[1]
        assert dim % G == 0, f"dim {dim} is not a multiple of groups {G}"
        assert B4.shape[1] == C4.shape[1], "B and C must have the same number of groups"
        A32, D32, bias32, h0 = _f32(A), _f32(D), _f32(delta_bias), _f32(initial_state)
        seq = seq_idx.to(torch.int32).contiguous() if seq_idx is not None else None
        # the backward version is fixed here: the grouped one starts each chunk from the states
        # this forward saves
        ctx.bwd_version = backward_version()
        keep = ctx.bwd_version == "grouped" and any(getattr(ctx, "needs_input_grad", (True,)))
        y, final, saved = scan_fwd(u, delta, A32, B4, C4, D32, z, bias32, bool(delta_softplus), h0,
                                   seq, chunk_size, want_final=True, save_states=keep)
        states, ctx.states_T = saved if saved is not None else (None, None)
        ctx.save_for_backward(u, delta, A32, B4, C4, D32, z, bias32, h0, seq, states)
        ctx.meta = (bool(delta_softplus), chunk_size, squeeze_groups,
                    A.dtype, None if D is None else D.dtype, B.dtype, C.dtype,
                    None if delta_bias is None else delta_bias.dtype,
                    None if initial_state is None else initial_state.dtype)
        return y, final

    @staticmethod
    def backward(ctx, dy, dfinal):
        u, delta, A32, B4, C4, D32, z, bias32, h0, seq, states = ctx.saved_tensors
        softplus, chunk_size, squeeze, A_dt, D_dt, B_dt, C_dt, bias_dt, h0_dt = ctx.meta
        if dy is None:
            dy = torch.zeros_like(u)
        dy = dy.contiguous()
        dfinal = None if dfinal is None else dfinal.float().contiguous()
        need_dh0 = h0 is not None and ctx.needs_input_grad[8]
        du, ddelta, dA, dB, dC, dD, dz, dbias, dh0 = scan_bwd(
            dy, dfinal, u, delta, A32, B4, C4, D32, z, bias32, softplus, h0, seq, chunk_size,
            need_dh0, ctx.bwd_version, None if states is None else (states, ctx.states_T))
        if squeeze:
            dB, dC = dB.squeeze(1), dC.squeeze(1)
        return (du, ddelta, dA.to(A_dt), dB.to(B_dt), dC.to(C_dt),
                None if dD is None else dD.to(D_dt), dz,
                None if dbias is None else dbias.to(bias_dt),
                None if dh0 is None else dh0.to(h0_dt), None, None, None, None)


def selective_scan(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
    initial_state=None, seq_idx=None, return_final_state=False, chunk_size=None,
):
    """Mamba-1 selective scan (see op.py / reference.py). chunk_size: steps per sequence chunk of
    the kernels' work split (None: chosen from the shape); it does not change the result."""
    y, final = SelectiveScanFn.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, seq_idx,
                                     delta_softplus, chunk_size, return_final_state)
    return (y, final) if return_final_state else y


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """One decode step: state (batch, dim, N) updated in place; returns y (batch, dim)."""
    B3 = B.unsqueeze(1) if B.dim() == 2 else B
    C3 = C.unsqueeze(1) if C.dim() == 2 else C
    work = state if (state.dtype == torch.float32 and state.stride(-1) == 1) else state.float().contiguous()
    y = state_update(work, x.contiguous(), dt.contiguous(), _f32(A), B3.contiguous(),
                     C3.contiguous(), _f32(D), None if z is None else z.contiguous(), _f32(dt_bias),
                     bool(dt_softplus))
    if work is not state:
        state.copy_(work)
    return y
