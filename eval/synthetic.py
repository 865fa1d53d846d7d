"""`bytelm synth TASK`: train a small model on a synthetic selectivity task and test it by length.

Tasks (generators and their conventions in synthetic_tasks.py): selective-copy, induction-heads,
mqar. A run draws fresh data every step from a seeded generator, trains a two-layer width-64 model
(by default) with AdamW, linear warmup and cosine decay, bf16 autocast on CUDA, and the loss only
on the answer positions; then it measures accuracy over the answers on a fixed, seeded test set
at the training length and at every --eval-lengths length. A length whose batch of one runs out
of memory is recorded as None (with status "oom"), and longer lengths are not tried.

    python -m bytelm.eval.synthetic induction-heads --model mamba --steps 2000 --json
    python -m bytelm.eval.synthetic mqar --model mamba2 --d-state 64 --seq-len 512 --out runs/mqar

--curriculum START trains on START-token contexts first and doubles the context each time a log
window's train accuracy reaches --curriculum-at (default 0.9), up to --seq-len; the accuracy stop
and the test set are at --seq-len only, and the record says where the curriculum ended.

For Mamba models the record also holds `memory_horizon`: per Mamba layer, 1 / (|A| · mean Δ) over
one test batch at the training length, the distance in tokens over which its states decay by e
(max / p99 / median over states); an answer L tokens back needs a horizon well beyond L, so it
shows what length extrapolation (induction heads) can reach before the test says so.

--val-every STEPS measures accuracy on validation sets (their own seeds) at --val-length (a
list; default the longest test length up to 2^16; the score is the lowest of them) during
training, as the Mamba paper tracked fixed validation sets per "epoch"; --keep-best then tests
the weights of the best validation step. An answer recalled at zero training loss still drifts
in how far it extrapolates (induction heads, 2026-12-03), which is what this shows.

--json ends stdout with one JSON object (task, model, steps, accuracy at the training length,
accuracy_by_length, and the rest of the record); --out DIR writes DIR/results.json (atomically)
and DIR/accuracy.png. `results_table` and `plot_summary` turn several runs' results into the
markdown table and figure of scripts/synthetic.sh.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from bytelm.errors import UserError
from bytelm.eval import report
from bytelm.eval import synthetic_tasks as tasks
from bytelm.models import ARCHS, LM, make_config

EVAL_TOKEN_CAP = 1 << 25        # test tokens per length; fewer examples beyond (>= EVAL_MIN_EXAMPLES)
EVAL_MIN_EXAMPLES = 16
PRECISIONS = ("bf16", "fp32")
DEFAULTS = {  # per task: batch, steps, lr, weight decay (see scripts/synthetic.sh for the papers')
    "selective-copy": dict(batch_size=64, steps=4000, lr=1e-3, weight_decay=0.0),
    "induction-heads": dict(batch_size=32, steps=4000, lr=1e-3, weight_decay=0.0),
    "mqar": dict(batch_size=64, steps=4000, lr=1e-3, weight_decay=0.1),
}
PAPER = {  # what the papers report for two-layer width-64 models (quoted in the table)
    ("selective-copy", "mamba"): "99.8% (Mamba, Table 1)",
    ("induction-heads", "mamba"): "100% at every length 2^6..2^20 (Table 2)",
    ("induction-heads", "transformer"): "RoPE attention: fails beyond ~2x the training length (Table 2)",
    ("mqar", "mamba2"): "rises with N = 16 -> 64 -> 256 (Mamba-2 Fig. 8)",
}


# ---------------------------------------------------------------------------- model and loss
def build_model(arch: str, vocab_size: int, d_model: int = 64, layers: int = 2,
                d_state: int | None = None, headdim: int = 32, n_head: int | None = None,
                chunk_size: int = 64) -> LM:
    """A small explicit model (not a preset). The transformer and hybrid's attention blocks
    carry a SwiGLU MLP of width ~8/3·d_model; hybrids alternate Mamba-2 and attention ("MA")."""
    if arch not in ARCHS:
        raise UserError(f"--model must be one of {', '.join(ARCHS)}, got {arch!r}")
    d_state = d_state or (16 if arch == "mamba" else 64)
    n_head = n_head or max(1, d_model // 32)
    mlp_hidden = max(8, round(8 * d_model / 3 / 8) * 8)
    try:
        cfg = make_config(arch, "tiny", vocab_size, d_model=d_model, n_layer=layers,
                          d_state=d_state, headdim=min(headdim, 2 * d_model), n_head=n_head,
                          mlp_hidden=mlp_hidden, chunk_size=chunk_size, hybrid_pattern="MA")
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return LM(cfg)


@contextlib.contextmanager
def logits_only_at(model: LM, idx: torch.Tensor):
    """Inside, model(x) returns logits (B, n, V) at the positions idx (B, n) only: the head runs on
    those hidden states alone (it is most of the FLOPs at vocab 8192), gathered without a sync."""
    def gather(module, args):
        h = args[0]                                                      # (B, L, D)
        return (h.gather(1, idx.unsqueeze(-1).expand(-1, -1, h.shape[-1])),)
    handle = model.lm_head.register_forward_pre_hook(gather)
    try:
        yield
    finally:
        handle.remove()


def answer_logits(model: LM, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    with logits_only_at(model, idx):
        return model(x)                                                  # (B, n, V)


def precision_context(device: torch.device, precision: str):
    """bf16 autocast (CUDA; `autocast_for`) or plain fp32. On the CPU every run is fp32."""
    from bytelm.train.evaluate import autocast_for

    return autocast_for(device) if precision == "bf16" else contextlib.nullcontext()


def _effective(device: torch.device, precision: str) -> str:
    return precision if device.type == "cuda" else "fp32"


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in str(exc)
                                              or "out of memory" in str(exc))


# ---------------------------------------------------------------------------- schedule
def lr_at(step: int, elapsed: float, o) -> float:
    """Linear warmup over o.warmup steps, then cosine to 10% of o.lr (or, with --schedule
    constant, o.lr to the end). The cosine's progress is the larger of steps done and time used,
    so a --time-budget run still ends on the low rate."""
    if step < o.warmup:
        return o.lr * (step + 1) / o.warmup
    if o.schedule == "constant":
        return o.lr
    progress = (step - o.warmup) / max(1, o.steps - o.warmup)
    if o.time_budget:
        progress = max(progress, elapsed / o.time_budget)
    progress = min(1.0, progress)
    return o.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def _task_kw(o) -> dict:
    return dict(num_tokens=o.num_tokens, num_kv_pairs=o.num_kv_pairs, vocab=o.vocab)


# ---------------------------------------------------------------------------- train
def train(model: LM, o, device: torch.device, log=None) -> dict:
    """Train in place on fresh batches; returns the run's training record."""
    from bytelm.train.trainer import build_optimizer

    log = log or (lambda msg: None)
    gen = torch.Generator(device=device).manual_seed(o.seed)   # batches are made on the device
    opt = build_optimizer(model, SimpleNamespace(lr=o.lr, weight_decay=o.weight_decay, beta1=0.9,
                                                 beta2=0.95), device)
    graphed = None
    if o.cuda_graph:  # the same parameter groups, in a capturable AdamW; steps as CUDA graphs
        from bytelm.eval.graph_step import GraphedStep, capturable_adamw
        opt = capturable_adamw([{"params": g["params"], "weight_decay": g["weight_decay"]}
                                for g in opt.param_groups], o.lr, (0.9, 0.95), device)
        graphed = GraphedStep(model, opt, answer_logits, bf16=o.precision == "bf16")
    model.train()
    history, stopped = [], "steps"
    length = o.curriculum or o.seq_len             # the context length of this step's batches
    full_at = 0 if length == o.seq_len else None   # step at which training reached o.seq_len
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    answers, window_steps = 0, 0
    t0 = time.time()

    def flush(step, lr, advance=True):
        """Log the window's mean loss and train accuracy; returns a reason to stop, or None.
        With a curriculum, a window at or above o.curriculum_at doubles the length (up to
        o.seq_len), and the accuracy stop applies only at o.seq_len."""
        nonlocal answers, window_steps, length, full_at
        mean_loss, acc = float(loss_sum) / window_steps, int(correct) / answers
        row = dict(step=step, loss=round(mean_loss, 5), train_accuracy=round(acc, 5), lr=lr,
                   seconds=round(time.time() - t0, 2))
        if o.curriculum:
            row["length"] = length
        history.append(row)
        log(f"step {step:>6}/{o.steps}  loss {mean_loss:.4f}  train acc {acc:.4f}  "
            f"lr {lr:.2e}  {row['seconds']:.0f}s" + (f"  length {length}" if o.curriculum else ""))
        loss_sum.zero_(), correct.zero_()
        answers, window_steps = 0, 0
        if not math.isfinite(mean_loss):
            return "diverged"
        if length < o.seq_len:
            if advance and acc >= o.curriculum_at:
                length = min(2 * length, o.seq_len)
                full_at = step if length == o.seq_len else None
                log(f"curriculum: train accuracy {acc:.4f} >= {o.curriculum_at}; length {length} from step {step + 1}")
            return None
        if o.stop_at_accuracy is not None and acc >= o.stop_at_accuracy:
            return "accuracy"
        return None

    validation, best = [], None   # (step, accuracy) rows; (accuracy, step, weights) of the best

    def validate(step):
        """Accuracy on the validation sets at o.val_lengths (their own seeds: neither the training
        stream nor the test set); the score is the lowest over the lengths. With o.keep_best, a
        copy of the best-scoring weights so far (the earliest of equal scores)."""
        nonlocal best
        model.eval()
        by_length = {n: accuracy_at(model, o, n, o.val_examples,
                                    max(1, min(o.val_examples, o.eval_batch_tokens // n)), device,
                                    o.eval_precision[0], seed=val_seed(o.seed, n))
                     for n in o.val_lengths}
        model.train()
        acc = min(by_length.values())
        validation.append(dict(step=step, accuracy=round(acc, 5),
                               by_length={str(n): round(a, 5) for n, a in by_length.items()}))
        log(f"step {step:>6}  validation accuracy {acc:.4f} (lowest of "
            + ", ".join(f"{a:.4f} at {n}" for n, a in by_length.items()) + ")")
        if o.keep_best and (best is None or acc > best[0]):
            best = (acc, step, {k: v.detach().clone() for k, v in model.state_dict().items()})

    step, lr = 0, 0.0
    while step < o.steps:
        elapsed = time.time() - t0
        if o.time_budget and elapsed >= o.time_budget:
            stopped = "time"
            break
        lr = lr_at(step, elapsed, o)
        x, y, idx = tasks.make_batch(o.task, o.batch_size, length, gen, **_task_kw(o))
        target = y.gather(1, idx)                                        # (B, n)
        if graphed is not None:
            try:
                loss, logits = graphed.step(x, target, idx, lr)
            except RuntimeError as exc:  # a capture that fails: say so, go on eagerly
                log(f"--cuda-graph: capture failed at step {step} ({str(exc).splitlines()[0][:160]}); "
                    "continuing without graphs")
                graphed = None
                continue
        else:
            for group in opt.param_groups:
                if torch.is_tensor(group["lr"]):
                    group["lr"].fill_(lr)
                else:
                    group["lr"] = lr
            with precision_context(device, o.precision):
                logits = answer_logits(model, x, idx)                    # (B, n, V)
            loss = F.cross_entropy(logits.float().flatten(0, 1), target.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        step += 1
        loss_sum += loss.detach()
        correct += (logits.detach().argmax(-1) == target).sum()
        answers += target.numel()
        window_steps += 1
        if o.val_every and step % o.val_every == 0:
            validate(step)
        if step % o.log_every == 0 or step == o.steps:
            stopped = flush(step, lr) or stopped
            if stopped != "steps":
                break
    if window_steps:  # the steps since the last log line (a time-budget stop)
        flush(step, lr, advance=False)
    if o.val_every and (not validation or validation[-1]["step"] != step):  # the last step's
        validate(step)
    kept = None
    if best is not None:  # copied in place: a captured CUDA graph keeps its parameter addresses
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(best[2][k])
        kept = dict(step=best[1], validation_accuracy=round(best[0], 5))
        log(f"kept the weights of step {best[1]} (validation accuracy {best[0]:.4f}, the lowest over "
            f"lengths {', '.join(map(str, o.val_lengths))})")
    return dict(validation=validation, kept=kept, steps=step, stopped=stopped, history=history, seconds_train=round(time.time() - t0, 2),
                final_length=length, full_length_from_step=full_at,
                cuda_graphs=None if not o.cuda_graph else (len(graphed.graphs) if graphed else "failed"))


# ---------------------------------------------------------------------------- evaluate
def eval_seed(seed: int, length: int) -> int:
    """Seed of the fixed test set at one length: never the training stream's seed."""
    return (seed + 1) * 1_000_000_007 + 7919 * length + 17


def val_seed(seed: int, length: int) -> int:
    """Seed of the validation set (--val-every): neither the training stream's nor the test set's."""
    return (seed + 1) * 998_244_353 + 104_729 * length + 29


@torch.no_grad()
def accuracy_at(model: LM, o, length: int, examples: int, batch: int, device,
                precision: str = "bf16", seed: int | None = None) -> float:
    """Accuracy over all answers of `examples` rows at `length`, `batch` rows at a time, under
    `precision` (bf16 autocast or fp32). The rows depend only on (seed, length), not on the batch
    size or the precision."""
    gen = torch.Generator(device=device).manual_seed(eval_seed(o.seed, length) if seed is None else seed)
    kw = _task_kw(o)
    correct = answers = 0
    for start in range(0, examples, batch):
        # rows drawn one at a time, in order: the test set does not depend on the batch size
        rows = [tasks.make_batch(o.task, 1, length, gen, **kw) for _ in range(min(batch, examples - start))]
        x, y, idx = (torch.cat(parts) for parts in zip(*rows))
        target = y.gather(1, idx)
        with precision_context(device, precision):
            logits = answer_logits(model, x, idx)
        correct += int((logits.argmax(-1) == target).sum())
        answers += target.numel()
    return correct / answers


@torch.no_grad()
def memory_horizons(model: LM, x: torch.Tensor) -> list[dict]:
    """Per Mamba layer, how far its states remember on the inputs x, in tokens. A state decays by
    exp(A Σ_t Δ_t) over a stretch, so its horizon is 1 / (|A| · mean Δ) over these inputs: an
    induction-heads answer 2^16 tokens back needs states whose horizon is well beyond 2^16.
    Returns [{layer, max, p99, median}] over (channel, state) pairs (Mamba-1) or heads (Mamba-2);
    attention layers are left out. Δ is recomputed in fp32 from the projection that produces it."""
    mixers = [(i, b.layer_type, b.mixer) for i, b in enumerate(model.backbone.layers)
              if b.layer_type != "attn"]
    means, handles = {}, []

    def hook(i, kind, mixer):
        def fn(module, inputs, out):
            if kind == "mamba":  # x_proj: (B, L, R + 2N) -> Δ (B, L, E)
                dt = out[..., :mixer.dt_rank].float() @ mixer.dt_proj.weight.float().t()
                dt = dt + mixer.dt_proj.bias.float()
            else:                # in_proj: (B, L, ...), Δ pre-activation in the last H columns
                dt = out[..., -mixer.nheads:].float() + mixer.dt_bias.float()
            means[i] = F.softplus(dt).flatten(0, -2).mean(0)        # (E,) or (H,)
        return fn

    for i, kind, mixer in mixers:
        proj = mixer.x_proj if kind == "mamba" else mixer.in_proj
        handles.append(proj.register_forward_hook(hook(i, kind, mixer)))
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    out = []
    for i, kind, mixer in mixers:
        A = torch.exp(mixer.A_log.float())                          # |A|: (E, N) or (H,)
        dt = means[i] if kind != "mamba" else means[i][:, None]
        horizon = (1.0 / (A * dt).clamp_min(1e-30)).flatten().double()
        out.append(dict(layer=i, max=float(horizon.max()), p99=float(horizon.quantile(0.99)),
                        median=float(horizon.median())))
    return out


def evaluate_lengths(model: LM, o, device, log=None, precision: str = "bf16") -> tuple[dict, dict]:
    """accuracy_by_length {str(length): accuracy or None} and per-length details, under
    `precision` (bf16 autocast or fp32)."""
    log = log or (lambda msg: None)
    model.eval()
    lengths = sorted(set(o.eval_lengths) | {o.seq_len})
    acc, details, failed_at = {}, {}, None
    for length in lengths:
        if failed_at is not None:
            acc[str(length)] = None
            details[str(length)] = dict(status="oom", note=f"not tried: {failed_at} ran out of memory")
            continue
        try:
            _check_length(o, length)
        except ValueError as exc:
            acc[str(length)] = None
            details[str(length)] = dict(status="invalid", note=str(exc))
            continue
        total = tasks.total_length(o.task, length, o.num_tokens)
        examples = o.eval_examples
        if examples * total > EVAL_TOKEN_CAP:
            examples = min(examples, max(EVAL_MIN_EXAMPLES, EVAL_TOKEN_CAP // total))
        batch = max(1, min(examples, o.eval_batch_tokens // total))
        t0 = time.time()
        while True:
            try:
                value = accuracy_at(model, o, length, examples, batch, device, precision)
                break
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled
                if not _is_oom(exc):
                    raise
                del exc
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                if batch == 1:
                    value = None
                    break
                batch = max(1, batch // 2)
        if value is None:
            failed_at = length
            acc[str(length)] = None
            details[str(length)] = dict(status="oom", examples=examples)
            log(f"length {length:>8}: out of memory at batch 1")
            continue
        acc[str(length)] = value
        details[str(length)] = dict(status="ok", examples=examples, batch=batch,
                                    seconds=round(time.time() - t0, 2))
        log(f"length {length:>8}: accuracy {value:.4f} ({examples} rows, batch {batch}, {precision})")
    return acc, details


def _check_length(o, length: int) -> None:
    tasks.make_batch(o.task, 1, length, torch.Generator().manual_seed(0), **_task_kw(o))


# ---------------------------------------------------------------------------- one run
def run(o, log=None) -> dict:
    """Train and evaluate one configuration; `o` holds the parsed options (see add_arguments)."""
    from bytelm.train.config import resolve_device

    device = resolve_device(o.device)
    torch.manual_seed(o.seed)
    model = build_model(o.model, tasks.model_vocab(o.task, o.vocab), o.d_model, o.layers,
                        o.d_state, o.headdim, o.n_head, o.chunk_size).to(device)
    cfg = model.config
    n_params = model.num_params()
    (log or (lambda m: None))(
        f"synth {o.task}: {o.model} d_model {cfg.d_model} x {cfg.n_layer} layers"
        f"{'' if o.model == 'transformer' else f', d_state {cfg.d_state}'}, {n_params:,} params, "
        f"{device}, {o.steps} steps of {o.batch_size} x {tasks.total_length(o.task, o.seq_len, o.num_tokens)} tokens")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    record = train(model, o, device, log)
    t0 = time.time()
    by_precision = {}  # eval precision -> (accuracy_by_length, details); the first is the headline
    for precision in o.eval_precision:
        by_precision[precision] = evaluate_lengths(model, o, device, log, precision)
    acc, details = by_precision[o.eval_precision[0]]
    horizons = None
    if o.model != "transformer":  # one test batch at the training length, as in the tests
        gen = torch.Generator(device=device).manual_seed(eval_seed(o.seed, o.seq_len))
        x, _, _ = tasks.make_batch(o.task, min(16, o.eval_examples), o.seq_len, gen, **_task_kw(o))
        horizons = memory_horizons(model, x)
        (log or (lambda m: None))("memory horizon (tokens; max / p99 / median over states): " + "; ".join(
            f"layer {h['layer']} {h['max']:.3g} / {h['p99']:.3g} / {h['median']:.3g}" for h in horizons))
    result = {
        "task": o.task, "model": o.model, "steps": record["steps"],
        "accuracy": acc[str(o.seq_len)], "accuracy_by_length": acc,
        "train_length": o.seq_len, "chance": tasks.chance(o.task, o.vocab),
        "d_model": cfg.d_model, "layers": cfg.n_layer,
        "d_state": None if o.model == "transformer" else cfg.d_state,
        "params": n_params, "device": str(device), "seed": o.seed,
        "steps_planned": o.steps, "stopped": record["stopped"],
        "final_train_accuracy": record["history"][-1]["train_accuracy"] if record["history"] else None,
        "seconds_train": record["seconds_train"], "seconds_eval": round(time.time() - t0, 2),
        "eval": details,
        "precision": o.precision, "eval_precision": o.eval_precision[0],
        "accuracy_by_precision": {p: a for p, (a, _) in by_precision.items()},
        "memory_horizon": horizons,
        "validation": dict(lengths=o.val_lengths, examples=o.val_examples, every=o.val_every,
                           history=record["validation"], kept=record["kept"]) if o.val_every else None,
        "cuda_graphs": record["cuda_graphs"],   # graphs captured (one per batch shape), "failed", None
        "curriculum": None if not o.curriculum else dict(
            start=o.curriculum, advance_at=o.curriculum_at, final_length=record["final_length"],
            full_length_from_step=record["full_length_from_step"]),
        "options": {k: v for k, v in vars(o).items()
                    if k not in ("json", "out") and isinstance(v, (str, int, float, bool, list, type(None)))},
        "model_config": cfg.to_dict(), "history": record["history"],
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    return result


# ---------------------------------------------------------------------------- outputs
def run_label(r: dict) -> str:
    return r["model"] if r.get("d_state") is None else f"{r['model']} N={r['d_state']}"


def plot_runs(results: list[dict], path: Path, title: str) -> None:
    """Accuracy (%) vs test length, one line per run (oom lengths left out), plus chance."""
    series = []
    for r in results:
        pts = sorted((int(k), 100 * v) for k, v in r["accuracy_by_length"].items() if v is not None)
        series.append(dict(label=f"{run_label(r)} (trained at {r['train_length']})",
                           x=[p[0] for p in pts], y=[p[1] for p in pts]))
    lengths = sorted({int(k) for r in results for k in r["accuracy_by_length"]})
    if results:
        series.append(dict(label="chance", x=lengths, y=[100 * results[0]["chance"]] * len(lengths),
                           style="--"))
    report.line_plot(path, series, "test length (tokens)", "accuracy over answers (%)", title,
                     logx=True)


def _pct(v) -> str:
    return "oom" if v is None else f"{100 * v:.1f}"


def _order(r: dict):
    return (ARCHS.index(r["model"]) if r["model"] in ARCHS else len(ARCHS), r.get("d_state") or 0,
            r["train_length"])


def results_table(results: list[dict]) -> str:
    """Markdown: one section per task, with the papers' numbers alongside."""
    out = []
    results = sorted(results, key=_order)
    by_task = {t: [r for r in results if r["task"] == t] for t in tasks.TASKS}
    for task, rows in by_task.items():
        if not rows:
            continue
        out.append(f"### {task}\n")
        if task == "mqar":  # pivot: one row per (model, N), one column per training length
            lengths = sorted({r["train_length"] for r in rows})
            out.append("| model | d_model | " + " | ".join(f"L={n}" for n in lengths) + " | paper |")
            out.append("|---" * (len(lengths) + 3) + "|")
            for key in dict.fromkeys((run_label(r), r["d_model"]) for r in rows):
                cells = {r["train_length"]: r for r in rows if (run_label(r), r["d_model"]) == key}
                model = key[0].split()[0]
                out.append(f"| {key[0]} | {key[1]} | " + " | ".join(
                    _mqar_cell(cells[n]) if n in cells else "" for n in lengths)
                    + f" | {PAPER.get((task, model), '')} |")
        else:
            lengths = sorted({int(k) for r in rows for k in r["accuracy_by_length"]})
            out.append("| model | steps | params | " + " | ".join(_len_name(n) for n in lengths)
                       + " | paper |")
            out.append("|---" * (len(lengths) + 4) + "|")
            for r in rows:
                # one row per test precision (the headline first) where a run was tested under two
                tested = r.get("accuracy_by_precision") or {None: r["accuracy_by_length"]}
                for precision, acc in tested.items():
                    label = run_label(r) + (f", tested {precision}" if len(tested) > 1 else "")
                    out.append(f"| {label} | {_steps_cell(r)} | {r['params']:,} | " + " | ".join(
                        (("**" + _pct(acc[str(n)]) + "**") if n == r["train_length"] else _pct(acc[str(n)]))
                        if str(n) in acc else "" for n in lengths)
                        + f" | {PAPER.get((task, r['model']), '')} |")
        out.append("")
    out.append("Accuracy (%) over the answer tokens; bold: the training length; oom: ran out of "
               "memory at batch 1. A curriculum run trained on shorter contexts first (doubling "
               "the length each time its train accuracy reached the threshold).")
    return "\n".join(out)


def _mqar_cell(r: dict) -> str:
    """Accuracy, the steps trained and why training stopped (time budget, accuracy target)."""
    why = {"accuracy": ", accuracy stop", "time": ", time budget"}.get(r.get("stopped"), "")
    return f"{_pct(r['accuracy'])} ({r['steps']:,} steps{why})"


def _steps_cell(r: dict) -> str:
    """Steps, and for a curriculum run the lengths it went through and when it reached the last."""
    cur = r.get("curriculum")
    how = []  # the recipe; records before 2026-12-03 have no precision: bf16 autocast on CUDA then
    o = r.get("options")
    if o:
        precision = r.get("precision") or ("bf16" if str(r.get("device", "")).startswith("cuda") else "fp32")
        how = [f"batch {o.get('batch_size')}", o.get("schedule") or "cosine", f"{precision} training",
               f"seed {r.get('seed', 0)}"]
    kept = (r.get("validation") or {}).get("kept")
    if kept:  # --keep-best: the test ran on the weights of the best validation step
        how.append(f"weights of step {kept['step']}, the best validation score at "
                   + ", ".join(_len_name(n) for n in r["validation"]["lengths"]))
    if not cur:
        return str(r["steps"]) + (f" ({', '.join(how)})" if how else "")
    reached = cur["full_length_from_step"]
    how.append(f"curriculum {cur['start']} to {r['train_length']}, "
               + (f"full length from step {reached}" if reached is not None
                  else f"never past length {cur['final_length']}"))
    return f"{r['steps']} ({', '.join(how)})"


def _len_name(n: int) -> str:
    k = int(math.log2(n)) if n > 0 else 0
    return f"2^{k}" if 1 << k == n else str(n)


def plot_summary(results: list[dict], path: Path) -> None:
    """One panel per task: accuracy vs test length per run; MQAR: accuracy vs training length
    per (model, N), the shape of Mamba-2's Figure 8."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = sorted(results, key=_order)
    present = [t for t in tasks.TASKS if any(r["task"] == t for r in results)]
    fig, axes = plt.subplots(1, max(1, len(present)), figsize=(5.2 * max(1, len(present)), 4.0),
                             squeeze=False)
    for ax, task in zip(axes[0], present):
        rows = [r for r in results if r["task"] == task]
        if task == "mqar":
            for label in dict.fromkeys(run_label(r) for r in rows):
                pts = sorted((r["train_length"], r["accuracy"]) for r in rows
                             if run_label(r) == label and r["accuracy"] is not None)
                ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=label)
            ax.set_xlabel("sequence length (L/4 key-value pairs)")
        else:
            for r in rows:
                pts = sorted((int(k), v) for k, v in r["accuracy_by_length"].items() if v is not None)
                label = run_label(r) + (f", curriculum from {r['curriculum']['start']}"
                                        if r.get("curriculum") else "")
                ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=label)
            ax.axvline(rows[0]["train_length"], color="grey", lw=0.8, ls=":")
            ax.set_xlabel("test length")
        ax.set_xscale("log", base=2)
        ax.set_ylim(-2, 102)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = Path(path).with_name(f".{Path(path).stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    plt.close(fig)


# ---------------------------------------------------------------------------- CLI
def parse_lengths(text: str, flag: str = "--eval-lengths") -> list[int]:
    """'64,256,1024', '2^6,2^8', or a range of powers of two '2^6..2^20' (combinable by commas)."""
    def one(tok: str) -> int:
        tok = tok.strip()
        value = 1 << int(tok[2:]) if tok.startswith("2^") else int(tok)
        if value <= 0:
            raise ValueError(tok)
        return value
    out = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            if ".." in part:
                lo, hi = (one(t) for t in part.split(".."))
                if lo & (lo - 1) or hi & (hi - 1) or lo > hi:
                    raise ValueError(part)
                out += [1 << k for k in range(lo.bit_length() - 1, hi.bit_length())]
            else:
                out.append(one(part))
    except ValueError:
        raise UserError(f"{flag}: cannot read {text!r}; use e.g. 64,256,1024 or 2^6..2^20") from None
    return sorted(set(out))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", choices=list(tasks.TASKS))
    p.add_argument("--model", choices=list(ARCHS), default="mamba")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--d-state", type=int, default=None, help="N (default 16 for mamba, 64 for mamba2/hybrid)")
    p.add_argument("--headdim", type=int, default=32, help="Mamba-2 head dimension P")
    p.add_argument("--n-head", type=int, default=None, help="attention heads (default d_model/32)")
    p.add_argument("--chunk-size", type=int, default=64, help="Mamba-2 SSD chunk length")
    p.add_argument("--seq-len", type=int, default=None,
                   help="training length (default: selective-copy 4096 context tokens, induction-heads 256, mqar 256)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-3)")
    p.add_argument("--warmup", type=int, default=None, help="warmup steps (default steps/20, at most 500)")
    p.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                   help="after warmup: cosine to 10%% of --lr (default) or constant --lr")
    p.add_argument("--cuda-graph", action="store_true",
                   help="run each training step as one captured CUDA graph (CUDA only; the small "
                        "models' steps are launch-bound)")
    p.add_argument("--weight-decay", type=float, default=None, help="default 0 (0.1 for mqar, as Zoology)")
    p.add_argument("--precision", choices=PRECISIONS, default="bf16",
                   help="training arithmetic on CUDA: bf16 autocast (default) or fp32 (the CPU is always fp32)")
    p.add_argument("--eval-precision", default=None,
                   help="test arithmetic: bf16, fp32, or both as bf16,fp32 (each length tested under "
                        "each; the first is the headline accuracy_by_length); default --precision")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write results.json and accuracy.png here")
    p.add_argument("--eval-lengths", default=None,
                   help="test lengths, e.g. 2^6..2^20 (default: induction-heads 2^6..2^20 on CUDA, "
                        "2^6..2^12 on CPU; the others only the training length)")
    p.add_argument("--eval-examples", type=int, default=256, help="test rows per length")
    p.add_argument("--eval-batch-tokens", type=int, default=None,
                   help="tokens per test batch (default 2^20 on CUDA, 2^16 on CPU)")
    p.add_argument("--num-tokens", type=int, default=16, help="selective-copy: data tokens to copy")
    p.add_argument("--num-kv-pairs", type=int, default=None, help="mqar: pairs (default length/4)")
    p.add_argument("--vocab", type=int, default=None,
                   help="task vocabulary (default 16, 16, 8192; selective-copy's counts the noise token)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="stop training after this many seconds (the cosine ends there too)")
    p.add_argument("--stop-at-accuracy", type=float, default=None,
                   help="stop training once the train accuracy over a log window reaches this")
    p.add_argument("--curriculum", type=int, default=None, metavar="START",
                   help="length curriculum: train from START tokens of context and double it "
                        "each time a log window's train accuracy reaches --curriculum-at, up to "
                        "--seq-len (tests stay at --seq-len and --eval-lengths)")
    p.add_argument("--curriculum-at", type=float, default=0.9,
                   help="train accuracy that advances the curriculum (default 0.9; 0 doubles the "
                        "length at every log window)")
    p.add_argument("--val-every", type=int, default=None, metavar="STEPS",
                   help="every STEPS steps, the accuracy on a validation set at --val-length (its "
                        "own seed, not the test set), recorded with the training history")
    p.add_argument("--val-length", default=None, metavar="LIST",
                   help="validation length(s), as --eval-lengths (default: the longest "
                        "--eval-lengths length up to 2^16); the score is the lowest accuracy over them")
    p.add_argument("--val-examples", type=int, default=64, help="validation rows (default 64)")
    p.add_argument("--keep-best", action="store_true",
                   help="with --val-every: test the weights of the best validation step, not the last")
    p.add_argument("--log-every", type=int, default=None)
    p.add_argument("--json", action="store_true", help="last line of stdout: one JSON object")


def resolve_options(args) -> SimpleNamespace:
    """Fill per-task defaults and validate; raises UserError on bad input."""
    from bytelm.train.config import resolve_device

    o = SimpleNamespace(**vars(args))
    device = resolve_device(o.device)
    for key, value in DEFAULTS[o.task].items():
        if getattr(o, key) is None:
            setattr(o, key, value)
    o.seq_len = o.seq_len or tasks.SPECS[o.task].train_length
    if o.warmup is None:
        o.warmup = max(1, min(500, o.steps // 20))
    if o.log_every is None:
        o.log_every = max(1, min(100, o.steps // 20))
    if o.eval_batch_tokens is None:
        o.eval_batch_tokens = 1 << (20 if device.type == "cuda" else 16)
    if o.eval_lengths is None:
        o.eval_lengths = ("2^6..2^20" if device.type == "cuda" else "2^6..2^12") \
            if o.task == "induction-heads" else ""
    o.eval_lengths = parse_lengths(o.eval_lengths) if isinstance(o.eval_lengths, str) else o.eval_lengths
    for key in ("d_model", "layers", "steps", "batch_size", "seq_len", "eval_examples",
                "eval_batch_tokens", "num_tokens", "log_every", "headdim", "chunk_size"):
        if getattr(o, key) <= 0:
            raise UserError(f"--{key.replace('_', '-')} must be positive, got {getattr(o, key)}")
    for key in ("d_state", "n_head", "num_kv_pairs", "vocab", "time_budget"):
        if getattr(o, key) is not None and getattr(o, key) <= 0:
            raise UserError(f"--{key.replace('_', '-')} must be positive, got {getattr(o, key)}")
    o.precision = _effective(device, o.precision)
    wanted = [t.strip() for t in (o.eval_precision or o.precision).split(",") if t.strip()]
    if not wanted or any(t not in PRECISIONS for t in wanted) or len(set(wanted)) < len(wanted):
        raise UserError(f"--eval-precision must be bf16, fp32 or both (bf16,fp32), got {o.eval_precision!r}")
    o.eval_precision = list(dict.fromkeys(_effective(device, t) for t in wanted))
    if o.val_every is not None:
        if o.val_every <= 0 or o.val_examples <= 0:
            raise UserError(f"--val-every and --val-examples must be positive, got {o.val_every}, {o.val_examples}")
        if o.val_length is None:
            o.val_lengths = [max([n for n in o.eval_lengths if n <= 1 << 16] or [o.seq_len])]
        else:
            o.val_lengths = parse_lengths(str(o.val_length), "--val-length")
        for n in o.val_lengths:
            try:
                _check_length(o, n)
            except ValueError as exc:
                raise UserError(f"{o.task} at --val-length {n}: {exc}") from None
    elif o.keep_best or o.val_length is not None:
        raise UserError("--keep-best and --val-length need --val-every STEPS (how often to validate)")
    if o.cuda_graph and device.type != "cuda":
        raise UserError(f"--cuda-graph needs a CUDA device, got --device {o.device}; drop --cuda-graph")
    if o.lr <= 0 or o.weight_decay < 0 or o.warmup < 0:
        raise UserError("--lr must be positive and --weight-decay, --warmup non-negative")
    if o.stop_at_accuracy is not None and not 0 < o.stop_at_accuracy <= 1:
        raise UserError(f"--stop-at-accuracy must be in (0, 1], got {o.stop_at_accuracy}")
    try:
        _check_length(o, o.seq_len)
    except ValueError as exc:
        raise UserError(f"{o.task} at --seq-len {o.seq_len}: {exc}") from None
    if o.curriculum is not None:
        if not 0 < o.curriculum < o.seq_len:
            raise UserError(f"--curriculum must be between 1 and --seq-len {o.seq_len} (exclusive), "
                            f"got {o.curriculum}")
        if not 0 <= o.curriculum_at <= 1:
            raise UserError(f"--curriculum-at must be in [0, 1], got {o.curriculum_at}")
        try:
            _check_length(o, o.curriculum)
        except ValueError as exc:
            raise UserError(f"{o.task} at --curriculum {o.curriculum}: {exc}") from None
    return o


def main(args) -> dict:
    o = resolve_options(args)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    result = run(o, log)
    if o.out:
        out = Path(o.out)
        out.mkdir(parents=True, exist_ok=True)
        report.write_json(out / "results.json", result)
        plot_runs([result], out / "accuracy.png",
                  f"{o.task}: {run_label(result)}, trained at {o.seq_len}")
    summary = "  ".join(f"{_len_name(int(k))}: {_pct(v)}" for k, v in result["accuracy_by_length"].items())
    print(f"{o.task} {run_label(result)}: accuracy {_pct(result['accuracy'])}% at length {o.seq_len} "
          f"after {result['steps']} steps ({result['stopped']}); by length: {summary}")
    if o.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(report.run_command("bytelm synth", add_arguments, main))
