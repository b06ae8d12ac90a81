"""The training loop (ssm.train) and the experiments' command line under torchrun.

The models here are tiny (an embedding and a linear read-out, with SSM-marked parameters), so
that what is tested is the loop: parameter groups, schedule, metrics, the non-finite guard,
bit-identical resume, and one process against two at the same global batch.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssm.data import IGNORE, SequenceDataset
from ssm.layers import is_ssm_parameter, register
from ssm.train import (
    History,
    NonFiniteError,
    TrainConfig,
    evaluate,
    lr_factor,
    param_groups,
    train,
)

VOCAB = 8


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a small machine shared with other work, tiny ops split over two
    threads wait for whichever is descheduled (ten times slower here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def token_task(n: int, length: int = 6, seed: int = 0, per_step: bool = False) -> SequenceDataset:
    """Tokens ``(n, L)``; the class is the first token (per sequence), or each step's token
    with about a third of the steps unscored (per step)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, VOCAB, (n, length), generator=g)
    if per_step:
        y = torch.where(torch.rand(n, length, generator=g) < 0.35, IGNORE, x)
    else:
        y = x[:, 0]
    return SequenceDataset(x, y, n_classes=VOCAB, vocab_size=VOCAB, name="tokens")


class Tiny(nn.Module):
    """Embedding, two SSM-marked parameters (a 1-D scale and a 2-D mix), dropout, read-out.

    ``(B, L)`` tokens to ``(B, C)`` logits (from the first step) or ``(B, L, C)`` per step.
    """

    def __init__(self, per_step: bool = False, dropout: float = 0.0, d: int = 12, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(VOCAB, d)
        register(self, "log_scale", torch.zeros(d))
        register(self, "mix", 0.1 * torch.randn(d, d))
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(d, VOCAB)
        self.per_step = per_step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.emb(x) * self.log_scale.exp()  # (B, L, d)
        h = self.drop(h + h @ self.mix)  # (B, L, d)
        return self.out(h if self.per_step else h[:, 0])  # (B, L, C) or (B, C)


def quick(**overrides) -> TrainConfig:
    settings = dict(
        steps=12, batch_size=8, lr=1e-2, ssm_lr=3e-3, weight_decay=0.1, warmup_steps=3,
        eval_every=5, eval_batch_size=16, device="cpu", progress=False,
    )  # fmt: skip
    return TrainConfig(**{**settings, **overrides})


def parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def without_time(history: History) -> list[dict[str, float]]:
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in history.records]


# --- the config ----------------------------------------------------------------------------


def test_config_goes_into_json_and_back():
    cfg = quick(grad_clip=None, min_lr_ratio=0.1)
    text = json.dumps(dataclasses.asdict(cfg))
    assert TrainConfig(**json.loads(text)) == cfg


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("steps", 0),
        ("batch_size", 2.0),
        ("lr", -1e-3),
        ("warmup_steps", -1),
        ("min_lr_ratio", 1.5),
        ("grad_clip", 0.0),
        ("eval_every", -1),
        ("device", "gpu"),
    ],
    ids=lambda v: str(v),
)
def test_config_refuses_bad_values_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        quick(**{field: value})


# --- optimizer groups and schedule ---------------------------------------------------------


def test_param_groups_follow_the_marks_and_shapes_not_names():
    model = Tiny()
    model.frozen = nn.Parameter(torch.ones(3, 3), requires_grad=False)
    cfg = quick()
    groups = {g["name"]: g for g in param_groups(model, cfg)}
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    assert ids == {
        "ssm": {id(model.log_scale), id(model.mix)},
        "no_decay": {id(model.out.bias)},
        "decay": {id(model.emb.weight), id(model.out.weight)},
    }
    assert (groups["ssm"]["lr"], groups["ssm"]["weight_decay"]) == (cfg.ssm_lr, 0.0)
    assert (groups["no_decay"]["lr"], groups["no_decay"]["weight_decay"]) == (cfg.lr, 0.0)
    assert (groups["decay"]["lr"], groups["decay"]["weight_decay"]) == (cfg.lr, cfg.weight_decay)
    assert all(is_ssm_parameter(p) for p in groups["ssm"]["params"])


def test_lr_factor_warms_up_linearly_then_follows_the_cosine():
    cfg = quick(steps=20, warmup_steps=4, min_lr_ratio=0.1)
    f = [lr_factor(s, cfg) for s in range(21)]
    assert f[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f[4] == pytest.approx(1.0)
    assert f[12] == pytest.approx(0.55)  # halfway through the cosine: (1 + r) / 2
    assert f[20] == pytest.approx(0.1)
    assert all(a > b for a, b in itertools.pairwise(f[4:]))
    assert lr_factor(0, quick(warmup_steps=0)) == pytest.approx(1.0)


def test_each_group_is_scheduled_from_its_own_peak(tmp_path):
    cfg = quick(steps=10, min_lr_ratio=0.2)
    train(Tiny(), token_task(32), token_task(16, seed=1), cfg, checkpoint=tmp_path / "c.pt")
    saved = torch.load(tmp_path / "c.pt", weights_only=True)["optimizer"]["param_groups"]
    lrs = {g["name"]: g["lr"] for g in saved}
    after_last = lr_factor(cfg.steps, cfg)
    assert lrs["ssm"] == pytest.approx(cfg.ssm_lr * after_last)
    assert lrs["decay"] == pytest.approx(cfg.lr * after_last)
    assert lrs["no_decay"] == pytest.approx(cfg.lr * after_last)


# --- training and metrics ------------------------------------------------------------------


def test_training_learns_a_task_from_the_first_token():
    train_set, val_set = token_task(256), token_task(64, seed=1)
    model = Tiny()
    before = evaluate(model, val_set, quick())
    history = train(model, train_set, val_set, quick(steps=80, batch_size=16, eval_every=40))
    assert [r["step"] for r in history.records] == [40, 80]
    assert before["accuracy"] < 0.5
    assert history.final["val_accuracy"] > 0.95
    assert history.final["val_loss"] < before["loss"] / 3


class Lookup(nn.Module):
    """Fixed logits per token: ``(B, L)`` to ``(B, L, C)``, or ``(B, C)`` from the first step."""

    def __init__(self, per_step: bool):
        super().__init__()
        self.table = nn.Parameter(
            torch.randn(VOCAB, VOCAB, generator=torch.Generator().manual_seed(3))
        )
        self.per_step = per_step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.table[x]  # (B, L, C)
        return logits if self.per_step else logits[:, 0]


@pytest.mark.parametrize("per_step", [False, True], ids=["per-sequence", "per-step"])
def test_evaluate_scores_the_whole_set_over_scored_targets(per_step):
    dataset = token_task(11, per_step=per_step, seed=4)
    if not per_step:  # some wrong classes, so that accuracy is not 1
        dataset.targets[::3] = (dataset.targets[::3] + 1) % VOCAB
    model = Lookup(per_step).train()
    metrics = evaluate(model, dataset, quick(eval_batch_size=3))
    logits = model(dataset.inputs).detach().double().flatten(0, -2)  # (n·L, C)
    targets = dataset.targets.flatten()
    scored = targets != IGNORE
    expected_loss = F.cross_entropy(logits[scored], targets[scored]).item()
    expected_accuracy = (logits[scored].argmax(-1) == targets[scored]).double().mean().item()
    assert metrics["loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert metrics["accuracy"] == pytest.approx(expected_accuracy, abs=1e-12)
    assert 0 < metrics["accuracy"] < 1
    assert model.training


class Scripted(nn.Module):
    """Logits ``(B, C)`` equal to ``[k, 0, ..., 0]`` at the k-th training call (0 in eval), so
    that the loss of step k is ``log(1 + (C - 1) e^-k)`` for class-0 targets."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.calls = 0
        self.deterministic: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.deterministic.append(torch.are_deterministic_algorithms_enabled())
        logits = torch.zeros(x.shape[0], VOCAB)
        if self.training:
            self.calls += 1
            logits[:, 0] = self.calls
        return logits + 0 * self.w


def test_history_records_the_mean_train_loss_since_the_last_evaluation():
    data = SequenceDataset(
        torch.zeros(40, 4, dtype=torch.long), torch.zeros(40), n_classes=VOCAB, vocab_size=VOCAB
    )
    cfg = quick(steps=10, eval_every=4, batch_size=8)
    history = train(Scripted(), data, data, cfg)

    def step_loss(k: int) -> float:
        return math.log(1 + (VOCAB - 1) * math.exp(-k))

    assert [r["step"] for r in history.records] == [4, 8, 10]
    for record, steps in zip(history.records, ([1, 2, 3, 4], [5, 6, 7, 8], [9, 10]), strict=True):
        mean = sum(map(step_loss, steps)) / len(steps)
        assert record["train_loss"] == pytest.approx(mean, rel=1e-5, abs=1e-6)  # float32 loss
        assert record["val_loss"] == pytest.approx(math.log(VOCAB))
        assert record["lr"] == pytest.approx(cfg.lr * lr_factor(record["step"] - 1, cfg))
    elapsed = [r["elapsed_s"] for r in history.records]
    assert elapsed == sorted(elapsed) and elapsed[0] >= 0


def test_history_best_final_and_json():
    records = [
        {"step": s, "train_loss": 1.0, "val_loss": 1.0, "val_accuracy": a, "lr": 0.1,
         "elapsed_s": 0.5}
        for s, a in ((10, 0.5), (20, 0.8), (30, 0.8), (40, 0.7))
    ]  # fmt: skip
    history = History(records=records)
    assert history.best["step"] == 20
    assert history.final["step"] == 40
    assert json.loads(json.dumps(history.as_dict())) == {
        "records": records, "best": records[1], "final": records[3]
    }  # fmt: skip
    with pytest.raises(RuntimeError, match="no record"):
        _ = History().final


def test_deterministic_mode_is_on_for_the_run_only():
    assert not torch.are_deterministic_algorithms_enabled()
    data = token_task(16)
    model = Scripted()
    train(model, data, data, quick(steps=2))
    assert model.deterministic and all(model.deterministic)
    assert not torch.are_deterministic_algorithms_enabled()
    model = Scripted()
    train(model, data, data, quick(steps=2, deterministic=False))
    assert not any(model.deterministic)


def test_same_seed_same_run_other_seed_other_run():
    data, val = token_task(40), token_task(16, seed=1)
    runs = []
    for seed in (0, 0, 1):
        model = Tiny(dropout=0.2)
        train(model, data, val, quick(seed=seed))
        runs.append(parameters(model))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not torch.equal(runs[0]["emb.weight"], runs[2]["emb.weight"])


def test_progress_bar_only_when_asked(capsys):
    data = token_task(16)
    train(Tiny(), data, data, quick(steps=3, progress=False))
    assert capsys.readouterr().err == ""
    train(Tiny(), data, data, quick(steps=3, progress=True))
    err = capsys.readouterr().err
    assert "3/3" in err and "acc=" in err


def test_logits_of_the_wrong_shape_are_refused():
    data = token_task(16, per_step=True)
    with pytest.raises(ValueError, match=r"\(batch, length, n_classes\)"):
        train(Tiny(per_step=False), data, data, quick(steps=2))


def test_cuda_asked_for_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data = token_task(16)
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        train(Tiny(), data, data, quick(device="cuda"))


def test_a_train_set_smaller_than_a_batch_is_refused():
    with pytest.raises(ValueError, match="batch_size"):
        train(Tiny(), token_task(5), token_task(5), quick())


# --- the non-finite guard ------------------------------------------------------------------


class Blowing(Tiny):
    """:class:`Tiny` whose ``gate`` gets a NaN gradient (``d/dg √(0·g)``) at training call
    ``at``, its loss staying finite; with ``loss=True`` the logits are infinite instead."""

    def __init__(self, at: int, loss: bool = False):
        super().__init__()
        self.gate = nn.Parameter(torch.ones(1))
        self.at, self.loss, self.calls = at, loss, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x) + 0 * self.gate
        self.calls += self.training
        if self.training and self.calls == self.at:
            if self.loss:
                return logits * math.inf
            return logits + torch.sqrt(0 * self.gate)
        return logits


def test_a_non_finite_gradient_names_the_step_and_the_parameter():
    data = token_task(40)
    model = Blowing(at=3)
    with pytest.raises(NonFiniteError, match=r"step 3: the gradient of parameter 'gate'"):
        train(model, data, data, quick())
    assert all(torch.isfinite(p).all() for p in model.parameters())  # no update with it
    assert not torch.are_deterministic_algorithms_enabled()


def test_a_non_finite_error_keeps_the_step_and_the_evaluations_before_it():
    data = token_task(40)
    with pytest.raises(NonFiniteError) as caught:
        train(Blowing(at=5), data, data, quick(eval_every=2))
    assert caught.value.step == 5
    assert [r["step"] for r in caught.value.history.records] == [2, 4]


def test_a_non_finite_loss_is_named_as_such():
    data = token_task(40)
    with pytest.raises(NonFiniteError, match=r"step 2: the loss itself"):
        train(Blowing(at=2, loss=True), data, data, quick())


# --- checkpoints ---------------------------------------------------------------------------


class Preempted(Exception):
    pass


class Interrupted(Tiny):
    """:class:`Tiny` that stops the run (as a preemption would) at training call ``at``."""

    def __init__(self, at: int, **kwargs):
        super().__init__(**kwargs)
        self.at, self.calls = at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += self.training
        if self.calls == self.at:
            raise Preempted
        return super().forward(x)


def test_resume_on_cpu_is_bit_identical_to_the_straight_run(tmp_path):
    # 5 batches an epoch: the checkpoint at step 7 is mid-epoch and between two records, and
    # dropout draws from the random state, so every part of the checkpoint is needed.
    data, val = token_task(40), token_task(13, seed=1)
    cfg = quick(steps=14, eval_every=3, checkpoint_every=7)
    straight = Tiny(dropout=0.3)
    expected = train(straight, data, val, cfg)

    path = tmp_path / "run.pt"
    with pytest.raises(Preempted):
        train(Interrupted(at=8, dropout=0.3), data, val, cfg, checkpoint=path)
    resumed = Tiny(dropout=0.3, seed=1)  # other initial values: the checkpoint's must win
    history = train(resumed, data, val, cfg, checkpoint=path, resume=True)

    got, want = parameters(resumed), parameters(straight)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert without_time(history) == without_time(expected)
    assert [r["step"] for r in history.records] == [3, 6, 9, 12, 14]


def test_resume_needs_a_path_an_existing_file_and_the_same_config(tmp_path):
    data = token_task(16)
    with pytest.raises(ValueError, match="checkpoint"):
        train(Tiny(), data, data, quick(), resume=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train(Tiny(), data, data, quick(), checkpoint=tmp_path / "none.pt", resume=True)
    path = tmp_path / "c.pt"
    train(Tiny(), data, data, quick(steps=2), checkpoint=path)
    with pytest.raises(ValueError, match=r"lr: 0\.01 -> 0\.02"):
        train(Tiny(), data, data, quick(steps=2, lr=2e-2), checkpoint=path, resume=True)


# --- data parallel under torchrun, through the experiments' command line --------------------


class TinyExperiment:
    """A fake experiment for the command line: trains one model per target kind."""

    @staticmethod
    def config(profile: str) -> dict:
        return {"profile": profile, "train": dataclasses.asdict(quick(steps=10, batch_size=8))}

    @staticmethod
    def run(config: dict) -> dict:
        cfg = TrainConfig(**config["train"])
        out = {
            "world": torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        }
        for per_step in (False, True):
            model = Tiny(per_step=per_step)
            data, val = token_task(36, per_step=per_step), token_task(13, seed=1, per_step=per_step)
            history = train(model, data, val, cfg)
            out["per_step" if per_step else "per_sequence"] = {
                "parameters": {k: v.tolist() for k, v in parameters(model).items()},
                "history": without_time(history),
            }
        return out

    @staticmethod
    def plot(results: dict):
        raise AssertionError("not asked for")


SCRIPT = """
import json, os, sys
import torch
sys.path.insert(0, {tests!r})
from test_train import TinyExperiment
from ssm.experiments import __main__ as cli

torch.set_num_threads(1)
cli.available = lambda: ["tiny"]
cli.get = lambda name: TinyExperiment
code = cli.main(["tiny", "--profile", "ci", "--out-dir", {out!r}])
rank = os.environ["RANK"]
with open(os.path.join({out!r}, "after_" + rank + ".json"), "w") as f:
    json.dump({{"initialized": torch.distributed.is_initialized()}}, f)
sys.exit(code)
"""


@pytest.fixture(scope="module")
def torchrun(tmp_path_factory) -> dict:
    """Run the fake experiment through the command line on two CPU processes (gloo)."""
    out = tmp_path_factory.mktemp("torchrun")
    script = out / "launch.py"
    script.write_text(
        textwrap.dedent(SCRIPT.format(tests=str(Path(__file__).parent), out=str(out)))
    )
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
               "--monitor-interval=0.1", str(script)]  # fmt: skip
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=240, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {"out": out, "stdout": proc.stdout}


@pytest.mark.parametrize("kind", ["per_sequence", "per_step"])
def test_two_processes_train_as_one_at_the_same_global_batch(torchrun, kind):
    record = json.loads((torchrun["out"] / "tiny.json").read_text())
    assert record["results"]["world"] == 2
    got = record["results"][kind]
    want = TinyExperiment.run(TinyExperiment.config("ci"))[kind]
    initial = parameters(Tiny(per_step=kind == "per_step"))
    for name, value in want["parameters"].items():
        two, one = torch.tensor(got["parameters"][name]), torch.tensor(value)
        torch.testing.assert_close(two, one, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(one, initial[name])  # it trained
    for two, one in zip(got["history"], want["history"], strict=True):
        assert two == pytest.approx(one, rel=1e-5)


def test_the_command_line_under_torchrun_writes_once_with_the_process_count(torchrun):
    record = json.loads((torchrun["out"] / "tiny.json").read_text())
    assert record["provenance"]["processes"] == 2
    assert torchrun["stdout"].count("results in") == 1  # rank 0 alone reports
    for rank in ("0", "1"):
        after = json.loads((torchrun["out"] / f"after_{rank}.json").read_text())
        assert after == {"initialized": False}  # the group is left at the end
