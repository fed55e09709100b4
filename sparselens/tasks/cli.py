"""``sparselens tasks``: list the registered tasks with one example pair each."""

from __future__ import annotations

import argparse
import shutil
import sys
import textwrap

from sparselens.tasks.base import PromptPair

#: shown under "examples:" in ``--help``
EXAMPLES = """
sparselens tasks
sparselens tasks --task single_double_quote
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", help="show only this task, with its full example prompts")
    parser.add_argument("--split", default="train", help="split to draw the examples from (default: train)")
    parser.add_argument("--seed", type=int, default=0, help="example seed (default: 0)")
    parser.add_argument("--tokenizer", help="directory of a saved tokenizer (default: the shipped one)")


def _last_line(prompt: str, target: str, width: int) -> str:
    """The prompt's last line with the target marked, e.g. ``for x⟨ in⟩``, clipped from the left."""
    line = prompt.rsplit("\n", 1)[-1].lstrip() + "⟨" + target.replace("\n", "⏎") + "⟩"
    return line if len(line) <= width else "…" + line[-(width - 1):]


def _full(pair: PromptPair) -> str:
    out = []
    for label, prompt, target, suffix in (("A", pair.prompt_a, pair.target_a, pair.suffix_a),
                                          ("B", pair.prompt_b, pair.target_b, pair.suffix_b)):
        out.append(f"--- prompt {label} (target {target!r}; the rest of the snippet after it) ---")
        out.append(f"{prompt}⟨{target}⟩{suffix}")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    from sparselens.data import load_tokenizer
    from sparselens.tasks import get_task, list_tasks

    tokenizer = load_tokenizer(args.tokenizer)
    names = [args.task] if args.task else list_tasks()
    width = max(60, shutil.get_terminal_size((120, 20)).columns)
    col = max(24, (width - 34) // 2)
    rows, failures = [], []
    for name in names:
        try:
            task = get_task(name, tokenizer=tokenizer)
            pair = task.example(split=args.split, seed=args.seed)
        except (KeyError, ValueError, RuntimeError) as exc:
            if args.task:
                print(f"sparselens tasks: {exc}", file=sys.stderr)
                return 1
            failures.append(f"{name}: {exc}")
            continue
        if args.task:
            print(f"{name}: {task.description}\nsplits: {', '.join(task.splits)}; loss: {task.default_kind}\n")
            print(_full(pair))
            return 0
        rows.append((name, _last_line(pair.prompt_a, pair.target_a, col), _last_line(pair.prompt_b, pair.target_b, col)))
    print(f"{'task':<28}  {'prompt A ⟨target⟩':<{col}}  prompt B ⟨target⟩")
    print("-" * min(width, 30 + 2 * col + 2))
    for name, a, b in rows:
        print(f"{name:<28}  {a:<{col}}  {b}")
    for line in failures:
        print(textwrap.shorten(f"not available with this tokenizer: {line}", width))
    print(f"\n{len(rows)} tasks; `sparselens tasks --task NAME` shows a full example pair; "
          "`--tokenizer DIR` uses another saved tokenizer")
    return 0
