"""Trainer, checkpoints, resume, eval, generate and bad input, through the real CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bytelm.errors import UserError
from bytelm.train.config import TrainConfig

FAST = ["--seq-len", "32", "--batch-size", "2", "--eval-every", "4", "--device", "cpu"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def small_text(tmp_path_factory):
    """The first 60 KB of the embedded Tiny Shakespeare (val split: 3,000 bytes), for tests
    about the trainer's mechanics, where evaluating the full 56 KB val split is only cost."""
    text = Path(__file__).parents[1] / "bytelm" / "data" / "assets" / "tinyshakespeare.txt"
    path = tmp_path_factory.mktemp("small") / "small.txt"
    path.write_bytes(text.read_bytes()[:60_000])
    return str(path)


def run_cli(*args, cache=None, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    if cache:
        env["BYTELM_CACHE"] = cache
    return subprocess.run([sys.executable, "-m", "bytelm.cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def losses(out):
    rows = [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r and "event" not in r}


def assert_clean_failure(result, pattern):
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    assert pattern in lines[-1], lines[-1]


@pytest.fixture(scope="module")
def dna_run(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("run") / "dna"
    # one evaluation (at the end): each one scores the whole 232 KB val split on the CPU
    r = run_cli("train", "--data", "dna", "--steps", "8", "--out", str(out), "--json", *FAST,
                "--eval-every", "8", cache=cache)
    assert r.returncode == 0, r.stderr
    return out, last_json(r.stdout)


def test_train_writes_checkpoint_metrics_and_json(dna_run):
    out, result = dna_run
    assert result["steps"] == 8 and result["params"] > 500_000
    assert 0 < result["val_bits_per_byte"] < 8 and result["tokens_per_s"] > 0
    assert set(result) >= {"out", "steps", "params", "val_bits_per_byte", "tokens_per_s", "wall_s"}
    pointer = json.loads((out / "checkpoint.json").read_text())
    assert pointer["step"] == 8
    assert (out / pointer["model"]).exists() and (out / pointer["state"]).exists()
    assert not [p for p in out.iterdir() if ".tmp" in p.name]
    ls = losses(out)
    assert sorted(ls) == list(range(1, 9))
    # the training state loads with weights_only=True
    state = torch.load(out / pointer["state"], weights_only=True)
    assert state["step"] == 8


def test_eval_matches_training_final_val(dna_run, cache):
    out, result = dna_run
    r = run_cli("eval", str(out), "--data", "dna", "--json", "--device", "cpu", cache=cache)
    assert r.returncode == 0, r.stderr
    ev = last_json(r.stdout)
    assert ev["bytes"] == 231_984 and ev["tokens"] == 231_984
    assert ev["bits_per_byte"] == pytest.approx(result["val_bits_per_byte"], rel=1e-5)


def test_generate_dna_prints_only_bases(dna_run):
    out, _ = dna_run
    r = run_cli("generate", str(out), "--prompt", "ACGTTGCA", "--max-new-bytes", "200",
                "--seed", "3", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    text = r.stdout.strip()
    assert text.startswith("ACGTTGCA") and len(text) == 208
    assert set(text[8:]) <= set("ACGTN")
    again = run_cli("generate", str(out), "--prompt", "ACGTTGCA", "--max-new-bytes", "200",
                    "--seed", "3", "--device", "cpu")
    assert again.stdout == r.stdout                                   # seeded


def test_resume_after_sigint_is_bitwise_identical(tmp_path, cache, small_text):
    args = ["train", "--data", small_text, "--steps", "24", "--seq-len", "64", "--batch-size", "4",
            "--eval-every", "8", "--save-every", "1000", "--device", "cpu", "--seed", "7"]
    full = tmp_path / "full"
    r = run_cli(*args, "--out", str(full), cache=cache)
    assert r.returncode == 0, r.stderr

    part = tmp_path / "part"
    env = {**os.environ, "BYTELM_CACHE": cache}
    proc = subprocess.Popen([sys.executable, "-m", "bytelm.cli", *args, "--out", str(part)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (part / "metrics.jsonl").exists() and len(losses(part)) >= 8:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "interrupted at step" in stderr
    stopped = json.loads((part / "checkpoint.json").read_text())["step"]
    assert 8 <= stopped < 24

    r = run_cli(*args, "--out", str(part), "--resume", cache=cache)
    assert r.returncode == 0, r.stderr
    a, b = losses(full), losses(part)
    assert sorted(b) == list(range(1, 25))
    for step in range(1, 25):
        assert a[step] == b[step], f"step {step}: {a[step]} != {b[step]}"   # bitwise


def test_info_lists_backends():
    r = run_cli("info")
    assert r.returncode == 0, r.stderr
    for op in ("selective_scan", "ssd", "causal_conv1d", "rms_norm"):
        assert op in r.stdout
    assert "device: cpu" in r.stdout


# ---------------------------------------------------------------------------------------
# Bad input: one clear line, exit 2, no traceback, nothing lost
# ---------------------------------------------------------------------------------------


def test_missing_checkpoint(tmp_path):
    r = run_cli("eval", str(tmp_path / "nope"), "--data", "dna")
    assert_clean_failure(r, "no such checkpoint directory")
    (tmp_path / "empty").mkdir()
    r = run_cli("generate", str(tmp_path / "empty"))
    assert_clean_failure(r, "not a bytelm run directory")


def test_truncated_checkpoint(dna_run, tmp_path, cache):
    import shutil
    out, _ = dna_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    pointer = json.loads((copy / "checkpoint.json").read_text())
    model = copy / pointer["model"]
    model.write_bytes(model.read_bytes()[:-100])
    r = run_cli("eval", str(copy), "--data", "dna", cache=cache)
    assert_clean_failure(r, "truncated or corrupt")
    (copy / "checkpoint.json").write_text('{"step": 8, "mod')
    r = run_cli("generate", str(copy), "--device", "cpu")
    assert_clean_failure(r, "truncated or corrupt checkpoint pointer")


def test_resume_with_incompatible_config(dna_run, tmp_path, cache):
    import shutil
    out, _ = dna_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = sorted(p.name for p in copy.iterdir())
    r = run_cli("train", "--data", "dna", "--model", "transformer", "--steps", "9", "--out",
                str(copy), "--resume", *FAST, cache=cache)
    assert_clean_failure(r, "--resume with a config that differs")
    assert sorted(p.name for p in copy.iterdir()) == before
    r = run_cli("train", "--data", "dna", "--steps", "9", "--out", str(copy), *FAST, cache=cache)
    assert_clean_failure(r, "already holds a checkpoint")


def test_seq_len_longer_than_split(tmp_path):
    src = tmp_path / "small.txt"
    src.write_bytes(b"a small corpus. " * 40)
    cache = tmp_path / "cache"
    r = run_cli("train", "--data", str(src), "--seq-len", "4096", "--steps", "1", "--out",
                str(tmp_path / "o"), "--device", "cpu", cache=str(cache))
    assert_clean_failure(r, "the train split has 576 bytes but one training window needs 4097")
    assert not (tmp_path / "o").exists()
    assert [p for p in cache.iterdir() if not p.name.startswith(".")] == []


@pytest.mark.parametrize("flag,value,pattern", [("--model", "rwkv", "invalid choice: 'rwkv'"),
                                                ("--preset", "huge", "invalid choice: 'huge'")])
def test_unknown_model_or_preset(flag, value, pattern):
    r = run_cli("train", "--data", "dna", flag, value)
    assert r.returncode == 2 and pattern in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_out_of_memory_gives_advice(tmp_path, monkeypatch, cache):
    from bytelm.models import LM
    from bytelm.train import trainer

    def oom(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    monkeypatch.setattr(LM, "forward", oom)
    cfg = TrainConfig(data="dna", steps=3, seq_len=32, batch_size=4, device="cpu",
                      out=str(tmp_path / "o"), cache_dir=cache)
    with pytest.raises(UserError, match=r"out of memory at --batch-size 4 x --seq-len 32.*"
                                        r"try --batch-size 2 or --seq-len 16"):
        trainer.train(cfg, quiet=True)


def test_nan_loss_skips_then_stops_with_checkpoint_intact(tmp_path, monkeypatch, cache, small_text):
    from bytelm.train import trainer
    out = tmp_path / "o"
    cfg = TrainConfig(data=small_text, steps=4, seq_len=32, batch_size=2, device="cpu", out=str(out),
                      cache_dir=cache, eval_every=2, save_every=2)
    trainer.train(cfg, quiet=True)
    pointer = (out / "checkpoint.json").read_text()

    real = trainer.lm_loss
    calls = {"n": 0}

    def flaky(*args, **kwargs):  # one NaN step (skipped), a good one, then NaN for good
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] in (1, 3, 4, 5) else loss
    monkeypatch.setattr(trainer, "lm_loss", flaky)
    cfg.steps = 10
    with pytest.raises(UserError, match="NaN/inf for 3 steps in a row"):
        trainer.train(cfg, resume=True, quiet=True)
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(1 for r in rows if r.get("event") == "skipped") == 4
    # the last good checkpoint is the one written before, or a later good one; it loads
    from bytelm.train.checkpoint import load_pointer
    assert load_pointer(out)["step"] >= json.loads(pointer)["step"]


def test_gpu_defaults_follow_corpus_size():
    """On a GPU a small corpus gets the small preset with dropout (a 90M model memorises 1 MB);
    a big one the base preset; anything the user set wins."""
    from bytelm.train.config import SMALL_CORPUS_TOKENS, TrainConfig, with_defaults

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    small = with_defaults(TrainConfig(data="text"), cuda, train_tokens=1_000_000)
    assert (small.preset, small.seq_len, small.batch_size) == ("small", 512, 32)
    assert small.model_overrides == {"dropout": 0.1}
    big = with_defaults(TrainConfig(data="dna"), cuda, train_tokens=SMALL_CORPUS_TOKENS)
    assert (big.preset, big.seq_len, big.batch_size, big.model_overrides) == ("base", 2048, 8, None)
    assert small.batch_size * small.seq_len == big.batch_size * big.seq_len
    chosen = with_defaults(TrainConfig(data="text", preset="base"), cuda, train_tokens=1_000_000)
    assert (chosen.preset, chosen.seq_len, chosen.model_overrides) == ("base", 2048, None)
    no_drop = with_defaults(TrainConfig(data="text", model_overrides={"dropout": 0.0}), cuda,
                            train_tokens=1_000_000)
    assert no_drop.model_overrides == {"dropout": 0.0} and no_drop.preset == "small"
    on_cpu = with_defaults(TrainConfig(data="text"), cpu, train_tokens=1_000_000)
    assert on_cpu.preset == "tiny" and on_cpu.model_overrides is None
