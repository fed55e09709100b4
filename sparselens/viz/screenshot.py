"""PNG pictures of the HTML plots and pages, taken by headless Chromium (no network).

The plots are circuitsvis React components and the viewer a page of JavaScript, so a PNG needs a
browser: :func:`html_to_png` starts Debian's (or any) ``chromium`` headless on the page, with the
network off, waits for its scripts (``--virtual-time-budget``) and screenshots the window.

Examples:
    >>> html_to_png(Path("plot.html"), Path("plot.png"), width=1000, height=600)   # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Union

#: the executables tried in order; ``$SPARSELENS_CHROMIUM`` first when set
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def find_browser() -> str:
    """The headless browser to use, or a RuntimeError saying how to get one."""
    named = os.environ.get("SPARSELENS_CHROMIUM")
    for candidate in ((named,) if named else ()) + BROWSERS:
        found = shutil.which(candidate)
        if found:
            return found
    raise RuntimeError(
        "saving a plot as PNG needs a Chromium browser (it renders the plot's JavaScript): install one "
        "(Debian/Ubuntu: apt-get install -y chromium) or set SPARSELENS_CHROMIUM to its path; "
        ".save('plot.html') needs nothing"
    )


def html_to_png(page: Path, png: Union[str, Path], *, width: int = 1200, height: int = 800, budget_ms: int = 5000,
                timeout: float = 120.0) -> Path:
    """Screenshot the HTML file ``page`` at ``width x height`` pixels into ``png`` (parents created).

    Raises:
        RuntimeError: no browser, or the browser wrote no PNG (its output is in the message).
    """
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sparselens-chromium-") as profile:
        tmp = Path(profile) / "shot.png"
        cmd = [
            find_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-extensions", "--hide-scrollbars",
            "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>", f"--user-data-dir={profile}/user",
            f"--window-size={width},{height}", f"--virtual-time-budget={budget_ms}", f"--screenshot={tmp}",
            Path(page).resolve().as_uri(),
        ]
        env = dict(os.environ, XDG_CONFIG_HOME=f"{profile}/config", XDG_CACHE_HOME=f"{profile}/cache")
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, env=env)
        if not tmp.is_file() or tmp.read_bytes()[:8] != PNG_MAGIC:
            raise RuntimeError(f"the browser wrote no PNG of {page} (exit {done.returncode}): {done.stderr[-1500:]}")
        shutil.move(str(tmp), png)
    return png


__all__ = ["find_browser", "html_to_png"]
