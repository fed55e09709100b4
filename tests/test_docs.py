"""Every ```python block of README.md, docs/**/*.md and tutorials/**/*.md runs, as a reader would run it.

One test per markdown file: its python blocks run in order in one shared namespace (a later block may
use names an earlier block of the same file defined, as in a doctest session), in pytest's
``tmp_path`` as the working directory (files a block writes, such as ``circuit.json``, land there),
after ``torch.manual_seed(0)``. Models are the shipped ones (``sparse-pygen-2l-128``,
``dense-pygen-2l-128``), loaded by name.

A block that cannot run in CI says so on its FIRST line, in a comment the reader sees::

    # skip: needs a network (downloads openai/csp_yolo1)
    # skip: needs a GPU

Only those two reasons are accepted ("needs a network ..." or "needs a GPU ..."), so a slow block
cannot be skipped quietly: make it cheaper instead. Skipped blocks are reported as a
``DocBlockNotRun`` warning each (a file whose every block is skipped is reported as a skipped
test); a "needs a GPU" block does run where CUDA is available. A failing block fails its file's
test with the file, the block's line number, its code and the traceback (whose line numbers are
the markdown file's own).

Not collected: docs/METHOD.md and docs/DESIGN.md (copies of the spec), docs/api/ (mkdocstrings
stubs), and files with no python block.
"""

from __future__ import annotations

import os
import random
import re
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
EXCLUDED = {"docs/METHOD.md", "docs/DESIGN.md"}
EXCLUDED_DIRS = ("docs/api/",)
LANGUAGES = {"python", "py"}
SKIP_MARKER = re.compile(r"^#\s*skip:\s*(?P<reason>.*?)\s*$")
ALLOWED_SKIP_REASONS = ("needs a network", "needs a GPU")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


class DocBlockNotRun(UserWarning):
    """A documentation block marked ``# skip: <reason>`` was not run."""


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language, code (dedented by the fence's indentation) and the
    1-based line number of its first code line in the markdown file."""

    language: str
    code: str
    line: int

    @property
    def skip_reason(self) -> str | None:
        first = self.code.split("\n", 1)[0].strip()
        match = SKIP_MARKER.match(first)
        return match.group("reason") if match else None


def parse_blocks(text: str) -> list[Block]:
    """Every fenced code block of a markdown text, in order (CommonMark fences: three or more
    backticks or tildes, possibly indented, e.g. inside a list item; closed by a fence of the same
    character at least as long, with nothing after it; an unclosed block runs to the end)."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match or (match.group("fence")[0] == "`" and "`" in match.group("info")):
            i += 1
            continue
        indent, fence = len(match.group("indent").expandtabs(4)), match.group("fence")
        words = match.group("info").split()
        language = words[0].lower() if words else ""
        start = i + 1
        body: list[str] = []
        i += 1
        while i < len(lines):
            close = FENCE.match(lines[i])
            if close and close.group("fence")[0] == fence[0] and len(close.group("fence")) >= len(fence) \
                    and not close.group("info").strip():
                break
            line = lines[i].expandtabs(4)
            strip = min(indent, len(line) - len(line.lstrip(" ")))
            body.append(line[strip:])
            i += 1
        i += 1  # past the closing fence
        blocks.append(Block(language, "\n".join(body) + "\n", start + 1))
    return blocks


def python_blocks(text: str) -> list[Block]:
    return [b for b in parse_blocks(text) if b.language in LANGUAGES]


def doc_files() -> list[str]:
    """The markdown files whose python blocks are tested, relative to the repository root."""
    paths = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md")), *sorted((ROOT / "tutorials").glob("**/*.md"))]
    found = []
    for path in paths:
        rel = path.relative_to(ROOT).as_posix()
        if not path.is_file() or rel in EXCLUDED or rel.startswith(EXCLUDED_DIRS):
            continue
        if python_blocks(path.read_text(encoding="utf-8")):
            found.append(rel)
    return found


def _numbered(block: Block) -> str:
    return "\n".join(f"{block.line + k:5d} | {line}" for k, line in enumerate(block.code.rstrip("\n").split("\n")))


def _traceback_from(err: BaseException, filename: str) -> str:
    """The traceback from the block's own frame on (the collector's frames left out)."""
    tb = err.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(err), err, tb if tb is not None else err.__traceback__))


def run_blocks(path: Path, blocks: list[Block], namespace: dict) -> tuple[list[tuple[Block, str]], list[tuple[Block, float]]]:
    """Run ``blocks`` of ``path`` in order in ``namespace``; returns (skipped blocks with their
    reasons, blocks run with their seconds). A failing block raises ``pytest.fail`` naming it."""
    filename = str(path)
    rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else filename
    skipped, timings = [], []
    for block in blocks:
        reason = block.skip_reason
        if reason is not None:
            assert reason.startswith(ALLOWED_SKIP_REASONS), (
                f"{rel}:{block.line}: '# skip: {reason}': a block may only be skipped because it "
                f"{' or '.join(repr(r) for r in ALLOWED_SKIP_REASONS)}; make a slow block cheaper instead"
            )
            if not (reason.startswith("needs a GPU") and torch.cuda.is_available()):
                skipped.append((block, reason))
                continue
        # pad with blank lines so that tracebacks give the markdown file's line numbers
        code = compile("\n" * (block.line - 1) + block.code, filename, "exec")
        start, failure = time.perf_counter(), None
        try:
            exec(code, namespace)
        except Exception as err:  # any error of the block is the doc's failure
            failure = (f"{rel}:{block.line}: the python block starting at line {block.line} failed with "
                       f"{type(err).__name__}: {err}\n\n{_numbered(block)}\n\n{_traceback_from(err, filename)}")
        if failure is not None:  # outside the except clause, so the report does not chain the block's error
            pytest.fail(failure, pytrace=False)
        timings.append((block, time.perf_counter() - start))
    return skipped, timings


@pytest.fixture
def doc_session(tmp_path, monkeypatch):
    """cwd = tmp_path, seeded RNGs, hub libraries offline, the task registry restored afterwards, and
    torch on OMP_NUM_THREADS threads when that is set (tests/conftest.py pins two otherwise)."""
    monkeypatch.chdir(tmp_path)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    import sparselens.tasks  # a page may register a task: keep the registry as the other tests expect it

    monkeypatch.setattr(sparselens.tasks, "_REGISTRY", dict(sparselens.tasks._REGISTRY))
    threads = torch.get_num_threads()
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        torch.set_num_threads(max(1, int(os.environ["OMP_NUM_THREADS"])))
    random.seed(0)
    torch.manual_seed(0)
    yield tmp_path
    torch.set_num_threads(threads)


@pytest.mark.parametrize("rel", doc_files())
def test_doc_blocks_run(rel, doc_session):
    path = ROOT / rel
    blocks = python_blocks(path.read_text(encoding="utf-8"))
    skipped, timings = run_blocks(path, blocks, {"__name__": "__main__", "__file__": str(path)})
    for block, seconds in timings:
        print(f"{rel}:{block.line}: ran in {seconds:.1f} s")
    reasons = "; ".join(f"{rel}:{block.line}: {reason}" for block, reason in skipped)
    if skipped and not timings:
        pytest.skip(f"every python block is marked to skip: {reasons}")
    for block, reason in skipped:
        warnings.warn(f"{rel}:{block.line}: python block not run: {reason}", DocBlockNotRun, stacklevel=1)


# ------------------------------------------------------------------------------------------ the collector itself

SAMPLE = """\
# A page

```python
x = 1
```

Text, then a block in another language and one with no language:

```bash
echo not python
```

```
plain = "not python either"
```

```python
# skip: needs a network (downloads openai/csp_yolo1)
raise RuntimeError("never run")
```

1. A list item with an indented tilde fence, whose code contains a backtick fence:

   ~~~~python
   y = x + 1
   s = '''
   ```
   '''
   ~~~~

````python title="four backticks"
z = y * 2
````
"""


def test_parse_blocks():
    blocks = parse_blocks(SAMPLE)
    assert [b.language for b in blocks] == ["python", "bash", "", "python", "python", "python"]
    py = python_blocks(SAMPLE)
    assert [b.code for b in py] == ["x = 1\n", '# skip: needs a network (downloads openai/csp_yolo1)\nraise RuntimeError("never run")\n',
                                    "y = x + 1\ns = '''\n```\n'''\n", "z = y * 2\n"]
    lines = SAMPLE.splitlines()
    for block in blocks:  # line numbers are those of each block's first code line
        assert lines[block.line - 1].strip() == block.code.split("\n", 1)[0].strip()
    assert [b.skip_reason for b in py] == [None, "needs a network (downloads openai/csp_yolo1)", None, None]
    assert parse_blocks("```python\nunclosed = 1\n") == [Block("python", "unclosed = 1\n", 2)]


def test_run_blocks_shares_names_skips_and_reports_failures(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(SAMPLE)
    namespace: dict = {}
    skipped, timings = run_blocks(page, python_blocks(SAMPLE), namespace)
    assert namespace["z"] == 4 and [b.line for b, _ in skipped] == [18] and len(timings) == 3

    bad = "Intro\n\n```python\na = 1\nb = a / 0\n```\n"
    page.write_text(bad)
    with pytest.raises(pytest.fail.Exception) as failure:
        run_blocks(page, python_blocks(bad), {})
    message = str(failure.value)
    assert f"{page}:4:" in message and "ZeroDivisionError" in message
    assert "    5 | b = a / 0" in message and f'File "{page}", line 5' in message

    slow = "```python\n# skip: too slow\n```\n"
    with pytest.raises(AssertionError, match="may only be skipped"):
        run_blocks(page, python_blocks(slow), {})
