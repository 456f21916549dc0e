"""The deterministic global order of training sequences: shuffled across scenes, bucketed by F.

The stream: epoch ``e`` is the permutation ``default_rng([seed, e]).permutation(S)`` of all ``S``
sequence indices; epochs follow each other endlessly. Sequences enter one queue per frame count F
in stream order, and a global batch is emitted each time a queue holds ``B`` sequences (``B`` =
sequences per process x processes); global batches come out in the order they complete. A queue's
remainder at the end of an epoch carries over into the next, so no sequence is dropped, cut or
padded: every global batch has one F, and the frames of each sequence are exactly the index's.

Each process takes its slice ``[r * b, (r + 1) * b)`` of every global batch, so the global batch
does not depend on the number of processes. The position of the stream is one integer, the
sequences consumed (a multiple of ``B``), and global batch ``k`` is computed directly from it
(epoch by epoch, from the permutations), so a resumed run continues exactly where it stopped.

Why whole global batches of one F (rather than padding or per-process buckets): a frame count is a
token count for a VLM, so padding would add frames the model attends to; per-process buckets would
make the global batch depend on the number of processes; and one F per step gives every process
the same sequence length, so no process waits for another.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

import numpy as np

from gasp.errors import BadInputError


class BatchOrder:
    """Global batches of sequence indices (see the module docstring).

    Args:
        num_frames: ``(S,)`` frame count of every sequence (``SequenceIndex.num_frames``).
        global_batch: ``B``, sequences per global batch.
        seed: the permutation of epoch ``e`` uses ``default_rng([seed, e])``.
    """

    def __init__(self, num_frames: np.ndarray, global_batch: int, seed: int) -> None:
        self.num_frames = np.asarray(num_frames, dtype=np.int64)
        self.size = int(self.num_frames.shape[0])
        if self.size == 0:
            raise BadInputError("the prepared data set has no sequences")
        if global_batch < 1:
            raise ValueError(f"global_batch must be >= 1, got {global_batch}")
        self.global_batch = int(global_batch)
        self.seed = int(seed)
        values, counts = np.unique(self.num_frames, return_counts=True)
        self.frame_counts = dict(zip(values.tolist(), counts.tolist()))
        self._epochs: OrderedDict[int, tuple[np.ndarray, dict[int, np.ndarray]]] = OrderedDict()
        self._batches: OrderedDict[int, list[np.ndarray]] = OrderedDict()

    def permutation(self, epoch: int) -> np.ndarray:
        """The stream order of epoch ``epoch``: a permutation of all sequence indices."""
        return self._epoch(epoch)[0]

    def _epoch(self, epoch: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        if epoch not in self._epochs:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.size)
            f = self.num_frames[perm]
            by_f = {v: perm[f == v] for v in self.frame_counts}
            self._epochs[epoch] = (perm, by_f)
            if len(self._epochs) > 4:
                self._epochs.popitem(last=False)
        return self._epochs[epoch]

    def batches_before(self, epoch: int) -> int:
        """Global batches completed before epoch ``epoch`` starts."""
        B = self.global_batch
        return sum((epoch * n) // B for n in self.frame_counts.values())

    def _queue(self, f: int, first: int, last: int) -> np.ndarray:
        """Items ``[first, last)`` of frame count ``f``'s queue across epochs."""
        n = self.frame_counts[f]
        out = []
        q = first
        while q < last:
            epoch, item = divmod(q, n)
            take = min(last - q, n - item)
            out.append(self._epoch(epoch)[1][f][item : item + take])
            q += take
        return np.concatenate(out)

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """The global batches completed during epoch ``epoch``, in completion order."""
        if epoch in self._batches:
            return self._batches[epoch]
        B = self.global_batch
        perm, by_f = self._epoch(epoch)
        position = np.empty(self.size, dtype=np.int64)
        position[perm] = np.arange(self.size)
        done = []
        for f, n in self.frame_counts.items():
            carried = (epoch * n) % B
            for item in range((B - carried - 1) % B, n, B):
                q = epoch * n + item
                done.append((int(position[by_f[f][item]]), f, q))
        done.sort()
        batches = [self._queue(f, q - B + 1, q + 1) for _, f, q in done]
        self._batches[epoch] = batches
        if len(self._batches) > 2:
            self._batches.popitem(last=False)
        return batches

    def batch(self, k: int) -> np.ndarray:
        """Global batch ``k`` (0-based): ``B`` sequence indices, all with the same F."""
        epoch = k * self.global_batch // self.size
        while self.batches_before(epoch + 1) <= k:
            epoch += 1
        while epoch > 0 and self.batches_before(epoch) > k:
            epoch -= 1
        return self.epoch_batches(epoch)[k - self.batches_before(epoch)]

    def batches(self, start: int = 0) -> Iterator[np.ndarray]:
        """Global batches ``start, start + 1, ...`` (endless)."""
        k = start
        while True:
            yield self.batch(k)
            k += 1


def rank_slice(batch: np.ndarray, rank: int, per_rank: int) -> np.ndarray:
    """Process ``rank``'s share ``[rank * per_rank, (rank + 1) * per_rank)`` of a global batch."""
    return batch[rank * per_rank : (rank + 1) * per_rank]
