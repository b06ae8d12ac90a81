"""Data sets of the book, and the one way they are batched.

Every data set of the package, procedural (:mod:`ssm.tasks`) or read from files (this module),
is a :class:`SequenceDataset`: ``inputs`` of shape ``(n, L)`` (integer tokens) or
``(n, L, d_input)`` (real features), and ``targets`` of shape ``(n,)`` (one class per sequence)
or ``(n, L)`` (one token per step, ``IGNORE`` where nothing is to be predicted). The training
loop (:mod:`ssm.train`) and the backbone (:mod:`ssm.layers`) read its metadata to size the
encoder and the decoder. :func:`loader` batches any of them, split across processes when
launched by ``torchrun``.

Dimension letters: n examples, L length, d_input features per step.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

__all__ = ["IGNORE", "SequenceDataset", "loader"]

#: Target value of the steps that carry no prediction (PyTorch's cross-entropy ``ignore_index``).
IGNORE = -100


class SequenceDataset(Dataset):
    """Sequences and their targets, with what a model needs to know about them.

    Args:
        inputs: ``(n, L)`` int64 tokens in ``[0, vocab_size)``, or ``(n, L, d_input)`` float32.
        targets: ``(n,)`` int64 classes in ``[0, n_classes)``, or ``(n, L)`` int64 tokens in
            ``[0, n_classes)`` with :data:`IGNORE` at steps that are not scored.
        n_classes: number of output classes (the decoder's width).
        vocab_size: number of input tokens for integer inputs, ``None`` for real features.
        name: a short name for captions and logs.
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        *,
        n_classes: int,
        vocab_size: int | None = None,
        name: str = "",
    ) -> None:
        if inputs.shape[0] != targets.shape[0]:
            raise ValueError(
                f"inputs and targets must hold as many examples, got {inputs.shape[0]} and "
                f"{targets.shape[0]}"
            )
        if inputs.is_floating_point() == (vocab_size is not None):
            raise ValueError(
                "integer inputs need a vocab_size and real inputs none, got "
                f"{inputs.dtype} inputs with vocab_size={vocab_size}"
            )
        if targets.ndim not in (1, 2) or (targets.ndim == 2 and targets.shape != inputs.shape[:2]):
            raise ValueError(
                f"targets must have shape (n,) or (n, L) = {tuple(inputs.shape[:2])}, "
                f"got {tuple(targets.shape)}"
            )
        self.inputs = inputs
        self.targets = targets.long()
        self.n_classes = int(n_classes)
        self.vocab_size = vocab_size
        self.name = name

    @property
    def seq_len(self) -> int:
        """``L``, the length of every sequence."""
        return self.inputs.shape[1]

    @property
    def d_input(self) -> int | None:
        """Features per step of real inputs, ``None`` for tokens."""
        return None if self.vocab_size is not None else self.inputs.shape[2]

    @property
    def per_step(self) -> bool:
        """Whether targets are per step ``(n, L)`` rather than per sequence ``(n,)``."""
        return self.targets.ndim == 2

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inputs[i], self.targets[i]

    def __repr__(self) -> str:
        kind = f"vocab {self.vocab_size}" if self.vocab_size is not None else f"{self.d_input} features"
        target = "per step" if self.per_step else "per sequence"
        return (
            f"SequenceDataset({self.name or 'unnamed'}: {len(self)} × L={self.seq_len}, {kind}, "
            f"{self.n_classes} classes {target})"
        )


def loader(
    dataset: Dataset, batch_size: int, *, shuffle: bool = False, seed: int = 0, drop_last: bool = False
) -> DataLoader:
    """Batches of ``dataset``; ``batch_size`` is the global batch.

    Under ``torch.distributed`` (``torchrun``) each of the ``world_size`` processes gets its
    share through a :class:`~torch.utils.data.distributed.DistributedSampler` (``batch_size``
    must then divide by ``world_size``); call ``loader.sampler.set_epoch(epoch)`` at each epoch,
    as :func:`ssm.train.train` does. Shuffling is seeded by ``seed`` (and the epoch), so a run
    sees the same batches whatever the number of processes.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    if batch_size % world:
        raise ValueError(
            f"batch_size {batch_size} (the global batch) must divide by the {world} processes"
        )
    sampler = DistributedSampler(
        dataset,
        num_replicas=world,
        rank=torch.distributed.get_rank() if world > 1 else 0,
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
    )
    return DataLoader(dataset, batch_size=batch_size // world, sampler=sampler, drop_last=drop_last)
