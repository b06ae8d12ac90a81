"""The one training loop of the book: AdamW, warm-up and cosine schedule, seeds, metrics.

Every experiment trains through :func:`train`, whatever the layer: a model is an ``nn.Module``
mapping a batch of a :class:`~ssm.data.SequenceDataset` (``(B, L)`` int64 tokens or
``(B, L, d_input)`` features) to logits, ``(B, C)`` for targets per sequence or ``(B, L, C)``
for targets per step (:data:`~ssm.data.IGNORE` where a step is not scored). The optimizer
follows the S4 convention (Gu, Goel, Ré 2022, *Efficiently Modeling Long Sequences with
Structured State Spaces*, arXiv 2111.00396, App. D): the SSM parameters, which each layer
marks with :func:`ssm.layers.register`, get their own learning rate and no weight decay.

Under ``torchrun`` (a process group initialized by the caller, as ``python -m ssm.experiments``
does) the same call trains data-parallel: ``batch_size`` stays the global batch, gradients are
averaged by ``DistributedDataParallel`` and the metrics are summed over the processes, so one
process and several give the same run up to the order of float summation.

Chapter 2 (S4 v2: the HiPPO ablations and the reduced Long Range Arena) is the first to train
with it. Dimension letters: B batch, L length, C classes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

from . import _checks
from .data import IGNORE, SequenceDataset, loader
from .layers import is_ssm_parameter

__all__ = [
    "History",
    "NonFiniteError",
    "TrainConfig",
    "evaluate",
    "lr_factor",
    "param_groups",
    "seed_all",
    "train",
]

DEVICES = ("auto", "cpu", "cuda")
#: Fields a resumed run may change: they do not change what is computed.
RESUMABLE_CHANGES = ("progress", "checkpoint_every")


@dataclasses.dataclass
class TrainConfig:
    """How one model is trained; plain numbers, strings and flags only, so that
    ``dataclasses.asdict(cfg)`` goes into an experiment's config and hence into its hash."""

    # optimization
    steps: int = 1000  # optimizer updates in all; the schedule spans them
    batch_size: int = 32  # global batch, split across the processes under torchrun
    lr: float = 3e-3  # peak learning rate of every parameter that is not an SSM parameter
    ssm_lr: float = 1e-3  # peak learning rate of the SSM parameters (S4 convention: own lr)
    weight_decay: float = 0.05  # AdamW decay of the matrices (not of biases, norms, SSM params)
    warmup_steps: int = 0  # linear warm-up over these first steps, from peak / warmup_steps
    min_lr_ratio: float = 0.0  # the cosine decays from the peak to min_lr_ratio * peak
    grad_clip: float | None = 1.0  # largest global gradient norm; None: no clipping
    # evaluation
    eval_every: int = 100  # steps between evaluations on the validation set (0: at the end)
    eval_batch_size: int = 256  # sequences per evaluation batch of each process
    # reproducibility
    seed: int = 0  # seeds Python, NumPy, torch and the shuffling of the batches
    deterministic: bool = True  # torch.use_deterministic_algorithms(True) during the run
    # hardware
    amp: bool = True  # bf16 autocast on CUDA, parameters kept in float32; ignored on CPU
    device: str = "auto"  # "auto" (CUDA when available, else CPU), "cpu" or "cuda"
    # output
    progress: bool = True  # a tqdm bar; the ci profile turns it off (no bar in notebooks)
    checkpoint_every: int = 0  # steps between checkpoints when train() gets a path (0: at end)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_batch_size"):
            _checks.positive_int(name, getattr(self, name))
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "seed"):
            _non_negative_int(name, getattr(self, name))
        for name in ("lr", "ssm_lr", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be None or > 0, got {self.grad_clip!r}")
        _checks.choice("device", self.device, DEVICES)


def _non_negative_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


class NonFiniteError(RuntimeError):
    """Training met a loss or a gradient that is not finite; the message names the step and
    the first parameter whose gradient is not finite (or says the loss itself was).

    ``step`` is that step; ``history`` (set by :func:`train`) holds the evaluations before it,
    so that a caller can report a diverged run instead of losing it.
    """

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step
        self.history = History()


@dataclasses.dataclass
class History:
    """The metrics of a run: one record per evaluation, in order.

    A record is ``{"step", "train_loss", "val_loss", "val_accuracy", "lr", "elapsed_s"}``:
    ``train_loss`` is the mean training loss of the steps since the previous record, ``lr`` the
    learning rate of the last step (of the non-SSM parameters) and ``elapsed_s`` the wall time
    since the run started.
    """

    records: list[dict[str, float]] = dataclasses.field(default_factory=list)

    @property
    def final(self) -> dict[str, float]:
        """The last record (the evaluation after the last step)."""
        return self._nonempty()[-1]

    @property
    def best(self) -> dict[str, float]:
        """The record of the highest validation accuracy (the earliest of equals)."""
        return max(self._nonempty(), key=lambda record: record["val_accuracy"])

    def as_dict(self) -> dict[str, Any]:
        """``{"records", "best", "final"}`` in plain JSON types."""
        return {
            "records": [dict(r) for r in self.records],
            "best": dict(self.best),
            "final": dict(self.final),
        }

    def _nonempty(self) -> list[dict[str, float]]:
        if not self.records:
            raise RuntimeError("the history holds no record yet: no evaluation has run")
        return self.records


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """The AdamW parameter groups of ``model`` (trainable parameters only, each once).

    Following S4 (Gu, Goel, Ré 2022, arXiv 2111.00396, App. D), the SSM parameters, as
    marked by :func:`ssm.layers.register`, train with ``cfg.ssm_lr`` and no weight decay;
    the other parameters with fewer than two dimensions (biases, norm scales) with ``cfg.lr``
    and no weight decay; the rest (matrices, embeddings) with ``cfg.lr`` and
    ``cfg.weight_decay``. Groups are named ``"ssm"``, ``"no_decay"``, ``"decay"``; empty ones
    are left out. Parameters are told apart by their mark and shape, never by their names.
    """
    groups: dict[str, list[nn.Parameter]] = {"ssm": [], "no_decay": [], "decay": []}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        kind = "ssm" if is_ssm_parameter(p) else "no_decay" if p.ndim < 2 else "decay"
        groups[kind].append(p)
    settings = {
        "ssm": {"lr": cfg.ssm_lr, "weight_decay": 0.0},
        "no_decay": {"lr": cfg.lr, "weight_decay": 0.0},
        "decay": {"lr": cfg.lr, "weight_decay": cfg.weight_decay},
    }
    return [
        {"name": kind, "params": params, **settings[kind]}
        for kind, params in groups.items()
        if params
    ]


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """The multiplier of every group's peak learning rate at update ``step`` (0-based).

    With ``W = cfg.warmup_steps``, ``S = cfg.steps`` and ``r = cfg.min_lr_ratio``: a linear
    warm-up ``f(s) = (s + 1) / W`` for ``s < W``, then the cosine
    ``f(s) = r + (1 - r) (1 + cos(π p)) / 2`` with ``p = (s - W) / (S - W)``, from 1 at the
    end of the warm-up towards ``r`` (Loshchilov & Hutter 2017, SGDR, arXiv 1608.03983).
    """
    warmup = cfg.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, cfg.steps - warmup)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclasses.dataclass
class _Schedule:
    """:func:`lr_factor` as the callable of a ``LambdaLR`` (an object, so it is saved)."""

    cfg: dict[str, Any]

    def __call__(self, step: int) -> float:
        return lr_factor(step, TrainConfig(**self.cfg))


def evaluate(model: nn.Module, dataset: SequenceDataset, cfg: TrainConfig) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` over the whole of ``dataset``.

    Both are taken over the scored targets: every sequence for targets per sequence, the
    steps whose target is not :data:`~ssm.data.IGNORE` for targets per step. Runs on the
    device of the model's parameters, in ``eval`` mode (restored after), without gradients,
    in batches of ``cfg.eval_batch_size``; under ``torch.distributed`` each process scores a
    share and the sums are added, so every process returns the metrics of the whole set.

    Returns ``{"loss", "accuracy"}``.
    """
    _check_dataset("dataset", dataset)
    dev = next((p.device for p in model.parameters()), None) or _device(cfg)
    world, rank = _world()
    totals = torch.zeros(3, dtype=torch.float64, device=dev)  # loss sum, scored, correct
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _autocast(cfg, dev):
            for idx in torch.arange(rank, len(dataset), world).split(cfg.eval_batch_size):
                x = dataset.inputs[idx].to(dev)  # (B, L) or (B, L, d_input)
                y = dataset.targets[idx].to(dev)  # (B,) or (B, L)
                totals += torch.stack([t.double() for t in _scores(model(x), y)])
    finally:
        model.train(was_training)
    if world > 1:
        dist.all_reduce(totals)
    loss, scored, correct = totals.tolist()
    if scored == 0:
        raise ValueError(f"dataset {dataset!r} has no scored target (all are IGNORE)")
    return {"loss": loss / scored, "accuracy": correct / scored}


def _scores(
    logits: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Summed cross-entropy, number of scored targets and number of correct predictions."""
    scored = targets != IGNORE  # (B,) or (B, L)
    loss = _loss_sum(logits, targets)
    correct = ((logits.float().argmax(-1) == targets) & scored).sum()
    return loss, scored.sum(), correct


def _loss_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``Σ −log softmax(logits)[target]`` over the scored targets, in float32.

    ``logits`` ``(B, C)`` with ``targets`` ``(B,)``, or ``(B, L, C)`` with ``(B, L)``.
    """
    if logits.ndim != targets.ndim + 1 or logits.shape[:-1] != targets.shape:
        expected = "(batch, n_classes)" if targets.ndim == 1 else "(batch, length, n_classes)"
        raise ValueError(
            f"the model returned logits of shape {tuple(logits.shape)}; targets of shape "
            f"{tuple(targets.shape)} need logits {expected}"
        )
    flat = logits.float().flatten(0, -2)  # (B·L, C)
    return F.cross_entropy(flat, targets.flatten(), ignore_index=IGNORE, reduction="sum")


def _check_dataset(name: str, dataset: object) -> None:
    if not isinstance(dataset, SequenceDataset):
        raise ValueError(
            f"{name} must be an ssm.data.SequenceDataset, got {type(dataset).__name__}"
        )
    if len(dataset) == 0:
        raise ValueError(f"{name} is empty")


def _world() -> tuple[int, int]:
    """``(world_size, rank)`` of the initialized process group, ``(1, 0)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _device(cfg: TrainConfig) -> torch.device:
    """``cfg.device``, where ``"auto"`` means CUDA when available; CUDA is the current device
    (the one ``torch.cuda.set_device`` picked for this process under torchrun)."""
    name = cfg.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(
            "TrainConfig.device is 'cuda' but CUDA is not available; use device='cpu' or 'auto'"
        )
    return torch.device("cuda", torch.cuda.current_device())


def _autocast(cfg: TrainConfig, dev: torch.device) -> contextlib.AbstractContextManager:
    if cfg.amp and dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _deterministic(enabled: bool, dev: torch.device) -> Iterator[None]:
    """Deterministic algorithms for the run (cuBLAS workspace fixed on CUDA), restored after."""
    if not enabled:
        yield
        return
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    if dev.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global random states with ``seed``."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the global state, for code that uses it)
    torch.manual_seed(seed)


def _rng_state(dev: torch.device) -> dict[str, Any]:
    """Python's, NumPy's and torch's random states, in types ``torch.load`` reads safely."""
    state = np.random.get_state(legacy=False)  # noqa: NPY002
    numpy = {
        **state,
        "state": {
            **state["state"],
            "key": torch.from_numpy(state["state"]["key"].astype(np.int64)),
        },
    }
    rng = {"python": random.getstate(), "numpy": numpy, "torch": torch.get_rng_state()}
    if dev.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(dev)
    return rng


def _set_rng_state(rng: dict[str, Any], dev: torch.device) -> None:
    random.setstate(rng["python"])
    numpy = rng["numpy"]
    key = numpy["state"]["key"].numpy().astype(np.uint32)
    np.random.set_state({**numpy, "state": {**numpy["state"], "key": key}})  # noqa: NPY002
    torch.set_rng_state(rng["torch"])
    if dev.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], dev)


@dataclasses.dataclass
class _Progress:
    """Where a run is: what a checkpoint saves besides the model and the optimizer."""

    step: int = 0  # updates done
    epoch: int = 0  # epoch of the training loader being read
    position: int = 0  # batches of that epoch already read
    loss_sum: torch.Tensor | None = None  # sum of the step losses since the last record
    loss_steps: int = 0  # steps since the last record
    records: list[dict[str, float]] = dataclasses.field(default_factory=list)
    elapsed_s: float = 0.0  # wall time of the earlier runs of a resumed training


def _save(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: LambdaLR,
    progress: _Progress, cfg: TrainConfig, dev: torch.device,
) -> None:  # fmt: skip
    """Write the checkpoint atomically (a reader never sees half a file)."""
    payload = {
        "config": dataclasses.asdict(cfg),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "progress": {**dataclasses.asdict(progress), "loss_sum": progress.loss_sum.cpu()},
        "rng": _rng_state(dev),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    os.replace(partial, path)


def _load(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: LambdaLR,
    cfg: TrainConfig, dev: torch.device,
) -> _Progress:  # fmt: skip
    """Restore a checkpoint written by :func:`_save`; returns where the run was."""
    if not path.is_file():
        raise FileNotFoundError(f"resume=True but the checkpoint {path} does not exist")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    saved, current = payload["config"], dataclasses.asdict(cfg)
    changed = [k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k]]
    if changed:
        listed = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise ValueError(
            f"cfg differs from the config of the checkpoint {path} ({listed}); resume with the "
            f"same config (only {', '.join(RESUMABLE_CHANGES)} may change)"
        )
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    _set_rng_state(payload["rng"], dev)
    progress = _Progress(**payload["progress"])
    progress.loss_sum = progress.loss_sum.to(dev)
    return progress


def _batches(
    data_loader: torch.utils.data.DataLoader, dataset: SequenceDataset, epoch: int, skip: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This process's batches of ``epoch``, from batch ``skip`` on.

    The indices come from the loader's (distributed) sampler; the examples are gathered by
    indexing the dataset's tensors at once, which gives what the loader's collation would,
    and skipping the batches read before a checkpoint costs no loading.
    """
    data_loader.sampler.set_epoch(epoch)
    for indices in itertools.islice(data_loader.batch_sampler, skip, None):
        idx = torch.as_tensor(indices)
        yield dataset.inputs[idx], dataset.targets[idx]


def _nonfinite(step: int, loss: torch.Tensor, model: nn.Module) -> NonFiniteError:
    """The error of the first non-finite step: the loss, else the first parameter (by
    qualified name) whose gradient is not finite."""
    hint = "lower lr or ssm_lr, clip gradients (grad_clip) or check the data"
    if not torch.isfinite(loss):
        return NonFiniteError(f"step {step}: the loss itself is {loss.item()}; {hint}", step)
    for name, p in model.named_parameters():
        if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
            return NonFiniteError(
                f"step {step}: the gradient of parameter {name!r} is not finite (the loss is "
                f"{loss.item():.4g}); {hint}",
                step,
            )
    return NonFiniteError(
        f"step {step}: every gradient is finite but their global norm overflows; {hint}", step
    )


def _global_norm(grads: list[torch.Tensor], dev: torch.device) -> torch.Tensor:
    """``‖g‖₂`` of all the gradients together, as a 0-d tensor on ``dev`` (no sync)."""
    if not grads:
        return torch.zeros((), device=dev)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def _clip(grads: list[torch.Tensor], norm: torch.Tensor, max_norm: float) -> None:
    """Scale the gradients in place by ``min(1, max_norm / (‖g‖₂ + 1e-6))``, as
    ``torch.nn.utils.clip_grad_norm_`` does; the norm is taken before, so that the non-finite
    guard sees the gradients as they came (clipping by a NaN norm would make every one NaN)."""
    scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale.to(g.device))


def _update(
    net: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: LambdaLR,
    batch: tuple[torch.Tensor, torch.Tensor], cfg: TrainConfig, dev: torch.device, step: int,
) -> torch.Tensor:  # fmt: skip
    """One AdamW update on ``batch``; returns the batch loss, on the device (no sync).

    The loss is the mean over the global batch's scored targets: under data parallelism the
    count of scored steps is summed over the processes, as ``DistributedDataParallel``
    averages the gradients.
    """
    x, y = (t.to(dev, non_blocking=True) for t in batch)  # (B, L[, d_input]), (B[, L])
    with _autocast(cfg, dev):
        logits = net(x)  # (B, C) or (B, L, C)
    scored = (y != IGNORE).sum()  # of this process's share of the batch
    world, _ = _world()
    if world > 1 and y.ndim == 2:  # shares score unequal numbers of steps: use their mean
        dist.all_reduce(scored)
        scored = scored / world
    loss = _loss_sum(logits, y) / scored
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = _global_norm(grads, loss.device)
    loss = loss.detach()
    if not bool(torch.isfinite(torch.stack([loss, norm])).all()):  # the one sync per step
        raise _nonfinite(step, loss, model)
    if cfg.grad_clip is not None:
        _clip(grads, norm, cfg.grad_clip)
    optimizer.step()
    scheduler.step()
    return loss


def _record(
    model: nn.Module, val_set: SequenceDataset, cfg: TrainConfig, progress: _Progress,
    start: float,
) -> dict[str, float]:  # fmt: skip
    """Evaluate, and turn the losses accumulated since the last record into a record."""
    world, _ = _world()
    loss_sum = progress.loss_sum.clone()
    if world > 1:
        dist.all_reduce(loss_sum)
    val = evaluate(model, val_set, cfg)
    record = {
        "step": progress.step,
        "train_loss": loss_sum.item() / (world * max(1, progress.loss_steps)),
        "val_loss": val["loss"],
        "val_accuracy": val["accuracy"],
        "lr": cfg.lr * lr_factor(progress.step - 1, cfg),
        "elapsed_s": time.perf_counter() - start,
    }
    progress.loss_sum.zero_()
    progress.loss_steps = 0
    return record


def train(
    model: nn.Module,
    train_set: SequenceDataset,
    val_set: SequenceDataset,
    cfg: TrainConfig,
    *,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
) -> History:
    """Train ``model`` on ``train_set`` for ``cfg.steps`` AdamW updates; return its metrics.

    ``model`` maps inputs ``(B, L)`` (tokens) or ``(B, L, d_input)`` to logits ``(B, C)``
    (targets per sequence) or ``(B, L, C)`` (targets per step); it is moved to the device and
    trained in place, in float32 (bf16 autocast on CUDA when ``cfg.amp``). Each step:

    - a shuffled batch of ``cfg.batch_size`` sequences (epochs follow one another, the last
      incomplete batch of each dropped), the mean cross-entropy over its scored targets;
    - at the first step where the loss or a gradient is not finite, a :class:`NonFiniteError`
      naming the step and the first such parameter; else the gradients clipped to a global
      norm of ``cfg.grad_clip``;
    - AdamW (Loshchilov & Hutter 2019, arXiv 1711.05101) with the groups of
      :func:`param_groups`, each at its peak learning rate times :func:`lr_factor` (warm-up,
      then cosine).

    Every ``cfg.eval_every`` steps and after the last, :func:`evaluate` on ``val_set`` adds a
    record to the :class:`History`. With ``checkpoint`` (a file path), the model, optimizer,
    schedule, random states, data position and history are saved every
    ``cfg.checkpoint_every`` steps and at the end; ``resume=True`` continues from that file,
    and a run resumed on CPU is bit for bit the run that was not interrupted.

    Under an initialized ``torch.distributed`` process group (``torchrun``), the model is
    wrapped in ``DistributedDataParallel``; each process reads its share of every global
    batch, metrics are summed over the processes, and only rank 0 shows the progress bar and
    writes the checkpoint. Seeds, Python's, NumPy's and torch's, are set from ``cfg.seed``, and
    deterministic algorithms are on for the run when ``cfg.deterministic``.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"cfg must be an ssm.train.TrainConfig, got {type(cfg).__name__}")
    _check_dataset("train_set", train_set)
    _check_dataset("val_set", val_set)
    if resume and checkpoint is None:
        raise ValueError("resume=True needs the checkpoint path to resume from")
    dev = _device(cfg)
    with _deterministic(cfg.deterministic, dev):
        seed_all(cfg.seed)
        model.to(dev)
        optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr)
        scheduler = LambdaLR(optimizer, _Schedule(dataclasses.asdict(cfg)))
        path = Path(checkpoint) if checkpoint is not None else None
        if resume:
            progress = _load(path, model, optimizer, scheduler, cfg, dev)
        else:
            progress = _Progress(loss_sum=torch.zeros((), dtype=torch.float64, device=dev))
        return _loop(model, train_set, val_set, cfg, dev, optimizer, scheduler, progress, path)


def _due(step: int, every: int, last: bool) -> bool:
    """Whether something done every ``every`` steps (``0``: at the end only) is due now."""
    return last or (every > 0 and step % every == 0)


def _loop(
    model: nn.Module, train_set: SequenceDataset, val_set: SequenceDataset, cfg: TrainConfig,
    dev: torch.device, optimizer: torch.optim.Optimizer, scheduler: LambdaLR,
    progress: _Progress, path: Path | None,
) -> History:  # fmt: skip
    """The steps of :func:`train`, from where ``progress`` says the run is."""
    world, rank = _world()
    data = loader(train_set, cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=True)
    if len(data) == 0:
        raise ValueError(
            f"train_set has {len(train_set)} sequences, fewer than one batch of batch_size = "
            f"{cfg.batch_size}; lower batch_size"
        )
    net = model
    if world > 1:
        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    bar = tqdm(
        total=cfg.steps, initial=progress.step, desc="train", dynamic_ncols=True,
        disable=not cfg.progress or rank != 0,
    )  # fmt: skip
    start = time.perf_counter() - progress.elapsed_s
    net.train()
    try:
        while progress.step < cfg.steps:
            for batch in _batches(data, train_set, progress.epoch, progress.position):
                progress.position += 1
                loss = _update(net, model, optimizer, scheduler, batch, cfg, dev, progress.step + 1)
                progress.step += 1
                progress.loss_sum += loss
                progress.loss_steps += 1
                bar.update()
                last = progress.step == cfg.steps
                if _due(progress.step, cfg.eval_every, last):
                    progress.records.append(_record(model, val_set, cfg, progress, start))
                    r = progress.records[-1]
                    bar.set_postfix(loss=f"{r['train_loss']:.3f}", acc=f"{r['val_accuracy']:.3f}")
                if (
                    path is not None
                    and rank == 0
                    and _due(progress.step, cfg.checkpoint_every, last)
                ):
                    progress.elapsed_s = time.perf_counter() - start
                    _save(path, model, optimizer, scheduler, progress, cfg, dev)
                if last:
                    break
            else:
                progress.epoch += 1
                progress.position = 0
    except NonFiniteError as error:
        error.history = History(records=list(progress.records))
        raise
    finally:
        bar.close()
    return History(records=list(progress.records))
