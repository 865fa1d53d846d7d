"""Triton causal_conv1d and rms_norm against the PyTorch references (float64), forward and every
gradient. CPU: TRITON_INTERPRET=1 at tiny shapes; GPU: the same tests at real shapes."""

import os

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"
triton = pytest.importorskip("triton")

from bytelm.kernels.causal_conv1d.reference import causal_conv1d_ref, causal_conv1d_update_ref  # noqa: E402
from bytelm.kernels.causal_conv1d.triton_op import causal_conv1d, causal_conv1d_update  # noqa: E402
from bytelm.kernels.rms_norm.reference import rms_norm_ref  # noqa: E402
from bytelm.kernels.rms_norm.triton_op import rms_norm  # noqa: E402

DEV = "cuda" if CUDA else "cpu"
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}
DIM = 2048 if CUDA else 40
LENGTHS = (1, 63, 257, 1000) if CUDA else (1, 37)


@pytest.fixture(autouse=True)
def nan_prefilled_outputs(monkeypatch):
    """Every torch.empty / empty_like the kernels' launchers allocate starts as NaN, so an
    element a kernel forgets to write fails the comparison instead of passing as zero."""
    empty, empty_like = torch.empty, torch.empty_like

    def nan_fill(t):
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: nan_fill(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: nan_fill(empty_like(*a, **k)))


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)).item()


def leaf(t):
    return None if t is None else t.detach().requires_grad_()


def dbl(t):
    return None if t is None else t.detach().double().requires_grad_()


def packed(batch, seqlen, ndocs=4):
    return torch.sort(torch.randint(0, ndocs, (batch, seqlen), device=DEV)).values.int()


def check(outs, refs, ins, ins64, tol):
    """forward and the gradient of every input, under one random cotangent; NaN fails."""
    cots = [torch.randn_like(o) for o in outs]
    for o, r in zip(outs, refs):
        assert not o.isnan().any()
        assert rel_err(o, r) <= tol, rel_err(o, r)
    grads = torch.autograd.grad(outs, ins, cots)
    grads64 = torch.autograd.grad(refs, ins64, [c.double() for c in cots])
    for i, (g, r) in enumerate(zip(grads, grads64)):
        assert g is not None and not g.isnan().any(), i
        assert rel_err(g, r) <= tol, (i, rel_err(g, r))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("seqlen", LENGTHS)
@pytest.mark.parametrize("channel_last", [True, False])
@pytest.mark.parametrize("with_state", [False, True])
def test_causal_conv1d(dtype, seqlen, channel_last, with_state):
    torch.manual_seed(seqlen)
    batch, width = 2, 4
    x = torch.randn(batch, seqlen, DIM, device=DEV, dtype=dtype).transpose(1, 2) if channel_last \
        else torch.randn(batch, DIM, seqlen, device=DEV, dtype=dtype)
    w = torch.randn(DIM, width, device=DEV) * 0.5
    b = torch.randn(DIM, device=DEV)
    init = torch.randn(batch, DIM, width - 1, device=DEV, dtype=dtype) if with_state else None
    seq_idx = packed(batch, seqlen) if with_state else None
    ins = [leaf(t) for t in (x, w, b, init) if t is not None]
    ins64 = [dbl(t) for t in ins]
    args = lambda t: (t[0], t[1], t[2], "silu", seq_idx, t[3] if with_state else None, True)  # noqa: E731
    y, fs = causal_conv1d(*args(ins))
    if channel_last and seqlen > 1:
        assert y.stride(1) == 1  # output keeps the models' channel-last layout
    yr, fr = causal_conv1d_ref(*args(ins64))
    check([y, fs], [yr, fr], ins, ins64, TOL[dtype])


def test_causal_conv1d_no_activation_no_bias():
    torch.manual_seed(1)
    x = leaf(torch.randn(3, DIM, 29, device=DEV))
    w = leaf(torch.randn(DIM, 3, device=DEV))
    x64, w64 = dbl(x), dbl(w)
    y = causal_conv1d(x, w, None, None)
    yr = causal_conv1d_ref(x64, w64, None, None)
    check([y], [yr], [x, w], [x64, w64], 1e-5)


def test_causal_conv1d_update():
    torch.manual_seed(2)
    x = torch.randn(3, DIM, device=DEV)
    state = torch.randn(3, DIM, 3, device=DEV)
    state64 = state.double().clone()
    w, b = torch.randn(DIM, 4, device=DEV), torch.randn(DIM, device=DEV)
    for _ in range(3):
        y = causal_conv1d_update(x, state, w, b, "silu")
        yr = causal_conv1d_update_ref(x.double(), state64, w.double(), b.double(), "silu")
        assert rel_err(y, yr) < 1e-6 and rel_err(state, state64) < 1e-6
        x = torch.randn_like(x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("gate", [False, True])
@pytest.mark.parametrize("groups", [1, 2])
def test_rms_norm(dtype, residual, gate, groups):
    torch.manual_seed(3)
    rows = (2, 1000) if CUDA else (2, 7)
    x = torch.randn(*rows, DIM, device=DEV, dtype=dtype)
    w = torch.randn(DIM, device=DEV)
    r = torch.randn(*rows, DIM, device=DEV, dtype=torch.float32) if residual else None
    z = torch.randn(*rows, DIM, device=DEV, dtype=dtype) if gate else None
    gs = None if groups == 1 else DIM // groups
    ins = [leaf(t) for t in (x, w, r, z) if t is not None]
    ins64 = [dbl(t) for t in ins]

    def call(fn, t):
        it = iter(t)
        xx, ww = next(it), next(it)
        rr = next(it) if residual else None
        zz = next(it) if gate else None
        out = fn(xx, ww, 1e-5, rr, zz, True, gs)
        return list(out) if isinstance(out, tuple) else [out]

    outs = call(rms_norm, ins)
    if residual:
        assert outs[1].dtype == torch.float32
    check(outs, call(rms_norm_ref, ins64), ins, ins64, TOL[dtype])


def test_rms_norm_odd_width_three_groups():
    torch.manual_seed(4)
    x, w, z = (leaf(torch.randn(5, 3 * 20, device=DEV)), leaf(torch.randn(60, device=DEV)),
               leaf(torch.randn(5, 60, device=DEV)))
    ins64 = [dbl(t) for t in (x, w, z)]
    y = rms_norm(x, w, 1e-5, None, z, True, 20)
    yr = rms_norm_ref(ins64[0], ins64[1], 1e-5, None, ins64[2], True, 20)
    check([y], [yr], [x, w, z], ins64, 1e-5)


# the rolling kernels need channel-last x (the other layout runs v1: the v1 case)
@pytest.mark.parametrize("version,channel_last", [("v1", True), ("v1", False), ("roll", True)])
@pytest.mark.parametrize("with_state", [True, False])
def test_causal_conv1d_backward_versions_over_many_programs(version, channel_last, with_state,
                                                            monkeypatch):
    """Every backward kernel (BYTELM_CONV_BWD; with roll, the rolling forward too) on a length
    that spans several programs and tiles along L, with and without initial_state and packed
    documents: every gradient against float64. The rolling kernels run for channel-last x only
    (the other layout falls back to the tile kernels)."""
    from bytelm.kernels.causal_conv1d import triton_roll
    monkeypatch.setenv("BYTELM_CONV_BWD", version)
    monkeypatch.setenv("BYTELM_CONV_FWD", "roll" if version == "roll" else "tile")
    if not CUDA:  # two strips of channels (the second partial), 64-position chunks (4 along 200)
        for c in (triton_roll.ROLL_FWD_CFG, triton_roll.ROLL_BWD_CFG):
            monkeypatch.setitem(c, "block_d", 16)
    torch.manual_seed(5)
    batch, seqlen, dim = 2, 4500 if CUDA else 200, DIM if CUDA else 24
    x = torch.randn(batch, seqlen, dim, device=DEV).transpose(1, 2) if channel_last \
        else torch.randn(batch, dim, seqlen, device=DEV)
    w, b = torch.randn(dim, 4, device=DEV) * 0.5, torch.randn(dim, device=DEV)
    init = torch.randn(batch, dim, 3, device=DEV) if with_state else None
    seq_idx = packed(batch, seqlen, ndocs=9) if with_state else None
    ins = [leaf(t) for t in (x, w, b, init) if t is not None]
    ins64 = [dbl(t) for t in ins]
    state = (lambda t: t[3] if with_state else None)  # noqa: E731
    y = causal_conv1d(ins[0], ins[1], ins[2], "silu", seq_idx, state(ins))
    yr = causal_conv1d_ref(ins64[0], ins64[1], ins64[2], "silu", seq_idx, state(ins64))
    check([y], [yr], ins, ins64, 1e-5)


def test_conv_backward_switch(monkeypatch):
    """BYTELM_CONV_FWD / BYTELM_CONV_BWD: unset or roll is the rolling kernel where it applies
    (width 4, channel-last x), tile / v1 the tile kernel; anything else (v2 too: removed) is a
    one-line UserError naming the values, raised by the forward, which fixes the backward's
    version."""
    import importlib
    from bytelm.errors import UserError
    op = importlib.import_module("bytelm.kernels.causal_conv1d.triton_op")

    x = torch.randn(1, 4, 9, device=DEV, requires_grad=True)
    w = torch.randn(4, 4, device=DEV, requires_grad=True)
    x_cl = torch.randn(1, 9, 4, device=DEV).transpose(1, 2)
    for name, other in (("BYTELM_CONV_FWD", "tile"), ("BYTELM_CONV_BWD", "v1")):
        monkeypatch.delenv(name, raising=False)
        assert op._rolling(name, x_cl, w) and not op._rolling(name, x, w)
        assert not op._rolling(name, x_cl, torch.randn(4, 3, device=DEV))   # width 3
        monkeypatch.setenv(name, f" {other.title()} ")
        assert not op._rolling(name, x_cl, w)
        monkeypatch.setenv(name, " Roll ")
        assert op._rolling(name, x_cl, w)
        monkeypatch.delenv(name)
    for name, bad in (("BYTELM_CONV_BWD", "v2"), ("BYTELM_CONV_FWD", "v2")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(UserError, match=f"{name}='{bad}' is not one of"):
            causal_conv1d(x, w, None, "silu")
        monkeypatch.delenv(name)


@pytest.mark.parametrize("dtype,silu,dy_layout", [
    (torch.float32, True, "channel-last"), (torch.bfloat16, True, "contiguous"),
    (torch.float32, False, "contiguous"), (torch.bfloat16, False, "channel-last")])
def test_rolling_conv_kernels(dtype, silu, dy_layout, monkeypatch):
    """The rolling kernels (BYTELM_CONV_FWD/BWD=roll) against float64: forward, every gradient
    and the final state, with packed documents and an initial state, over several chunks and
    channel strips; the cotangent either channel-last (Mamba-2's) or L-contiguous (what Mamba-1's
    conv receives, copied to channel-last by the backward)."""
    import importlib
    from bytelm.kernels.causal_conv1d import triton_roll
    op = importlib.import_module("bytelm.kernels.causal_conv1d.triton_op")
    monkeypatch.setenv("BYTELM_CONV_FWD", "roll")
    monkeypatch.setenv("BYTELM_CONV_BWD", "roll")
    calls = []
    for name in ("conv_fwd_roll", "conv_bwd_roll"):
        fn = getattr(triton_roll, name)
        monkeypatch.setattr(op, name, lambda *a, _fn=fn, _n=name: calls.append(_n) or _fn(*a))
    if not CUDA:
        for c in (triton_roll.ROLL_FWD_CFG, triton_roll.ROLL_BWD_CFG):
            monkeypatch.setitem(c, "block_d", 16)
            monkeypatch.setitem(c, "unroll", 4)
    torch.manual_seed(6)
    # CPU: 2 chunks of 64 positions, 2 channel strips; batch > 1 in the many-programs test above
    batch, seqlen, dim = (2, 3000, DIM) if CUDA else (1, 100, 20)
    x = torch.randn(batch, seqlen, dim, device=DEV, dtype=dtype).transpose(1, 2)
    w, b = torch.randn(dim, 4, device=DEV) * 0.5, torch.randn(dim, device=DEV)
    init = torch.randn(batch, dim, 3, device=DEV, dtype=dtype)
    seq_idx = packed(batch, seqlen, ndocs=6)
    ins = [leaf(t) for t in (x, w, b, init)]
    ins64 = [dbl(t) for t in ins]
    act = "silu" if silu else None
    y, fs = causal_conv1d(ins[0], ins[1], ins[2], act, seq_idx, ins[3], True)
    yr, fr = causal_conv1d_ref(ins64[0], ins64[1], ins64[2], act, seq_idx, ins64[3], True)
    assert y.stride(1) == 1 and rel_err(y, yr) <= TOL[dtype], rel_err(y, yr)
    dy = torch.randn_like(y) if dy_layout == "channel-last" else torch.randn(y.shape, device=DEV).to(dtype)
    dfs = torch.randn_like(fs)
    grads = torch.autograd.grad([y, fs], ins, [dy, dfs])
    grads64 = torch.autograd.grad([yr, fr], ins64, [dy.double(), dfs.double()])
    for i, (g, r) in enumerate(zip(grads, grads64)):
        assert not g.isnan().any() and rel_err(g, r) <= TOL[dtype], (i, rel_err(g, r))
    assert calls == ["conv_fwd_roll", "conv_bwd_roll"]


@pytest.mark.parametrize("stages", [1, 3])
@pytest.mark.parametrize("residual", [False, True])
def test_rms_norm_pipeline_stages(stages, residual, monkeypatch):
    """RMSNorm forward and backward at other software-pipeline depths of their row loops than
    the default 2 (FWD_CFG / BWD_CFG num_stages; 1: no prefetch, 3: two rows ahead through
    shared memory on a GPU), several rows per program and a last program with fewer rows:
    outputs and every gradient against float64."""
    from bytelm.kernels.rms_norm import triton_bwd as norm_bwd
    from bytelm.kernels.rms_norm import triton_fwd as norm_fwd
    monkeypatch.setitem(norm_bwd.BWD_CFG, "num_stages", stages)
    monkeypatch.setitem(norm_fwd.FWD_CFG, "num_stages", stages)
    monkeypatch.setitem(norm_fwd.FWD_CFG, "rows", 4)
    torch.manual_seed(7)
    rows = 3001 if CUDA else 13
    x, w = leaf(torch.randn(rows, DIM, device=DEV)), leaf(torch.randn(DIM, device=DEV))
    z = leaf(torch.randn(rows, DIM, device=DEV)) if not residual else None
    r = leaf(torch.randn(rows, DIM, device=DEV)) if residual else None
    ins = [t for t in (x, w, r, z) if t is not None]
    ins64 = [dbl(t) for t in ins]
    it = iter(ins64)
    x64, w64 = next(it), next(it)
    r64 = next(it) if residual else None
    z64 = next(it) if not residual else None
    out = rms_norm(x, w, 1e-5, r, z)
    ref = rms_norm_ref(x64, w64, 1e-5, r64, z64)
    outs, refs = (list(out), list(ref)) if residual else ([out], [ref])
    check(outs, refs, ins, ins64, 1e-5)
