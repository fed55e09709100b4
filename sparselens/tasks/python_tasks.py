"""The weight-sparse circuits paper's twenty Python tasks, as generators of realistic snippets.

Each task builds pairs (A, B) that share all surrounding code (a module header, a function or
method, a few neutral statements, drawn at random) and differ only where the binary choice is
decided. ``target_a``/``target_b`` are the tokens that continue A/B; the ``suffix`` completes the
line. Where METHOD.md leaves the exact choice open, the task's docstring says what we chose.

Open-class targets (identifiers copied from the prompt) come from pools filtered to the names that
are single tokens for the tokenizer in use; a task fails at construction if fewer than
:data:`MIN_POOL` remain. Fixed targets (``" as"``, ``"]]"``, ...) must be single tokens.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Sequence

from sparselens.tasks.base import PromptPair, Task

#: Fewest single-token names an identifier-copying task needs.
MIN_POOL = 8

VERBS = ["load", "parse", "build", "update", "process", "render", "check", "compute", "collect", "find",
         "read", "write", "handle", "format", "merge", "split", "apply", "convert", "filter", "scan", "get", "make"]
NOUNS = ["items", "config", "records", "rows", "names", "values", "tokens", "entries", "files", "lines",
         "nodes", "events", "users", "results", "chunks", "paths", "keys", "tasks", "jobs", "messages", "data"]
CLASSES = ["Parser", "Config", "Node", "Record", "Cache", "Client", "Handler", "Buffer", "Queue", "Worker",
           "Session", "Reader", "Writer", "Manager", "Registry", "Tracker", "Loader", "Builder", "Server", "Job"]
ARGS = ["data", "items", "path", "name", "value", "config", "options", "size", "key", "node", "text",
        "limit", "source", "target", "mode", "timeout", "parent", "prefix", "offset", "callback"]
LOCALS = ["result", "total", "out", "parts", "buf", "pending", "matches", "entries", "tmp", "acc", "cache",
          "rows", "stack", "queue", "count", "index", "state", "found", "current", "remaining"]
HELPERS = ["len", "list", "sorted", "tuple", "normalize", "copy.copy", "os.fspath", "iter", "str"]
LOOP_VARS = ["item", "row", "line", "node", "value", "entry", "record", "child", "arg", "path", "name", "key",
             "token", "chunk", "x", "obj", "part", "field", "event", "task"]
ITERABLES = ["items", "rows", "lines", "nodes", "values", "data", "entries", "records", "args", "paths",
             "names", "keys", "tokens", "chunks", "parts", "fields"]
#: Identifiers that tasks copy as targets (filtered to single tokens per tokenizer).
NAME_POOL = ["name", "value", "data", "path", "size", "key", "item", "node", "line", "text", "mode", "msg",
             "obj", "result", "state", "source", "args", "file", "error", "event", "frame", "header", "context",
             "encoding", "first", "last", "start", "end", "pos", "match", "message", "option", "output", "conn",
             "sock", "server", "thread", "loop", "func", "code", "char", "block", "base", "count", "index",
             "parent", "config", "target", "label", "level", "width", "height", "left", "right", "prefix"]
WORDS = ["hello", "world", "done", "error", "not found", "ok", "missing value", "unknown", "default", "ready",
         "failed", "invalid input", "started", "timeout", "empty", "skipping", "saved", "loading data", "yes",
         "no", "connection closed", "bad request", "user", "admin", "running", "finished", "total"]
#: ``while_return_true``'s predicate names are ``<prefix>_<suffix>``.
PREDICATE_PREFIXES = ["is", "has", "contains", "can", "should"]
PREDICATE_SUFFIXES = ["valid", "match", "cycle", "key", "space", "items", "ready"]
IMPORTS = ["import os", "import sys", "import re", "import json", "import logging", "import copy",
           "from typing import Optional", "from collections import defaultdict", "import itertools"]


# ------------------------------------------------------------------------------------------ helpers
def _module_header(rng: random.Random) -> str:
    """Zero to three import lines and a blank line, or nothing."""
    n = rng.choice([0, 0, 1, 2, 3])
    return "\n".join(sorted(rng.sample(IMPORTS, n))) + "\n\n\n" if n else ""


def _statement(rng: random.Random, args: Sequence[str]) -> str:
    """A neutral one-line statement using one of ``args`` (no strings, loops, branches or sets)."""
    v, a = rng.choice(LOCALS), rng.choice(args)
    return rng.choice([f"{v} = []", f"{v} = {{}}", f"{v} = 0", f"{v} = None", f"{v} = len({a})",
                       f"{v} = {rng.choice(HELPERS)}({a})", f"{v} = {a}.copy()", f"{v} = {a}",
                       f"check({a})", f"{v} += 1"])


def _function(rng: random.Random, max_statements: int = 2) -> tuple[str, str, str]:
    """A module header, a function (or a method in a class) and some neutral statements.

    Returns:
        ``(text, indent, me)``: the text ends with a newline and ``indent``, where the body
        continues; ``me`` is ``"self."`` in a method and ``""`` in a function, to prefix names
        that are attributes in a method (``f"{me}_lock"``) and globals or locals in a function.
    """
    fn = f"{rng.choice(VERBS)}_{rng.choice(NOUNS)}"
    args = rng.sample(ARGS, rng.randint(1, 3))
    if rng.random() < 0.4:
        ind, me = " " * 8, "self."
        lines = [f"class {rng.choice(CLASSES)}:", f"    def {fn}(self, {', '.join(args)}):"]
    else:
        ind, me = " " * 4, ""
        lines = [f"def {fn}({', '.join(args)}):"]
    if rng.random() < 0.3:
        lines.append(f'{ind}"""{rng.choice(VERBS).capitalize()} the {rng.choice(NOUNS)}."""')
    lines += [ind + _statement(rng, args) for _ in range(rng.randint(0, max_statements))]
    return _module_header(rng) + "\n".join(lines) + "\n" + ind, ind, me


def _iterable(rng: random.Random, me: str) -> str:
    """Something to loop over: a local or argument, or an attribute in a method."""
    return rng.choice(ITERABLES + [f"{me}items", f"{me}_children", f"{me}tasks"])


def _names(task: str, tokenizer: Any, pool: Sequence[str] = NAME_POOL, space: str = " ") -> list[str]:
    """The names in ``pool`` for which ``space + name`` is one token; at least :data:`MIN_POOL`."""
    keep = [w for w in pool if len(tokenizer.encode(space + w, add_special_tokens=False)) == 1]
    if len(keep) < MIN_POOL:
        bad = [(space + w, tokenizer.convert_ids_to_tokens(tokenizer.encode(space + w, add_special_tokens=False)))
               for w in pool if w not in keep][:5]
        raise ValueError(
            f"task {task!r}: only {len(keep)} of {len(pool)} candidate target names are single tokens with this "
            f"tokenizer (need {MIN_POOL}); e.g. {bad}"
        )
    return keep


# -------------------------------------------------------------------------------------------- tasks
def single_double_quote(tokenizer: Any = None) -> Task:
    """Close a string with the quote that opened it: A opens with ``"`` -> ``"``, B with ``'`` -> ``'``.

    The string ends a line (an assignment, ``return``, a dict item or a default), so the closing quote
    is its own token in context (``")`` would be one token). ``split="ood"``: longer strings (3-5 of
    the phrases joined, where every other split has one), so the opening quote is further back.
    """

    def gen(rng: random.Random, split: str) -> PromptPair:
        head, ind, me = _function(rng)
        text = rng.choice(WORDS)
        if split == "ood":  # drawn after the other splits' draws: their prompts are unchanged
            text = " ".join([text, *rng.sample(WORDS, rng.randint(2, 4))])
        form = rng.choice(["{v} = {q}{t}", "return {q}{t}", "{v}[{k}] = {q}{t}", "{me}{v} = {q}{t}", "yield {q}{t}"])
        v, k = rng.choice(LOCALS), rng.choice(ARGS)
        a = head + form.format(v=v, k=k, q='"', t=text, me=me)
        b = head + form.format(v=v, k=k, q="'", t=text, me=me)
        return PromptPair(a, b, '"', "'", "\n", "\n")

    return Task("single_double_quote", gen, ['"', "'"], tokenizer, extra_splits=("ood",),
                description="close a string with its opening quote (ood: longer strings)")


def final_kwarg(tokenizer: Any = None) -> Task:
    """In a ``def`` line, the last parameter gets a default (``=``) if the earlier ones had defaults
    (A, ``c=None):``), else the signature closes (B, ``c):`` -> ``"):"``)."""

    def gen(rng: random.Random, split: str) -> PromptPair:
        header = _module_header(rng)
        fn = f"{rng.choice(VERBS)}_{rng.choice(NOUNS)}"
        names = rng.sample(ARGS, rng.randint(2, 4))
        defaults = [rng.choice(["None", "None", "0", "1", "True", "False", "10"]) for _ in names]
        first = "self, " if rng.random() < 0.4 else ""
        indent = "    " if first else ""
        cls = f"class {rng.choice(CLASSES)}:\n" if first else ""
        kw = ", ".join(f"{n}={d}" for n, d in zip(names[:-1], defaults))
        plain = ", ".join(names[:-1])
        a = f"{header}{cls}{indent}def {fn}({first}{kw}, {names[-1]}"
        b = f"{header}{cls}{indent}def {fn}({first}{plain}, {names[-1]}"
        return PromptPair(a, b, "=", "):", f"{defaults[-1]}):", "\n")

    return Task("final_kwarg", gen, ["=", "):"], tokenizer, description="'=' after earlier keyword args, else '):'")


def _set_or_string(name: str, tokenizer: Any, fixed_var: str | None) -> Task:
    def gen(rng: random.Random, split: str) -> PromptPair:
        head, ind, me = _function(rng, max_statements=1)
        varied = ["result", "out", "acc", "collected", "output", "found", "res", "keep", "parts", "buf"]
        # split "ood" of the fixed-name task: set_or_string's varied names (never `current`)
        var = rng.choice(varied) if (fixed_var is None or split == "ood") else fixed_var
        x, xs = rng.choice(LOOP_VARS), _iterable(rng, me)
        empty_str = rng.choice(['""', "''"])
        middle = rng.choice(["", f"{ind}{_statement(rng, [xs])}\n"])
        cond = rng.choice(["", f"if {x}:\n{ind}        ", f"if {x} is not None:\n{ind}        "])
        body = f"\n{middle}{ind}for {x} in {xs}:\n{ind}    {cond}{var}"
        a = f"{head}{var} = set(){body}"
        b = f"{head}{var} = {empty_str}{body}"
        return PromptPair(a, b, ".", " +=", f"add({x})\n", f" {x}\n")

    return Task(name, gen, [".", " +="], tokenizer, extra_splits=("ood",) if fixed_var else (), description=(
        f"'.add' vs '+=' from whether {'current' if fixed_var else 'the variable'} was set() or ''"))


def set_or_string(tokenizer: Any = None) -> Task:
    """Add to a collection in a loop: ``.`` (of ``.add``) if the variable was ``set()`` (A), ``" +="`` if
    it was ``""`` (B). The variable name varies (some names hint at the type; that is realistic)."""
    return _set_or_string("set_or_string", tokenizer, None)


def set_or_string_fixedvarname(tokenizer: Any = None) -> Task:
    """:func:`set_or_string` with the variable always named ``current``, so only the initialiser
    (``set()`` vs ``""``) decides. ``split="ood"`` uses :func:`set_or_string`'s varied names instead
    (prune here, test there: does the circuit generalise past the one name it saw?)."""
    return _set_or_string("set_or_string_fixedvarname", tokenizer, "current")


def class_init(tokenizer: Any = None) -> Task:
    """In ``__init__``, ``self.x = x`` copies the attribute name: after ``self.<x> =`` the target is
    ``" <x>"``. A and B assign different parameters of the same signature."""
    tokenizer = _resolve(tokenizer)
    pool = _names("class_init", tokenizer)

    def gen(rng: random.Random, split: str) -> PromptPair:
        params = rng.sample(pool, rng.randint(2, 4))
        done = rng.randint(0, len(params) - 2)
        x, y = rng.sample(params[done:], 2)
        ind = " " * 8
        lines = [f"class {rng.choice(CLASSES)}{rng.choice(['', '(object)', '(Base)'])}:",
                 f"    def __init__(self, {', '.join(params)}):"]
        if rng.random() < 0.3:
            lines.append(f"{ind}super().__init__()")
        lines += [f"{ind}self.{p} = {p}" for p in params[:done]]
        head = _module_header(rng) + "\n".join(lines) + "\n" + ind
        return PromptPair(f"{head}self.{x} =", f"{head}self.{y} =", f" {x}", f" {y}", "\n", "\n")

    return Task("class_init", gen, [f" {p}" for p in pool], tokenizer, description="copy the name in self.x = x")


def with_as(tokenizer: Any = None) -> Task:
    """``with`` binds the value of context managers that return one: A opens a file
    (``with open(...)`` -> ``" as"``), B enters a lock (``with self._lock``; ``with _lock`` in a function) -> ``":"``."""

    def gen(rng: random.Random, split: str) -> PromptPair:
        head, ind, me = _function(rng)
        path = rng.choice(["path", "filename", f"{me}path", "fname", "config_path", "os.path.join(root, name)"])
        mode = rng.choice(["", ', "rb"', ", 'w'", ', encoding="utf-8"', ""])
        lock = rng.choice([f"{me}_lock", f"{me}lock", "lock", f"{me}_mutex", f"{me}_cond", "mutex"])
        return PromptPair(f"{head}with open({path}{mode})", f"{head}with {lock}", " as", ":",
                          f" {rng.choice(['f', 'fp', 'fh', 'stream'])}:\n", "\n")

    return Task("with_as", gen, [" as", ":"], tokenizer, description="' as' after with open(...), ':' after a lock")


def bracket_brace(tokenizer: Any = None) -> Task:
    """After an element inside a literal: ``:`` in a dict (A, ``{k: v, k2``), ``,`` in a list
    (B, ``[k, v, k2``). Elements are numbers or names."""

    def gen(rng: random.Random, split: str) -> PromptPair:
        head, ind, me = _function(rng)
        pool = rng.choice([[str(i) for i in range(100)], LOOP_VARS + ARGS])
        n = rng.randint(1, 3)
        elems = [rng.choice(pool) for _ in range(2 * n + 1)]
        pairs = ", ".join(f"{elems[2 * i]}: {elems[2 * i + 1]}" for i in range(n))
        flat = ", ".join(elems[: 2 * n])
        var = rng.choice(LOCALS + ["mapping", "table", "lookup", "options"])
        last = elems[-1]
        return PromptPair(f"{head}{var} = {{{pairs}, {last}", f"{head}{var} = [{flat}, {last}", ":", ",",
                          f" {rng.choice(pool)}}}\n", f" {rng.choice(pool)}]\n")

    return Task("bracket_brace", gen, [":", ","], tokenizer, description="':' inside a dict, ',' inside a list")


def with_open(tokenizer: Any = None) -> Task:
    """The mode of ``open`` from the file's name: ``"r"`` for an input-like name (A), ``"w"`` for an
    output-like name (B); the names are variables (``in_path``/``out_path``) or literals."""
    readers = ["in_path", "input_path", "src_path", "source_file", "infile", "input_file", "config_path",
               '"input.txt"', '"config.json"', "template_path", '"data.csv"', "{me}source"]
    writers = ["out_path", "output_path", "dst_path", "dest_file", "outfile", "output_file", "report_path",
               '"output.txt"', '"results.json"', "save_path", '"out.csv"', "{me}destination"]

    def gen(rng: random.Random, split: str) -> PromptPair:
        head, ind, me = _function(rng)
        q = rng.choice(['"', "'"])
        fh = rng.choice(["f", "fp", "fh", "stream"])
        src, dst = rng.choice(readers).format(me=me), rng.choice(writers).format(me=me)
        return PromptPair(f"{head}with open({src}, {q}", f"{head}with open({dst}, {q}",
                          "r", "w", f"{q}) as {fh}:\n", f"{q}) as {fh}:\n")

    return Task("with_open", gen, ["r", "w"], tokenizer, description="open(..., 'r') for inputs, 'w' for outputs")


def bracket_counting(tokenizer: Any = None) -> Task:
    """Close a list literal: ``"]]"`` when two lists are open (A, nested), ``"]"`` when one is (B, flat
    with the same elements)."""

    def gen(rng: random.Random, split: str) -> PromptPair:
        head, ind, me = _function(rng)
        pool = rng.choice([[str(i) for i in range(100)], LOOP_VARS, ["0.5", "1.0", "2.5", "0.1", "3.0"]])
        # split "ood": longer rows and more of them than any other split has (4-6 rows of 4-5), same answers
        rows, width = (rng.randint(4, 6), rng.randint(4, 5)) if split == "ood" else (rng.randint(1, 3), rng.randint(1, 3))
        elems = [[rng.choice(pool) for _ in range(width)] for _ in range(rows)]
        nested = ", ".join("[" + ", ".join(r) + "]" for r in elems[:-1])
        nested = (nested + ", " if nested else "") + "[" + ", ".join(elems[-1])
        flat = ", ".join(e for r in elems for e in r)
        var = rng.choice(LOCALS + ["matrix", "grid", "table", "pairs"])
        return PromptPair(f"{head}{var} = [{nested}", f"{head}{var} = [{flat}", "]]", "]", "\n", "\n")

    return Task("bracket_counting", gen, ["]]", "]"], tokenizer, extra_splits=("ood",),
                description="']]' when nested, ']' when flat (ood: longer and more rows)")


def for_while(tokenizer: Any = None) -> Task:
    """After a loop variable: ``" in"`` in a ``for`` loop (A), ``":"`` in a ``while`` loop (B)."""

    def gen(rng: random.Random, split: str) -> PromptPair:
        head, ind, me = _function(rng)
        x = rng.choice(["node", "queue", "stack", "pending", "todo", "line", "item", "current", "chunk", "data",
                        f"{me}running", "remaining", "frames", "child", "buf"])
        return PromptPair(f"{head}for {x}", f"{head}while {x}", " in", ":", f" {_iterable(rng, me)}:\n", "\n")

    return Task("for_while", gen, [" in", ":"], tokenizer, description="' in' after for x, ':' after while x")


def else_elif(tokenizer: Any = None) -> Task:
    """After an ``if`` block: ``else`` is followed by ``":"`` (A); ``elif`` by a condition, whose first
    token copies the variable tested by the ``if`` (B, ``" <x>"``)."""
    tokenizer = _resolve(tokenizer)
    pool = _names("else_elif", tokenizer)

    def gen(rng: random.Random, split: str) -> PromptPair:
        head, ind, me = _function(rng)
        x = rng.choice(pool)
        op, val = rng.choice([(" ==", " 0"), (" >", " 0"), (" is", " None"), (" <", " 10"), (" ==", " 1")])
        body = f"{rng.choice(LOCALS)} = {rng.choice(['None', '0', x, '[]', 'True'])}"
        block = f"if {x}{op}{val}:\n{ind}    {body}\n{ind}"
        return PromptPair(f"{head}{block}else", f"{head}{block}elif", ":", f" {x}", f"\n{ind}    pass\n", " is None:\n")

    return Task("else_elif", gen, [":"] + [f" {x}" for x in pool], tokenizer, description="':' after else, a condition after elif")


def fstring_brace(tokenizer: Any = None) -> Task:
    """Close what the name is inside: in an f-string replacement field ``}`` (A, ``f"found {count``),
    in the equivalent concatenation ``)`` (B, ``"found " + str(count``)."""

    def gen(rng: random.Random, split: str) -> PromptPair:
        head, ind, me = _function(rng)
        words = rng.choice(["found", "loaded", "total", "processing", "skipped", "read", "value of", "got"])
        after = rng.choice(["items", "rows", "files", "entries", "records", "bytes", "done"])
        x = rng.choice(LOCALS + ARGS)
        var = rng.choice(["msg", "message", "text", "line", "label", "summary"])
        q = rng.choice(['"', "'"])
        a = f"{head}{var} = f{q}{words} {{{x}"
        b = f"{head}{var} = {q}{words} {q} + str({x}"
        return PromptPair(a, b, "}", ")", f" {after}{q}\n", f" + {q} {after}{q}\n")

    return Task("fstring_brace", gen, ["}", ")"], tokenizer, description="'}' inside an f-string field, ')' in str(...)")


def if_ternary(tokenizer: Any = None) -> Task:
    """After a condition: ``" else"`` in a conditional expression (A, ``x = a if c``), ``":"`` in an
    ``if`` statement (B, ``if c``)."""

    def gen(rng: random.Random, split: str) -> PromptPair:
        head, ind, me = _function(rng)
        c = rng.choice(LOOP_VARS + ARGS)
        cond = rng.choice([c, f"not {c}", f"{c} is None", f"{c} is not None", f"{c} > 0", f"len({c}) > 1", f"{me}{c}"])
        val = rng.choice(["None", "0", "[]", c, "default", f"{me}default", "1"])
        lhs = rng.choice([f"{rng.choice(LOCALS)} = ", "return "])
        return PromptPair(f"{head}{lhs}{val} if {cond}", f"{head}if {cond}", " else", ":", f" {rng.choice(['None', '0', c])}\n", "\n")

    return Task("if_ternary", gen, [" else", ":"], tokenizer, description="' else' in a conditional expression, ':' after if")


def var_swap(tokenizer: Any = None) -> Task:
    """Complete a swap ``x, y = y, x``: after ``a, b = b,`` the target is ``" a"`` (A); B swaps the
    roles (``b, a = a,`` -> ``" b"``)."""
    tokenizer = _resolve(tokenizer)
    pool = _names("var_swap", tokenizer)

    def gen(rng: random.Random, split: str) -> PromptPair:
        head, ind, me = _function(rng)
        x, y = rng.sample(pool, 2)
        pre = rng.choice(["", f"if {x} > {y}:\n{ind}    ", f"if {y} < {x}:\n{ind}    "])
        return PromptPair(f"{head}{pre}{x}, {y} = {y},", f"{head}{pre}{y}, {x} = {x},", f" {x}", f" {y}", "\n", "\n")

    return Task("var_swap", gen, [f" {x}" for x in pool], tokenizer, description="copy x in x, y = y, x")


def indent_for(tokenizer: Any = None) -> Task:
    """The body of a ``for`` loop is indented one level deeper than the ``for``: after ``for ...:`` the
    next token is a newline plus that indentation. In A the loop sits in the function body; in B it
    sits one level deeper, inside an ``if``/``else``/``with``/``while`` block."""

    def gen(rng: random.Random, split: str) -> PromptPair:
        head, ind, me = _function(rng)
        loop = f"for {rng.choice(LOOP_VARS)} in {_iterable(rng, me)}:"
        opener = rng.choice(["if {a}:", "with {me}_lock:", "with open({a}) as f:", "while {a}:", "if {a} is not None:", "else:"])
        opener = opener.format(a=rng.choice(ARGS), me=me)
        if opener == "else:":
            opener = f"if {rng.choice(ARGS)}:\n{ind}    pass\n{ind}else:"
        deep = ind + "    "
        body = f"{rng.choice(LOCALS)}.append({rng.choice(LOOP_VARS)})"
        return PromptPair(f"{head}{loop}", f"{head}{opener}\n{deep}{loop}", "\n" + deep, "\n" + deep + "    ", body, body)

    targets = ["\n" + " " * n for n in (8, 12, 16)]
    if tokenizer is not None:
        _require_single_token_indents(tokenizer, targets)
    return Task("indent_for", gen, targets, tokenizer, description="indent the body of a for loop one level deeper")


def _require_single_token_indents(tokenizer: Any, targets: Sequence[str]) -> None:
    """``indent_for``'s targets are a newline plus indentation as ONE token; refuse, saying why, a
    tokenizer that splits them (the released ``tinypython_2k`` one never merges a newline with the
    indentation after it, so after ``for ...:`` A and B would both continue with the same newline)."""
    from sparselens.data.tokenizer_io import tokenizer_name

    for target in targets:
        ids = tokenizer.encode(target, add_special_tokens=False)
        if len(ids) != 1:
            name = tokenizer_name(tokenizer) or getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
            raise ValueError(
                f"task 'indent_for' cannot be built for the tokenizer {name!r}: it splits the target {target!r} "
                f"(a newline plus the loop body's indentation) into {len(ids)} tokens "
                f"{tokenizer.convert_ids_to_tokens(ids)}, and the task needs each target to be a single token. "
                "A tokenizer whose pre-tokenizer never merges a newline with the indentation after it (the "
                "released tinypython_2k one) has no such tokens: after `for ...:` both prompts would continue "
                "with the same newline, and the task would test nothing. Use a tokenizer with newline+indentation "
                "tokens, such as the shipped sparselens_python_2k."
            )


def lambda_func(tokenizer: Any = None) -> Task:
    """After a parameter name: ``":"`` in a ``lambda`` (A, ``key=lambda x``); after a function name:
    ``"("`` in a ``def`` (B, ``def key``)."""

    def gen(rng: random.Random, split: str) -> PromptPair:
        head, ind, me = _function(rng)
        fn = rng.choice(["key", "sort_key", "transform", "callback", "predicate", "score", "convert", "handler"])
        arg, xs, out = rng.choice(LOOP_VARS), _iterable(rng, me), rng.choice(LOCALS)
        body = f" {arg}.{rng.choice(['name', 'size', 'key'])}"
        a, close = rng.choice([(f"{fn} = lambda {arg}", ""), (f"{out} = sorted({xs}, key=lambda {arg}", ")"),
                               (f"{out} = map(lambda {arg}", f", {xs})")])
        return PromptPair(f"{head}{a}", f"{head}def {fn}", ":", "(", f"{body}{close}\n", f"{arg}):\n")

    return Task("lambda_func", gen, [":", "("], tokenizer, description="':' after lambda x, '(' after def f")


def if_equals(tokenizer: Any = None) -> Task:
    """Comparison vs assignment: ``" =="`` after ``if x``/``elif x``/``while x`` (A), ``" ="`` after a
    statement-initial ``x`` (B)."""

    def gen(rng: random.Random, split: str) -> PromptPair:
        head, ind, me = _function(rng)
        x = rng.choice(LOCALS + ARGS + [f"{me}{a}" for a in ARGS[:8]])
        kw = rng.choice(["if", "if", "elif", "while"])
        if kw == "elif":
            head += f"if {x} is None:\n{ind}    return\n{ind}"
        val = rng.choice(["0", "1", "None", "-1", f"{me}limit", "expected", "[]"])
        return PromptPair(f"{head}{kw} {x}", f"{head}{x}", " ==", " =", f" {val}:\n", f" {val}\n")

    return Task("if_equals", gen, [" ==", " ="], tokenizer, description="' ==' in a condition, ' =' in an assignment")


def enumerate_range(tokenizer: Any = None) -> Task:
    """Two loop variables (A, ``for i, x in``) -> ``" enumerate"``; one index (B, ``for i in``) -> ``" range"``."""

    def gen(rng: random.Random, split: str) -> PromptPair:
        head, ind, me = _function(rng)
        i = rng.choice(["i", "idx", "index", "n", "k", "j", "pos", "lineno"])
        x = rng.choice([v for v in LOOP_VARS if v != i])
        xs = _iterable(rng, me)
        return PromptPair(f"{head}for {i}, {x} in", f"{head}for {i} in", " enumerate", " range", f"({xs}):\n", f"(len({xs})):\n")

    return Task("enumerate_range", gen, [" enumerate", " range"], tokenizer, description="' enumerate' for i, x; ' range' for i")


def var_if(tokenizer: Any = None) -> Task:
    """Test the variable just assigned: after ``a = ...`` then ``b = ...``, ``if`` is followed by
    ``" b"`` (A); B assigns in the other order and expects ``" a"``."""
    tokenizer = _resolve(tokenizer)
    pool = _names("var_if", tokenizer)

    def gen(rng: random.Random, split: str) -> PromptPair:
        head, ind, me = _function(rng)
        x, y = rng.sample(pool, 2)
        exprs = ["{f}({a})", "{me}_{f}({a})", "{a}.get({k})", "re.match({k}, {a})", "{me}{a}", "next(iter({a}), None)"]

        def rhs() -> str:
            return rng.choice(exprs).format(f=rng.choice(["lookup", "find", "parse", "fetch", "resolve"]),
                                            a=rng.choice(ARGS), k=rng.choice(ARGS), me=me)

        ex, ey = rhs(), rhs()
        a = f"{head}{y} = {ey}\n{ind}{x} = {ex}\n{ind}if"
        b = f"{head}{x} = {ex}\n{ind}{y} = {ey}\n{ind}if"
        tail = rng.choice([":\n", " is None:\n", " is not None:\n"])
        return PromptPair(a, b, f" {x}", f" {y}", tail, tail)

    return Task("var_if", gen, [f" {x}" for x in pool], tokenizer, description="test the variable assigned just before")


def while_return_true(tokenizer: Any = None) -> Task:
    """A predicate whose loop returns early: if the loop does ``return True``, the final ``return`` is
    followed by ``" False"`` (A); if it does ``return False``, by ``" True"`` (B). The loop is a
    ``while`` (as the name says) or a ``for``. ``split="ood"``: the loop goes on for 2-4 more
    statements after the early return (every other split ends it there), so the ``return True`` /
    ``return False`` that decides is further back.
    """

    def gen(rng: random.Random, split: str) -> PromptPair:
        fn = f"{rng.choice(PREDICATE_PREFIXES)}_{rng.choice(PREDICATE_SUFFIXES)}"
        arg = rng.choice(ARGS)
        x = rng.choice(LOOP_VARS)
        cond = rng.choice([f"{x} == {arg}", f"{x} is None", f"not {x}", f"{x} in seen", f"{x}.startswith(prefix)"])
        if rng.random() < 0.6:
            loop = f"    {x} = {arg}\n    while {x} is not None:\n"
            step = f"\n        {x} = {x}.{rng.choice(['parent', 'next', 'child'])}"
        else:
            loop, step = f"    for {x} in {arg}:\n", ""
        head = f"{_module_header(rng)}def {fn}({arg}):\n{loop}        if {cond}:\n            return "
        if split == "ood":  # drawn after the other splits' draws: their prompts are unchanged
            extra = [f"        {x}.visited = True", "        count += 1", f"        seen.add({x})",
                     f"        log.debug({x})", f"        checked.append({x})", "        steps += 1"]
            step = "".join(f"\n{line}" for line in rng.sample(extra, rng.randint(2, 4))) + step
        rest = f"{step}\n    return"
        return PromptPair(f"{head}True{rest}", f"{head}False{rest}", " False", " True", "\n", "\n")

    return Task("while_return_true", gen, [" False", " True"], tokenizer, extra_splits=("ood",),
                description="after returning True in the loop, return False (ood: longer loops)")


def _resolve(tokenizer: Any) -> Any:
    """``tokenizer``, or the shipped one when None."""
    if tokenizer is None:
        from sparselens.data import load_tokenizer

        return load_tokenizer()
    return tokenizer


#: name -> factory(tokenizer) for the twenty tasks, in METHOD.md's order.
PYTHON_TASKS: dict[str, Callable[[Any], Task]] = {f.__name__: f for f in [
    single_double_quote, final_kwarg, set_or_string, set_or_string_fixedvarname, class_init, with_as,
    bracket_brace, with_open, bracket_counting, for_while, else_elif, fstring_brace, if_ternary, var_swap,
    indent_for, lambda_func, if_equals, enumerate_range, var_if, while_return_true,
]}
