"""Two processes (torch.distributed, gloo): the union of the ranks' micro-batches is the global draw."""

import pickle

import numpy as np
import torch.distributed as dist
import torch.multiprocessing as mp
from prepared_fakes import WallScenes
from test_loader import check_distributions

from gasp import constants as C
from gasp.data.loader import SampleStream
from gasp.data.order import BatchOrder

WORLD, PER_RANK, SEED = 2, 2, 5


def _data() -> WallScenes:
    return WallScenes(num_scenes=4, frames_per_scene=120, sequences_per_scene=60, radius=16)


def _rank(rank: int, init: str, out: str, steps: int) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    stream = SampleStream(
        _data(),
        grid=(2, 2),
        image_hw=(8, 8),
        queries="cells",
        batch_size=PER_RANK,
        seed=SEED,
        rank=rank,
        world_size=WORLD,
        num_workers=0,
    )
    mine = []
    for _ in range(steps):
        mine.append([(s["index"], s[C.FRAME_INDEX], s[C.FRAMES].shape[0]) for s in stream.next_batch()])
    gathered = [None] * WORLD
    dist.all_gather_object(gathered, mine)
    if rank == 0:
        with open(out, "wb") as fh:
            pickle.dump(gathered, fh)
    dist.destroy_process_group()


def test_two_processes_draw_the_global_batches_and_the_samplers_distributions(tmp_path):
    data = _data()
    order = BatchOrder(np.asarray(data.index.num_frames), WORLD * PER_RANK, SEED)
    steps = order.batches_before(1)
    out = tmp_path / "draw.pkl"
    mp.spawn(_rank, args=(f"file://{tmp_path / 'rendezvous'}", str(out), steps), nprocs=WORLD, join=True)
    ranks = pickle.loads(out.read_bytes())
    samples = []
    for k in range(steps):
        per_rank = [[item[0] for item in ranks[r][k]] for r in range(WORLD)]
        assert sum(per_rank, []) == order.batch(k).tolist()  # rank r holds slice r of global batch k
        assert len({item[2] for r in range(WORLD) for item in ranks[r][k]}) == 1  # one F per step
        for r in range(WORLD):
            for index, frames, f in ranks[r][k]:
                samples.append({"index": index, C.FRAME_INDEX: frames, C.FRAMES: np.empty((f, 1))})
    assert len({s["index"] for s in samples}) == len(samples)  # nothing twice in the first epoch
    left = sum(n % (WORLD * PER_RANK) for n in order.frame_counts.values())  # queues carried over
    assert len(samples) == len(data.index) - left
    check_distributions(samples, data)
