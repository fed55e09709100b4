"""A generator of simple, varied, valid Python programs: a pretraining corpus small models can learn.

The weight-sparse circuits paper trained on simple Python; the standard library is long,
docstring-heavy code that a 2-layer model on a CPU budget barely dents. This module writes
programs from a small grammar instead: modules of imports, constants, functions and classes whose
bodies assign, loop (``for``/``while``, ``range``/``enumerate``/``zip``/``.items()``), branch
(``if``/``elif``/``else``, conditional expressions), build literals (nested lists, dicts, sets,
tuples), use ``with`` (files and locks), ``try``/``except``, comprehensions, lambdas, f-strings and
string concatenation, swaps and unpacking, ``return``/``yield``. Variables carry a type in the
generator's scope, so a program uses them as Python code would: ``seen = set()`` is later
``seen.add(x)``, ``text = ""`` is later ``text += x``, ``rows = []`` is later ``rows.append(x)``,
a file opened from ``out_path`` is opened for writing. Each program draws its quoting habit
(mostly ``"``, mostly ``'``, or mixed) and its naming pools, and every program is checked with
:func:`ast.parse`.

It is a general program generator, not the task templates: it never produces a task prompt.
Every prompt of the twenty Python tasks (:mod:`sparselens.tasks.python_tasks`) starts, after
optional imports, with a ``def`` of a name from the tasks' verb x noun or predicate pools, or a
``class`` named from the tasks' class pool; the generator reserves exactly those names and never
defines them (:func:`reserved_names`), so no task prompt of any split can occur in the corpus.
``tests/test_pygen.py`` checks that by scanning a generated corpus for tens of thousands of task
prompts of every split.

Examples:
    >>> from sparselens.data.pygen import generate_program, generate_documents
    >>> print(generate_program(seed=3))            # one program, deterministic in the seed
    >>> ids, texts = generate_documents(1000)     # ids "pygen/0000000.py", ...
"""

from __future__ import annotations

import ast
import random
from functools import lru_cache
from typing import Callable, Optional

#: Bump when the generator's output changes (the corpus cache is keyed by the texts anyway).
GENERATOR_VERSION = 2

VERBS = ["load", "parse", "build", "update", "process", "render", "check", "compute", "collect", "find",
         "read", "write", "handle", "format", "merge", "split", "apply", "convert", "filter", "scan", "get",
         "make", "create", "fetch", "save", "send", "run", "start", "stop", "reset", "clean", "sort", "count",
         "group", "match", "resolve", "validate", "normalize", "encode", "decode", "emit", "flush", "join",
         "select", "register", "remove", "insert", "append", "extract", "prepare", "init", "close", "open",
         "print", "show", "draw", "walk", "visit", "add", "pop", "push", "take", "drop", "fill", "pack", "wrap"]
NOUNS = ["items", "config", "records", "rows", "names", "values", "tokens", "entries", "files", "lines",
         "nodes", "events", "users", "results", "chunks", "paths", "keys", "tasks", "jobs", "messages", "data",
         "table", "queue", "graph", "tree", "list", "map", "cache", "index", "header", "body", "page", "report",
         "row", "line", "word", "words", "text", "file", "node", "edge", "edges", "item", "score", "scores",
         "total", "counts", "matrix", "grid", "cells", "points", "point", "args", "options", "params", "state",
         "buffer", "stack", "frame", "frames", "parts", "pairs", "fields", "columns", "labels", "batch", "output",
         "input", "source", "target", "result", "value", "key", "name", "path", "url", "request", "response"]
ADJECTIVES = ["all", "new", "old", "next", "last", "first", "raw", "clean", "empty", "valid", "max", "min",
              "local", "global", "default", "current", "final", "sorted", "unique", "total", "active", "hidden"]
CLASS_WORDS = ["Point", "Vector", "Matrix", "Graph", "Tree", "Stack", "Counter", "Timer", "Shape", "Circle",
               "Square", "Account", "Order", "Product", "Invoice", "Customer", "Student", "Course", "Book",
               "Library", "Player", "Game", "Board", "Card", "Deck", "Robot", "Sensor", "Device", "Engine",
               "Pipeline", "Stage", "Event", "Signal", "Channel", "Message", "Packet", "Frame", "Token", "Lexer",
               "Window", "Widget", "Button", "Layer", "Model", "Dataset", "Sample", "Batch", "Task", "Step",
               "Rule", "Filter", "Store", "Index", "Entry", "Item", "User", "Team", "Project", "File", "Folder"]
CLASS_SUFFIXES = ["", "", "", "Set", "List", "Map", "Info", "Spec", "Base", "Group", "Pool", "Table", "View"]
#: Identifier pools: a program draws its variables from these, independent of their types.
NAMES = ["result", "total", "out", "parts", "buf", "pending", "matches", "entries", "tmp", "acc", "cache",
         "rows", "stack", "queue", "count", "index", "state", "found", "current", "remaining", "seen", "values",
         "items", "names", "data", "text", "line", "lines", "words", "word", "value", "key", "keys", "node",
         "nodes", "item", "size", "length", "width", "height", "left", "right", "start", "end", "step", "pos",
         "offset", "limit", "level", "depth", "score", "best", "first", "last", "prev", "head", "tail", "name",
         "label", "message", "msg", "error", "status", "flag", "done", "ok", "mode", "path", "filename", "url",
         "output", "source", "target", "config", "options", "args", "params", "record", "records", "row",
         "column", "cell", "grid", "matrix", "pairs", "pair", "chunk", "chunks", "token", "tokens", "prefix",
         "suffix", "pattern", "number", "numbers", "counts", "scores", "visited", "queue", "todo", "collected",
         "keep", "res", "answer", "letters", "digits", "chars", "char", "lookup", "mapping", "table", "extra",
         "a", "b", "c", "x", "y", "z", "n", "m", "k", "s", "t", "d", "p", "q", "u", "v", "w", "obj", "elem"]
LOOP_VARS = ["i", "j", "k", "n", "x", "y", "item", "row", "line", "node", "value", "entry", "record", "child",
             "arg", "path", "name", "key", "token", "chunk", "obj", "part", "field", "event", "task", "word",
             "char", "c", "ch", "elem", "num", "point", "cell", "col", "idx", "pair", "user", "page", "f"]
INDEX_VARS = ["i", "j", "k", "n", "idx", "index", "pos", "count", "lineno", "step", "t", "num", "r", "c"]
WORDS = ["hello", "world", "done", "error", "ok", "yes", "no", "name", "value", "total", "count", "items",
         "missing", "unknown", "default", "ready", "failed", "invalid", "started", "finished", "empty", "saved",
         "loading", "skipping", "found", "result", "user", "admin", "guest", "red", "green", "blue", "apple",
         "banana", "cherry", "north", "south", "east", "west", "alpha", "beta", "gamma", "one", "two", "three",
         "left", "right", "up", "down", "start", "stop", "open", "closed", "high", "low", "true", "false",
         "data", "file", "path", "text", "line", "key", "id", "type", "size", "score", "level", "mode", "x", "y"]
READ_FILES = ["in_path", "input_path", "src_path", "source_path", "infile", "input_file", "config_file",
              "data_path", "template_file", "src", "input_name", "read_path"]
WRITE_FILES = ["out_path", "output_path", "dst_path", "dest_path", "outfile", "output_file", "report_file",
               "log_path", "save_path", "dst", "output_name", "write_path"]
READ_LITERALS = ["input.txt", "data.csv", "config.json", "words.txt", "notes.md", "settings.ini", "in.txt"]
WRITE_LITERALS = ["output.txt", "results.csv", "report.json", "log.txt", "summary.md", "out.txt", "dump.json"]
IMPORT_LINES = ["import os", "import sys", "import re", "import json", "import math", "import random",
                "import time", "import string", "import logging", "import itertools", "import functools",
                "import collections", "import copy", "import csv", "from collections import Counter",
                "from collections import defaultdict", "from collections import deque", "from typing import List",
                "from typing import Optional", "from typing import Dict", "from dataclasses import dataclass",
                "from pathlib import Path", "import threading", "from functools import reduce"]
EXCEPTIONS = ["ValueError", "KeyError", "TypeError", "IndexError", "RuntimeError", "OSError",
              "ZeroDivisionError", "AttributeError", "StopIteration", "FileNotFoundError"]
LOCKS = ["lock", "_lock", "mutex", "_mutex", "guard", "cond"]

#: Types the scope tracks; "any" stands for values the generator knows nothing about.
TYPES = ("int", "str", "list", "set", "dict", "bool", "any", "listlist")


@lru_cache(maxsize=1)
def reserved_names() -> frozenset[str]:
    """Function and class names the generator never defines: those that start every task prompt.

    Every prompt of :mod:`sparselens.tasks.python_tasks` begins (after optional import lines) with
    ``def <verb>_<noun>(`` from the tasks' ``VERBS`` x ``NOUNS``, ``def <is|has|...>_<...>(`` (the
    ``while_return_true`` predicates), or ``class <name>`` from the tasks' ``CLASSES``.
    """
    from sparselens.tasks import python_tasks as pt

    names = {f"{v}_{n}" for v in pt.VERBS for n in pt.NOUNS}
    names |= {f"{p}_{s}" for p in pt.PREDICATE_PREFIXES for s in pt.PREDICATE_SUFFIXES}
    names |= set(pt.CLASSES)
    return frozenset(names)


class _Scope:
    """Names visible at a point of the program, each with its type."""

    def __init__(self, parent: Optional["_Scope"] = None):
        self.vars: dict[str, str] = dict(parent.vars) if parent else {}
        self.recent: list[str] = list(parent.recent) if parent else []

    def of(self, type_: str) -> list[str]:
        return [n for n, t in self.vars.items() if t == type_]

    def bind(self, name: str, type_: str) -> None:
        """Assign ``name`` (it becomes the most recently assigned name)."""
        self.vars[name] = type_
        self.recent = [n for n in self.recent if n != name][-4:] + [name]


class _Program:
    """One program: its random state, quoting habit and name pools."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        style = rng.random()
        self.p_double = 0.92 if style < 0.45 else 0.08 if style < 0.8 else 0.5
        self.names = rng.sample(NAMES, 40)
        self.reserved = reserved_names()
        self.defined_functions: list[tuple[str, int]] = []  # (name, n_params) callable later

    # ------------------------------------------------------------------ small pieces
    def q(self) -> str:
        return '"' if self.rng.random() < self.p_double else "'"

    def string(self, words: int = 0) -> str:
        rng = self.rng
        n = words or rng.choice([1, 1, 1, 2, 2, 3])
        text = " ".join(rng.choice(WORDS) for _ in range(n))
        if rng.random() < 0.15:
            text += rng.choice([":", "!", ".", "?", ",", " -", "="])
        q = self.q()
        return f"{q}{text}{q}"

    def fresh(self, scope: _Scope, pool: Optional[list[str]] = None) -> str:
        """A name not yet in scope (or, rarely, one that is: reassignment is Python too)."""
        pool = pool or self.names
        free = [n for n in pool if n not in scope.vars]
        return self.rng.choice(free or pool)

    def func_name(self) -> str:
        rng = self.rng
        while True:
            form = rng.random()
            if form < 0.55:
                name = f"{rng.choice(VERBS)}_{rng.choice(NOUNS)}"
            elif form < 0.7:
                name = rng.choice(VERBS)
            elif form < 0.85:
                name = f"{rng.choice(VERBS)}_{rng.choice(ADJECTIVES)}_{rng.choice(NOUNS)}"
            else:
                name = f"{rng.choice(['is', 'has', 'can', 'should', 'contains', 'any', 'all'])}_{rng.choice(NOUNS + ADJECTIVES)}"
            if name not in self.reserved:
                return name

    def class_name(self) -> str:
        while True:
            name = self.rng.choice(CLASS_WORDS) + self.rng.choice(CLASS_SUFFIXES)
            if name not in self.reserved:
                return name

    def number(self) -> str:
        rng = self.rng
        return rng.choice([str(rng.randint(0, 10)), str(rng.randint(0, 100)), str(rng.choice([0, 1, 2, -1])),
                           f"{rng.randint(0, 9)}.{rng.randint(0, 9)}"])

    # ------------------------------------------------------------------ expressions by type
    def expr(self, scope: _Scope, type_: str, depth: int = 0) -> str:
        """An expression of ``type_`` built from literals and the variables in ``scope``."""
        rng = self.rng
        known = scope.of(type_)
        if known and rng.random() < 0.5:
            return rng.choice(known)
        if type_ == "int":
            ints, lists, strs = scope.of("int"), scope.of("list") + scope.of("listlist"), scope.of("str")
            options: list[Callable[[], str]] = [self.number]
            if ints and depth < 2:
                options.append(lambda: f"{rng.choice(ints)} {rng.choice(['+', '-', '*', '//', '%'])} {self.expr(scope, 'int', depth + 1)}")
            if lists:
                options.append(lambda: f"len({rng.choice(lists)})")
            if strs:
                options.append(lambda: f"len({rng.choice(strs)})")
            if lists and depth < 1:
                options.append(lambda: f"{rng.choice(['sum', 'max', 'min'])}({rng.choice(lists)})")
            return rng.choice(options)()
        if type_ == "str":
            strs, anys = scope.of("str"), scope.of("int") + scope.of("any")
            options = [self.string, self.string]
            if strs and depth < 2:
                options.append(lambda: f"{rng.choice(strs)}.{rng.choice(['strip()', 'lower()', 'upper()', 'title()'])}")
                options.append(lambda: f"{rng.choice(strs)} + {self.string()}")
            if anys:
                options.append(lambda: self.fstring(scope))
                options.append(lambda: f"{self.string()} + str({rng.choice(anys)})")
                options.append(lambda: f"str({rng.choice(anys)})")
            if scope.of("list"):
                q = self.q()
                options.append(lambda: f"{q}{rng.choice(['', ' ', ', ', '-', '/'])}{q}.join({rng.choice(scope.of('list'))})")
            return rng.choice(options)()
        if type_ == "list":
            lists, strs = scope.of("list"), scope.of("str")
            options = [lambda: "[]", lambda: self.list_literal(), lambda: self.list_literal()]
            if lists and depth < 2:
                xs = rng.choice(lists)
                v = rng.choice(LOOP_VARS)
                options.append(lambda: f"sorted({xs})")
                options.append(lambda: f"list({xs})")
                options.append(lambda: f"{xs}[{rng.choice(['1:', ':-1', ':2', '::2', '1:-1'])}]")
                options.append(lambda: f"[{v} {rng.choice(['* 2', '+ 1', '** 2'])} for {v} in {xs}]")
                options.append(lambda: f"[{v} for {v} in {xs} if {v}{rng.choice([' > 0', ' is not None', '', ' != 0'])}]")
                options.append(lambda: f"sorted({xs}, key=lambda {v}: {rng.choice([f'-{v}', f'{v}[0]', f'{v}[1]', f'abs({v})', f'len({v})'])})")
                options.append(lambda: f"list(map(lambda {v}: {v} * {rng.randint(2, 5)}, {xs}))")
            if strs:
                q = self.q()
                options.append(lambda: f"{rng.choice(strs)}.split({rng.choice(['', q + ',' + q, q + ' ' + q])})")
            options.append(lambda: f"list(range({self.expr(scope, 'int', depth + 1)}))")
            return rng.choice(options)()
        if type_ == "listlist":
            return self.nested_list()
        if type_ == "set":
            lists = scope.of("list")
            options = [lambda: "set()", lambda: "set()"]
            if lists:
                options.append(lambda: f"set({rng.choice(lists)})")
            options.append(lambda: "{" + ", ".join(self.number() for _ in range(rng.randint(1, 4))) + "}")
            return rng.choice(options)()
        if type_ == "dict":
            options = [lambda: "{}", lambda: "dict()", lambda: self.dict_literal()]
            lists = scope.of("list")
            if lists:
                v = rng.choice(LOOP_VARS)
                options.append(lambda: f"{{{v}: {rng.choice(['0', 'None', f'{v} * 2', 'True', f'str({v})'])} for {v} in {rng.choice(lists)}}}")
            return rng.choice(options)()
        if type_ == "bool":
            return self.condition(scope)
        return rng.choice(["None", self.number(), self.string(), "[]", "{}"])

    def fstring(self, scope: _Scope) -> str:
        rng = self.rng
        names = scope.of("int") + scope.of("str") + scope.of("any") or ["0"]
        q = self.q()
        parts = []
        for _ in range(rng.randint(1, 3)):
            word = rng.choice(WORDS)
            field = rng.choice(names)
            spec = rng.choice(["", "", "", "!r", ":>4", ":.2f", ":d"]) if field in scope.of("int") else rng.choice(["", "", "!r"])
            parts.append(rng.choice([f"{word} {{{field}{spec}}}", f"{word}={{{field}{spec}}}", f"{{{field}{spec}}} {word}"]))
        return f"f{q}{rng.choice([' ', ', ', ': '] if len(parts) > 1 else [' ']).join(parts)}{q}"

    def elem(self, kind: str) -> str:
        if kind == "num":
            return str(self.rng.randint(0, 99))
        if kind == "float":
            return f"{self.rng.randint(0, 9)}.{self.rng.randint(0, 9)}"
        if kind == "str":
            return self.string(1)
        return self.rng.choice(LOOP_VARS)

    def list_literal(self) -> str:
        kind = self.rng.choice(["num", "num", "str", "float", "name"])
        return "[" + ", ".join(self.elem(kind) for _ in range(self.rng.randint(1, 5))) + "]"

    def nested_list(self) -> str:
        rng = self.rng
        kind = rng.choice(["num", "num", "float", "name", "str"])
        width = rng.randint(1, 4)
        rows = []
        for _ in range(rng.randint(1, 4)):
            if rng.random() < 0.15:
                inner = ", ".join("[" + ", ".join(self.elem(kind) for _ in range(rng.randint(1, 3))) + "]"
                                  for _ in range(rng.randint(1, 2)))
                rows.append("[" + inner + "]")
            else:
                rows.append("[" + ", ".join(self.elem(kind) for _ in range(width)) + "]")
        return "[" + ", ".join(rows) + "]"

    def dict_literal(self) -> str:
        rng = self.rng
        kinds = rng.choice([("str", "num"), ("str", "str"), ("num", "str"), ("num", "num"), ("name", "name")])
        n = rng.randint(1, 4)
        return "{" + ", ".join(f"{self.elem(kinds[0])}: {self.elem(kinds[1])}" for _ in range(n)) + "}"

    def condition(self, scope: _Scope, subject: Optional[str] = None) -> str:
        """A boolean expression; about the most recently assigned name (or ``subject``) half the time."""
        rng = self.rng
        subject = subject or (scope.recent[-1] if scope.recent and rng.random() < 0.5 else None)
        if subject is not None and subject in scope.vars:
            type_ = scope.vars[subject]
            options_s = [f"{subject} is None", f"{subject} is not None", f"not {subject}", subject]
            if type_ == "int":
                options_s += [f"{subject} {rng.choice(['==', '!=', '<', '>', '>='])} {self.number()}"] * 3
            elif type_ == "str":
                options_s += [f"{subject} == {self.string(1)}", f"{subject}.startswith({self.string(1)})"]
            elif type_ in ("list", "set", "dict"):
                options_s += [f"len({subject}) > {rng.randint(0, 3)}", f"{rng.choice(LOOP_VARS)} in {subject}"]
            return rng.choice(options_s)
        ints, strs, lists = scope.of("int"), scope.of("str"), scope.of("list") + scope.of("set") + scope.of("dict")
        anys = scope.of("any") + strs + lists
        options: list[Callable[[], str]] = [lambda: rng.choice(["True", "False"])] if not (ints or anys) else []
        if ints:
            options.append(lambda: f"{rng.choice(ints)} {rng.choice(['==', '!=', '<', '>', '<=', '>='])} {self.expr(scope, 'int', 2)}")
            options.append(lambda: f"{rng.choice(ints)} % 2 == {rng.choice(['0', '1'])}")
        if anys:
            options.append(lambda: f"{rng.choice(anys)} is {rng.choice(['None', 'not None'])}")
            options.append(lambda: f"not {rng.choice(anys)}")
            options.append(lambda: rng.choice(anys))
        if lists:
            options.append(lambda: f"len({rng.choice(lists)}) {rng.choice(['>', '==', '<', '>='])} {rng.randint(0, 5)}")
            if ints or anys:
                options.append(lambda: f"{rng.choice(ints + scope.of('any') or ['0'])} {rng.choice(['in', 'not in'])} {rng.choice(lists)}")
        if strs:
            options.append(lambda: f"{rng.choice(strs)}.{rng.choice(['startswith', 'endswith'])}({self.string(1)})")
            options.append(lambda: f"{rng.choice(strs)} == {self.string(1)}")
        cond = rng.choice(options)()
        if rng.random() < 0.12 and len(options) > 1:
            cond = f"{cond} {rng.choice(['and', 'or'])} {rng.choice(options)()}"
        return cond

    # ------------------------------------------------------------------ statements
    def block(self, scope: _Scope, ind: str, depth: int, n: int, in_loop: bool = False, in_func: bool = True) -> list[str]:
        """``n`` statements (at least one line) at indentation ``ind``."""
        lines: list[str] = []
        for _ in range(n):
            lines += self.statement(scope, ind, depth, in_loop, in_func)
        return lines or [f"{ind}pass"]

    def statement(self, scope: _Scope, ind: str, depth: int, in_loop: bool, in_func: bool) -> list[str]:
        rng = self.rng
        simple = [
            (6, self.st_assign), (3, self.st_update), (2, self.st_call), (1, self.st_swap), (1, self.st_unpack),
            (1, self.st_ternary), (1, self.st_print), (1, self.st_lambda),
        ]
        if depth < 3:
            simple.append((2, self.st_accumulate))
        compound = [(4, self.st_for), (3, self.st_if), (1, self.st_while), (1, self.st_with), (1, self.st_try)]
        table = simple + (compound if depth < 3 else [])
        if in_loop:
            table = table + [(1, self.st_break)]
        weights = [w for w, _ in table]
        fn = rng.choices([f for _, f in table], weights)[0]
        return fn(scope, ind, depth, in_loop)

    def st_assign(self, scope: _Scope, ind: str, depth: int, in_loop: bool) -> list[str]:
        rng = self.rng
        type_ = rng.choices(["int", "str", "list", "set", "dict", "listlist", "bool"], [5, 5, 5, 2, 2, 1, 1])[0]
        name = self.fresh(scope)
        value = self.expr(scope, type_)
        scope.bind(name, type_)
        return [f"{ind}{name} = {value}"]

    def st_accumulate(self, scope: _Scope, ind: str, depth: int, in_loop: bool) -> list[str]:
        """The build-in-a-loop idiom: an empty container or zero, a loop, and the update its type takes."""
        rng = self.rng
        type_ = rng.choice(["list", "set", "str", "int", "dict"])
        acc = self.fresh(scope)
        init = {"list": "[]", "set": "set()", "str": self.q() * 2, "int": "0", "dict": "{}"}[type_]
        xs = rng.choice(scope.of("list") + scope.of("any") or [self.list_literal()])
        x = rng.choice(LOOP_VARS)
        lines = [f"{ind}{acc} = {init}"]
        if rng.random() < 0.3:
            lines += self.statement(scope, ind, depth + 1, in_loop, True)
        lines.append(f"{ind}for {x} in {xs}:")
        body = ind + "    "
        if rng.random() < 0.4:
            lines.append(f"{body}if {rng.choice([x, f'{x} is not None', f'not {x}', f'{x} > 0', f'{x} not in {acc}' if type_ != 'int' else x])}:")
            body += "    "
        value = rng.choice([x, x, f"str({x})" if type_ == "str" else f"{x} * 2", f"{x}.strip()" if type_ == "str" else x])
        lines.append(body + {"list": f"{acc}.append({value})", "set": f"{acc}.add({value})", "str": f"{acc} += {value}",
                             "int": f"{acc} += {value}", "dict": f"{acc}[{x}] = {acc}.get({x}, 0) + 1"}[type_])
        scope.bind(acc, type_)
        return lines

    def st_update(self, scope: _Scope, ind: str, depth: int, in_loop: bool) -> list[str]:
        """Grow a container or accumulator the way its type is grown."""
        rng = self.rng
        kinds = [t for t in ("list", "set", "str", "int", "dict") if scope.of(t)]
        if not kinds:
            return self.st_assign(scope, ind, depth, in_loop)
        kind = rng.choice(kinds)
        var = rng.choice(scope.of(kind))
        val_any = rng.choice(scope.of("any") + scope.of("int") + scope.of("str") or [self.number()])
        if kind == "list":
            return [f"{ind}{var}.{rng.choice(['append', 'append', 'append', 'remove'])}({val_any})" if rng.random() < 0.85
                    else f"{ind}{var}.extend({self.expr(scope, 'list', 1)})"]
        if kind == "set":
            return [f"{ind}{var}.{rng.choice(['add', 'add', 'add', 'discard'])}({val_any})"]
        if kind == "str":
            return [f"{ind}{var} += {rng.choice([self.expr(scope, 'str', 1), val_any if val_any in scope.of('str') else self.string()])}"]
        if kind == "int":
            return [f"{ind}{var} {rng.choice(['+=', '+=', '-=', '*='])} {self.expr(scope, 'int', 1)}"]
        key = rng.choice(scope.of("str") + scope.of("any") + scope.of("int") or [self.string(1)])
        return [f"{ind}{var}[{key}] = {rng.choice([f'{var}.get({key}, 0) + 1', self.expr(scope, 'int', 1), self.expr(scope, 'str', 1)])}"]

    def st_call(self, scope: _Scope, ind: str, depth: int, in_loop: bool) -> list[str]:
        rng = self.rng
        if self.defined_functions and rng.random() < 0.6:
            name, n = rng.choice(self.defined_functions)
            args = [self.expr(scope, rng.choice(["int", "str", "list"]), 1) for _ in range(n)]
            call = f"{name}({', '.join(args)})"
            if rng.random() < 0.5:
                out = self.fresh(scope)
                scope.bind(out, "any")
                return [f"{ind}{out} = {call}"]
            return [f"{ind}{call}"]
        return self.st_update(scope, ind, depth, in_loop)

    def st_swap(self, scope: _Scope, ind: str, depth: int, in_loop: bool) -> list[str]:
        rng = self.rng
        same = [t for t in ("int", "str", "list", "any") if len(scope.of(t)) >= 2]
        if not same:
            return self.st_assign(scope, ind, depth, in_loop)
        a, b = rng.sample(scope.of(rng.choice(same)), 2)
        if rng.random() < 0.75:
            return [f"{ind}{a}, {b} = {b}, {a}"]
        return [f"{ind}{a}, {b} = {b}, {a} {rng.choice(['+', '%', '-'])} {b}"]

    def st_unpack(self, scope: _Scope, ind: str, depth: int, in_loop: bool) -> list[str]:
        rng = self.rng
        a, b = rng.sample([n for n in self.names if n not in scope.vars] or self.names, 2)
        src = rng.choice(scope.of("list") + scope.of("any") or ["(" + self.number() + ", " + self.number() + ")"])
        scope.vars[a] = scope.vars[b] = "any"
        if src.startswith("("):
            scope.vars[a] = scope.vars[b] = "int"
            return [f"{ind}{a}, {b} = {src[1:-1]}"]
        return [f"{ind}{a}, {b} = {src}[0], {src}[-1]" if rng.random() < 0.5 else f"{ind}{a}, *{b} = {src}"]

    def st_ternary(self, scope: _Scope, ind: str, depth: int, in_loop: bool) -> list[str]:
        rng = self.rng
        type_ = rng.choice(["int", "str"])
        name = self.fresh(scope)
        line = f"{ind}{name} = {self.expr(scope, type_, 1)} if {self.condition(scope)} else {self.expr(scope, type_, 1)}"
        scope.bind(name, type_)
        return [line]

    def st_print(self, scope: _Scope, ind: str, depth: int, in_loop: bool) -> list[str]:
        rng = self.rng
        what = rng.choice([self.fstring(scope), self.expr(scope, "str", 1), self.string(),
                           ", ".join(rng.sample(list(scope.vars) or ["0"], min(2, len(scope.vars) or 1)))])
        if rng.random() < 0.2:
            return [f"{ind}logging.{rng.choice(['info', 'debug', 'warning'])}({what})"]
        return [f"{ind}print({what})"]

    def st_lambda(self, scope: _Scope, ind: str, depth: int, in_loop: bool) -> list[str]:
        rng = self.rng
        name = rng.choice(["key", "fn", "func", "transform", "score", "double", "square", "inc", "getter", "pick"])
        v = rng.choice(LOOP_VARS)
        body = rng.choice([f"{v} * 2", f"{v} + 1", f"{v}[0]", f"-{v}", f"len({v})", f"{v}.{rng.choice(['name', 'size', 'value'])}",
                           f"{v} ** 2", f"str({v})", f"{v} % {rng.randint(2, 9)}"])
        scope.vars[name] = "func"
        return [f"{ind}{name} = lambda {v}: {body}"]

    def st_break(self, scope: _Scope, ind: str, depth: int, in_loop: bool) -> list[str]:
        return [f"{ind}if {self.condition(scope)}:", f"{ind}    {self.rng.choice(['break', 'continue'])}"]

    def st_for(self, scope: _Scope, ind: str, depth: int, in_loop: bool) -> list[str]:
        rng = self.rng
        inner = _Scope(scope)
        lists, dicts, strs = scope.of("list") + scope.of("listlist"), scope.of("dict"), scope.of("str")
        form = rng.random()
        xs = rng.choice(lists) if lists else self.list_literal()
        if form < 0.35:
            x = rng.choice(LOOP_VARS)
            head, inner.vars[x] = f"for {x} in {xs}:", "any"
        elif form < 0.5:
            i, x = rng.sample(INDEX_VARS, 1)[0], rng.choice(LOOP_VARS)
            if i == x:
                x = "item"
            head = f"for {i}, {x} in enumerate({xs}{rng.choice(['', '', ', 1', ', start=1'])}):"
            inner.vars[i], inner.vars[x] = "int", "any"
        elif form < 0.7:
            i = rng.choice(INDEX_VARS)
            bound = rng.choice([f"len({xs})", self.expr(scope, "int", 1), f"1, {self.expr(scope, 'int', 2)}",
                                f"0, len({xs}), {rng.randint(2, 3)}"])
            head, inner.vars[i] = f"for {i} in range({bound}):", "int"
        elif form < 0.8 and dicts:
            k, v = rng.sample(["k", "v", "key", "value", "name", "count", "item", "val"], 2)
            head = f"for {k}, {v} in {rng.choice(dicts)}.items():"
            inner.vars[k], inner.vars[v] = "any", "any"
        elif form < 0.88 and len(lists) >= 2:
            a, b = rng.sample(LOOP_VARS, 2)
            head = f"for {a}, {b} in zip({', '.join(rng.sample(lists, 2))}):"
            inner.vars[a] = inner.vars[b] = "any"
        elif strs:
            c = rng.choice(["c", "ch", "char", "letter"])
            head, inner.vars[c] = f"for {c} in {rng.choice(strs)}:", "str"
        else:
            x = rng.choice(LOOP_VARS)
            head, inner.vars[x] = f"for {x} in {xs}:", "any"
        body = self.block(inner, ind + "    ", depth + 1, rng.randint(1, 3), in_loop=True)
        self._merge(scope, inner)
        return [f"{ind}{head}"] + body

    def st_while(self, scope: _Scope, ind: str, depth: int, in_loop: bool) -> list[str]:
        rng = self.rng
        inner = _Scope(scope)
        form = rng.random()
        if form < 0.4:
            n = self.fresh(scope, INDEX_VARS)
            scope.vars[n] = inner.vars[n] = "int"
            lines = [f"{ind}{n} = {rng.choice(['0', '1'])}", f"{ind}while {n} {rng.choice(['<', '<='])} {self.expr(scope, 'int', 2)}:"]
            body = self.block(inner, ind + "    ", depth + 1, rng.randint(1, 2), in_loop=True)
            body.append(f"{ind}    {n} += {rng.choice(['1', '1', '2'])}")
        elif form < 0.6:
            node = rng.choice(["node", "current", "cur", "ptr", "item", "head"])
            scope.vars[node] = inner.vars[node] = "any"
            test = rng.choice([f"{node} is not None", node, node])
            lines = [f"{ind}{node} = {rng.choice(scope.of('any') or ['root', 'start', 'first'])}",
                     f"{ind}while {test}:"]
            body = self.block(inner, ind + "    ", depth + 1, rng.randint(1, 2), in_loop=True)
            body.append(f"{ind}    {node} = {node}.{rng.choice(['next', 'parent', 'left', 'right', 'child'])}")
        else:
            xs = rng.choice(scope.of("list") or [rng.choice(["queue", "stack", "pending", "todo", "frames"])])
            lines = [f"{ind}while {rng.choice([xs, xs, f'len({xs}) > 0', xs])}:"]
            x = rng.choice(LOOP_VARS)
            inner.vars[x] = "any"
            body = [f"{ind}    {x} = {xs}.pop({rng.choice(['', '0', '-1'])})"]
            body += self.block(inner, ind + "    ", depth + 1, rng.randint(1, 2), in_loop=True)
        self._merge(scope, inner)
        return lines + body

    def st_if(self, scope: _Scope, ind: str, depth: int, in_loop: bool) -> list[str]:
        rng = self.rng
        draw = rng.random()
        subject = (scope.recent[-1] if scope.recent and draw < 0.5 else
                   rng.choice(list(scope.vars)) if scope.vars and draw < 0.7 else None)
        lines = [f"{ind}if {self.condition(scope, subject)}:"]
        inner = _Scope(scope)
        lines += self.block(inner, ind + "    ", depth + 1, rng.randint(1, 2), in_loop)
        for _ in range(rng.choice([0, 0, 0, 1, 1, 2])):
            lines.append(f"{ind}elif {self.condition(scope, subject if rng.random() < 0.7 else None)}:")
            lines += self.block(_Scope(scope), ind + "    ", depth + 1, rng.randint(1, 2), in_loop)
        if rng.random() < 0.4:
            lines.append(f"{ind}else:")
            lines += self.block(_Scope(scope), ind + "    ", depth + 1, rng.randint(1, 2), in_loop)
        self._merge(scope, inner)
        return lines

    def st_with(self, scope: _Scope, ind: str, depth: int, in_loop: bool) -> list[str]:
        rng = self.rng
        inner = _Scope(scope)
        form = rng.random()
        fh = rng.choice(["f", "fh", "fp", "handle", "stream", "src", "out"])
        q = self.q()
        if form < 0.35:
            path = rng.choice(scope.of("path_r") + READ_FILES + [f"{q}{rng.choice(READ_LITERALS)}{q}"])
            mode = rng.choice(["", f", {q}r{q}", f", {q}r{q}", f", encoding={q}utf-8{q}", f", {q}rb{q}"])
            lines = [f"{ind}with open({path}{mode}) as {fh}:"]
            body_first = rng.choice([f"{ind}    {self.fresh(scope)} = {fh}.read()", f"{ind}    for line in {fh}:\n{ind}        print(line.strip())",
                                     f"{ind}    {self.fresh(scope)} = {fh}.readlines()", f"{ind}    {self.fresh(scope)} = json.load({fh})"])
        elif form < 0.7:
            path = rng.choice(scope.of("path_w") + WRITE_FILES + [f"{q}{rng.choice(WRITE_LITERALS)}{q}"])
            mode = rng.choice(["w", "w", "a", "wb"])
            lines = [f"{ind}with open({path}, {q}{mode}{q}) as {fh}:"]
            body_first = rng.choice([f"{ind}    {fh}.write({self.expr(scope, 'str', 1)})", f"{ind}    json.dump({rng.choice(list(scope.vars) or ['data'])}, {fh})",  # noqa: E501
                                     f"{ind}    print({self.expr(scope, 'str', 1)}, file={fh})"])
        else:
            lock = rng.choice(LOCKS)
            lines = [f"{ind}with {rng.choice(['self.', '']) if self.in_method else ''}{lock}:"]
            body_first = None
        body = [body_first] if body_first else []
        body += self.block(inner, ind + "    ", depth + 1, rng.randint(0 if body else 1, 2), in_loop)
        self._merge(scope, inner)
        return lines + body

    def st_try(self, scope: _Scope, ind: str, depth: int, in_loop: bool) -> list[str]:
        rng = self.rng
        lines = [f"{ind}try:"] + self.block(_Scope(scope), ind + "    ", depth + 1, rng.randint(1, 2), in_loop)
        exc = rng.choice(EXCEPTIONS)
        lines.append(f"{ind}except {exc}{rng.choice(['', ' as e', ' as err', ' as exc'])}:")
        lines += rng.choice([[f"{ind}    pass"], [f"{ind}    print({self.string()})"], self.block(_Scope(scope), ind + "    ", depth + 1, 1, in_loop)])  # noqa: E501
        if rng.random() < 0.2:
            lines += [f"{ind}finally:", f"{ind}    {rng.choice(['print(' + self.string() + ')', 'pass'])}"]
        return lines

    @staticmethod
    def _merge(scope: _Scope, inner: _Scope) -> None:
        """Names bound inside a block stay visible after it, as in Python."""
        for name, type_ in inner.vars.items():
            scope.vars.setdefault(name, type_)

    # ------------------------------------------------------------------ definitions
    in_method = False

    def params(self, scope: _Scope, n: int) -> str:
        """``n`` parameters; once one has a default, all later ones do (as Python requires)."""
        rng = self.rng
        out = []
        defaults_from = rng.choice([n, n, n, rng.randint(0, n)]) if n else 0
        for i, name in enumerate(rng.sample(self.names, n)):
            type_ = rng.choice(["int", "str", "list", "any", "any"])
            if name in READ_FILES or name in WRITE_FILES:
                type_ = "path"
            scope.vars[name] = type_
            if i >= defaults_from:
                default = {"int": self.number(), "str": self.string(1), "list": "None", "any": rng.choice(["None", "True", "False", "0"])}[type_]
                out.append(f"{name}={default}")
            else:
                out.append(name)
        if rng.random() < 0.15 and n:
            path = rng.choice(READ_FILES + WRITE_FILES)
            scope.vars[path] = "path_r" if path in READ_FILES else "path_w"
            out.insert(0, path)
        return ", ".join(out)

    def function(self, ind: str = "", method: bool = False, attrs: Optional[dict[str, str]] = None) -> list[str]:
        rng = self.rng
        scope = _Scope()
        for name, type_ in (attrs or {}).items():
            scope.vars[f"self.{name}"] = type_
        name = self.func_name()
        n = rng.choice([0, 1, 1, 2, 2, 3, 4])
        params = self.params(scope, n)
        sig = ", ".join(p for p in (["self"] if method else []) + ([params] if params else []))
        lines = []
        if method and rng.random() < 0.1:
            lines.append(f"{ind}@property")
            sig = "self"
        lines.append(f"{ind}def {name}({sig}):")
        body_ind = ind + "    "
        if rng.random() < 0.2:
            q = self.q() * 3
            lines.append(f"{body_ind}{q}{rng.choice(VERBS).capitalize()} the {rng.choice(NOUNS)}.{q}")
        self.in_method = method
        if name.startswith(("is_", "has_", "can_", "should_", "contains_", "any_", "all_")) and rng.random() < 0.8:
            lines += self.predicate_body(scope, body_ind)
        else:
            lines += self.block(scope, body_ind, 1, rng.randint(1, 5), in_func=True)
            ret = rng.random()
            if ret < 0.6:
                lines.append(f"{body_ind}return {rng.choice(list(scope.vars) + [self.expr(scope, 'int', 1)])}")
            elif ret < 0.7:
                lines.append(f"{body_ind}return {self.expr(scope, 'str', 1)} if {self.condition(scope)} else {self.expr(scope, 'str', 1)}")
        if not method:
            self.defined_functions.append((name, n))
        return lines

    def predicate_body(self, scope: _Scope, ind: str) -> list[str]:
        """A loop that returns early with one truth value and falls through to the other."""
        rng = self.rng
        early = rng.choice(["True", "False"])
        late = "False" if early == "True" else "True"
        xs = rng.choice(scope.of("list") + scope.of("any") or ["items"])
        x = rng.choice(LOOP_VARS)
        inner = _Scope(scope)
        inner.vars[x] = "any"
        if rng.random() < 0.6:
            lines = [f"{ind}for {x} in {xs}:"]
            step = []
        else:
            lines = [f"{ind}{x} = {xs}", f"{ind}while {x} is not None:"]
            step = [f"{ind}    {x} = {x}.{rng.choice(['next', 'parent', 'left', 'child'])}"]
        lines += [f"{ind}    if {self.condition(inner)}:", f"{ind}        return {early}"] + step
        return lines + [f"{ind}return {late}"]

    def klass(self) -> list[str]:
        rng = self.rng
        name = self.class_name()
        base = rng.choice(["", "", "", "(object)", f"({self.class_name()})", "(Exception)"])
        lines = []
        if rng.random() < 0.1:
            lines.append("@dataclass")
        lines.append(f"class {name}{base}:")
        if rng.random() < 0.2:
            q = self.q() * 3
            lines.append(f"    {q}A {rng.choice(NOUNS)} of {rng.choice(NOUNS)}.{q}")
        scope = _Scope()
        n = rng.randint(1, 4)
        params = self.params(scope, n)
        attrs = {}
        lines.append(f"    def __init__(self, {params}):" if params else "    def __init__(self):")
        if base not in ("", "(object)") and rng.random() < 0.5:
            lines.append("        super().__init__()")
        names = [p.split("=")[0] for p in params.split(", ")] if params else []
        if rng.random() < 0.35:
            rng.shuffle(names)
        for p in names:
            attr = p if rng.random() < 0.85 else f"_{p}"
            value = p if rng.random() < 0.85 else rng.choice([f"list({p})", f"{p} or []", f"str({p})", f"{p}.copy()"]) if scope.vars.get(p) == "list" else p  # noqa: E501
            lines.append(f"        self.{attr} = {value}")
            attrs[attr] = scope.vars.get(p, "any")
        for _ in range(rng.choice([0, 1, 1, 2])):
            attr = self.fresh(_Scope(), [a for a in self.names if a not in attrs] or self.names)
            type_ = rng.choice(["int", "list", "dict", "set", "str"])
            lines.append(f"        self.{attr} = {dict(int='0', list='[]', dict='{}', set='set()', str=self.q() * 2)[type_]}")
            attrs[attr] = type_
        for _ in range(rng.randint(1, 3)):
            lines.append("")
            lines += self.function("    ", method=True, attrs=attrs)
        if rng.random() < 0.25:
            first = next(iter(attrs), None)
            q = self.q()
            field = f"{{self.{first}!r}}" if first else ""
            lines += ["", "    def __repr__(self):", f"        return f{q}{name}({field}){q}"]
        self.in_method = False
        return lines

    def module(self) -> str:
        rng = self.rng
        parts: list[list[str]] = []
        if rng.random() < 0.1:
            q = self.q() * 3
            parts.append([f"{q}{rng.choice(VERBS).capitalize()} {rng.choice(NOUNS)} from {rng.choice(NOUNS)}.{q}"])
        n_imports = rng.choice([0, 0, 1, 1, 2, 3])
        if n_imports:
            parts.append(sorted(rng.sample(IMPORT_LINES, n_imports)))
        if rng.random() < 0.3:
            consts = [f"{rng.choice(['MAX', 'MIN', 'DEFAULT', 'BASE', 'NUM', 'TOTAL'])}_{rng.choice(['SIZE', 'COUNT', 'DEPTH', 'RETRIES', 'ITEMS', 'LEN'])} = {rng.randint(1, 100)}"]  # noqa: E501
            if rng.random() < 0.5:
                consts.append(f"{rng.choice(['NAME', 'PREFIX', 'SEP', 'LABEL', 'MODE'])} = {self.string(1)}")
            parts.append(consts)
        for _ in range(rng.choice([1, 1, 2, 2, 3])):
            parts.append(self.klass() if rng.random() < 0.3 else self.function())
        if rng.random() < 0.15 and self.defined_functions:
            name, n = self.defined_functions[-1]
            args = ", ".join(self.number() for _ in range(n))
            parts.append(['if __name__ == "__main__":' if self.p_double > 0.5 else "if __name__ == '__main__':", f"    {name}({args})"])
        return "\n\n\n".join("\n".join(p) for p in parts) + "\n"


def generator_fingerprint() -> str:
    """A hash of this generator's code and the reserved names: equal fingerprints, equal programs."""
    import hashlib
    from pathlib import Path

    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update("\n".join(sorted(reserved_names())).encode())
    return h.hexdigest()[:16]


def generate_program(seed: int) -> str:
    """One valid Python program, a pure function of ``seed`` (re-drawn until :func:`ast.parse` accepts it)."""
    for attempt in range(100):
        text = _Program(random.Random(f"pygen-{GENERATOR_VERSION}-{seed}-{attempt}")).module()
        try:
            ast.parse(text)
        except SyntaxError:
            continue
        return text
    raise RuntimeError(f"pygen: no valid program for seed {seed} in 100 attempts (a generator bug)")


def generate_documents(n_programs: int, seed: int = 0, progress: bool = False) -> tuple[list[str], list[str]]:
    """``n_programs`` programs as ``(ids, texts)``; ids are ``pygen/<seed>/<index>.py``."""
    from tqdm.auto import tqdm

    if n_programs < 1:
        raise ValueError(f"n_programs must be >= 1, got {n_programs}")
    ids, texts = [], []
    for i in tqdm(range(n_programs), desc="generating programs", unit="prog", disable=not progress):
        ids.append(f"pygen/{seed}/{i:07d}.py")
        texts.append(generate_program(seed * 10_000_000 + i))
    return ids, texts
