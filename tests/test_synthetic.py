"""Synthetic selectivity tasks (eval/synthetic.py, eval/synthetic_tasks.py).

Generators: shapes, vocabulary ranges, where the answers are, and that a brute-force solver
reading only x recovers every answer. Then the training/eval machinery (answer-only logits, the
schedule, batch-independent test sets, out-of-memory handling, lengths), a CPU smoke run of each
task through the real command, and learning well above chance on easy settings.
"""

import argparse
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from bytelm.errors import UserError
from bytelm.eval import synthetic as S
from bytelm.eval import synthetic_tasks as T
from bytelm.models import ARCHS


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ brute-force solvers (x only)
def solve_selective_copy(x, length, num_tokens):
    """The non-noise tokens of the context, in order, are the answers at the markers."""
    ctx = x[:length]
    return ctx[ctx != 0].tolist()


def solve_induction(x, trigger):
    """The token after the first trigger."""
    first = (x[:-1] == trigger).nonzero()[0, 0]
    return int(x[first + 1])


def solve_mqar(x, n, qpos):
    """Look each query key up in the key-value prefix."""
    table = {int(x[2 * i]): int(x[2 * i + 1]) for i in range(n)}
    return [table[int(x[p])] for p in qpos]


# ------------------------------------------------------------------ generators
def assert_index_matches(y, idx):
    """idx lists exactly the answer positions of each row, increasing."""
    for row in range(y.shape[0]):
        assert idx[row].tolist() == (y[row] >= 0).nonzero()[:, 0].tolist()


def test_selective_copy_layout_vocab_and_solver():
    L, K, V = 200, 16, 16
    x, y, idx = T.selective_copy(64, L, num_tokens=K, vocab=V, gen=gen())
    assert x.shape == y.shape == (64, L + K) and x.dtype == torch.long
    assert_index_matches(y, idx)
    assert int(x.min()) >= 0 and int(x.max()) == V            # marker id = V
    ctx = x[:, :L]
    assert ((ctx != 0).sum(1) == K).all()                      # exactly K data tokens, distinct positions
    assert ctx[ctx != 0].min() >= 1 and ctx.max() <= V - 1     # data symbols 1..V-1, never a marker
    assert (x[:, L:] == V).all()
    assert (y[:, :L] == T.IGNORE).all() and (y[:, L:] >= 1).all() and (y[:, L:] <= V - 1).all()
    for row in range(64):
        assert solve_selective_copy(x[row], L, K) == y[row, L:].tolist()
    # positions are spread over the whole context, and every data symbol occurs
    pos = (ctx != 0).nonzero()[:, 1]
    assert pos.min() < L // 8 and pos.max() > L - L // 8
    assert set(ctx[ctx != 0].tolist()) == set(range(1, V))


def test_induction_heads_layout_vocab_and_solver():
    L, V = 64, 16
    x, y, idx = T.induction_heads(512, L, vocab=V, gen=gen(1))
    trigger = V - 1
    assert x.shape == y.shape == (512, L)
    assert_index_matches(y, idx)
    assert int(x.min()) >= 0 and int(x.max()) == trigger
    assert ((x == trigger).sum(1) == 2).all()                  # the cue and its repeat, nowhere else
    assert (x[:, -1] == trigger).all()
    assert (y[:, :-1] == T.IGNORE).all() and (y[:, -1] < trigger).all() and (y[:, -1] >= 0).all()
    first = (x[:, :-1] == trigger).float().argmax(1)
    assert first.max() <= L - 3                                # the target sits before the last trigger
    assert first.min() < L // 8 and first.max() > L - L // 8   # anywhere in the row
    for row in range(512):
        assert solve_induction(x[row], trigger) == int(y[row, -1])
    assert len(set(y[:, -1].tolist())) == V - 1


@pytest.mark.parametrize("L,n", [(256, None), (64, 4)])
def test_mqar_layout_vocab_and_solver(L, n):
    V = 8192
    x, y, idx = T.mqar(64, L, num_kv_pairs=n, vocab=V, gen=gen(2))
    n = L // 4 if n is None else n
    assert x.shape == y.shape == (64, L)
    assert_index_matches(y, idx)
    assert int(x.min()) >= 0 and int(x.max()) < V
    keys, values = x[:, 0:2 * n:2], x[:, 1:2 * n:2]
    assert keys.min() >= 1 and keys.max() < V // 2 and values.min() >= V // 2
    for row in range(64):
        assert len(set(keys[row].tolist())) == n and len(set(values[row].tolist())) == n
        qpos = (y[row] >= 0).nonzero()[:, 0]
        assert len(qpos) == n and qpos.min() >= 2 * n and ((qpos - 2 * n) % 2 == 0).all()
        assert sorted(x[row, qpos].tolist()) == sorted(keys[row].tolist())   # each key asked once
        assert solve_mqar(x[row], n, qpos.tolist()) == y[row, qpos].tolist()
    if n < L // 4:  # free slots: random fillers, and Zoology's power law prefers near slots
        fill = torch.ones_like(x, dtype=torch.bool)
        fill[:, :2 * n] = False
        fill[y >= 0] = False
        assert len(set(x[fill].tolist())) > 100
        slots = ((y >= 0).nonzero()[:, 1] - 2 * n) // 2
        assert slots.float().mean() < 0.4 * ((L - 2 * n) // 2)


def test_generators_are_seeded_and_fresh():
    for task, L in [("selective-copy", 64), ("induction-heads", 64), ("mqar", 64)]:
        a = T.make_batch(task, 4, L, gen(5))
        b = T.make_batch(task, 4, L, gen(5))
        assert all(torch.equal(p, q) for p, q in zip(a, b))
        g = gen(5)
        first, second = T.make_batch(task, 4, L, g), T.make_batch(task, 4, L, g)
        assert not torch.equal(first[0], second[0])


def test_generators_reject_impossible_settings():
    with pytest.raises(ValueError):
        T.mqar(2, 30, num_kv_pairs=8)                          # 4n > L
    with pytest.raises(ValueError):
        T.mqar(2, 33)                                          # odd length
    with pytest.raises(ValueError):
        T.selective_copy(2, 8, num_tokens=9)
    with pytest.raises(ValueError):
        T.induction_heads(2, 2)


# ------------------------------------------------------------------ machinery
@pytest.mark.parametrize("arch", ARCHS)
def test_answer_logits_equal_full_logits_at_the_answers(arch):
    torch.manual_seed(0)
    model = S.build_model(arch, 24, d_model=32, layers=2, d_state=8, headdim=16, chunk_size=8).eval()
    x, y, _ = T.mqar(3, 32, vocab=24, gen=gen())               # answers at different places per row
    where = y >= 0
    idx = where.nonzero()[:, 1].view(3, -1)
    with torch.no_grad():
        full = model(x)[where].view(3, -1, 24)
        part = S.answer_logits(model, x, idx)
        again = model(x)[where].view(3, -1, 24)                # the hook is gone afterwards
    assert part.shape == (3, 8, 24)
    torch.testing.assert_close(part, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(again, full)


def test_schedule_warmup_cosine_and_time_budget():
    o = argparse.Namespace(lr=1.0, warmup=10, steps=110, time_budget=None, schedule="cosine")
    assert S.lr_at(0, 0, o) == pytest.approx(0.1) and S.lr_at(9, 0, o) == pytest.approx(1.0)
    assert S.lr_at(60, 0, o) == pytest.approx(0.55)
    assert S.lr_at(110, 0, o) == pytest.approx(0.1)
    o.time_budget = 100.0                                      # half the time gone: mid-cosine already
    assert S.lr_at(10, 50.0, o) == pytest.approx(0.55)
    o.schedule = "constant"                                    # warmup, then the peak rate to the end
    assert S.lr_at(5, 0, o) == pytest.approx(0.6) and S.lr_at(109, 99.0, o) == pytest.approx(1.0)


def test_parse_lengths():
    assert S.parse_lengths("2^6..2^9") == [64, 128, 256, 512]
    assert S.parse_lengths("64, 2^8,100,64") == [64, 100, 256]
    for bad in ("abc", "2^9..2^6", "100..200", "0"):
        with pytest.raises(UserError):
            S.parse_lengths(bad)


def options(argv):
    parser = argparse.ArgumentParser()
    S.add_arguments(parser)
    return S.resolve_options(parser.parse_args(argv))


def test_test_set_does_not_depend_on_the_batch_size():
    torch.manual_seed(0)
    o = options(["induction-heads", "--device", "cpu", "--seq-len", "32"])
    model = S.build_model("mamba2", 16, d_model=32, d_state=8, headdim=16, chunk_size=8).eval()
    accs = {b: S.accuracy_at(model, o, 32, 24, b, torch.device("cpu")) for b in (1, 5, 24)}
    assert len(set(accs.values())) == 1, accs


def test_out_of_memory_is_recorded_per_length(monkeypatch):
    o = options(["induction-heads", "--device", "cpu", "--seq-len", "32", "--eval-lengths", "16,32,64,128"])
    batches = []

    def fake(model, o, length, examples, batch, device, precision="bf16"):
        batches.append((length, batch))
        if length >= 64:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return 0.5

    monkeypatch.setattr(S, "accuracy_at", fake)
    acc, details = S.evaluate_lengths(torch.nn.Linear(1, 1), o, torch.device("cpu"))
    assert acc == {"16": 0.5, "32": 0.5, "64": None, "128": None}
    assert details["64"]["status"] == details["128"]["status"] == "oom"
    assert [b for length, b in batches if length == 64][-1] == 1    # halved down to one row first
    assert all(length != 128 for length, _ in batches)              # longer lengths not tried


def test_bad_input_is_a_user_error():
    with pytest.raises(UserError, match="num_kv_pairs"):
        options(["mqar", "--device", "cpu", "--seq-len", "30", "--num-kv-pairs", "8"])
    with pytest.raises(UserError, match="--steps"):
        options(["mqar", "--device", "cpu", "--steps", "0"])
    with pytest.raises(UserError, match="n_head"):
        S.build_model("transformer", 16, d_model=64, n_head=3)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--cuda-graph needs a CUDA device"):
            options(["induction-heads", "--device", "cpu", "--cuda-graph"])


def test_table_and_summary_plot(tmp_path):
    def fake(task, model, d_state, length, acc, by=None):
        return dict(task=task, model=model, d_state=d_state, d_model=64, train_length=length,
                    steps=10, params=1000, accuracy=acc, chance=0.1,
                    accuracy_by_length=by or {str(length): acc})
    rows = [fake("selective-copy", "mamba", 16, 4096, 0.99),
            fake("induction-heads", "mamba", 16, 256, 1.0, {"64": 1.0, "256": 1.0, "1024": 1.0}),
            fake("induction-heads", "transformer", None, 256, 1.0, {"64": 0.9, "256": 1.0, "1024": None}),
            fake("mqar", "mamba2", 16, 256, 0.5), fake("mqar", "mamba2", 16, 512, 0.3),
            fake("mqar", "mamba2", 64, 256, 0.9)]
    table = S.results_table(rows)
    assert "| mamba N=16 | 10 | 1,000 | **99.0** | 99.8% (Mamba, Table 1) |" in table
    assert "| transformer | 10 | 1,000 | 90.0 | **100.0** | oom |" in table
    assert "| mamba2 N=16 | 64 | 50.0 (10 steps) | 30.0 (10 steps) |" in table
    assert "| mamba2 N=64 | 64 | 90.0 (10 steps) |  |" in table
    S.plot_summary(rows, tmp_path / "summary.png")
    assert (tmp_path / "summary.png").stat().st_size > 10_000


# ------------------------------------------------------------------ end to end (CPU)
SMOKE = {
    "selective-copy": ["--seq-len", "48", "--num-tokens", "4", "--eval-lengths", "24,96"],
    "induction-heads": ["--seq-len", "32", "--eval-lengths", "2^4..2^7"],
    "mqar": ["--seq-len", "32", "--eval-lengths", "64"],
}


@pytest.mark.parametrize("task", list(SMOKE))
def test_cpu_smoke_run_through_the_command(task, tmp_path):
    out = tmp_path / task
    args = [sys.executable, "-m", "bytelm.eval.synthetic", task, "--model", "mamba2", "--steps", "6",
            "--batch-size", "4", "--eval-examples", "8", "--device", "cpu", "--out", str(out),
            "--json", *SMOKE[task]]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["task"] == task and result["model"] == "mamba2" and result["steps"] == 6
    assert 0.0 <= result["accuracy"] <= 1.0
    expected = sorted({int(a) for a in SMOKE[task][-1].replace("2^4..2^7", "16,32,64,128").split(",")}
                      | {int(SMOKE[task][1])})
    assert sorted(int(k) for k in result["accuracy_by_length"]) == expected
    assert all(0.0 <= v <= 1.0 for v in result["accuracy_by_length"].values())
    saved = json.loads((out / "results.json").read_text())
    assert saved["accuracy_by_length"] == result["accuracy_by_length"]
    assert (out / "accuracy.png").stat().st_size > 5_000


def test_command_reports_bad_input_in_one_line():
    r = subprocess.run([sys.executable, "-m", "bytelm.eval.synthetic", "mqar", "--seq-len", "30",
                        "--num-kv-pairs", "8", "--device", "cpu"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "num_kv_pairs" in r.stderr


@pytest.mark.parametrize("argv,at_least", [
    # a transformer forms an induction head at length 16 in ~150 steps (98% in trial runs)
    (["induction-heads", "--model", "transformer", "--seq-len", "16", "--steps", "150",
      "--eval-lengths", "16"], 0.6),
    # Mamba-1 selectively copies 2 tokens out of 16 positions (89% in trial runs at 150 steps)
    (["selective-copy", "--model", "mamba", "--seq-len", "16", "--num-tokens", "2", "--steps", "100",
      "--eval-lengths", "16"], 0.3),
])
def test_learns_an_easy_setting_well_above_chance(argv, at_least):
    torch.manual_seed(0)
    o = options([*argv, "--batch-size", "32", "--lr", "3e-3", "--device", "cpu", "--eval-examples", "256"])
    result = S.run(o)
    assert result["accuracy"] >= at_least > 4 * result["chance"], result["accuracy"]


def test_time_budget_stops_training_and_logs_the_last_steps():
    o = options(["induction-heads", "--model", "transformer", "--seq-len", "16", "--steps", "1000000",
                 "--batch-size", "2", "--time-budget", "1.5", "--device", "cpu", "--eval-examples", "4",
                 "--eval-lengths", "16"])
    result = S.run(o)
    assert result["stopped"] == "time" and 0 < result["steps"] < 1_000_000
    assert result["history"][-1]["step"] == result["steps"]
    assert result["seconds_train"] < 30


def test_curriculum_doubles_the_length_and_stops_only_at_full_length(monkeypatch):
    seen = []
    make_batch = T.make_batch

    def recording(task, batch, length, gen, **kw):
        seen.append(length)
        return make_batch(task, batch, length, gen, **kw)
    monkeypatch.setattr(T, "make_batch", recording)
    # --curriculum-at 0: the length doubles at every log window (16 -> 32 -> 64); the accuracy
    # stop (any accuracy >= 0 would do) must wait until the full length has been trained on
    o = options(["selective-copy", "--model", "transformer", "--seq-len", "64", "--num-tokens", "2",
                 "--curriculum", "16", "--curriculum-at", "0", "--steps", "20", "--log-every", "2",
                 "--stop-at-accuracy", "1e-9", "--batch-size", "4", "--device", "cpu",
                 "--eval-examples", "4"])
    seen.clear()                                                   # (options() checks both lengths)
    o.stop_at_accuracy = 0.0  # not reachable through the CLI; stops at the first full-length window
    result = S.run(o)
    train_lengths = seen[:result["steps"]]
    assert train_lengths == [16, 16, 32, 32, 64, 64], train_lengths
    assert result["stopped"] == "accuracy" and result["steps"] == 6
    assert [h["length"] for h in result["history"]] == [16, 32, 64]
    assert result["curriculum"] == dict(start=16, advance_at=0.0, final_length=64, full_length_from_step=4)
    assert all(n == 64 for n in seen[result["steps"]:])            # the test set is at --seq-len
    assert "curriculum 16 to 64, full length from step 4" in S.results_table([result])


@pytest.mark.parametrize("argv,message", [
    (["--curriculum", "64"], "--curriculum must be between 1 and --seq-len 64"),
    (["--curriculum", "1"], "selective-copy at --curriculum 1"),   # fewer positions than data tokens
    (["--curriculum", "16", "--curriculum-at", "1.5"], "--curriculum-at must be in [0, 1]"),
])
def test_curriculum_bad_input(argv, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        options(["selective-copy", "--seq-len", "64", "--num-tokens", "2", "--device", "cpu", *argv])


@pytest.mark.parametrize("arch", ["mamba", "mamba2", "hybrid"])
def test_memory_horizon_is_one_over_A_times_mean_delta(arch):
    """One entry per Mamba layer (attention left out); at initialisation (|A| >= 1, Δ from
    [0.001, 0.1]) no state remembers past ~1/0.001 tokens; halving every |A| doubles every
    horizon of the first Mamba layer (horizon = 1 / (|A| mean Δ), and its Δ does not depend on A)."""
    torch.manual_seed(0)
    model = S.build_model(arch, 32, d_model=32, layers=2, d_state=8)
    x = torch.randint(0, 32, (2, 40))
    got = S.memory_horizons(model, x)
    mixers = [(i, b) for i, b in enumerate(model.backbone.layers) if b.layer_type != "attn"]
    assert [h["layer"] for h in got] == [i for i, _ in mixers] and got
    for h in got:
        assert 1.0 < h["median"] <= h["p99"] <= h["max"] < 2000
    with torch.no_grad():
        for _, b in mixers:
            b.mixer.A_log -= math.log(2.0)
    again = S.memory_horizons(model, x)
    # the first Mamba layer's Δ depends on the embeddings only (later layers see A's effect)
    assert again[0]["max"] == pytest.approx(2 * got[0]["max"], rel=1e-5)
    assert again[0]["median"] == pytest.approx(2 * got[0]["median"], rel=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("arch", ["mamba", "mamba2", "transformer"])
def test_cuda_graph_step_matches_the_eager_loop(arch):
    """--cuda-graph trains like the eager loop: same seed, same batches, 40 steps (3 eager warmup
    steps, then replays, with the learning rate changing every step) give the same loss curve up
    to bf16 noise, and the graph path really captured its one batch shape."""
    losses = {}
    for graph in (False, True):
        o = options(["induction-heads", "--model", arch, "--device", "cuda", "--seq-len", "64",
                     "--steps", "40", "--batch-size", "16", "--log-every", "10", "--warmup", "5",
                     "--eval-lengths", "64", "--eval-examples", "16"] + (["--cuda-graph"] if graph else []))
        torch.manual_seed(o.seed)
        model = S.build_model(arch, T.model_vocab(o.task, o.vocab)).cuda()
        record = S.train(model, o, torch.device("cuda"))
        losses[graph] = [h["loss"] for h in record["history"]]
        assert record["steps"] == 40 and record["cuda_graphs"] == (1 if graph else None)
    for a, b in zip(losses[False], losses[True]):
        assert abs(a - b) <= 2e-2 * max(1.0, abs(a)), (losses[False], losses[True])


def test_precision_options_resolve_and_reject_bad_input():
    o = options(["induction-heads", "--device", "cpu", "--eval-precision", "bf16,fp32"])
    assert o.precision == "fp32" and o.eval_precision == ["fp32"]   # the CPU runs fp32 only
    for bad in ("fp16", "bf16,bf16", ","):
        with pytest.raises(UserError, match="--eval-precision"):
            options(["induction-heads", "--device", "cpu", "--eval-precision", bad])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_eval_precisions_are_recorded_separately_on_cuda():
    o = options(["induction-heads", "--device", "cuda", "--seq-len", "32", "--steps", "3",
                 "--batch-size", "4", "--eval-lengths", "64", "--eval-examples", "8",
                 "--precision", "fp32", "--eval-precision", "fp32,bf16"])
    r = S.run(o)
    assert r["precision"] == "fp32" and r["eval_precision"] == "fp32"
    assert set(r["accuracy_by_precision"]) == {"fp32", "bf16"}
    assert r["accuracy_by_precision"]["fp32"] == r["accuracy_by_length"]


def test_validation_tracks_training_and_keep_best_restores_those_weights(monkeypatch):
    o = options(["induction-heads", "--device", "cpu", "--seq-len", "16", "--steps", "6",
                 "--batch-size", "2", "--eval-lengths", "32", "--val-every", "2", "--keep-best"])
    assert o.val_lengths == [32]
    model = S.build_model("mamba", 16, d_model=16, layers=1)
    seen = []

    def fake(model_, o_, length, examples, batch, device, precision="bf16", seed=None):
        assert length == 32 and seed == S.val_seed(o.seed, 32) != S.eval_seed(o.seed, 32)
        seen.append({k: v.clone() for k, v in model_.state_dict().items()})
        return [0.5, 0.9, 0.2][len(seen) - 1]

    monkeypatch.setattr(S, "accuracy_at", fake)
    record = S.train(model, o, torch.device("cpu"))
    assert [v["step"] for v in record["validation"]] == [2, 4, 6]
    assert record["kept"] == dict(step=4, validation_accuracy=0.9)
    assert record["validation"][1]["by_length"] == {"32": 0.9}
    best = seen[1]
    assert not all(torch.equal(best[k], seen[2][k]) for k in best)   # training moved the weights
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())


def test_validation_score_is_the_lowest_over_its_lengths(monkeypatch):
    o = options(["induction-heads", "--device", "cpu", "--seq-len", "16", "--steps", "4",
                 "--batch-size", "2", "--eval-lengths", "32", "--val-every", "2",
                 "--val-length", "32,2^6", "--keep-best"])
    assert o.val_lengths == [32, 64]
    scores = {(1, 32): 0.9, (1, 64): 0.6, (2, 32): 0.8, (2, 64): 0.7}
    calls = []

    def fake(model_, o_, length, examples, batch, device, precision="bf16", seed=None):
        assert seed == S.val_seed(o.seed, length)
        calls.append(length)
        return scores[(len(calls) + 1) // 2, length]

    monkeypatch.setattr(S, "accuracy_at", fake)
    record = S.train(S.build_model("mamba", 16, d_model=16, layers=1), o, torch.device("cpu"))
    assert [v["accuracy"] for v in record["validation"]] == [0.6, 0.7]
    assert record["kept"] == dict(step=4, validation_accuracy=0.7)


def test_validation_options_are_checked():
    for args, msg in [(["--keep-best"], "need --val-every"), (["--val-length", "64"], "need --val-every"),
                      (["--val-every", "0"], "must be positive"),
                      (["--val-every", "5", "--val-length", "2"], "--val-length 2"),
                      (["--val-every", "5", "--val-length", "64,x"], "--val-length: cannot read")]:
        with pytest.raises(UserError, match=msg):
            options(["induction-heads", "--device", "cpu", *args])
