"""`bytelm robustness`: how much a checkpoint suffers when its context is corrupted.

For evenly spaced windows of the val split, the first part (the context) is corrupted at a rate
p and the rest (the continuation) is scored clean. Reported per checkpoint, perturbation and
rate, all in bits per original byte (BPE checkpoints tokenize the corrupted text themselves):

    clean_bits_per_byte            the continuation after the clean context
    corrupt_bits_per_byte          the continuation after the corrupted context
    delta_bits_per_byte            corrupt - clean
    corrupted_text_bits_per_byte   the corrupted context itself, scored by the model

The context and the continuation are tokenized separately and concatenated, so continuation
tokens cover exactly the continuation's bytes under any codec. A model sees at most its
training seq_len tokens: a context that grew (insert, repeat, antspeak) is cut on the left.
A window whose context came out unchanged reuses its clean score, so rate 0 gives exactly the
clean numbers.

Text perturbations act on Unicode characters (a multi-byte character is never split; bytes
that are not UTF-8 pass through as single characters via surrogateescape); DNA perturbations
on bases. Every perturbation is seeded per (seed, perturbation, rate, window).
"""

from __future__ import annotations

import math
import re
import string
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bytelm.errors import UserError
from bytelm.eval import report
from bytelm.train.evaluate import autocast_for

# ---------------------------------------------------------------------------------------
# Text perturbations: str -> (str, number of edits); the rate is per character (per word for
# uppercase and antspeak, per cased character for randomcase).
# ---------------------------------------------------------------------------------------


def _alphabet(s: str) -> list[str]:
    chars = sorted({c for c in s if c.isprintable() and not 0xD800 <= ord(c) < 0xE000})
    return chars if len(chars) >= 2 else list(string.ascii_letters)


def _drop(s, p, rng):
    keep = rng.random(len(s)) >= p
    return "".join(c for c, k in zip(s, keep) if k), int((~keep).sum())


def _insert(s, p, rng):
    alpha, r = _alphabet(s), rng.random(len(s))
    picks = rng.integers(0, len(alpha), size=len(s))
    out = []
    for c, ri, k in zip(s, r, picks):
        out.append(c)
        if ri < p:
            out.append(alpha[k])
    return "".join(out), int((r < p).sum())


def _substitute(s, p, rng):
    alpha, r = _alphabet(s), rng.random(len(s))
    picks = rng.integers(0, len(alpha) - 1, size=len(s))
    out, n = [], 0
    for c, ri, k in zip(s, r, picks):
        if ri < p:
            others = [a for a in alpha if a != c] if c in alpha else alpha
            c = others[k % len(others)]
            n += 1
        out.append(c)
    return "".join(out), n


def _swap(s, p, rng):
    # a position starts a swap with probability q; starting one consumes two positions, so the
    # fraction of positions that start a swap is q / (1 + q) = p
    q = p / (1 - p) if p < 0.5 else 1.0
    r, out, i, n = rng.random(len(s)), list(s), 0, 0
    while i < len(s) - 1:
        if r[i] < q:
            out[i], out[i + 1] = out[i + 1], out[i]
            i, n = i + 2, n + 1
        else:
            i += 1
    return "".join(out), n


def _repeat(s, p, rng):
    r, extra = rng.random(len(s)), rng.integers(1, 4, size=len(s))
    return "".join(c * (1 + int(k)) if ri < p else c for c, ri, k in zip(s, r, extra)), \
        int((r < p).sum())


def _cased(c: str) -> bool:
    flipped = c.swapcase()
    return flipped != c and len(flipped) == 1


def _randomcase(s, p, rng):
    r, out, n = rng.random(len(s)), [], 0
    for c, ri in zip(s, r):
        if ri < p and _cased(c):
            c, n = c.swapcase(), n + 1
        out.append(c)
    return "".join(out), n


def _by_word(s, p, rng, change):
    parts = re.split(r"(\s+)", s)
    r, n = rng.random(len(parts)), 0
    for i, part in enumerate(parts):
        if part and not part.isspace() and r[i] < p:
            parts[i], n = change(part), n + 1
    return "".join(parts), n


def _uppercase(s, p, rng):
    return _by_word(s, p, rng, str.upper)


def _antspeak(s, p, rng):
    return _by_word(s, p, rng, lambda w: " ".join(w.upper()))


def _whitespace(s, p, rng):
    r, out, n = rng.random(len(s)), [], 0
    for c, ri in zip(s, r):
        if ri < p:
            n += 1
            if c == " ":
                continue          # remove a space
            out.append(" ")       # or insert one before the character
        out.append(c)
    return "".join(out), n


TEXT = {"drop": _drop, "insert": _insert, "substitute": _substitute, "swap": _swap,
        "repeat": _repeat, "randomcase": _randomcase, "uppercase": _uppercase,
        "antspeak": _antspeak, "whitespace": _whitespace}

# ---------------------------------------------------------------------------------------
# DNA perturbations: bytes -> (bytes, number of edits)
# ---------------------------------------------------------------------------------------

BASES = b"ACGT"
_COMPLEMENT = bytes.maketrans(b"ACGTRYKMBVDHNacgtrykmbvdhn", b"TGCAYRMKVBHDNtgcayrmkvbhdn")
MASK_RUN = 5  # mean length of a masked run


def _mutate(b, p, rng):
    a = np.frombuffer(b, dtype=np.uint8).copy()
    upper = a & 0xDF  # fold case
    is_base = np.isin(upper, np.frombuffer(BASES, np.uint8))
    hit = is_base & (rng.random(len(a)) < p)
    shift = rng.integers(1, 4, size=len(a))
    idx = np.searchsorted(np.frombuffer(b"ACGT", np.uint8), upper)
    new = np.frombuffer(BASES, np.uint8)[(idx + shift) % 4] | (a & 0x20)  # keep the case
    a[hit] = new[hit]
    return a.tobytes(), int(hit.sum())


def _indel(b, p, rng):
    r, kind = rng.random(len(b)), rng.random(len(b))
    picks = rng.integers(0, 4, size=len(b))
    out, n = bytearray(), 0
    for i, c in enumerate(b):
        if r[i] < p:
            n += 1
            if kind[i] < 0.5:
                continue                      # deletion
            out.append(c)
            out.append(BASES[picks[i]])       # insertion after it
        else:
            out.append(c)
    return bytes(out), n


def _mask(b, p, rng):
    # start a run at an unmasked position with probability q; runs average MASK_RUN, so the
    # masked fraction is MASK_RUN q / (MASK_RUN q + 1 - q) = p
    q = p / (MASK_RUN * (1 - p) + p)
    out, i, n = bytearray(b), 0, 0
    r = rng.random(len(b))
    runs = rng.geometric(1 / MASK_RUN, size=len(b))
    while i < len(b):
        if r[i] < q:
            k = min(int(runs[i]), len(b) - i)
            out[i:i + k] = b"N" * k
            i, n = i + k, n + k
        else:
            i += 1
    return bytes(out), n


def revcomp(b: bytes) -> bytes:
    return b.translate(_COMPLEMENT)[::-1]


def _revcomp(b, p, rng):
    """The last fraction p of the context (the part next to the continuation), reverse
    complemented; p = 1 is the whole context."""
    k = int(round(p * len(b)))
    if k == 0:
        return b, 0
    return b[:len(b) - k] + revcomp(b[len(b) - k:]), k


DNA = {"mutate": _mutate, "indel": _indel, "mask": _mask, "revcomp": _revcomp}
PERTURBATIONS = {**TEXT, **DNA}


def perturb_counted(name: str, data: bytes, rate: float, rng) -> tuple[bytes, int]:
    """(corrupted bytes, number of edits) of `data` under perturbation `name` at `rate`."""
    if rate == 0:
        return data, 0
    if name in DNA:
        return DNA[name](data, rate, rng)
    text = data.decode("utf-8", errors="surrogateescape")
    out, n = TEXT[name](text, rate, rng)
    return out.encode("utf-8", errors="surrogateescape"), n


def perturb(name: str, data: bytes, rate: float, seed: int = 0, index: int = 0) -> bytes:
    """Corrupt `data`, seeded by (seed, perturbation, rate, index)."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode()), round(rate * 1e6), index])
    return perturb_counted(name, data, rate, rng)[0]


def looks_like_dna(data: bytes) -> bool:
    return bool(data) and not set(data) - set(b"ACGTNRYKMSWBDHVacgtnrykmswbdhv\n")


# ---------------------------------------------------------------------------------------
# Windows and scoring
# ---------------------------------------------------------------------------------------


def _char_start(data: bytes, i: int) -> int:
    while i < len(data) and 0x80 <= data[i] < 0xC0:
        i += 1
    return i


def make_windows(val: bytes, n: int, context: int, continuation: int) -> list[tuple[bytes, bytes]]:
    """n evenly spaced (context, continuation) pairs of val, cut at character boundaries."""
    span = context + continuation
    if len(val) < span + 8:
        raise UserError(f"the val split has {len(val):,} bytes, a window needs {span:,} "
                        "(--context + --continuation); use smaller ones or a larger source")
    windows = []
    for start in np.linspace(0, len(val) - span - 4, n).astype(int):
        a = _char_start(val, int(start))
        m = _char_start(val, a + context)
        e = _char_start(val, m + continuation)
        windows.append((val[a:m], val[m:e]))
    return windows


@torch.no_grad()
def score(model, codec, pairs, max_len: int, device, batch_size: int) -> np.ndarray:
    """(n, 4) float64: context NLL (nats), context bytes scored, continuation NLL, its bytes.

    The sequence is [doc] + tokens(context) + tokens(continuation), the context cut on the left
    so that at most max_len tokens are fed."""
    seqs, cuts = [], []
    for ctx, cont in pairs:
        c_ids = np.asarray(codec.encode(cont), dtype=np.int64)
        room = max_len - len(c_ids)
        if room < 0:
            raise UserError(f"the continuation is {len(c_ids)} tokens, more than the model's "
                            f"{max_len}-token window; use a smaller --continuation")
        x_ids = np.asarray(codec.encode(ctx), dtype=np.int64)
        x_ids = x_ids[max(len(x_ids) - room, 0):]  # the most recent tokens that fit
        seqs.append(np.concatenate([[codec.specials.doc], x_ids, c_ids]))
        cuts.append(len(x_ids))
    out = np.zeros((len(pairs), 4))
    lengths = torch.from_numpy(codec.byte_lengths)
    for lo in range(0, len(seqs), batch_size):
        batch = seqs[lo:lo + batch_size]
        L = max(len(s) for s in batch) - 1
        ids = torch.full((len(batch), L + 1), codec.specials.pad, dtype=torch.int64)
        for r, s in enumerate(batch):
            ids[r, :len(s)] = torch.from_numpy(s)
        x, y = ids[:, :-1].to(device), ids[:, 1:]
        with autocast_for(torch.device(device)):
            logits = model(x)
        nll = F.cross_entropy(logits.float().flatten(0, 1), y.to(device).flatten(),
                              reduction="none").view_as(y).double().cpu()
        for r, s in enumerate(batch):
            k, n = cuts[lo + r], len(s) - 1
            out[lo + r] = (float(nll[r, :k].sum()), float(lengths[y[r, :k]].sum()),
                           float(nll[r, k:n].sum()), float(lengths[y[r, k:n]].sum()))
    return out


def _bpb(nll: float, nbytes: float) -> float:
    return nll / (math.log(2) * nbytes) if nbytes > 0 else float("nan")


def evaluate_checkpoint(ckpt: str, windows, perturbations, rates, args, device,
                        on_done=None, warn=print) -> list[dict]:
    from bytelm.infer.load import load_model

    model, codec, config = load_model(ckpt, device)
    max_len = args.max_len or config["train"]["seq_len"]
    clean = score(model, codec, windows, max_len, device, args.batch_size)
    cont_bytes = clean[:, 3].sum()
    clean_bpb = _bpb(clean[:, 2].sum(), cont_bytes)
    coverage = clean[:, 1].sum() / max(sum(len(c) for c, _ in windows), 1)
    if coverage < 0.99:
        warn(f"warning: {Path(ckpt).name} sees only {100 * coverage:.0f}% of the clean context "
             f"bytes in its {max_len}-token window; use --context + --continuation within it")
    results = []
    for name in perturbations:
        for rate in rates:
            corrupted, edits = [], 0
            for i, (ctx, cont) in enumerate(windows):
                rng = np.random.default_rng([args.seed, zlib.crc32(name.encode()),
                                             round(rate * 1e6), i])
                bad, n = perturb_counted(name, ctx, rate, rng)
                corrupted.append((bad, cont))
                edits += n
            changed = [i for i, (bad, _) in enumerate(corrupted) if bad != windows[i][0]]
            scores = clean.copy()
            if changed:
                scores[changed] = score(model, codec, [corrupted[i] for i in changed], max_len,
                                        device, args.batch_size)
            corrupt_bpb = _bpb(scores[:, 2].sum(), cont_bytes)
            results.append(dict(
                checkpoint=ckpt, name=Path(ckpt).name, model=config["model"]["arch"],
                tokenizer=config["codec"]["name"], perturbation=name, rate=rate,
                clean_bits_per_byte=clean_bpb, corrupt_bits_per_byte=corrupt_bpb,
                delta_bits_per_byte=corrupt_bpb - clean_bpb,
                corrupted_text_bits_per_byte=_bpb(scores[:, 0].sum(), scores[:, 1].sum()),
                clean_context_bits_per_byte=_bpb(clean[:, 0].sum(), clean[:, 1].sum()),
                edits_per_context_byte=edits / sum(len(c) for c, _ in windows),
                clean_context_coverage=coverage,
                windows_changed=len(changed), windows=len(windows),
                continuation_bytes=int(cont_bytes), max_len=max_len))
            if on_done:
                on_done()
    return results


# ---------------------------------------------------------------------------------------
# Report and entry points (wired by bytelm/cli.py as `bytelm robustness`)
# ---------------------------------------------------------------------------------------


def write_report(out: Path, results: list[dict], meta: dict) -> None:
    report.write_json(out / "results.json", {"meta": meta, "results": results})
    text = [f"# bytelm robustness: {meta['data']}", "",
            f"{meta['date']}, device {meta['device']}: {meta['windows']} val windows of "
            f"{meta['context']} context bytes (corrupted) + {meta['continuation']} continuation "
            f"bytes (scored clean), seed {meta['seed']}. All numbers in bits per original byte; "
            "delta = corrupt - clean (higher is worse). A model sees at most its training "
            "seq_len tokens: longer corrupted contexts are cut on the left.", ""]
    for ck in dict.fromkeys(r["name"] for r in results if r["clean_context_coverage"] < 0.99):
        cov = next(r["clean_context_coverage"] for r in results if r["name"] == ck)
        text += [f"**Warning**: {ck} sees only {100 * cov:.0f}% of the clean context in its "
                 "window; its deltas understate the effect of the context.", ""]
    text += summary_lines(results)
    header = ["checkpoint", "tokenizer", "rate", "clean", "corrupt", "delta",
              "corrupted text", "edits/byte"]
    for name in dict.fromkeys(r["perturbation"] for r in results):
        rows = [[r["name"], r["tokenizer"], f"{r['rate']:g}", f"{r['clean_bits_per_byte']:.4f}",
                 f"{r['corrupt_bits_per_byte']:.4f}", f"{r['delta_bits_per_byte']:+.4f}",
                 f"{r['corrupted_text_bits_per_byte']:.4f}", f"{r['edits_per_context_byte']:.4f}"]
                for r in results if r["perturbation"] == name]
        text += [f"## {name}", "", report.markdown_table(header, rows, "ll" + "r" * 6), "",
                 f"![{name}](degradation_{name}.png)", ""]
        series = []
        for ck in dict.fromkeys(r["checkpoint"] for r in results):
            pts = sorted((r["rate"], r["delta_bits_per_byte"]) for r in results
                         if r["checkpoint"] == ck and r["perturbation"] == name)
            label = next(r["name"] for r in results if r["checkpoint"] == ck)
            series.append({"label": label, "x": [p[0] for p in pts], "y": [p[1] for p in pts]})
        report.line_plot(out / f"degradation_{name}.png", series, f"{name} rate",
                         "continuation bits/byte: corrupt - clean",
                         f"{meta['data']}: degradation under {name}")
    report.write_text(out / "report.md", "\n".join(text))


def summary_lines(results: list[dict]) -> list[str]:
    """Markdown: delta bits/byte at the highest rate, one row per perturbation and one column
    per checkpoint, then the checkpoint that degraded least under each perturbation."""
    top = max((r["rate"] for r in results), default=0.0)
    at_top = [r for r in results if r["rate"] == top]
    if top == 0 or not at_top:
        return []
    names = list(dict.fromkeys(r["name"] for r in at_top))
    rows, lines = [], []
    for pert in dict.fromkeys(r["perturbation"] for r in at_top):
        delta = {r["name"]: r["delta_bits_per_byte"] for r in at_top if r["perturbation"] == pert}
        rows.append([pert] + [f"{delta[n]:+.4f}" if n in delta else "" for n in names])
        best, worst = min(delta, key=delta.get), max(delta, key=delta.get)
        lines.append(f"- **{pert}**: {best} degraded least ({delta[best]:+.4f}; "
                     f"worst {worst} {delta[worst]:+.4f}).")
    return ["## Summary", "",
            f"Delta (corrupt - clean continuation bits/byte) at rate {top:g}, per checkpoint:", "",
            report.markdown_table(["perturbation"] + names, rows, "l" + "r" * len(names)), "",
            *lines, ""]


def _parse_rates(text: str) -> list[float]:
    try:
        rates = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--rates {text!r}: use comma-separated numbers in [0, 1]") from None
    if not rates or any(not 0 <= r <= 1 for r in rates):
        raise UserError(f"--rates {text!r}: every rate must be in [0, 1]")
    return sorted(dict.fromkeys(rates))


def add_arguments(p) -> None:
    p.add_argument("ckpt", nargs="+", help="run directories (bytelm train / compare runs)")
    p.add_argument("--data", required=True, help="dna | text | PATH | hf:NAME[...]")
    p.add_argument("--perturb", default=None,
                   help=f"comma-separated; text: {', '.join(TEXT)}; dna: {', '.join(DNA)} "
                        "(default: all of the kind that fits the data)")
    p.add_argument("--rates", default="0,0.01,0.05,0.1,0.2")
    p.add_argument("--windows", type=int, default=64, help="val windows (default 64)")
    p.add_argument("--context", type=int, default=192, help="context bytes (default 192)")
    p.add_argument("--continuation", type=int, default=64,
                   help="continuation bytes (default 64)")
    p.add_argument("--max-len", type=int, default=None,
                   help="most tokens fed to a model (default: its training seq_len)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--keep-case", action="store_true")
    p.add_argument("--field", default=None)
    p.add_argument("--json", action="store_true", help="last line of stdout: one JSON object")


def main(args) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from bytelm.data import load_corpus
    from bytelm.train.config import resolve_device

    for name in ("windows", "context", "continuation", "batch_size", "max_len"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")
    rates = _parse_rates(args.rates)
    for ck in args.ckpt:
        if not (Path(ck) / "config.json").is_file():
            raise UserError(f"{ck}: not a checkpoint directory (no config.json); pass the "
                            "--out of a bytelm train run or DIR/runs/NAME of bytelm compare")
    device = resolve_device(args.device)
    corpus = load_corpus(args.data, tokenizer="byte", cache_dir=args.cache_dir,
                         keep_case=args.keep_case, field=args.field)
    val = corpus.split_bytes("val")
    if args.perturb:
        perturbations = list(dict.fromkeys(t.strip() for t in args.perturb.split(",")
                                           if t.strip()))
        bad = [t for t in perturbations if t not in PERTURBATIONS]
        if bad or not perturbations:
            raise UserError(f"--perturb: unknown {', '.join(bad) or '(empty)'}; use "
                            f"{', '.join(PERTURBATIONS)}")
    else:
        perturbations = list(DNA if looks_like_dna(val) else TEXT)
    windows = make_windows(val, args.windows, args.context, args.continuation)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(data=args.data, windows=len(windows), context=args.context,
                continuation=args.continuation, seed=args.seed, rates=rates,
                perturbations=perturbations, device=str(device),
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    results = []
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console) as progress:
        task = progress.add_task("robustness", total=len(args.ckpt) * len(perturbations)
                                 * len(rates))
        for ck in args.ckpt:
            progress.update(task, description=Path(ck).name)
            results += evaluate_checkpoint(ck, windows, perturbations, rates, args, device,
                                           on_done=lambda: progress.advance(task),
                                           warn=progress.console.print)
            write_report(out, results, meta)
    print(f"report: {out / 'report.md'}")
    if args.json:
        import json
        print(json.dumps({"out": str(out), "results": results}))


if __name__ == "__main__":
    sys.exit(report.run_command("bytelm robustness", add_arguments, main))
