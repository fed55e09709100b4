"""MkDocs hook: render the notebooks from the copies the test suite executed, instead of running them again.

``tests/test_notebook.py`` executes every notebook (and checks its outputs). With
``SPARSELENS_EXECUTED_NOTEBOOKS=1`` it also saves each executed notebook to :data:`EXECUTED_DIR`,
stamped with the SHA-256 of the source it ran; a docs build with the same variable set renders
those copies (mkdocs-jupyter's ``execute_ignore`` skips them) and refuses a missing or stale one.
Without the variable the docs build executes the notebooks itself. CI (``.ci/run``) sets it, so
each notebook runs once per CI run instead of twice.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parents[1]
#: where executed copies go; mkdocs.yml's ``execute_ignore`` names this folder's last part
EXECUTED_DIR = ROOT / "build" / "executed-notebooks"
ENV_VAR = "SPARSELENS_EXECUTED_NOTEBOOKS"
#: notebook metadata key holding the SHA-256 of the source notebook the copy was executed from
STAMP = "sparselens_source_sha256"


def enabled() -> bool:
    return os.environ.get(ENV_VAR, "") not in ("", "0")


def source_digest(source: Path) -> str:
    return hashlib.sha256(Path(source).read_bytes()).hexdigest()


def save_executed(nb: Any, source: Path) -> Path:
    """Write the executed notebook ``nb`` (an nbformat node) of ``source`` to :data:`EXECUTED_DIR`."""
    import nbformat

    nb.metadata[STAMP] = source_digest(source)
    EXECUTED_DIR.mkdir(parents=True, exist_ok=True)
    path = EXECUTED_DIR / Path(source).name
    tmp = path.with_suffix(".tmp")
    nbformat.write(nb, tmp)
    tmp.replace(path)
    return path


def executed_copy(source: Path) -> Path:
    """The executed copy of ``source``; raises if it is missing or was executed from another version."""
    import json

    path = EXECUTED_DIR / Path(source).name
    fix = (f"run `{ENV_VAR}=1 ./run test tests/test_notebook.py` first, or build without {ENV_VAR} "
           "to execute the notebooks during the build")
    if not path.is_file():
        raise PluginError(f"{ENV_VAR} is set but {path} does not exist: {fix}")
    stamp = json.loads(path.read_text()).get("metadata", {}).get(STAMP)
    if stamp != source_digest(source):
        raise PluginError(f"{path} was executed from another version of {source}: {fix}")
    return path


@event_priority(-100)  # after the plugins: mkdocs-jupyter has wrapped the notebook pages
def on_files(files: Any, config: Any) -> Any:
    """Point each notebook page at its executed copy."""
    if not enabled():
        return files
    for file in files:
        src = getattr(file, "abs_src_path", None)
        if src and src.endswith(".ipynb") and Path(src).parent.name == "notebooks":
            file.abs_src_path = str(executed_copy(Path(src)))
    return files
