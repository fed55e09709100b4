"""The critique's findings measured on the shipped pair (issue 12, items 6-7): the faithfulness report
of plain, frozen-norm, stochastic and adversarial pruning, sparse and dense, over tasks and seeds.

Circuits are shared with ``sparselens compare`` (the same files under ``--compare``, reused when the
model, config and target match, pruned and saved at once otherwise), so running both prunes nothing
twice and an interrupted study resumes. Per task it evaluates (default checks, ``--pairs`` test pairs):
the sparse model's mean-ablation circuits for every seed, its frozen-norm, stochastic and adversarial
circuits and the dense model's mean and stochastic circuits for the first seed; and, on the first
``--controls`` tasks, the nonsense and shuffled-weights controls of the sparse mean circuit. It writes
``faithfulness_study.md`` (tables) and one report JSON per circuit.

    python scripts/faithfulness_study.py --max-tasks 5 --out results/faithfulness_study
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from sparselens.faithfulness.seeds import jaccard, node_set

#: name -> (model key, ablation the mask is learned with, freeze norms, seeds: "all" or "first")
VARIANTS = {
    "sparse, mean": ("sparse", "mean", False, "all"),
    "sparse, mean, frozen norms": ("sparse", "mean", True, "first"),
    "sparse, stochastic": ("sparse", "stochastic", False, "first"),
    "sparse, adversarial": ("sparse", "adversarial", False, "first"),
    "dense, mean": ("dense", "mean", False, "first"),
    "dense, stochastic": ("dense", "stochastic", False, "first"),
}
COLUMNS = [("nodes", "n_nodes"), ("edges", "n_edges"), ("loss", "loss_circuit"), ("faithful.", "faithfulness"),
           ("KL answer", "kl_answer"), ("argmax agr.", "argmax_agreement"), ("stoch. p95", "stochastic_uniform_loss_p95"),
           ("adv. loss", "adversarial_loss"), ("corr median", "node_corr_median"), ("repurposed", "repurposed"),
           ("attn JS max", "attention_js_max"), ("OOD loss model", "ood_loss_model"),
           ("OOD loss circuit", "ood_loss_circuit")]


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return str(v) if isinstance(v, int) else f"{v:.3g}"


def _row(report: Any, circuit: Any) -> dict[str, Any]:
    m = dict(report.metrics)
    m.update(n_nodes=circuit.n_nodes, n_edges=circuit.n_edges,
             repurposed=sum(bool(r.get("repurposed")) for r in report.nodes.values()))
    return m


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparse", default="sparse-pygen-2l-128")
    parser.add_argument("--dense", default="dense-pygen-2l-128")
    parser.add_argument("--tasks", default=None, help="comma-separated (default: those sparselens compare picks)")
    parser.add_argument("--max-tasks", type=int, default=5)
    parser.add_argument("--solve", type=float, default=0.11)
    parser.add_argument("--target", type=float, default=0.15)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=32, help="test pairs of every report")
    parser.add_argument("--controls", type=int, default=2, help="run the controls on this many tasks")
    parser.add_argument("--compare", default="results/compare", help="sparselens compare's --out (circuits shared)")
    parser.add_argument("--out", default="results/faithfulness_study")
    parser.add_argument("--reverse", action="store_true", help="take the tasks last first (next to a running compare)")
    parser.add_argument("--no-prune", default="", help="semicolon-separated variants evaluated only where their circuit "
                                                        "is already saved (e.g. 'sparse, adversarial' when time is short)")
    args = parser.parse_args()

    import sparselens.faithfulness as faithfulness
    from sparselens import HookedSparseTransformer
    from sparselens.faithfulness import FaithfulnessReport
    from sparselens.interventions import pretraining_means
    from sparselens.model.fingerprint import model_fingerprint
    from sparselens.prune import PruneConfig
    from sparselens.prune.compare import circuit_path, reusable_circuit, saved_or_pruned, select_tasks
    from sparselens.tasks import get_task

    models = {"sparse": HookedSparseTransformer.from_pretrained(args.sparse),
              "dense": HookedSparseTransformer.from_pretrained(args.dense)}
    means = {key: pretraining_means(m) for key, m in models.items()}
    fingerprints = {key: model_fingerprint(m) for key, m in models.items()}
    tasks, degenerate, _ = select_tasks(models, means, args)
    if not tasks:
        print("faithfulness_study: no non-degenerate task both models solve", file=sys.stderr)
        return 2
    seeds = [int(s) for s in args.seeds.split(",")]
    no_prune = {v.strip() for v in args.no_prune.split(";") if v.strip()}
    unknown = no_prune - set(VARIANTS)
    if unknown:
        print(f"faithfulness_study: unknown variant(s) {sorted(unknown)} in --no-prune; use {list(VARIANTS)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    runs = [(t, v, s) for t in (tasks[::-1] if args.reverse else tasks) for v, (_, _, _, which) in VARIANTS.items()
            for s in (seeds if which == "all" else seeds[:1])]
    rows: dict[tuple[str, str, int], dict[str, Any]] = {}
    node_sets: dict[tuple[str, int], set] = {}
    failures = []
    for task_name, variant, seed in tqdm(runs, desc="circuits evaluated", unit="circuit"):
        key, ablation, frozen, _ = VARIANTS[variant]
        model = models[key]
        task = get_task(task_name, tokenizer=model.tokenizer)
        config = PruneConfig(ablation=ablation, freeze_norms=frozen, seed=seed, steps=args.steps, batch_size=args.batch_size)
        saved_at = circuit_path(Path(args.compare), task_name, variant, seed)
        if variant in no_prune and reusable_circuit(saved_at, config, args.target, fingerprints[key]) is None:
            failures.append(f"{task_name}, {variant}, seed {seed}: not pruned (--no-prune)")
            continue
        circuit, _, error = saved_or_pruned(model, task, args.target, config, means[key], saved_at, fingerprints[key])
        if circuit is None:
            failures.append(f"{task_name}, {variant}, seed {seed}: {error}")
            continue
        path = out / "reports" / f"{task_name}-{variant.replace(', ', '-').replace(' ', '_')}-seed{seed}.json"
        report = FaithfulnessReport.load(path) if path.exists() else None
        if report is None or report.circuit.get("n_nodes") != circuit.n_nodes or report.n_pairs != args.pairs:
            report = faithfulness.evaluate(model, circuit, task, n_pairs=args.pairs, progress=False)
            report.save(path)
        rows[(task_name, variant, seed)] = _row(report, circuit)
        if "ood" in task.splits and "ood" not in report.checks:  # a report saved before the task had the split
            opath = path.with_name(path.stem + "-ood.json")
            if not opath.exists():
                faithfulness.evaluate(model, circuit, task, checks=["ood"], n_pairs=args.pairs, progress=False).save(opath)
            rows[(task_name, variant, seed)].update(FaithfulnessReport.load(opath).metrics)
        if variant == "sparse, mean":
            node_sets[(task_name, seed)] = set(node_set(circuit))
        if variant == "sparse, mean" and seed == seeds[0] and tasks.index(task_name) < args.controls:
            cpath = out / "reports" / f"{task_name}-controls-seed{seed}.json"
            if not cpath.exists():
                faithfulness.evaluate(model, circuit, task, checks=["controls"], n_pairs=args.pairs,
                                      progress=False).save(cpath)
            controls = FaithfulnessReport.load(cpath)
            rows[(task_name, "controls", seed)] = dict(controls.metrics, flags=controls.flags)
    print(f"report: {write(rows, node_sets, failures, tasks, degenerate, seeds, args, out)}")
    return 0


def write(rows: dict, node_sets: dict, failures: list[str], tasks: list[str], degenerate: list[str], seeds: list[int],
          args: Any, out: Path) -> Path:
    """faithfulness_study.md: per-task tables, the summaries over tasks, the seeds and the controls."""
    first = seeds[0]
    lines = ["# Faithfulness of circuits on the shipped pair", "",
             f"Made by `python scripts/faithfulness_study.py` ({len(tasks)} tasks: {', '.join(tasks)}; target "
             f"{args.target}; {args.steps} mask-learning steps of {args.batch_size} pairs; seeds {args.seeds} for the "
             f"sparse mean circuits, seed {first} otherwise; every report on {args.pairs} test pairs with the default "
             "checks). Losses are per pair; `repurposed` counts kept nodes whose activation in the circuit "
             "correlates below 0.5 with the model's.", ""]
    if degenerate:
        lines += [f"Skipped as degenerate (an empty circuit already reaches the target): {', '.join(degenerate)}.", ""]
    header = "| variant | " + " | ".join(c for c, _ in COLUMNS) + " |"
    for task in tasks:
        lines += [f"## {task}", "", header, "|---" * (len(COLUMNS) + 1) + "|"]
        for variant, (_, _, _, which) in VARIANTS.items():
            for seed in (seeds if which == "all" else seeds[:1]):
                row = rows.get((task, variant, seed))
                if row is not None:
                    name = f"{variant}, seed {seed}" if which == "all" else variant
                    lines.append(f"| {name} | " + " | ".join(_fmt(row.get(k)) for _, k in COLUMNS) + " |")
        lines.append("")
    lines += ["## Over tasks (seed %d; medians over tasks)" % first, "", header.replace("variant", "variant (tasks)"),
              "|---" * (len(COLUMNS) + 1) + "|"]
    for variant in VARIANTS:
        found = [rows[(t, variant, first)] for t in tasks if (t, variant, first) in rows]
        if found:
            cells = []
            for _, k in COLUMNS:
                values = [r[k] for r in found if isinstance(r.get(k), (int, float)) and not math.isnan(r[k])]
                cells.append(_fmt(statistics.median(values)) if values else "n/a")
            lines.append(f"| {variant} ({len(found)}) | " + " | ".join(cells) + " |")
    lines.append("")
    for sparse, dense in [("sparse, mean", "dense, mean"), ("sparse, stochastic", "dense, stochastic")]:
        ratios = [rows[(t, dense, first)]["n_edges"] / rows[(t, sparse, first)]["n_edges"] for t in tasks
                  if (t, dense, first) in rows and (t, sparse, first) in rows and rows[(t, sparse, first)]["n_edges"]]
        if ratios:
            geo = math.exp(statistics.fmean(math.log(r) for r in ratios))
            lines.append(f"- Dense / sparse edges with {sparse.split(', ')[1]} pruning: geometric mean **{geo:.2f}x** over "
                         f"{len(ratios)} tasks (range {min(ratios):.2f}x-{max(ratios):.2f}x).")
    lines += ["", "## Seeds (sparse, mean)", "", "| task | Jaccard of node sets, min / mean over seed pairs | nodes in every "
              "circuit | loss_circuit over seeds | adversarial loss over seeds | OOD loss over seeds |", "|---|---|---|---|---|---|"]
    for task in tasks:
        sets = [node_sets[(task, s)] for s in seeds if (task, s) in node_sets]
        if len(sets) < 2:
            continue
        pairs = [jaccard(a, b) for a, b in itertools.combinations(sets, 2)]
        core = set.intersection(*sets)
        losses = [rows[(task, "sparse, mean", s)]["loss_circuit"] for s in seeds if (task, "sparse, mean", s) in rows]
        adv = [rows[(task, "sparse, mean", s)]["adversarial_loss"] for s in seeds if (task, "sparse, mean", s) in rows]
        ood = [rows[(task, "sparse, mean", s)].get("ood_loss_circuit") for s in seeds if (task, "sparse, mean", s) in rows]
        lines.append(f"| {task} | {min(pairs):.2f} / {statistics.fmean(pairs):.2f} | {len(core)} of "
                     f"{statistics.fmean(len(s) for s in sets):.0f} (mean size) | {min(losses):.3f}-{max(losses):.3f} | "
                     f"{min(adv):.3f}-{max(adv):.3f} | "
                     + (f"{min(ood):.3f}-{max(ood):.3f} |" if None not in ood else "no ood split |"))
    controls = [(t, rows[(t, "controls", first)]) for t in tasks if (t, "controls", first) in rows]
    if controls:
        lines += ["", "## Controls (sparse, mean, seed %d)" % first, ""]
        for task, row in controls:
            metrics = ", ".join(f"{k} {_fmt(v)}" for k, v in row.items() if k != "flags")
            lines += [f"- **{task}**: {metrics}."] + [f"  - {flag}" for flag in row["flags"]]
    if failures:
        lines += ["", "## Runs that found no circuit", ""] + [f"- {f}" for f in failures]
    path = out / "faithfulness_study.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
