"""Triton Mamba-1 selective scan (forward, backward, decode step) against the PyTorch reference.

On a machine without CUDA the kernels run under TRITON_INTERPRET=1 at tiny shapes (CI); with a
GPU the same tests run at real shapes. Every comparison is ‖out − ref‖ / ‖ref‖ against the
reference evaluated in float64 on the same (rounded) inputs; every buffer the kernels must write
is pre-filled with NaN, so an unwritten element fails.
"""

import os

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ["TRITON_INTERPRET"] = "1"  # must precede the first import of triton

triton = pytest.importorskip("triton")

from bytelm.kernels import selective_scan as public_scan  # noqa: E402
from bytelm.kernels.selective_scan import triton_fwd  # noqa: E402
from bytelm.kernels.selective_scan.reference import (  # noqa: E402
    selective_scan_ref, selective_state_update_ref,
)
from bytelm.kernels.selective_scan.triton_op import (  # noqa: E402
    selective_scan, selective_state_update,
)

DEVICE = "cuda" if CUDA else "cpu"
# (dim, N): tiny under the interpreter, real on the GPU
DIM, NSTATE = (256, 16) if CUDA else (8, 4)
LENGTHS = [1, 17, 63, 1000, 4096] if CUDA else [1, 17, 63]
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}


@pytest.fixture(autouse=True)
def _setup(monkeypatch):
    torch.manual_seed(0)

    def nan_empty(*shape, device, dtype):
        t = torch.empty(*shape, device=device, dtype=dtype)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(triton_fwd, "new_empty", nan_empty)


def rel_err(out, ref):
    return ((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)).item()


def make_inputs(batch, dim, N, L, groups, dtype, z=True, D=True, bias=True, h0=True):
    g = dict(device=DEVICE)
    bc_shape = (batch, groups, N, L) if groups > 1 else (batch, N, L)
    return dict(
        u=torch.randn(batch, dim, L, **g).to(dtype),
        delta=(0.5 * torch.randn(batch, dim, L, **g)).to(dtype),
        A=-(0.2 + torch.rand(dim, N, **g)),
        B=torch.randn(*bc_shape, **g).to(dtype),
        C=torch.randn(*bc_shape, **g).to(dtype),
        D=torch.randn(dim, **g) if D else None,
        z=torch.randn(batch, dim, L, **g).to(dtype) if z else None,
        delta_bias=(0.3 * torch.randn(dim, **g)) if bias else None,
        initial_state=torch.randn(batch, dim, N, **g) if h0 else None,
    )


def packed_seq_idx(batch, L, ndocs=3):
    return torch.randint(0, ndocs, (batch, L), device=DEVICE).sort(-1).values.int()


def check_scan(inputs, dtype, seq_idx=None, chunk_size=None, grad_y=True, grad_final=True):
    """Forward, final state and every gradient of the Triton scan vs the float64 reference."""
    names = [k for k, v in inputs.items() if v is not None]
    ours = {k: inputs[k].clone().requires_grad_() for k in names}
    ref = {k: inputs[k].double().clone().requires_grad_() for k in names}
    y, final = selective_scan(**ours, delta_softplus=True, seq_idx=seq_idx,
                              return_final_state=True, chunk_size=chunk_size)
    y_ref, final_ref = selective_scan_ref(**ref, delta_softplus=True, seq_idx=seq_idx,
                                          return_final_state=True)
    assert y.dtype == inputs["u"].dtype and final.dtype == torch.float32
    tol = TOL[dtype]
    errs = {"y": rel_err(y, y_ref), "final_state": rel_err(final, final_ref)}
    gy, gf = torch.randn_like(y_ref), torch.randn_like(final_ref)
    loss = sum([(y * gy.to(y.dtype)).float().sum()] if grad_y else []) \
        + ((final * gf.float()).sum() if grad_final else 0)
    loss_ref = sum([(y_ref * gy.to(y.dtype).double()).sum()] if grad_y else []) \
        + ((final_ref * gf).sum() if grad_final else 0)
    loss.backward()
    loss_ref.backward()
    for k in names:
        if ref[k].grad is None:  # no path to the loss (e.g. z when only final_state is used)
            assert ours[k].grad is None or not ours[k].grad.any(), k
            continue
        errs["d" + k] = rel_err(ours[k].grad, ref[k].grad)
        assert torch.isfinite(ours[k].grad).all(), k
    bad = {k: v for k, v in errs.items() if not v <= tol}
    assert not bad, f"rel errors over {tol}: {bad} (all: {errs})"
    return errs


# Each case: (L, groups, chunk_size, options). chunk_size crosses chunk boundaries (the carry
# passes); None lets the shape choose (a single chunk at these sizes: tile boundaries only).
CASES = [
    (L, groups, chunk, opts)
    for L in LENGTHS
    for groups, chunk, opts in [
        (1, None, {}),
        (2, 16 if not CUDA else 256, dict(seq=True)),
    ]
] + [
    (LENGTHS[-1], 1, 24 if not CUDA else 160, dict(z=False, D=False, bias=False, h0=False)),
    (LENGTHS[-1], 2, None, dict(h0=False, grad_final=False)),
    (LENGTHS[-1], 1, 16 if not CUDA else 512, dict(grad_y=False)),
]


@pytest.mark.parametrize("L,groups,chunk,opts", CASES)
def test_scan_fp32_matches_reference(L, groups, chunk, opts):
    opts = dict(opts)
    seq, grad_y, grad_final = opts.pop("seq", False), opts.pop("grad_y", True), opts.pop("grad_final", True)
    batch = 2
    inputs = make_inputs(batch, DIM, NSTATE, L, groups, torch.float32, **opts)
    seq_idx = packed_seq_idx(batch, L) if seq else None
    check_scan(inputs, torch.float32, seq_idx=seq_idx, chunk_size=chunk,
               grad_y=grad_y, grad_final=grad_final)


@pytest.mark.parametrize("L", [LENGTHS[-1]])
def test_scan_bf16_matches_reference(L):
    inputs = make_inputs(2, DIM, NSTATE, L, 2, torch.bfloat16)
    check_scan(inputs, torch.bfloat16, chunk_size=None if CUDA else 16)


@pytest.mark.parametrize("opts", [dict(seq=True), dict(z=False, D=False, bias=False)])
def test_lean_backward_variant_matches_reference(monkeypatch, opts):
    """Version 2's LEAN variant (re-reads u, dout, z, Δ after the state loop; opt-in) must
    still be exact."""
    from bytelm.kernels.selective_scan import triton_bwd

    monkeypatch.setenv("BYTELM_SCAN_BWD", "chunked")
    for cfg in (triton_bwd.BWD_CFG, triton_bwd.BWD_CFG_INTERP):
        monkeypatch.setitem(cfg, "LEAN", True)
    opts = dict(opts)
    seq = opts.pop("seq", False)
    L = LENGTHS[-1]
    inputs = make_inputs(2, DIM, NSTATE, L, 2, torch.float32, **opts)
    check_scan(inputs, torch.float32, seq_idx=packed_seq_idx(2, L) if seq else None)


def test_result_does_not_depend_on_chunking():
    inputs = make_inputs(2, DIM, NSTATE, LENGTHS[-1], 1, torch.float32)
    y1, f1 = selective_scan(**inputs, delta_softplus=True, return_final_state=True, chunk_size=None)
    y2, f2 = selective_scan(**inputs, delta_softplus=True, return_final_state=True,
                            chunk_size=16 if not CUDA else 128)
    assert rel_err(y1, y2) < 1e-6 and rel_err(f1, f2) < 1e-6


def test_seq_idx_equals_separate_documents():
    """Two packed documents give the same outputs as two separate calls (no leakage)."""
    L1, L2 = (9, 14) if not CUDA else (700, 300)
    inputs = make_inputs(1, DIM, NSTATE, L1 + L2, 1, torch.float32, h0=False)
    seq_idx = torch.cat([torch.zeros(1, L1), torch.ones(1, L2)], 1).int().to(DEVICE)
    y, _ = selective_scan(**inputs, delta_softplus=True, seq_idx=seq_idx, return_final_state=True)
    parts = []
    for sl in (slice(0, L1), slice(L1, L1 + L2)):
        part = {k: (v[..., sl].contiguous() if k in ("u", "delta", "z", "B", "C") else v)
                for k, v in inputs.items()}
        parts.append(selective_scan(**part, delta_softplus=True))
    assert rel_err(y, torch.cat(parts, -1)) < 1e-5


@pytest.mark.parametrize("groups", [1, 2])
def test_decode_step_equals_scan(groups):
    L = 5
    inputs = make_inputs(2, DIM, NSTATE, L, groups, torch.float32)
    y_scan, final = selective_scan(**inputs, delta_softplus=True, return_final_state=True)
    state = inputs["initial_state"].clone()
    state_ref = inputs["initial_state"].clone()
    for t in range(L):
        step = dict(x=inputs["u"][..., t], dt=inputs["delta"][..., t], A=inputs["A"],
                    B=inputs["B"][..., t], C=inputs["C"][..., t], D=inputs["D"],
                    z=inputs["z"][..., t], dt_bias=inputs["delta_bias"], dt_softplus=True)
        y_t = selective_state_update(state, **step)
        y_ref = selective_state_update_ref(state_ref, **step)
        assert rel_err(y_t, y_scan[..., t]) < 1e-5
        assert rel_err(y_t, y_ref) < 1e-5
    assert rel_err(state, final) < 1e-5 and rel_err(state, state_ref) < 1e-5


def test_public_function_dispatches_to_triton(monkeypatch):
    from bytelm.kernels.selective_scan import triton_fwd_lanes

    monkeypatch.setenv("BYTELM_KERNELS", "triton")
    inputs = make_inputs(2, DIM, NSTATE, 17, 1, torch.float32)
    calls = []
    for kernel in (triton_fwd._fwd_seq_kernel, triton_fwd_lanes._fwd_lanes_kernel):
        monkeypatch.setattr(kernel, "run", lambda *a, real=kernel.run, **k: calls.append(1) or real(*a, **k))
    y = public_scan(**inputs, delta_softplus=True)
    assert calls, "the public selective_scan did not run a Triton forward kernel"
    assert rel_err(y, selective_scan_ref(**inputs, delta_softplus=True)) < 1e-5


def test_auto_forward_picks_version_4_where_it_fits(monkeypatch):
    """BYTELM_SCAN_FWD unset (auto): version 4 (lanes), with or without gradients, when batch x
    dim fills enough programs without a chunk pass (min_fill of warps_per_sm x SMs) and d_state
    fits the lanes' registers; else version 3 (seq)."""
    from bytelm.kernels.selective_scan import triton_fwd_lanes

    monkeypatch.delenv("BYTELM_SCAN_FWD", raising=False)
    ran = []
    for name, kernel in (("seq", triton_fwd._fwd_seq_kernel), ("lanes", triton_fwd_lanes._fwd_lanes_kernel)):
        monkeypatch.setattr(kernel, "run", lambda *a, real=kernel.run, name=name, **k: ran.append(name) or real(*a, **k))
    cases = [(NSTATE, 0.0, 1, False, "lanes"), (64, 0.0, 1, False, "seq"),
             (NSTATE, 0.5, 10 ** 6, False, "seq"), (NSTATE, 0.0, 1, True, "lanes"),
             (NSTATE, 0.5, 10 ** 6, True, "seq")]
    for N, fill, programs, grad, want in cases:
        for c in (triton_fwd_lanes.LANES_CFG, triton_fwd_lanes.LANES_CFG_INTERP):
            monkeypatch.setitem(c, "warps_per_sm", programs)
            monkeypatch.setitem(c, "min_fill", fill)
        ran.clear()
        inputs = make_inputs(2, DIM, N, 5, 1, torch.float32)
        inputs["u"].requires_grad_(grad)
        y = selective_scan(**inputs, delta_softplus=True)
        assert set(ran) == {want}, (N, fill, programs, grad, ran)
        assert rel_err(y, selective_scan_ref(**inputs, delta_softplus=True)) < 1e-5


SEQ_FWD_CASES = [
    (L, groups, chunk, opts)
    for L in LENGTHS
    for groups, chunk, opts in [(1, None, {}), (2, 16 if not CUDA else 256, dict(seq=True))]
] + [
    (LENGTHS[-1], 1, 24 if not CUDA else 160, dict(z=False, D=False, bias=False, h0=False)),
    (LENGTHS[-1], 2, 8 if not CUDA else 512, dict(seq=True, h0=False)),
]


@pytest.mark.parametrize("version", ["chunked", "seq"])
@pytest.mark.parametrize("L,groups,chunk,opts", SEQ_FWD_CASES)
def test_chunked_forward_variant_matches_reference(monkeypatch, L, groups, chunk, opts, version):
    """Versions 2 (BYTELM_SCAN_FWD=chunked) and 3 (seq) of the forward (the default picks 4 or
    3 by shape: 4 at the interpreter's shapes): y and the final state against float64, with
    chunking (chunk_states + carry or the LOCAL pass), documents, groups."""
    monkeypatch.setenv("BYTELM_SCAN_FWD", version)
    opts = dict(opts)
    seq = opts.pop("seq", False)
    inputs = make_inputs(2, DIM, NSTATE, L, groups, torch.float32, **opts)
    seq_idx = packed_seq_idx(2, L) if seq else None
    with torch.no_grad():
        y, final = selective_scan(**inputs, delta_softplus=True, seq_idx=seq_idx,
                                  return_final_state=True, chunk_size=chunk)
        y_ref, final_ref = selective_scan_ref(**{k: v.double() if v is not None else None
                                                 for k, v in inputs.items()},
                                              delta_softplus=True, seq_idx=seq_idx,
                                              return_final_state=True)
    assert rel_err(y, y_ref) <= 1e-5 and rel_err(final, final_ref) <= 1e-5, \
        (rel_err(y, y_ref), rel_err(final, final_ref))


@pytest.mark.parametrize("version", ["chunked", "seq"])
def test_chunked_forward_variant_bf16_and_gradients(monkeypatch, version):
    """Versions 2 and 3 of the forward with the default backward: the states they save for the
    backward (one per BLOCK_L / SEQ_CK_T steps) are the backward's chunk starts."""
    monkeypatch.setenv("BYTELM_SCAN_FWD", version)
    L = LENGTHS[-1]
    check_scan(make_inputs(2, DIM, NSTATE, L, 2, torch.bfloat16), torch.bfloat16,
               chunk_size=None if CUDA else 16)
    check_scan(make_inputs(2, DIM, NSTATE, L, 1, torch.float32), torch.float32,
               seq_idx=packed_seq_idx(2, L), chunk_size=None if CUDA else 24)
    # (the default backward, grouped, starts its chunks from the states this forward saves);
    # with the sequential one, which recomputes them
    monkeypatch.setenv("BYTELM_SCAN_BWD", "seq")
    check_scan(make_inputs(2, DIM, NSTATE, L, 1, torch.float32), torch.float32,
               seq_idx=packed_seq_idx(2, L), chunk_size=None if CUDA else 24)


# Version 4 (BYTELM_SCAN_FWD=lanes) at each lanes-per-channel R: tile boundaries, full tiles
# (L % 8 == 0: the unmasked path) with chunks (LOCAL pass + carry), documents and groups, no
# options; the gradients come from the default backward, which starts from the states this
# forward saves.
LANES_R = [1, 2, 4, 8] if CUDA else [1, 2, 4]
LANES_CASES = [
    (LENGTHS[1], 1, None, {}),
    (LENGTHS[-1] + 1 if CUDA else 64, 2, 256 if CUDA else 16, dict(seq=True)),
    (LENGTHS[-1], 1, 160 if CUDA else 24, dict(z=False, D=False, bias=False, h0=False)),
]


@pytest.mark.parametrize("R", LANES_R)
@pytest.mark.parametrize("L,groups,chunk,opts", LANES_CASES)
def test_lanes_forward_variant_matches_reference(monkeypatch, L, groups, chunk, opts, R):
    from bytelm.kernels.selective_scan import triton_fwd_lanes

    monkeypatch.setenv("BYTELM_SCAN_FWD", "lanes")
    for c in (triton_fwd_lanes.LANES_CFG, triton_fwd_lanes.LANES_CFG_INTERP):
        monkeypatch.setitem(c, "R", R)
    calls = []
    real = triton_fwd_lanes._fwd_lanes_kernel.run
    monkeypatch.setattr(triton_fwd_lanes._fwd_lanes_kernel, "run",
                        lambda *a, **k: calls.append(k["R"]) or real(*a, **k))
    opts = dict(opts)
    seq = opts.pop("seq", False)
    inputs = make_inputs(2, DIM, NSTATE, L, groups, torch.float32, **opts)
    check_scan(inputs, torch.float32, seq_idx=packed_seq_idx(2, L) if seq else None,
               chunk_size=chunk)
    assert calls and set(calls) == {R}, calls


@pytest.mark.parametrize("bc_fp32", [False, True])
def test_lanes_forward_variant_bf16_and_its_lane_choice(monkeypatch, bc_fp32):
    """bf16 through version 4 with R chosen from the shape, B and C read as bf16 or as fp32
    copies, and the choice itself: the fewest lanes that give the wanted programs, a divisor
    of N, at most max_R."""
    from bytelm.kernels.selective_scan import triton_fwd_lanes
    from bytelm.kernels.selective_scan.triton_fwd_lanes import lanes_per_channel

    monkeypatch.setenv("BYTELM_SCAN_FWD", "lanes")
    for c in (triton_fwd_lanes.LANES_CFG, triton_fwd_lanes.LANES_CFG_INTERP):
        monkeypatch.setitem(c, "bc_fp32", bc_fp32)
    check_scan(make_inputs(2, DIM, NSTATE, LENGTHS[-1], 2, torch.bfloat16), torch.bfloat16,
               chunk_size=None if CUDA else 16)
    # 8 x 2048 channels on 132 SMs x 4 warps: 512 one-warp programs at R = 1 (~ the 528 wanted)
    assert lanes_per_channel(8 * 2048, 16, 528, 4, 32) == 2
    assert lanes_per_channel(8 * 2048, 16, 512, 4, 32) == 1
    assert lanes_per_channel(2 * 2048, 16, 528, 8, 32) == 8
    assert lanes_per_channel(2 * 2048, 16, 528, 4, 32) == 4
    assert lanes_per_channel(2 * 2048, 4, 528, 8, 32) == 4  # R divides N
    assert lanes_per_channel(64, 16, 1, 8, 32) == 1


SEQ_BWD_CASES = [
    (L, groups, chunk, opts)
    for L in LENGTHS
    for groups, chunk, opts in [(1, None, {}), (2, 16 if not CUDA else 256, dict(seq=True))]
] + [
    (LENGTHS[-1], 1, 24 if not CUDA else 160, dict(z=False, D=False, bias=False, h0=False)),
    (LENGTHS[-1], 2, 8 if not CUDA else 512, dict(seq=True, h0=False, grad_final=False)),
    (LENGTHS[-1], 1, 16 if not CUDA else 256, dict(grad_y=False)),
]


@pytest.mark.parametrize("version", ["chunked", "seq"])
@pytest.mark.parametrize("L,groups,chunk,opts", SEQ_BWD_CASES)
def test_backward_variant_matches_reference(monkeypatch, L, groups, chunk, opts, version):
    """Versions 2 (BYTELM_SCAN_BWD=chunked) and 3 (=seq) of the backward; the default, version
    3.1 (grouped, from the forward's saved chunk states), runs in every other test here: every
    gradient against float64 over several chunks, documents, groups, no z / D / bias, with and
    without the output and final-state gradients."""
    monkeypatch.setenv("BYTELM_SCAN_BWD", version)
    opts = dict(opts)
    seq, grad_y, grad_final = opts.pop("seq", False), opts.pop("grad_y", True), opts.pop("grad_final", True)
    inputs = make_inputs(2, DIM, NSTATE, L, groups, torch.float32, **opts)
    check_scan(inputs, torch.float32, seq_idx=packed_seq_idx(2, L) if seq else None,
               chunk_size=chunk, grad_y=grad_y, grad_final=grad_final)


@pytest.mark.parametrize("fwd,bwd,seq", [("auto", "grouped", False), ("auto", "grouped", True),
                                         ("seq", "seq", False), ("chunked", "chunked", False),
                                         ("lanes", "grouped", False)])
def test_scan_with_slow_decay_carries_state_across_chunks(monkeypatch, fwd, bwd, seq):
    """make_inputs' decay (Δ·A ~ -0.1 to -0.8 per step) forgets a state within tens of steps, so
    what crosses a chunk boundary barely reaches the outputs there. Here Δ·A ~ -0.001 per step:
    the state carries across every chunk of the row, and each forward / backward version's
    chunk passes must get it right (every gradient in float64)."""
    monkeypatch.setenv("BYTELM_SCAN_FWD", fwd)
    monkeypatch.setenv("BYTELM_SCAN_BWD", bwd)
    L = LENGTHS[-1]
    inputs = make_inputs(2, DIM, NSTATE, L, 2, torch.float32)
    inputs["A"] = -(0.005 + 0.01 * torch.rand(DIM, NSTATE, device=DEVICE))
    inputs["delta_bias"] = torch.full((DIM,), -3.0, device=DEVICE)  # Δ ~ softplus(-3 ± 0.5) ~ 0.05
    check_scan(inputs, torch.float32, seq_idx=packed_seq_idx(2, L, ndocs=2) if seq else None,
               chunk_size=16 if not CUDA else 256)


@pytest.mark.parametrize("L,groups,chunk,opts", [SEQ_BWD_CASES[-2]])
def test_sequential_backward_with_its_own_state_tiles(monkeypatch, L, groups, chunk, opts):
    """Version 3 with SEQ_BWD_CFG states="own" (the default is "v2", version 2's tiling of the
    chunk_states pass, which every other version 3 test runs): the pass's outputs must not
    depend on its tiling (several chunks, groups, documents, no final-state gradient)."""
    from bytelm.kernels.selective_scan import triton_bwd_seq
    monkeypatch.setenv("BYTELM_SCAN_BWD", "seq")
    for c in (triton_bwd_seq.SEQ_BWD_CFG, triton_bwd_seq.SEQ_BWD_CFG_INTERP):
        monkeypatch.setitem(c, "states", "own")
    opts = dict(opts)
    seq, grad_y, grad_final = opts.pop("seq", False), opts.pop("grad_y", True), opts.pop("grad_final", True)
    inputs = make_inputs(2, DIM, NSTATE, L, groups, torch.float32, **opts)
    check_scan(inputs, torch.float32, seq_idx=packed_seq_idx(2, L) if seq else None,
               chunk_size=chunk, grad_y=grad_y, grad_final=grad_final)


@pytest.mark.parametrize("version", ["chunked", "seq"])
def test_backward_variant_bf16(monkeypatch, version):
    monkeypatch.setenv("BYTELM_SCAN_BWD", version)
    check_scan(make_inputs(2, DIM, NSTATE, LENGTHS[-1], 2, torch.bfloat16), torch.bfloat16,
               chunk_size=None if CUDA else 16)


@pytest.mark.parametrize("env", ["BYTELM_SCAN_FWD", "BYTELM_SCAN_BWD"])
def test_version_switches(monkeypatch, env):
    """BYTELM_SCAN_FWD: unset or auto picks version 4 or 3 by shape, seq is 3, lanes 4, chunked
    2; BYTELM_SCAN_BWD: unset or
    grouped is version 3.1, seq 3, chunked 2; anything else is a one-line UserError naming the
    accepted values."""
    from bytelm.errors import UserError
    from bytelm.kernels.selective_scan.triton_bwd import backward_version

    version = triton_fwd.forward_version if env.endswith("FWD") else backward_version
    monkeypatch.delenv(env, raising=False)
    assert version() == ("auto" if env.endswith("FWD") else "grouped")
    monkeypatch.setenv(env, " Chunked ")
    assert version() == "chunked"
    if env.endswith("BWD"):
        monkeypatch.setenv(env, "seq")
        assert version() == "seq"
    else:
        monkeypatch.setenv(env, "LANES")
        assert version() == "lanes"
        monkeypatch.setenv(env, "seq")
        assert version() == "seq"
    monkeypatch.setenv(env, "v2")
    with pytest.raises(UserError, match="is not one of auto, seq, lanes, chunked" if env.endswith("FWD")
                       else "is not one of grouped, seq, chunked"):
        version()


@pytest.mark.parametrize("seq", [False, True])
def test_grouped_backward_with_one_chunk_per_group(monkeypatch, seq):
    """Version 3.1 with many persistent programs wanted: every chunk is its own group, so the
    gradient entering each group comes from `group_grads` (the reverse local pass + carry)
    across several groups, including the decay of each group's right-hand neighbour's first
    step and documents starting exactly at a chunk start."""
    from bytelm.kernels.selective_scan import triton_bwd_grouped as grouped

    monkeypatch.setenv("BYTELM_SCAN_BWD", "grouped")
    for c in (grouped.GROUPED_CFG, grouped.GROUPED_CFG_INTERP):
        monkeypatch.setitem(c, "programs_per_sm", 4096)
    calls = []
    real = grouped.group_grads
    monkeypatch.setattr(grouped, "group_grads", lambda *a, **k: calls.append(a[10]) or real(*a, **k))
    L = LENGTHS[-1]
    inputs = make_inputs(2, DIM, NSTATE, L, 1, torch.float32)
    seq_idx = None
    if seq:  # documents starting exactly at a chunk start (2 T) and mid-chunk (T + 5)
        T = triton_fwd.SEQ_CK_T["gpu" if CUDA else "interp"]
        t = torch.arange(L, device=DEVICE)
        seq_idx = torch.stack([(t >= 2 * T).int() + (t >= 2 * T + 9).int(), (t >= T + 5).int()])
    check_scan(inputs, torch.float32, seq_idx=seq_idx)
    assert calls and calls[0] >= 3, calls  # groups
