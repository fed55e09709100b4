"""Experiment tracking: TensorBoard events hold exactly the JSONL's numbers (and a resumed run's too),
W&B runs offline with the run's config and resumes the same run id, and a missing package is an error."""

import json
import sys

import pytest
from test_train import tiny_train_config

from sparselens.errors import InputError
from sparselens.train import Trainer
from sparselens.train.tracking import TENSORBOARD_DIR, WANDB_ID_FILE, TrackingConfig, flatten
from sparselens.train.trainer import METRICS_FILE


def jsonl_scalars(out_dir):
    """{tag: {step: value}} computed here from metrics.jsonl, independently of flatten()."""
    out = {}
    for line in (out_dir / METRICS_FILE).read_text().splitlines():
        record = json.loads(line)
        for key, value in record.items():
            if key in ("event", "step"):
                continue
            values = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else [(None, value)]
            for sub, v in values:
                if isinstance(v, (int, float)) and v == v:
                    tag = f"{record['event']}/{key}" + ("" if sub is None else f"/{sub}")
                    out.setdefault(tag, {})[record["step"]] = float(v)
    return out


def tensorboard_scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_flatten_names_every_number():
    record = {"event": "eval", "step": 3, "loss": 1.5, "per_site": [0.1, 0.2], "l0": {"W_Q": 0.25}, "note": "x",
              "bad": float("nan"), "flag": True}
    assert flatten(record) == {"eval/loss": 1.5, "eval/per_site/0": 0.1, "eval/per_site/1": 0.2, "eval/l0/W_Q": 0.25,
                               "eval/flag": 1.0}


def test_tensorboard_events_are_the_jsonl_numbers_even_after_a_resume(tmp_path):
    tracking = {"tensorboard": True}
    first = Trainer(tiny_train_config(tmp_path, n_steps=8, log_every=2, eval_every=4, checkpoint_every=4, tracking=tracking))
    first.train(stop_at=6)  # checkpoint at 6 written by stop_at; events up to 6
    resumed = Trainer(tiny_train_config(tmp_path, n_steps=8, log_every=2, eval_every=4, checkpoint_every=4, tracking=tracking),
                      resume=True)
    resumed.train()
    expected = jsonl_scalars(tmp_path)
    written = tensorboard_scalars(tmp_path / TENSORBOARD_DIR)
    assert expected and set(written) == set(expected)
    for tag, by_step in expected.items():
        assert written[tag] == pytest.approx(by_step, rel=1e-6), tag


def test_wandb_offline_run_gets_the_config_and_resumes_its_id(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracking = {"wandb_project": "sparselens-test", "wandb_mode": "offline", "wandb_name": "tiny"}
    cfg = tiny_train_config(tmp_path, n_steps=4, log_every=2, eval_every=2, tracking=tracking)
    Trainer(cfg).train(stop_at=2)
    run_id = (tmp_path / WANDB_ID_FILE).read_text().strip()
    runs = list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
    Trainer(cfg, resume=True).train()
    assert (tmp_path / WANDB_ID_FILE).read_text().strip() == run_id  # the same W&B run continues
    assert len(list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))) == 2  # one directory per process, one run id


def test_the_sinks_receive_every_record(tmp_path, monkeypatch):
    """A fake wandb module records what the trainer sends: every JSONL record, flattened, at its step."""
    import types

    calls = {"init": [], "log": []}

    class Run:
        def log(self, data, step):
            calls["log"].append((step, data))

        def finish(self):
            calls["finished"] = True

    fake = types.SimpleNamespace(init=lambda **kw: calls["init"].append(kw) or Run())
    monkeypatch.setitem(sys.modules, "wandb", fake)
    Trainer(tiny_train_config(tmp_path, n_steps=4, log_every=2, eval_every=2, tracking={"wandb_project": "p"})).train()
    records = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert calls["log"] == [(r["step"], flatten(r)) for r in records] and calls.get("finished")
    (init,) = calls["init"]
    assert init["project"] == "p" and init["config"]["n_steps"] == 4 and init["mode"] == "online"


def test_missing_packages_and_bad_modes_are_errors(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="wandb_mode must be one of"):
        TrackingConfig(wandb_mode="sometimes")
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(InputError, match=r"pip install 'sparselens\[tracking\]'"):
        Trainer(tiny_train_config(tmp_path, n_steps=2, tracking={"wandb_project": "p"})).train()
