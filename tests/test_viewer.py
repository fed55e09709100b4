"""The offline circuit viewer: viewer_data against the circuit (edges, residual links) and independent
forward passes, the self-contained page, the `sparselens view` CLI and its hostile inputs, and a real
headless Chromium (Debian's `chromium`) driving the page over the DevTools protocol with the network off."""

import html
import json
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from sparselens import HookedSparseTransformer, PruneConfig, prune
from sparselens.cli import main
from sparselens.interventions import ReferenceRun
from sparselens.viz.viewer import CircuitView, render_html, show_circuit, viewer_data, write_viewer

N_PROMPTS = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory, trained_on_quotes):
    """The shared trained 1-layer model (conftest), a mean-ablation circuit of it, and both saved to
    disk (model directory, circuit JSON)."""
    model, task, means = trained_on_quotes
    config = PruneConfig(ablation="mean", steps=15, batch_size=16, eval_pairs=32, k_coef=1e-3, lr=3e-2, seed=0)
    circuit = prune(model, task, 0.3, config, means=means, progress=False)
    assert 0 < circuit.n_nodes < model.node_registry.n_nodes
    root = tmp_path_factory.mktemp("viewer")
    model.save_pretrained(root / "model")
    circuit.save(root / "circuit.json")
    data = viewer_data(model, circuit, n_prompts=N_PROMPTS)
    return model, task, circuit, root, data


def test_viewer_data_holds_the_circuit(setup):
    model, _, circuit, _, data = setup
    names = circuit.node_names(model)
    assert list(data["nodes"]) == names and len(data["nodes"]) == circuit.n_nodes
    expected = [asdict(e) for e in circuit.edges(model)]
    assert len(data["edges"]) == len(expected) == circuit.n_edges
    for got, want in zip(data["edges"], expected, strict=True):
        assert (got["kind"], got["src"], got["dst"]) == (want["kind"], want["src"], want["dst"])
        assert got["weight"] == pytest.approx(want["weight"], rel=1e-3)
    for name, node in data["nodes"].items():  # each edge is listed at both of its ends
        assert all(data["edges"][i]["dst"] == name for i in node["in"])
        assert all(data["edges"][i]["src"] == name for i in node["out"])
        parsed = model.node_registry.node(name)
        assert (node["layer"], node["kind"], node["head"]) == (parsed.site.layer, parsed.site.kind.value, parsed.head)
    assert sum(len(n["in"]) for n in data["nodes"].values()) == sum(e["dst"] in data["nodes"] for e in data["edges"])
    # residual links are listed apart from the edges, each at both of its ends
    assert data["residual_links"] == [list(pair) for pair in circuit.residual_link_pairs(model)]
    assert len(data["residual_links"]) == circuit.residual_links > 0
    for name, node in data["nodes"].items():
        assert all(name in data["residual_links"][i] for i in node["links"])
    assert sum(len(n["links"]) for n in data["nodes"].values()) == 2 * circuit.residual_links
    # every edge end outside the blocks is a source (embedding, position, bigram) or a target
    outside = {end for e in data["edges"] for end in (e["src"], e["dst"])} - set(data["nodes"])
    assert {s["name"] for s in data["sources"]} == {end for end in outside if not end.startswith("unembed:")}
    assert {end for end in outside if end.startswith("unembed:")} <= {t["name"] for t in data["targets"]}
    assert all(str(s["id"]) in data["vocab"] for s in data["sources"] if s["kind"] != "pos")
    laid_out = [n for row in data["rows"] for group in row["groups"] for n in group["nodes"]]
    assert sorted(laid_out) == sorted(names)  # every node drawn exactly once
    for row in data["rows"]:
        if row["kind"] == "qkv":  # Q/K/V grouped by head
            for group in row["groups"]:
                assert {model.node_registry.node(n).head for n in group["nodes"]} == {int(group["label"].split()[1])}
    h = data["header"]
    assert (h["task"], h["n_nodes"], h["n_edges"], h["ablation"], h["freeze_norms"]) == (
        circuit.task, circuit.n_nodes, circuit.n_edges, "mean", False)
    assert h["losses"] == circuit.losses and h["edge_counts"] == circuit.edge_counts
    assert h["residual_links"] == circuit.residual_links and h["seed"] == circuit.seed
    assert {t["id"] for t in data["targets"]} == set(circuit.target_ids)
    assert len(data["prompts"]) == N_PROMPTS
    json.dumps(data, allow_nan=False)  # the page's payload is plain JSON


@pytest.mark.parametrize("ablation", ["mean", "resample"])
def test_viewer_activations_are_the_full_model_and_the_circuit(setup, ablation):
    model, task, circuit, _, data = setup
    if ablation == "resample":
        circuit = replace(circuit, ablation="resample", means=None)
        data = viewer_data(model, circuit, n_prompts=N_PROMPTS)
    batch = task.batch(n=N_PROMPTS // 2, split=circuit.loss_split, seed=0)
    _, full = model.run_with_cache(batch.tokens)
    captured = {}
    hooks = circuit.hooks(model, ReferenceRun.of(model, batch)) + [
        (site.hook_name, lambda act, hook: captured.__setitem__(hook.name, act.detach().clone())) for site in model.node_sites
    ]
    model.run_with_hooks(batch.tokens, fwd_hooks=hooks)
    repurposed = 0
    for name, node in data["nodes"].items():
        parsed = model.node_registry.node(name)
        for r, prompt in enumerate(data["prompts"]):
            n = int(batch.read_pos[r]) + 1
            assert prompt["ids"] == batch.tokens[r, :n].tolist()
            want_full = full[parsed.site.hook_name].flatten(2)[r, :n, parsed.index]
            want_circuit = captured[parsed.site.hook_name].flatten(2)[r, :n, parsed.index]
            torch.testing.assert_close(torch.tensor(node["act"]["full"][r]), want_full, rtol=1e-3, atol=1e-6)
            torch.testing.assert_close(torch.tensor(node["act"]["circuit"][r]), want_circuit, rtol=1e-3, atol=1e-6)
        differs = node["act"]["full"] != node["act"]["circuit"]
        if parsed.site.kind.value == "attn_in":  # layer 0 reads only the embedding: nothing upstream is ablated
            assert not differs and node["act"]["corr"] in (1.0, None)
        repurposed += differs
    # nodes downstream of ablated nodes (Q/K/V, the attention write, ...) see other inputs in the circuit
    assert repurposed > 0


def test_snippets_are_the_top_activations_over_the_corpus(setup):
    model, _, circuit, _, _ = setup
    corpus = torch.randint(0, 2047, (24, 40), generator=torch.Generator().manual_seed(0))
    nodes = circuit.node_mask(model).nodes()
    found = {name: node["snippets"] for name, node in
             viewer_data(model, circuit, n_prompts=2, corpus_tokens=corpus, n_snippets=3, corpus_rows=24)["nodes"].items()}
    _, cache = model.run_with_cache(corpus)
    for node in nodes:
        act = cache[node.site.hook_name].flatten(2)[..., node.index]  # [row, pos]
        best_per_row = act.abs().max(dim=1).values.sort(descending=True).values[:3]  # by |activation|, one per row
        snippets = found[node.name]
        assert len(snippets) == 3
        torch.testing.assert_close(torch.tensor([abs(s["value"]) for s in snippets]), best_per_row, rtol=1e-3, atol=1e-6)
        for s in snippets:  # the window is real corpus text around the peak token
            text = corpus.tolist()
            assert any(s["ids"] == row[i: i + len(s["ids"])] for row in text for i in range(len(row)))
            assert abs(s["acts"][s["peak"]]) == pytest.approx(max(abs(a) for a in s["acts"]), rel=1e-6)


def test_page_is_self_contained_and_shows_in_jupyter(setup, tmp_path):
    model, _, circuit, _, data = setup
    page = render_html(data)
    assert "<script src" not in page and "<link" not in page and "@import" not in page
    assert "cdn" not in page.lower() and "https://" not in page
    assert page.count("<script") == 2 and page.count("</script>") == 2
    view = show_circuit(model, circuit, n_prompts=N_PROMPTS)
    assert isinstance(view, CircuitView) and view.data["nodes"].keys() == data["nodes"].keys()
    srcdoc = re.fullmatch(r'<iframe srcdoc="([^"]*)"[^>]*></iframe>', view._repr_html_()).group(1)
    assert html.unescape(srcdoc) == view.html == page  # the whole page, attribute-escaped
    path = write_viewer(model, circuit, tmp_path / "sub" / "c.html", n_prompts=N_PROMPTS)
    assert path.read_text(encoding="utf-8") == page


def test_a_hostile_token_cannot_break_out_of_the_data_block(setup):
    data = json.loads(json.dumps(setup[4]))
    data["vocab"][str(data["prompts"][0]["ids"][1])] = "</script><script>alert(1)</script><!--"
    page = render_html(data)
    assert page.count("</script>") == 2
    block = re.search(r'id="sparselens-data">(.*?)</script>', page, re.S).group(1)
    assert json.loads(block) == data


def test_viewer_data_rejects_bad_selections(setup):
    model, _, circuit, _, _ = setup
    outside = next(n.name for n in model.node_registry.nodes() if n.name not in circuit.node_names(model))
    with pytest.raises(ValueError, match="not in this circuit"):
        viewer_data(model, circuit, selected=outside)
    with pytest.raises(KeyError, match="unknown node site"):
        viewer_data(model, circuit, selected="L0.nueron[1]")


# ------------------------------------------------------------------------------------------ CLI
def test_cli_writes_the_page(setup, tmp_path, capsys):
    model, _, circuit, root, _ = setup
    out = tmp_path / "page.html"
    selected = circuit.node_names(model)[-1]
    rc = main(["view", str(root / "circuit.json"), "--model", str(root / "model"), "-o", str(out),
               "--snippets", "0", "--prompts", "2", "--node", selected])
    assert rc == 0
    assert str(out.resolve()) in capsys.readouterr().out
    data = json.loads(re.search(r'id="sparselens-data">(.*?)</script>', out.read_text(encoding="utf-8"), re.S).group(1))
    assert data["selected"] == selected and len(data["nodes"]) == circuit.n_nodes and len(data["prompts"]) == 2
    assert data["faithfulness"] is None


def test_cli_colours_the_page_by_a_saved_report(setup, with_report, tmp_path, capsys):
    _, _, _, root, _ = setup
    report, _ = with_report
    saved = report.save(tmp_path / "report.json")  # what `sparselens faithfulness -o` writes next to its page
    out = tmp_path / "page.html"
    rc = main(["view", str(root / "circuit.json"), "--model", str(root / "model"), "-o", str(out), "--snippets", "0",
               "--prompts", "2", "--report", str(saved)])
    assert rc == 0
    data = json.loads(re.search(r'id="sparselens-data">(.*?)</script>', out.read_text(encoding="utf-8"), re.S).group(1))
    assert data["faithfulness"]["flags"] == report.flags and data["faithfulness"]["n_pairs"] == report.n_pairs
    assert {n for n, rec in data["nodes"].items() if rec["faith"] is not None} == set(report.nodes)
    other = tmp_path / "other.json"
    other.write_text(saved.read_text().replace(f'"n_nodes": {report.circuit["n_nodes"]}', '"n_nodes": 0', 1))
    assert main(["view", str(root / "circuit.json"), "--model", str(root / "model"), "-o", str(tmp_path / "x.html"),
                 "--snippets", "0", "--report", str(other)]) == 2
    assert "report is of another circuit" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing", "corrupt", "other_model", "bad_site", "bad_index", "not_in_circuit", "no_model"])
def test_cli_hostile_inputs(setup, tmp_path, capsys, case):
    model, _, circuit, root, _ = setup
    circuit_path, model_arg, extra = root / "circuit.json", str(root / "model"), []
    if case == "missing":
        circuit_path, expected = tmp_path / "nope.json", "no circuit file"
    elif case == "corrupt":
        circuit_path = tmp_path / "corrupt.json"
        circuit_path.write_text((root / "circuit.json").read_text()[:200])
        expected = "not valid JSON"
    elif case == "other_model":
        other = HookedSparseTransformer(tiny_config(n_layers=1, d_model=32, n_ctx=256, d_vocab=2048, seed=5),
                                        tokenizer=model.tokenizer)
        model_arg, expected = str(other.save_pretrained(tmp_path / "other")), "different model"
    elif case == "bad_site":
        extra, expected = ["--node", "L0.nueron[1]"], "did you mean 'L0.neuron'"
    elif case == "bad_index":
        extra, expected = ["--node", f"L0.neuron[{model.cfg.d_mlp}]"], f"has {model.cfg.d_mlp} nodes"
    elif case == "not_in_circuit":
        outside = next(n.name for n in model.node_registry.nodes() if n.name not in circuit.node_names(model))
        extra, expected = ["--node", outside], "not in this circuit"
    else:
        model_arg, expected = str(tmp_path / "no_such_model"), "cannot load the model"
    out = tmp_path / "page.html"
    rc = main(["view", str(circuit_path), "--model", model_arg, "-o", str(out), "--snippets", "0"] + extra)
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert err.startswith("sparselens view: error:") and expected in err and "Traceback" not in err


# ------------------------------------------------------------------------------- real browser
def _live_processes(pgid: int | None = None, names: Path | None = None, zombies: bool = False) -> list[int]:
    """Pids of the live processes (and with `zombies`, the dead ones not reaped yet) in process group
    `pgid` or whose command line names a path under `names` (Linux /proc)."""
    needle = f"{names}{os.sep}".encode() if names is not None else None
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if state in ("Z", "X") and not zombies:
            continue
        if (pgid is not None and int(pgrp) == pgid) or (needle is not None and needle in cmdline):
            found.append(int(entry.name))
    return found


class Browser:
    """Headless Chromium driven over the Chrome DevTools Protocol (one page, events recorded).

    Use it as a context manager: `with Browser(tmp_path) as browser: ...`. Chromium runs in a session
    and process group of its own, with its profile and config (hence its crashpad handlers, which
    leave that group) under a private directory of `workdir`; `close()` (run on leaving the `with`,
    and when starting fails part way) terminates and then kills all of that and waits until it is gone."""

    def __init__(self, workdir: Path, timeout: float = 20.0):
        try:
            import websocket
        except ImportError:
            pytest.fail("the viewer's browser test needs websocket-client: pip install -e '.[dev]'")
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if binary is None:
            pytest.fail("the viewer's browser test needs Debian's Chromium: run `apt-get install -y chromium`")
        self.root = Path(tempfile.mkdtemp(prefix="chromium-", dir=workdir))
        profile = self.root / "profile"
        self.log = self.root / "chromium.log"
        self.timeout, self.ws, self.next_id, self.events, self.closed = timeout, None, 0, [], False
        self._stderr = self.log.open("w")
        env = dict(os.environ, XDG_CONFIG_HOME=str(self.root / "config"), XDG_CACHE_HOME=str(self.root / "cache"))
        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-quic", "--disable-extensions",
             "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>", "--window-size=1400,900",
             f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr, env=env, start_new_session=True,
        )
        self.pgid = self.proc.pid  # start_new_session: chromium leads a new session and process group
        try:
            port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + timeout
            while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"chromium did not start its DevTools endpoint:\n{self.log.read_text()[-2000:]}")
                time.sleep(0.1)
            port, browser_path = port_file.read_text().splitlines()[:2]
            # websocket-client sends an Origin header, which Chromium (111+) rejects with 403 unless it is
            # allowed by --remote-allow-origins; a client without one (as CDP clients are) is accepted
            def connect(path):
                return websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=timeout, suppress_origin=True)

            self.ws = connect(browser_path)
            target = self.send("Target.createTarget", url="about:blank")["targetId"]
            browser, self.ws = self.ws, None
            browser.close()
            self.ws = connect(f"/devtools/page/{target}")
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.send(f"{domain}.enable")
            self.send("Network.emulateNetworkConditions", offline=True, latency=0, downloadThroughput=-1, uploadThroughput=-1)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str) -> dict:
        """The first unconsumed ``method`` event (it is consumed, so a second navigation waits for its own)."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(f"no {method} within {self.timeout}s")

    def js(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def mouse(self, selector: str, click: bool) -> None:
        """Scroll the element into view and move (and click) the real mouse at its centre."""
        box = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                      "e.scrollIntoView({block: 'center', inline: 'center'}); const r = e.getBoundingClientRect(); "
                      "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=box[0], y=box[1])
        if click:
            for kind in ("mousePressed", "mouseReleased"):
                self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions, failed requests and any request off the page's own file."""
        found = []
        for e in self.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(f"exception: {p['exceptionDetails']}")
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                found.append(f"console.{p['type']}: {p.get('args')}")
            elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
                found.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif method == "Network.loadingFailed":
                found.append(f"failed request: {p}")
            elif method == "Network.requestWillBeSent" and not p["request"]["url"].startswith(("file://", "data:", "about:")):
                found.append(f"network request: {p['request']['url']}")
        return found

    def leftovers(self) -> list[int]:
        """Live processes of this browser: its process group, and anything naming its directory."""
        return _live_processes(pgid=self.pgid, names=self.root)

    def _signal(self, sig: int, pids=()) -> None:
        for kill, target in [(os.killpg, self.pgid)] + [(os.kill, pid) for pid in pids]:
            try:
                kill(target, sig)
            except ProcessLookupError:
                pass

    def close(self, grace: float = 5.0) -> None:
        """Close the connection, SIGTERM Chromium's process group, SIGKILL whatever is left after `grace`
        seconds (the group, and the crashpad handlers that left it), and wait until all of it is gone
        (and, for a few seconds at most, until init has reaped the children that outlived the browser)."""
        if self.closed:
            return
        self.closed = True
        try:
            if self.ws is not None:
                self.ws.close()
        except Exception:
            pass
        self.ws = None
        try:
            tree = set(self.leftovers())
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
            deadline = time.monotonic() + 10
            while (left := self.leftovers()) or self.proc.poll() is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"chromium processes {left} survived SIGKILL")
                tree.update(left)
                self._signal(signal.SIGKILL, left)
                time.sleep(0.05)
            deadline = time.monotonic() + 5
            while (any(Path(f"/proc/{pid}").exists() for pid in tree) or _live_processes(pgid=self.pgid, zombies=True)) \
                    and time.monotonic() < deadline:
                time.sleep(0.05)  # dead, but zombies until init reaps them
        finally:
            self._stderr.close()


@pytest.mark.timeout(90)
def test_viewer_in_headless_chromium_offline(setup, tmp_path):
    model, _, circuit, _, data = setup
    data = json.loads(json.dumps(data))
    # a token that would end the data block if it were not escaped is shown in every panel
    data["vocab"][str(data["prompts"][0]["ids"][1])] = "</script><b>x</b>"
    page = tmp_path / "viewer.html"
    page.write_text(render_html(data), encoding="utf-8")
    nodes, edges = data["nodes"], data["edges"]

    def neighbours(name):
        ends = [end for i in nodes[name]["in"] + nodes[name]["out"] for end in (edges[i]["src"], edges[i]["dst"])]
        return [end for end in ends if end in nodes and end != name]

    first = max(nodes, key=lambda name: len(neighbours(name)))  # a node with edges to other nodes
    second = next(name for name in nodes if name != first)
    assert neighbours(first)
    with Browser(tmp_path) as browser:
        browser.send("Page.navigate", url=page.resolve().as_uri())
        browser.wait_for("Page.loadEventFired")
        assert browser.js("document.querySelectorAll('.node').length") == circuit.n_nodes
        assert browser.js("new Set([...document.querySelectorAll('.node')].map(e => e.dataset.node)).size") == circuit.n_nodes
        assert browser.js("document.querySelectorAll('path.edge').length") == circuit.n_edges
        assert browser.js("document.querySelectorAll('path.link-path').length") == circuit.residual_links
        header = browser.js("document.getElementById('header').textContent")
        assert "loss circuit" in header and "norms free" in header and f"residual links {circuit.residual_links}" in header
        assert browser.js("document.getElementById('panel-name')") is None  # no panel before any hover/click

        browser.mouse(f'.node[data-node="{second}"]', click=False)  # hover opens the panel
        assert browser.js("document.getElementById('panel-name').textContent") == second
        browser.mouse(f'.node[data-node="{first}"]', click=True)  # click pins it
        assert browser.js("document.getElementById('panel-name').textContent") == first
        assert browser.js(f"document.querySelector('.node[data-node=\"{first}\"]').classList.contains('selected')")
        browser.mouse(f'.node[data-node="{second}"]', click=False)  # hovering elsewhere keeps the pinned panel
        assert browser.js("document.getElementById('panel-name').textContent") == first
        # two token rows (full model, circuit) per prompt, and the hostile token shown as text
        rows = browser.js("[...document.querySelectorAll('#panel .prompt .toks .who')].map(e => e.textContent)")
        assert rows == ["model", "circuit"] * len(data["prompts"])
        assert "</script><b>x</b>" in browser.js("document.getElementById('panel').textContent")
        n_in, n_out = len(nodes[first]["in"]), len(nodes[first]["out"])
        assert f"Incoming edges ({n_in})" in browser.js("document.getElementById('panel').textContent")
        assert f"Outgoing edges ({n_out})" in browser.js("document.getElementById('panel').textContent")
        # an edge's other end is a link to its panel
        link = browser.js("document.querySelector('#panel .link').textContent")
        assert link in neighbours(first)
        browser.mouse("#panel .link", click=True)
        assert browser.js("document.getElementById('panel-name').textContent") == link

        def search(text):
            browser.js(f"(() => {{ const f = document.getElementById('find'); f.value = {json.dumps(text)}; "
                       "f.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'})); })()")
            return browser.js("document.getElementById('panel-name').textContent"), browser.js(
                "document.getElementById('find-hint').textContent")

        assert search(second) == (second, "")  # the exact name
        typo = second.replace(".", "", 1)  # one character off (and no other name that close): the closest, said so
        assert search(typo) == (second, f"closest: {second}")
        site = second.split("[")[0]  # a prefix: the shortest name containing it
        expected = sorted((n for n in nodes if site.lower() in n.lower()), key=lambda n: (len(n), n))[0]
        assert search(site) == (expected, f"closest: {expected}")
        assert search("zzzz")[1] == 'no node like "zzzz"'
        assert browser.problems() == []


def test_viewer_filters_edges_by_weight_sites_and_neighbourhood(setup, tmp_path):
    """The filter bar: an |weight| threshold per kind, one site (with its neighbours), the pinned node's
    neighbourhood; what stays visible is computed here from the viewer data."""
    import base64

    model, _, circuit, _, data = setup
    page = tmp_path / "viewer.html"
    page.write_text(render_html(data), encoding="utf-8")
    nodes, edges, links = data["nodes"], data["edges"], data["residual_links"]
    top = {}
    for e in edges:
        top[e["kind"]] = max(top.get(e["kind"], 0.0), abs(e["weight"]))

    def frac(e):
        return 1.0 if e["kind"] == "q-k" else (abs(e["weight"]) / top[e["kind"]] if top[e["kind"]] else 0.0)

    visible_nodes = "[...document.querySelectorAll('.node:not(.filtered)')].map(e => e.dataset.node).sort()"
    visible_edges = "document.querySelectorAll('path.edge:not(.filtered)').length"
    with Browser(tmp_path) as browser:
        browser.send("Page.navigate", url=page.resolve().as_uri())
        browser.wait_for("Page.loadEventFired")
        assert browser.js(visible_edges) == len(edges) and len(browser.js(visible_nodes)) == len(nodes)
        marked = "[...document.querySelectorAll('.node.isolated')].map(e => e.dataset.node).sort()"
        assert browser.js(marked) == sorted(n for n, v in nodes.items() if not v["in"] and not v["out"] and not v["links"])
        lonely = json.loads(json.dumps(data))  # the same page with one node's edges and links taken away
        name = next(iter(lonely["nodes"]))
        lonely["nodes"][name].update({"in": [], "out": [], "links": []})
        (tmp_path / "lonely.html").write_text(render_html(lonely), encoding="utf-8")
        browser.send("Page.navigate", url=(tmp_path / "lonely.html").resolve().as_uri())
        browser.wait_for("Page.loadEventFired")
        assert name in browser.js(marked)
        browser.send("Page.navigate", url=page.resolve().as_uri())
        browser.wait_for("Page.loadEventFired")

        def set_control(selector, prop, value, event):
            browser.js(f"(() => {{ const c = document.querySelector({json.dumps(selector)}); c.{prop} = {json.dumps(value)}; "
                       f"c.dispatchEvent(new Event({json.dumps(event)})); }})()")

        set_control("#edge-min", "value", "0.5", "input")
        assert browser.js(visible_edges) == sum(frac(e) >= 0.5 for e in edges)
        set_control("#edge-min", "value", "0", "input")

        site = max({n.split("[")[0] for n in nodes}, key=lambda s: sum(n.startswith(s + "[") for n in nodes))
        set_control("#site-filter", "value", site, "change")
        base = {n for n in nodes if n.split("[")[0] == site}
        expected = set(base)
        for e in edges:
            if e["src"] in base or e["dst"] in base:
                expected |= {end for end in (e["src"], e["dst"]) if end in nodes}
        for a, b in links:
            if a in base or b in base:
                expected |= {a, b}
        assert browser.js(visible_nodes) == sorted(expected)
        assert browser.js(visible_edges) == sum(e["src"] in base or e["dst"] in base for e in edges)
        set_control("#site-filter", "value", "", "change")

        hub = max(nodes, key=lambda n: len(nodes[n]["in"]) + len(nodes[n]["out"]))
        near = {hub} | {end for i in nodes[hub]["in"] + nodes[hub]["out"] for end in (edges[i]["src"], edges[i]["dst"]) if end in nodes}
        near |= {end for i in nodes[hub]["links"] for end in links[i]}
        set_control("#neighbourhood", "checked", True, "change")
        browser.mouse(f'.node[data-node="{hub}"]', click=True)
        assert browser.js(visible_nodes) == sorted(near)
        shot = base64.b64decode(browser.send("Page.captureScreenshot", format="png")["data"])
        assert shot[:8] == b"\x89PNG\r\n\x1a\n"
        screenshots(tmp_path).joinpath("viewer-neighbourhood.png").write_bytes(shot)
        set_control("#neighbourhood", "checked", False, "change")
        browser.mouse(f'.node[data-node="{hub}"]', click=True)  # unpin: the whole circuit again
        assert len(browser.js(visible_nodes)) == len(nodes)
        whole = base64.b64decode(browser.send("Page.captureScreenshot", format="png")["data"])
        screenshots(tmp_path).joinpath("viewer-whole.png").write_bytes(whole)
        assert browser.problems() == []


def screenshots(tmp_path):
    """Where the browser tests put their screenshots: $SPARSELENS_SCREENSHOTS (docs/images, to update
    the ones docs/viewer.md shows), else the test's own folder."""
    folder = Path(os.environ.get("SPARSELENS_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def with_report(setup):
    """The circuit's faithfulness report (nodes and attention checks) and the viewer data carrying it."""
    import sparselens.faithfulness as faithfulness

    model, task, circuit, _, _ = setup
    report = faithfulness.evaluate(model, circuit, task, checks=["nodes", "attention"], n_pairs=8, progress=False)
    return report, viewer_data(model, circuit, n_prompts=N_PROMPTS, report=report)


def test_viewer_carries_the_faithfulness_report(setup, with_report, tmp_path):
    from sparselens.files import json_safe

    model, task, circuit, _, plain = setup
    report, data = with_report
    assert plain["faithfulness"] is None and all("faith" not in n for n in plain["nodes"].values())
    assert data["faithfulness"]["flags"] == report.flags and data["faithfulness"]["n_pairs"] == 8
    assert set(report.nodes) == set(data["nodes"])  # the nodes check has a row for every kept node
    for name, node in data["nodes"].items():
        assert node["faith"] == json_safe(report.nodes[name])
        if node["head"] is None:
            assert "head_faith" not in node
        else:
            assert node["head_faith"] == json_safe(report.heads[f"L{node['layer']}H{node['head']}"])
    # the same from the report's JSON file
    saved = report.save(tmp_path / "report.json")
    assert viewer_data(model, circuit, n_prompts=N_PROMPTS, report=saved)["nodes"] == data["nodes"]
    # a report of another circuit is refused, naming both
    other = replace(report, circuit={**report.circuit, "n_nodes": circuit.n_nodes + 1})
    with pytest.raises(ValueError, match="report is of another circuit"):
        viewer_data(model, circuit, n_prompts=N_PROMPTS, report=other)
    stray = replace(report, nodes={**report.nodes, "L0.neuron[99999]": {"corr": 1.0}})
    with pytest.raises(ValueError, match="outside this circuit"):
        viewer_data(model, circuit, n_prompts=N_PROMPTS, report=stray)


def _hsl_rgb(hue: float, s: float = 0.70, lightness: float = 0.42) -> tuple[int, ...]:
    import colorsys

    return tuple(round(255 * c) for c in colorsys.hls_to_rgb(hue / 360, lightness, s))


def test_viewer_colours_nodes_by_correlation_in_chromium(setup, with_report, tmp_path):
    _, _, circuit, _, _ = setup
    report, data = with_report
    page = tmp_path / "viewer.html"
    page.write_text(render_html(data), encoding="utf-8")
    with Browser(tmp_path) as browser:
        browser.send("Page.navigate", url=page.resolve().as_uri())
        browser.wait_for("Page.loadEventFired")
        assert browser.js("document.getElementById('colour-by').value") == "corr"  # a report attached: by correlation
        fills = browser.js("Object.fromEntries([...document.querySelectorAll('.node')].map(e => [e.dataset.node, "
                           "getComputedStyle(e).fill]))")
        assert len(fills) == circuit.n_nodes
        for name, fill in fills.items():
            corr = report.nodes[name]["corr"]
            want = (209, 213, 219) if corr != corr else _hsl_rgb(math.floor(120 * min(1.0, max(0.0, corr)) + 0.5))  # hue in whole degrees; NaN: grey
            got = tuple(int(v) for v in re.findall(r"\d+", fill)[:3])
            assert all(abs(g - w) <= 1 for g, w in zip(got, want, strict=True)), (name, corr, fill, want)
        constant = [n for n, row in report.nodes.items() if row["constant"]]
        assert browser.js("[...document.querySelectorAll('.node.constant')].map(e => e.dataset.node).sort()") == sorted(constant)
        # the panel shows the node's row (and its head's for a Q/K/V channel)
        name = next(iter(fills))
        browser.mouse(f'.node[data-node="{name}"]', click=True)
        text = browser.js("document.getElementById('panel').textContent")
        assert "Faithfulness (report on 8 test pairs)" in text and "mean in the model" in text
        if report.nodes[name]["repurposed"]:
            assert browser.js("document.querySelectorAll('#panel .flag').length") >= 1
        if report.flags:
            assert f"{len(report.flags)} faithfulness flag" in browser.js("document.getElementById('flags').textContent")
        # back to colours by kind: the class colours return
        browser.js("(() => { const s = document.getElementById('colour-by'); s.value = 'kind'; "
                   "s.dispatchEvent(new Event('change')); })()")
        assert browser.js("[...document.querySelectorAll('.node')].every(e => e.style.fill === '')")
        assert browser.js("document.querySelectorAll('.node.constant').length") == 0
        assert browser.problems() == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("failure", ["raise_in_with", "cdp_call_fails", "no_devtools_endpoint"])
def test_browser_leaves_no_process_behind(tmp_path, monkeypatch, failure):
    """Whatever goes wrong (the test body raises, a DevTools call fails while starting, the endpoint
    never appears), no Chromium process is left: not the browser, nothing in its process group, and
    nothing whose command line names the test's directory (crashpad handlers leave the group)."""
    started, popen = [], subprocess.Popen

    def recording_popen(*args, **kwargs):
        started.append(popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    seen_running = []
    if failure == "raise_in_with":
        with pytest.raises(RuntimeError, match="boom"):
            with Browser(tmp_path) as browser:
                assert browser.send("Runtime.evaluate", expression="6 * 7", returnByValue=True)["result"]["value"] == 42
                seen_running = _live_processes(pgid=started[0].pid, names=tmp_path)
                raise RuntimeError("boom")
    elif failure == "cdp_call_fails":
        send = Browser.send

        def failing_send(self, method, **params):
            if method == "Network.enable":
                seen_running.extend(_live_processes(pgid=started[0].pid, names=tmp_path))
                raise RuntimeError(f"{method}: simulated failure")
            return send(self, method, **params)

        monkeypatch.setattr(Browser, "send", failing_send)
        with pytest.raises(RuntimeError, match="simulated failure"):
            Browser(tmp_path)
    else:
        with pytest.raises(pytest.fail.Exception, match="did not start its DevTools endpoint"):
            Browser(tmp_path, timeout=0).close()  # gives up at once: chromium takes far longer to start
    assert len(started) == 1
    proc = started[0]
    assert failure == "no_devtools_endpoint" or len(seen_running) > 1  # the check below can see a running tree
    assert proc.poll() is not None, "chromium is still running"
    assert _live_processes(pgid=proc.pid) == [], "chromium's process group is still alive"
    assert _live_processes(names=tmp_path) == [], "processes started for this browser are still alive"
