"""Triton causal conv1d: autograd.Function over triton_fwd / triton_bwd, the public
``causal_conv1d`` and the decode step ``causal_conv1d_update``."""

from __future__ import annotations

import torch

from bytelm.kernels.causal_conv1d.triton_bwd import conv_bwd
from bytelm.kernels.causal_conv1d.triton_fwd import conv_fwd, conv_update
from bytelm.kernels.causal_conv1d.triton_roll import conv_bwd_roll, conv_fwd_roll, roll_supported
from bytelm.kernels.dispatch import env_choice
from bytelm.kernels.ssd.reference import segment_ids


def _silu_flag(activation):
    if activation is None:
        return False
    if activation in ("silu", "swish"):
        return True
    raise ValueError(f"activation must be None or 'silu', got {activation!r}")


def _rolling(name: str, x, weight) -> bool:
    """The rolling kernels (triton_roll.py) run by default where they apply (width 4,
    channel-last x); BYTELM_CONV_FWD=tile / BYTELM_CONV_BWD=v1 pick the tile kernels, which
    also run wherever the rolling ones do not apply."""
    choices = ("roll", "tile") if name == "BYTELM_CONV_FWD" else ("roll", "v1")
    return env_choice(name, choices, "the rolling kernels") == "roll" and roll_supported(x, weight)


class CausalConv1dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, initial_state, seg, silu):
        weight = weight.contiguous()
        fwd = conv_fwd_roll if _rolling("BYTELM_CONV_FWD", x, weight) else conv_fwd
        y = fwd(x, weight, bias, initial_state, seg, silu)
        ctx.save_for_backward(x, weight, bias, initial_state, seg)
        ctx.silu = silu
        ctx.roll_bwd = _rolling("BYTELM_CONV_BWD", x, weight)  # chosen once, at forward time
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias, initial_state, seg = ctx.saved_tensors
        bwd = conv_bwd_roll if ctx.roll_bwd else conv_bwd
        dx, dw, db, dinit = bwd(x, weight, bias, initial_state, seg, ctx.silu, dy)
        return dx, dw, db, dinit, None, None


def causal_conv1d(x, weight, bias=None, activation="silu", seq_idx=None,
                  initial_state=None, return_final_state=False):
    """Same contract as bytelm.kernels.causal_conv1d (reference.py), computed by Triton kernels."""
    silu = _silu_flag(activation)
    batch, dim, seqlen = x.shape
    width = weight.shape[1]
    seg = None if seq_idx is None else segment_ids(seq_idx).to(torch.int32).contiguous()
    y = CausalConv1dFn.apply(x, weight, bias, initial_state, seg, silu)
    if not return_final_state:
        return y
    # The last W-1 inputs: small, so plain torch ops (and torch's autograd for their gradient).
    init = initial_state if initial_state is not None else x.new_zeros(batch, dim, width - 1)
    tail = torch.cat([init.to(x.dtype), x[..., max(0, seqlen - (width - 1)):]], -1)[..., -(width - 1):]
    if seg is not None:
        seg_pad = torch.nn.functional.pad(seg, (width - 1, 0), value=0)[:, -(width - 1):]
        tail = tail * (seg_pad == seg[:, -1:]).to(tail.dtype)[:, None, :]
    return y, tail


def causal_conv1d_update(x, conv_state, weight, bias=None, activation="silu"):
    """One decode step (Triton): x (batch, dim); conv_state (batch, dim, W-1) updated in place."""
    return conv_update(x, conv_state, weight.contiguous(), bias, _silu_flag(activation))
