"""`bytelm robustness` (bytelm.eval.robustness): the perturbations (rates, determinism, valid
UTF-8, revcomp), the context/continuation scoring, the report and bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bytelm.eval import robustness as rb

SHAKESPEARE = (Path(__file__).parents[1] / "bytelm" / "data" / "assets" / "tinyshakespeare.txt")
UNICODE = ("Héllo wörld — naïve café, ÆSIR ß straße 日本語のテキスト 🙂👍🏽 Ωμέγα ǅ İ ﬁ. "
           .encode())


def rng(seed=0):
    return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def long_text():
    return SHAKESPEARE.read_bytes()[:60_000]


@pytest.fixture(scope="module")
def long_dna():
    r = rng(1)
    return bytes(np.frombuffer(b"ACGT", np.uint8)[r.integers(0, 4, 100_000)])


@pytest.mark.parametrize("name", list(rb.PERTURBATIONS))
def test_rate_zero_is_identity(name, long_text, long_dna):
    data = long_dna if name in rb.DNA else long_text
    assert rb.perturb(name, data[:5000], 0.0, seed=3) == data[:5000]


@pytest.mark.parametrize("name", list(rb.PERTURBATIONS))
def test_deterministic_by_seed(name, long_text, long_dna):
    data = (long_dna if name in rb.DNA else long_text)[:4000]
    a = rb.perturb(name, data, 0.1, seed=1, index=5)
    assert a == rb.perturb(name, data, 0.1, seed=1, index=5)
    assert a != data
    if name != "revcomp":  # revcomp at a fixed rate is deterministic by design
        assert a != rb.perturb(name, data, 0.1, seed=2, index=5)
        assert a != rb.perturb(name, data, 0.1, seed=1, index=6)


@pytest.mark.parametrize("p", [0.05, 0.2])
def test_realized_text_rates(long_text, p):
    s = long_text.decode()
    n = len(s)
    words = len(s.split())
    cased = sum(rb._cased(c) for c in s)
    out = {name: rb.perturb(name, long_text, p, seed=7).decode() for name in rb.TEXT}
    tol = 0.1  # relative; ~6e4 characters give a few % of noise at most
    assert 1 - len(out["drop"]) / n == pytest.approx(p, rel=tol)
    assert len(out["insert"]) / n - 1 == pytest.approx(p, rel=tol)
    assert len(out["substitute"]) == n
    assert sum(a != b for a, b in zip(out["substitute"], s)) / n == pytest.approx(p, rel=tol)
    assert len(out["repeat"]) / n - 1 == pytest.approx(2 * p, rel=tol)  # 1-3 extra, mean 2
    changed = sum(a != b for a, b in zip(out["randomcase"], s))
    assert changed / cased == pytest.approx(p, rel=tol)
    upper_words = sum(a != b for a, b in zip(out["uppercase"].split(), s.split()))
    lower_words = sum(w != w.upper() for w in s.split())
    assert upper_words / lower_words == pytest.approx(p, rel=tol)
    # swap: count events directly (equal neighbours make some swaps invisible)
    for name in ("swap", "whitespace", "antspeak"):
        _, events = rb.perturb_counted(name, long_text, p, rng(7))
        base = words if name == "antspeak" else n
        assert events / base == pytest.approx(p, rel=tol), name
    assert sorted(out["swap"]) == sorted(s)  # swaps only move characters


@pytest.mark.parametrize("p", [0.05, 0.2])
def test_realized_dna_rates(long_dna, p):
    n = len(long_dna)
    mutated = rb.perturb("mutate", long_dna, p, seed=4)
    assert len(mutated) == n and set(mutated) <= set(b"ACGT")
    assert sum(a != b for a, b in zip(mutated, long_dna)) / n == pytest.approx(p, rel=0.05)
    masked = rb.perturb("mask", long_dna, p, seed=4)
    assert masked.count(b"N") / n == pytest.approx(p, rel=0.1)
    assert b"NN" in masked  # runs, not single bases
    _, events = rb.perturb_counted("indel", long_dna, p, rng(4))
    assert events / n == pytest.approx(p, rel=0.05)
    rc = rb.perturb("revcomp", long_dna, p, seed=4)
    k = round(p * n)
    assert rc[:n - k] == long_dna[:n - k] and rc[n - k:] == rb.revcomp(long_dna[n - k:])


@pytest.mark.parametrize("p", [0.3, 1.0])
def test_revcomp_twice_is_identity(long_dna, p):
    seq = long_dna[:999] + b"NNacgtRYKMn"
    once = rb.perturb("revcomp", seq, p)
    assert once != seq
    assert rb.perturb("revcomp", once, p) == seq
    assert rb.revcomp(b"AACGTN") == b"NACGTT"


@pytest.mark.parametrize("name", list(rb.TEXT))
@pytest.mark.parametrize("p", [0.1, 0.5])
def test_text_perturbations_keep_valid_utf8(name, p):
    data = UNICODE * 30
    chars = set(data.decode())
    allowed = chars | {" "} | {x for c in chars for x in c.upper() + c.swapcase()}
    for seed in range(5):
        out = rb.perturb(name, data, p, seed=seed).decode("utf-8")  # strict: raises if split
        assert out != data.decode()
        assert set(out) <= allowed, (name, set(out) - allowed)


def test_windows_cut_at_character_boundaries():
    val = UNICODE * 100
    for ctx, cont in rb.make_windows(val, 20, 37, 11):
        ctx.decode("utf-8"), cont.decode("utf-8")
        assert 37 <= len(ctx) < 37 + 4 and 11 <= len(cont) < 11 + 8


# ---------------------------------------------------------------------------------------
# End to end: two tiny checkpoints (byte and BPE), the real command in a subprocess
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from bytelm.train.config import TrainConfig
    from bytelm.train.trainer import train

    root = tmp_path_factory.mktemp("robust")
    data = root / "small.txt"
    data.write_bytes(SHAKESPEARE.read_bytes()[:60_000])
    cache = root / "cache"
    ckpts = []
    for tok in ("byte", "bpe"):
        out = root / f"transformer-{tok}"
        train(TrainConfig(data=str(data), model="transformer", tokenizer=tok, bpe_vocab=512,
                          seq_len=96, batch_size=2, steps=4, eval_every=4, device="cpu",
                          out=str(out), cache_dir=str(cache),
                          model_overrides={"d_model": 48, "n_layer": 1, "n_head": 2}),
              quiet=True)
        ckpts.append(str(out))
    env = {**os.environ, "BYTELM_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    return {"root": root, "data": str(data), "ckpts": ckpts, "env": env}


def run(setup, *args):
    return subprocess.run([sys.executable, "-m", "bytelm.eval.robustness", *args],
                          capture_output=True, text=True, env=setup["env"], timeout=300)


def test_end_to_end_report(setup):
    out = setup["root"] / "report"
    r = run(setup, *setup["ckpts"], "--data", setup["data"], "--perturb", "drop,antspeak",
            "--rates", "0,0.2", "--windows", "12", "--context", "64", "--continuation", "24",
            "--device", "cpu", "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())["results"]
    assert results == json.loads(r.stdout.strip().splitlines()[-1])["results"]
    assert len(results) == 2 * 2 * 2
    keys = {"checkpoint", "perturbation", "rate", "clean_bits_per_byte",
            "corrupt_bits_per_byte", "delta_bits_per_byte", "corrupted_text_bits_per_byte"}
    for res in results:
        assert keys <= set(res)
        if res["rate"] == 0:  # exactly the clean numbers
            assert res["corrupt_bits_per_byte"] == res["clean_bits_per_byte"]
            assert res["delta_bits_per_byte"] == 0.0
            assert res["corrupted_text_bits_per_byte"] == res["clean_context_bits_per_byte"]
        else:
            assert res["windows_changed"] >= res["windows"] // 2
            assert res["corrupt_bits_per_byte"] != res["clean_bits_per_byte"]
        assert 0 < res["clean_bits_per_byte"] < 12
        assert res["clean_context_coverage"] == 1.0
    # both checkpoints are scored on the same continuation bytes, whatever their codec
    assert len({res["continuation_bytes"] for res in results}) == 1
    assert {res["tokenizer"] for res in results} == {"byte", "bpe"}
    md = (out / "report.md").read_text()
    assert "## drop" in md and "## antspeak" in md and "| transformer-bpe |" in md
    for name in ("drop", "antspeak"):
        assert (out / f"degradation_{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_bpe_continuation_tokens_cover_exactly_the_continuation(setup):
    from bytelm.infer.load import load_model

    model, codec, _ = load_model(setup["ckpts"][1], "cpu")
    assert codec.name == "bpe"
    val = Path(setup["data"]).read_bytes()[54_000:57_000]
    pairs = rb.make_windows(val, 6, 50, 30)
    # a context cut mid-word: joint tokenization would merge across the cut, separate does not
    scores = rb.score(model, codec, pairs, 96, "cpu", batch_size=4)
    assert list(scores[:, 3]) == [len(cont) for _, cont in pairs]
    assert list(scores[:, 1]) == [len(ctx) for ctx, _ in pairs]
    # a window too small for the whole context keeps its most recent tokens, never the
    # continuation's
    cut = rb.score(model, codec, pairs, 20, "cpu", batch_size=4)
    assert list(cut[:, 3]) == [len(cont) for _, cont in pairs]
    assert all(0 < c < len(ctx) for c, (ctx, _) in zip(cut[:, 1], pairs))
    assert (cut[:, 2] != scores[:, 2]).any()
    # batch composition does not change a window's score beyond float noise
    single = rb.score(model, codec, pairs[:1], 96, "cpu", batch_size=1)
    assert single[0] == pytest.approx(scores[0], rel=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--rates", "0,2"], "--rates"),
    (["--perturb", "shout"], "--perturb"),
    (["--windows", "0"], "--windows"),
    (["--context", "100000"], "val split"),
])
def test_bad_input_is_one_line(setup, tmp_path, args, message):
    r = run(setup, setup["ckpts"][0], "--data", setup["data"], "--device", "cpu",
            "--out", str(tmp_path / "o"), *args)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert message in r.stderr.strip().splitlines()[-1]


def test_missing_checkpoint_is_one_line(setup, tmp_path):
    r = run(setup, str(tmp_path / "nope"), "--data", setup["data"], "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "not a checkpoint directory" in r.stderr.strip().splitlines()[-1]


def test_summary_names_the_least_degraded_checkpoint_at_the_top_rate():
    def row(name, pert, rate, delta):
        return {"name": name, "perturbation": pert, "rate": rate, "delta_bits_per_byte": delta}
    results = [row("a", "drop", 0.0, 0.0), row("b", "drop", 0.0, 0.0),
               row("a", "drop", 0.1, 0.05), row("b", "drop", 0.1, 0.01),   # b wins at 0.1 ...
               row("a", "drop", 0.2, 0.02), row("b", "drop", 0.2, 0.30),   # ... a at the top rate
               row("a", "swap", 0.2, 0.04), row("b", "swap", 0.2, 0.03)]
    text = "\n".join(rb.summary_lines(results))
    assert "at rate 0.2" in text
    assert "- **drop**: a degraded least (+0.0200; worst b +0.3000)." in text
    assert "- **swap**: b degraded least (+0.0300; worst a +0.0400)." in text
    assert "| drop | +0.0200 | +0.3000 |" in text
    assert rb.summary_lines([row("a", "drop", 0.0, 0.0)]) == []
