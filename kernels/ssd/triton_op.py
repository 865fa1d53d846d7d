"""Triton Mamba-2 SSD: the public ``ssd`` and ``ssd_state_update``.

Without autograd, ``ssd`` runs the Triton forward (triton_fwd.py); with autograd recording for
any input, the Triton forward that keeps the chunk-entry states and the Triton backward
(triton_bwd.py; checked against the float64 reference on an H200 and in the CPU interpreter,
kernels/NOTES.md). ``BYTELM_SSD_BWD=ref`` trains through the PyTorch reference instead
(chunked, matmul-based; 5-13x slower and far more memory), for cross-checks;
``BYTELM_SSD_BWD=grouped`` the grouped Triton backward (triton_bwd.BWD_CFG["grouped"]).
"""

from __future__ import annotations


import torch

from bytelm.kernels.dispatch import env_choice
from bytelm.kernels.ssd.reference import segment_ids, ssd_ref
from bytelm.kernels.ssd.triton_bwd import ssd_bwd
from bytelm.kernels.ssd.triton_fwd import ssd_fwd, ssd_state_update_fwd

BWD_ENV = "BYTELM_SSD_BWD"


def backward_choice() -> str:
    """BYTELM_SSD_BWD: triton (default), grouped (the Triton backward with BWD_CFG["grouped"],
    opt-in while its GPU timing is pending) or ref (train through the PyTorch reference)."""
    return env_choice(BWD_ENV, ("triton", "grouped", "ref"), "the Triton SSD backward")


def triton_backward_requested() -> bool:
    return backward_choice() != "ref"


class _SSDFunction(torch.autograd.Function):
    """Triton forward + Triton backward; saves the inputs, the chunk-entry states and the
    per-token dt / cumsum buffers (fp32, (batch·H, L)), recomputes everything else."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, z, dt_bias, initial_state, seg, chunk_size, dt_softplus):
        x, B, C = x.contiguous(), B.contiguous(), C.contiguous()
        z = None if z is None else z.contiguous()
        Af = A.float().contiguous()
        Dc = None if D is None else D.contiguous()
        bias = None if dt_bias is None else dt_bias.contiguous()
        y, final, saved = ssd_fwd(x, dt, Af, B, C, chunk_size, Dc, z, bias, dt_softplus,
                                  initial_state, seg, keep=True)
        ctx.save_for_backward(x, dt, Af, B, C, Dc, z, bias, seg, *saved)
        ctx.chunk_size, ctx.dt_softplus = chunk_size, dt_softplus
        ctx.dtypes = (A.dtype, None if D is None else D.dtype,
                      None if dt_bias is None else dt_bias.dtype,
                      None if initial_state is None else initial_state.dtype)
        ctx.has_init = initial_state is not None
        ctx.grouped = True if backward_choice() == "grouped" else None  # None: BWD_CFG decides
        return y, final

    @staticmethod
    def backward(ctx, dy, dfinal):
        x, dt, A, B, C, D, z, bias, seg, *saved = ctx.saved_tensors  # dy, dfinal: materialized
        dx, ddt, dA, dB, dC, dD, dz, dbias, dinit = ssd_bwd(
            dy, x, dt, A, B, C, ctx.chunk_size, D, z, bias, ctx.dt_softplus, seg, saved, dfinal,
            grouped=ctx.grouped)
        a_dt, d_dt, bias_dt, init_dt = ctx.dtypes
        return (dx, ddt.to(dt.dtype), dA.to(a_dt), dB.to(B.dtype), dC.to(C.dtype),
                None if dD is None else dD.to(d_dt), dz,
                None if dbias is None else dbias.to(bias_dt),
                dinit.to(init_dt) if ctx.has_init else None, None, None, None)


def _needs_grad(*tensors):
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def ssd(
    x, dt, A, B, C, chunk_size=256, D=None, z=None, dt_bias=None, dt_softplus=False,
    initial_state=None, seq_idx=None, return_final_state=False,
):
    """Same contract as bytelm.kernels.ssd (reference.py)."""
    grad = _needs_grad(x, dt, A, B, C, D, z, dt_bias, initial_state)
    if x.dtype == torch.float64 or (grad and not triton_backward_requested()):
        return ssd_ref(x, dt, A, B, C, chunk_size, D, z, dt_bias, dt_softplus,
                       initial_state, seq_idx, return_final_state)
    seg = None if seq_idx is None else segment_ids(seq_idx).to(torch.int32).contiguous()
    if grad:
        y, final = _SSDFunction.apply(x, dt, A, B, C, D, z, dt_bias, initial_state, seg,
                                      int(chunk_size), dt_softplus)
        return (y, final) if return_final_state else y
    y, final = ssd_fwd(x, dt, A.float().contiguous(), B, C, int(chunk_size),
                       None if D is None else D.contiguous(), z,
                       None if dt_bias is None else dt_bias.contiguous(), dt_softplus, initial_state, seg)
    return (y, final) if return_final_state else y


def ssd_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """One decode step (Triton); state (batch, H, P, N) fp32 contiguous, updated in place."""
    return ssd_state_update_fwd(state, x, dt, A.float().contiguous(), B, C,
                                None if D is None else D.contiguous(), z,
                                None if dt_bias is None else dt_bias.contiguous(), dt_softplus)
