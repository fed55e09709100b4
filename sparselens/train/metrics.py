"""Training metrics: validation statistics through hooks, the JSONL log and the plot of the curves.

Validation runs the model's own forward with two hooks (no second forward pass):

* ``blocks.{l}.hook_resid_post`` [batch pos d_model]: residual-stream kurtosis, per token over
  ``d_model`` (``E[(x - mean)^4] / var^2``, not excess), averaged over tokens.
* ``blocks.{l}.mlp.hook_post`` [batch pos d_mlp]: a neuron is dead when it is zero (after the
  activation and AbsTopK) on every validation token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import torch
from jaxtyping import Int
from torch import Tensor

from sparselens.files import save_figure_atomic
from sparselens.model.hooked_sparse_transformer import HookedSparseTransformer
from sparselens.train.sparsifier import WeightSparsifier

if TYPE_CHECKING:
    from sparselens.interventions.ablation import FwdHooks


@torch.no_grad()
def validation_stats(
    model: HookedSparseTransformer,
    batches: Iterable[Int[Tensor, "batch pos"]],
    sparsifier: WeightSparsifier,
    autocast: Any,
) -> dict[str, Any]:
    """Validation loss, dead neurons and kurtosis per layer, actual L0 per sparsified matrix.

    Args:
        model: the (unwrapped) model.
        batches: validation token batches on the model's device.
        sparsifier: gives the matrices whose nonzero fraction is reported.
        autocast: a context-manager factory (the trainer's autocast), called once per batch.

    Returns:
        A JSON-safe dict: ``val_loss``, ``kurtosis`` (list per layer), ``kurtosis_mean``,
        ``dead_neurons`` (list per layer), ``dead_neurons_total``, ``l0_actual`` ({name: fraction}),
        ``l0_actual_total`` (nonzero fraction over all sparsified entries).
    """
    cfg = model.cfg
    assert cfg.d_mlp is not None, "SparseTransformerConfig.__post_init__ sets d_mlp"
    device = model.embed.W_E.device
    kurtosis_sum = torch.zeros(cfg.n_layers, device=device)
    fired = torch.zeros(cfg.n_layers, cfg.d_mlp, dtype=torch.bool, device=device)
    loss_sum = torch.zeros((), device=device)
    n_tokens = 0

    def kurtosis_hook(resid: Tensor, hook: Any) -> None:
        x = resid.float()
        centred = x - x.mean(dim=-1, keepdim=True)
        var = centred.pow(2).mean(dim=-1)
        kurt = centred.pow(4).mean(dim=-1) / var.square().clamp_min(torch.finfo(torch.float32).tiny)
        kurtosis_sum[_layer(hook.name)] += kurt.sum()

    def neuron_hook(post: Tensor, hook: Any) -> None:
        fired[_layer(hook.name)] |= (post != 0).flatten(0, -2).any(dim=0)

    hooks: FwdHooks = [
        (lambda name: name.endswith(".hook_resid_post"), kurtosis_hook),
        (lambda name: name.endswith(".mlp.hook_post"), neuron_hook),
    ]
    n_resid_tokens = 0
    for tokens in batches:
        with autocast():
            loss = model.run_with_hooks(tokens, return_type="loss", fwd_hooks=hooks)
        n_pred = tokens.shape[0] * (tokens.shape[1] - 1)
        loss_sum += loss.float() * n_pred
        n_tokens += n_pred
        n_resid_tokens += tokens.numel()
    fractions = sparsifier.nonzero_fractions()
    sizes = torch.tensor([t.param.numel() for t in sparsifier.targets], dtype=torch.float32, device=fractions.device)
    packed = torch.cat(
        [
            (loss_sum / n_tokens).view(1),
            kurtosis_sum / n_resid_tokens,
            (~fired).sum(dim=1).float(),
            fractions.to(device),
            ((fractions * sizes).sum() / sizes.sum()).view(1).to(device),
        ]
    ).tolist()  # the one host sync of an evaluation
    n_layers, n_targets = cfg.n_layers, len(sparsifier.targets)
    kurtosis = packed[1 : 1 + n_layers]
    dead = [int(v) for v in packed[1 + n_layers : 1 + 2 * n_layers]]
    l0_values = packed[1 + 2 * n_layers : 1 + 2 * n_layers + n_targets]
    return {
        "val_loss": packed[0],
        "kurtosis": kurtosis,
        "kurtosis_mean": sum(kurtosis) / n_layers,
        "dead_neurons": dead,
        "dead_neurons_total": sum(dead),
        "l0_actual": {t.name: v for t, v in zip(sparsifier.targets, l0_values)},
        "l0_actual_total": packed[-1],
    }


def _layer(hook_name: str) -> int:
    return int(hook_name.split(".")[1])


class MetricsLog:
    """Append-only JSONL file of metric records, each a dict with ``event`` and ``step``.

    Attributes:
        sinks: where each record also goes (:mod:`sparselens.train.tracking`); the trainers open
            them for a run and close them at its end.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.sinks: list[Any] = []

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        for sink in self.sinks:
            sink.log(record)

    def close_sinks(self) -> None:
        for sink in self.sinks:
            sink.close()
        self.sinks = []

    def records(self) -> list[dict[str, Any]]:
        """Every record in the file (an empty list if there is none yet)."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (a resumed run rewrites them) and any half-written last line."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("step", 0) <= step:
                kept.append(line + "\n")
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(kept))
        tmp.replace(self.path)


def plot_metrics(records: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Plot loss, L0, learning rate, kurtosis and dead neurons against the step into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("event") == "train"]
    evals = [r for r in records if r.get("event") == "eval"]

    def series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
        rows = [r for r in rows if key in r]
        return [r["step"] for r in rows], [r[key] for r in rows]

    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    ax = axes[0, 0]
    ax.plot(*series(train, "train_loss"), label="train")
    ax.plot(*series(evals, "val_loss"), "o-", label="validation")
    ax.set_title("loss (nats/token)")
    ax.legend()
    ax = axes[0, 1]
    ax.plot(*series(train, "l0"), label="schedule")
    ax.plot(*series(evals, "l0_actual_total"), "o", label="actual (all sparsified entries)")
    ax.set_yscale("log")
    ax.set_title("L0 (nonzero fraction)")
    ax.legend()
    ax = axes[0, 2]
    ax.plot(*series(train, "lr"))
    ax.set_title("learning rate")
    eval_steps = [r["step"] for r in evals]
    for name, key, ax in (("kurtosis", "kurtosis", axes[1, 0]), ("dead neurons", "dead_neurons", axes[1, 1])):
        per_layer = [r[key] for r in evals]
        for layer in range(len(per_layer[0]) if per_layer else 0):
            ax.plot(eval_steps, [row[layer] for row in per_layer], "o-", label=f"layer {layer}")
        ax.set_title(f"residual-stream {name}" if key == "kurtosis" else "dead MLP neurons")
        if per_layer:
            ax.legend(fontsize="small")
    ax = axes[1, 2]
    for name in evals[-1]["l0_actual"] if evals else []:
        ax.plot(eval_steps, [r["l0_actual"][name] for r in evals], label=name)
    ax.set_yscale("log")
    ax.set_title("actual L0 per matrix")
    for a in axes.flat:
        a.set_xlabel("step")
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.07, top=0.91, wspace=0.22, hspace=0.32)
    save_figure_atomic(fig, path, dpi=90)
    plt.close(fig)
    return Path(path)
