"""The recipe study of docs/training.md: short runs that change one thing at a time.

    python scripts/recipe_study.py run base stdlib pos      # train + evaluate these variants, in turn
    python scripts/recipe_study.py table                    # markdown tables of every finished variant

Each variant is ``configs/study/base.yaml`` with the overrides below (written to
``configs/study/<variant>.yaml`` so that every run can be repeated with ``sparselens train``), trained
by ``sparselens train`` on one thread for the same number of tokens, then evaluated on the test split
of the twenty Python tasks (``runs/study/<variant>/tasks.json``).
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "configs" / "study" / "base.yaml"
RUNS = ROOT / "runs" / "study"
PAIRS = 64
SOLVED = 0.1

#: variant -> (what changes, overrides of the base config). Steps are set so every run sees the
#: same number of tokens (the base: 2000 steps x 16 x 128) or the same compute (4 layers).
VARIANTS: dict[str, tuple[str, dict]] = {
    "base": ("pygen corpus, 2 layers, d_model 128, no positions, no sink, batch 16, lr 1e-2, L0 1/8", {}),
    "stdlib": ("corpus: the standard library", {"data": {"source": "stdlib", "options": {}}}),
    "stdlib-stripped": ("corpus: the standard library without docstrings/comments",
                        {"data": {"source": "stdlib", "options": {"strip_docstrings": True}}}),
    "mix": ("corpus: pygen + stripped standard library",
            {"data": {"source": ["pygen", "stdlib"], "options": {"n_programs": 100000, "strip_docstrings": True}}}),
    "pos": ("learned positional embedding", {"model": {"positional_embedding_type": "learned"}}),
    "sink": ("attention sink", {"model": {"attn_sink": True}}),
    "4layers": ("4 layers at equal compute (half the steps)", {"model": {"n_layers": 4}, "n_steps": 1000}),
    "ctx64": ("n_ctx 64 at the same tokens per step (batch 32)", {"data": {"seq_len": 64}, "batch_size": 32}),
    "batch32": ("batch 32 (half the steps)", {"batch_size": 32, "n_steps": 1000}),
    "lr2e-2": ("lr 2e-2", {"lr": 0.02}),
    "lr5e-3": ("lr 5e-3", {"lr": 0.005}),
    "anneal80": ("L0 anneal ends at 80% of training (not 50%)", {"anneal_end": 0.8}),
    "dense": ("dense baseline (L0 = 1)", {"l0_target": 1.0}),
}


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def config_for(variant: str) -> Path:
    base = yaml.safe_load(BASE.read_text())
    cfg = merge(base, VARIANTS[variant][1])
    cfg["out_dir"] = f"runs/study/{variant}"
    path = ROOT / "configs" / "study" / f"{variant}.yaml"
    if variant != "base":
        path.write_text(f"# recipe study: {VARIANTS[variant][0]} (scripts/recipe_study.py)\n" + yaml.safe_dump(cfg, sort_keys=False))
    return path


def run(variant: str) -> None:
    path = config_for(variant)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = RUNS / variant
    resume = ["--resume"] if (out / "checkpoint.pt").exists() else []
    subprocess.run([sys.executable, "-m", "sparselens.cli", "train", "--config", str(path), "--no-progress", *resume],
                   check=True, env=env, cwd=ROOT)
    evaluate(variant)


def evaluate(variant: str) -> None:
    import torch

    from sparselens import HookedSparseTransformer
    from sparselens.tasks import list_tasks
    from sparselens.tasks.evaluate_cli import evaluate as evaluate_tasks

    torch.set_num_threads(1)
    model = HookedSparseTransformer.from_pretrained(str(RUNS / variant / "model"))
    results = evaluate_tasks(model, list_tasks("python"), PAIRS)
    (RUNS / variant / "tasks.json").write_text(json.dumps({t: {"loss": l, "acc": a} for t, (l, a) in results.items()}, indent=1))


def table() -> str:
    rows, per_task = [], {}
    for variant, (what, _) in VARIANTS.items():
        folder = RUNS / variant
        if not (folder / "tasks.json").exists():
            continue
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        evals = [r for r in records if r["event"] == "eval"]
        trains = [r for r in records if r["event"] == "train" and "seconds_per_step" in r]
        secs = sum(r["seconds_per_step"] for r in trains) / max(1, len(trains))
        tasks = json.loads((folder / "tasks.json").read_text())
        solved = [t for t, v in tasks.items() if v["loss"] <= SOLVED]
        losses = [v["loss"] for v in tasks.values() if not math.isnan(v["loss"])]
        rows.append(f"| {variant} | {what} | {records[-1].get('tokens', trains[-1]['tokens']) / 1e6:.1f}M | "
                    f"{secs:.2f} | {evals[-1]['val_loss']:.3f} | {len(solved)} | {sum(losses) / len(losses):.3f} |")
        per_task[variant] = tasks
    head = ("| variant | change from base | tokens | s/step (1 thread) | val loss | tasks solved (<= 0.1) | mean task loss |\n"
            "|---|---|---|---|---|---|---|\n")
    names = list(per_task)
    task_names = list(next(iter(per_task.values()))) if per_task else []
    grid = "| task | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
    for t in task_names:
        cells = [f"**{per_task[n][t]['loss']:.2f}**" if per_task[n][t]["loss"] <= SOLVED else f"{per_task[n][t]['loss']:.2f}" for n in names]
        grid += f"| {t} | " + " | ".join(cells) + " |\n"
    return head + "\n".join(rows) + "\n\n" + grid


if __name__ == "__main__":
    command, *variants = sys.argv[1:] or ["table"]
    if command == "run":
        for v in variants:
            if v not in VARIANTS:
                raise SystemExit(f"unknown variant {v!r}; one of {sorted(VARIANTS)}")
        for v in variants:
            run(v)
    elif command == "evaluate":
        for v in variants:
            evaluate(v)
    else:
        print(table())
