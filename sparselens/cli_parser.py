"""The argument parser of every ``sparselens`` command: defaults shown, examples kept, close names suggested.

``CommandParser`` is an ``argparse.ArgumentParser`` whose errors name the closest valid option or
choice (``unrecognized arguments: --tagets; did you mean '--targets'?``) and whose help keeps the
description's and examples' line breaks and appends ``(default: X)`` to every option that has one.
"""

from __future__ import annotations

import argparse
import re
from typing import Any, NoReturn, Optional

from sparselens.errors import closest_hint


class DefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps description and epilog as written; appends ``(default: X)`` where a default means something.

    Not for ``None``, ``False`` or suppressed defaults (nothing to show), nor where the help already
    says its default.
    """

    def _get_help_string(self, action: argparse.Action) -> Optional[str]:
        text = action.help or ""
        default = action.default
        if default in (None, False, argparse.SUPPRESS) or action.nargs == 0 or "default" in text.lower():
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


class CommandParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with :class:`DefaultsHelpFormatter` and errors that suggest the closest name."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def option_strings(self) -> list[str]:
        return [s for action in self._actions for s in action.option_strings]

    def error(self, message: str) -> NoReturn:
        unknown = re.match(r"unrecognized arguments: (.*)", message)
        if unknown:
            first = unknown.group(1).split()[0].split("=")[0]
            message += closest_hint(first, self.option_strings()) if first.startswith("-") else ""
        choice = re.match(r"argument (\S+): invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            valid = [c.strip().strip("'") for c in choice.group(3).split(",")]
            message += closest_hint(choice.group(2), valid)
        super().error(message)


def examples_epilog(examples: str) -> str:
    """The ``examples:`` section of a command's help from its module's ``EXAMPLES`` (one command per line)."""
    lines = [line.strip() for line in examples.strip().splitlines() if line.strip()]
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


__all__ = ["CommandParser", "DefaultsHelpFormatter", "examples_epilog"]
