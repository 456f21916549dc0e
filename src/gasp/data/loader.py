"""Model-specific samples from prepared data, built in DataLoader worker processes.

A prepared folder holds frames, depth, cameras and a sequence index, nothing model-specific
(``gasp.data.store``). :class:`SampleDataset` turns sequence ``i`` into a sample for one model's token
grid and input size (:func:`gasp.data.targets.build_sample`: decode, resize/crop, token-grid targets,
per-token depth, query mask). :class:`SampleStream` feeds training: a ``torch.utils.data.DataLoader``
whose batch sampler walks this process's slices of the global order (:mod:`gasp.data.order`), with
``num_workers`` worker processes and ``prefetch`` micro-batches in flight per worker, so decoding,
resizing and targets run off the training process (``num_workers=0`` builds them in-process, for
tests and debugging; the batches are the same). Each worker opens the prepared folder itself and
reads only the sequences of the micro-batches it is handed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gasp.data.order import BatchOrder, rank_slice

# The prepared-data module (switch to gasp.data.store when it lands: same interface).
from gasp.data.store import open_prepared
from gasp.data.targets import build_sample, check_queries
from gasp.procs import die_with_parent

__all__ = ["SampleDataset", "SampleStream", "build_sample", "open_prepared", "model_frame_size"]


def model_frame_size(
    adapter: Any, grid: Sequence[int] | None = None
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The token grid ``(gh, gw)`` (``grid``, default the adapter's ``default_grid``) and the frame size
    ``(H, W)`` that gives it (``adapter.image_size_for_grid``).

    Raises:
        BadInputError / ConfigError: the model cannot produce that grid (message from the adapter).
    """
    g = tuple(int(x) for x in (grid or adapter.default_grid))
    hw = tuple(int(x) for x in adapter.image_size_for_grid(g))
    return g, hw


class SampleDataset(torch.utils.data.Dataset):
    """Sequence ``i`` of a prepared data set -> a sample for one model (map-style dataset).

    Args:
        data: a prepared folder (opened lazily, once per process) or an opened ``PreparedData``.
        grid: the model's token grid ``(gh, gw)``.
        image_hw: the model's frame size ``(H, W)`` for that grid.
        queries: ``tracks`` or ``cells`` (:mod:`gasp.data.targets`).
    """

    def __init__(self, data: str | Path | Any, grid: Sequence[int], image_hw: Sequence[int], queries: str):
        self._root = str(data) if isinstance(data, (str, Path)) else None
        self._data = data if self._root is None else None
        self.grid = (int(grid[0]), int(grid[1]))
        self.image_hw = (int(image_hw[0]), int(image_hw[1]))
        self.queries = check_queries(queries)

    @property
    def data(self) -> Any:
        if self._data is None:
            self._data = open_prepared(self._root)
        return self._data

    def __getstate__(self) -> dict[str, Any]:  # a folder is reopened in each worker
        state = dict(self.__dict__)
        if self._root is not None:
            state["_data"] = None
        return state

    def __len__(self) -> int:
        return len(self.data.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return build_sample(self.data, int(i), self.grid, self.image_hw, self.queries)


def collate(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A micro-batch stays a list of sample dicts (``make_batch`` stacks what the model needs)."""
    return samples


def _single(sample: dict[str, Any]) -> dict[str, Any]:
    return sample


def _worker_init(_: int) -> None:
    die_with_parent(os.getppid())  # a killed trainer leaves no workers behind (they would hold its lock)
    torch.set_num_threads(1)


class _RankBatches:
    """This process's micro-batches of the global order, from global batch ``start`` on (endless)."""

    def __init__(self, order: BatchOrder, start: int, rank: int, per_rank: int) -> None:
        self.order, self.start, self.rank, self.per_rank = order, start, rank, per_rank

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.order.batches(self.start):
            yield rank_slice(batch, self.rank, self.per_rank).tolist()


class SampleStream:
    """Endless, resumable stream of this process's micro-batches (lists of sample dicts).

    Args:
        data: prepared folder or opened ``PreparedData``.
        grid, image_hw, queries: what the model needs (see :class:`SampleDataset`).
        batch_size: sequences per process and micro-batch.
        seed: seed of the global order.
        consumed: sequences of the global stream already consumed (a multiple of the global batch).
        rank, world_size: this process among the training processes.
        num_workers: DataLoader worker processes (0: build samples in this process).
        prefetch: micro-batches loaded ahead per worker.
    """

    def __init__(
        self,
        data: str | Path | Any,
        *,
        grid: Sequence[int],
        image_hw: Sequence[int],
        queries: str,
        batch_size: int,
        seed: int,
        consumed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 2,
        prefetch: int = 2,
    ) -> None:
        self.dataset = SampleDataset(data, grid, image_hw, queries)
        self.global_batch = batch_size * world_size
        if consumed % self.global_batch:
            raise ValueError(
                f"consumed={consumed} is not a multiple of the global batch {self.global_batch} "
                "(resume with the batch size and number of processes of the interrupted run)"
            )
        index = self.dataset.data.index
        self.order = BatchOrder(np.asarray(index.num_frames), self.global_batch, seed)
        self.consumed = int(consumed)
        sampler = _RankBatches(self.order, self.consumed // self.global_batch, rank, batch_size)
        kwargs: dict[str, Any] = {}
        if num_workers > 0:
            kwargs = dict(prefetch_factor=max(1, prefetch), worker_init_fn=_worker_init)
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate, **kwargs
        )
        self._it: Iterator[list[dict[str, Any]]] | None = None

    def next_batch(self) -> list[dict[str, Any]]:
        """This process's sequences of the next global batch (all with the same frame count)."""
        if self._it is None:
            self._it = iter(self.loader)
        samples = next(self._it)
        self.consumed += self.global_batch
        return samples

    def close(self) -> None:
        """Stop the worker processes."""
        it, self._it = self._it, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()

    def __enter__(self) -> SampleStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def iter_samples(
    data: str | Path | Any,
    grid: Sequence[int],
    image_hw: Sequence[int],
    queries: str,
    indices: Sequence[int],
    num_workers: int = 0,
) -> Iterator[dict[str, Any]]:
    """Samples of sequences ``indices`` in that order (for probing), built in ``num_workers`` workers."""
    dataset = SampleDataset(data, grid, image_hw, queries)
    kwargs: dict[str, Any] = dict(worker_init_fn=_worker_init, prefetch_factor=2) if num_workers else {}
    loader = torch.utils.data.DataLoader(
        dataset,
        sampler=list(indices),
        batch_size=None,
        num_workers=num_workers,
        collate_fn=_single,
        **kwargs,
    )
    yield from loader
