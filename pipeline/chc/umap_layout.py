"""UMAP's layout SGD, reproducible on several CPU cores.

umap-learn runs its seeded layout on one core (its parallel layout races on shared points, so
no two runs agree), and it is the longest step of a `topics` fit (README "Speed"). No library
offers a reproducible parallel one, so this module holds one: umap-learn's arithmetic
(``optimize_layout_euclidean``: the same gradients, clipping, edge schedule, learning-rate
decay and per-point random streams for the negative samples) in another order of edges, the
stratified order of parallel SGD for matrix factorisation (Gemulla et al., KDD 2011):

* the points are cut into ``blocks`` contiguous ranges; an epoch runs in ``blocks - 1``
  rounds, and in each round the blocks meet in pairs (a round-robin schedule: every two
  blocks meet once an epoch; a block's edges to itself run in the first round);
* the pairs of a round share no point, so they run side by side, each on a thread, each
  moving both ends of its edges at once, in umap-learn's order (by head point);
* negative samples are read as they stood when the round began (they only push, and only
  the head point moves; with one block there is no round to wait for: umap-learn's reads).

So the result depends on ``blocks``, never on the number of threads or their timing; with
``blocks=1`` it is umap-learn's layout bit for bit (tests/test_block_umap.py), and so with
``blocks=2`` (one pair: all edges on one thread, in umap-learn's order). ``blocks/2`` pairs
run at once: 4 blocks keep 2 cores busy.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from tqdm import tqdm

INT32_MIN, INT32_MAX = np.iinfo(np.int32).min + 1, np.iinfo(np.int32).max - 1


def find_ab_params(spread: float, min_dist: float) -> tuple[float, float]:
    """umap-learn's fit of 1 / (1 + a d^2b) to the offset exponential of ``min_dist`` and
    ``spread``."""
    from scipy.optimize import curve_fit

    def curve(x, a, b):
        return 1.0 / (1.0 + a * x ** (2 * b))

    x = np.linspace(0, spread * 3, 300)
    y = np.where(x < min_dist, 1.0, np.exp(-(x - min_dist) / spread))
    (a, b), _ = curve_fit(curve, x, y)
    return float(a), float(b)


def epochs_per_sample(weights: np.ndarray, n_epochs: int) -> np.ndarray:
    """Each edge is sampled once every this many epochs (the heaviest every epoch)."""
    samples = n_epochs * (weights / weights.max())
    result = np.full(len(weights), -1.0)
    result[samples > 0] = float(n_epochs) / samples[samples > 0]
    return result


def optimize_layout(
    embedding: np.ndarray,
    head: np.ndarray,
    tail: np.ndarray,
    weights: np.ndarray,
    n_epochs: int,
    a: float,
    b: float,
    rng_state: np.ndarray,
    *,
    blocks: int = 1,
    threads: int = 1,
    gamma: float = 1.0,
    initial_alpha: float = 1.0,
    negative_sample_rate: float = 5.0,
    progress: bool = False,
) -> np.ndarray:
    """Lay out ``embedding`` [n, dim] (float32, updated in place and returned) on the graph
    edges ``head -> tail`` (sorted by head) of ``weights``, as umap-learn's
    ``optimize_layout_euclidean(..., move_other=True)`` with its ``rng_state``."""
    n = len(embedding)
    if blocks != 1 and (blocks < 2 or blocks % 2):
        raise ValueError(f"topics.umap.blocks = {blocks}: must be 1 or an even number")
    if np.any(np.diff(head) < 0):
        raise ValueError("optimize_layout: edges must be sorted by head")
    schedule = epochs_per_sample(weights, n_epochs)
    negative_schedule = schedule / negative_sample_rate
    next_negative = negative_schedule.copy()
    next_sample = schedule.copy()
    # umap-learn's per-point random streams: a point's negative samples do not depend on the
    # order the points are visited in
    streams = np.full((n, len(rng_state)), rng_state, dtype=np.int64) + embedding[:, 0].astype(
        np.float64
    ).view(np.int64).reshape(-1, 1)

    block_of = _blocks_of_points(head, schedule, n, blocks)
    rounds = _rounds(block_of[head], block_of[tail], blocks)
    snapshot = embedding.copy() if blocks > 1 else embedding

    def run(edges, epoch: int, alpha: float) -> None:
        _epoch_of_edges(
            embedding, snapshot, edges, head, tail, schedule, next_sample, negative_schedule,
            next_negative, streams, a, b, gamma, alpha, epoch, n,
        )  # fmt: skip

    alpha = initial_alpha
    epochs = tqdm(range(n_epochs), desc="UMAP layout", unit="epoch", disable=not progress)
    with ThreadPoolExecutor(max(1, min(threads, blocks // 2))) as pool:
        for epoch in epochs:
            for pairs in rounds:
                if blocks > 1:
                    snapshot[:] = embedding
                list(pool.map(run, pairs, [epoch] * len(pairs), [alpha] * len(pairs)))
            alpha = initial_alpha * (1.0 - float(epoch) / float(n_epochs))
    return embedding


def _blocks_of_points(head, schedule, n: int, blocks: int) -> np.ndarray:
    """Each point's block: ``blocks`` contiguous ranges of points with about equal numbers of
    sampled edges per epoch."""
    sampled = np.where(schedule > 0, 1.0 / np.where(schedule > 0, schedule, 1.0), 0.0)
    work = np.cumsum(np.bincount(head, weights=sampled, minlength=n))
    cuts = np.searchsorted(work, np.linspace(0.0, work[-1], blocks + 1)[1:-1], side="right")
    return np.searchsorted(cuts, np.arange(n), side="right").astype(np.int64)


def _rounds(head_block: np.ndarray, tail_block: np.ndarray, blocks: int) -> list:
    """The epoch's rounds: in each, the edge indices of every pair of blocks that meet (the
    circle method), ascending (umap-learn's order)."""
    if blocks == 1:
        return [[np.arange(len(head_block), dtype=np.int64)]]
    circle = list(range(blocks))
    meeting = np.zeros((blocks, blocks), dtype=np.int64)  # round in which two blocks meet
    schedule = []
    for round_ in range(blocks - 1):
        pairs = [(circle[i], circle[blocks - 1 - i]) for i in range(blocks // 2)]
        for first, second in pairs:
            meeting[first, second] = meeting[second, first] = round_
        schedule.append(pairs)
        circle = [circle[0], circle[-1], *circle[1:-1]]
    np.fill_diagonal(meeting, 0)  # a block's edges to itself run in the first round
    in_round = [meeting[head_block, tail_block] == r for r in range(blocks - 1)]
    return [
        [np.flatnonzero(in_round[r] & _within(head_block, tail_block, *pair)) for pair in pairs]
        for r, pairs in enumerate(schedule)
    ]


def _within(head_block, tail_block, first: int, second: int) -> np.ndarray:
    """Edges with both ends in the blocks ``first`` and ``second``."""
    return np.isin(head_block, (first, second)) & np.isin(tail_block, (first, second))


@numba.njit(cache=True)
def _clip(value):
    if value > 4.0:
        return 4.0
    elif value < -4.0:
        return -4.0
    return value


@numba.njit(
    "f4(f4[::1],f4[::1])",
    fastmath=True,
    cache=True,
    locals={"result": numba.types.float32, "diff": numba.types.float32},
)
def _rdist(x, y):
    result = 0.0
    for i in range(x.shape[0]):
        diff = x[i] - y[i]
        result += diff * diff
    return result


@numba.njit("i4(i8[:])", nogil=True, cache=True)
def _tau_rand_int(state):
    """umap-learn's Tausworthe generator (``umap.utils.tau_rand_int``)."""
    state[0] = (((state[0] & 4294967294) << 12) & 0xFFFFFFFF) ^ (
        (((state[0] << 13) & 0xFFFFFFFF) ^ state[0]) >> 19
    )
    state[1] = (((state[1] & 4294967288) << 4) & 0xFFFFFFFF) ^ (
        (((state[1] << 2) & 0xFFFFFFFF) ^ state[1]) >> 25
    )
    state[2] = (((state[2] & 4294967280) << 17) & 0xFFFFFFFF) ^ (
        (((state[2] << 3) & 0xFFFFFFFF) ^ state[2]) >> 11
    )
    return state[0] ^ state[1] ^ state[2]


@numba.njit(nogil=True, fastmath=True, cache=True)
def _epoch_of_edges(
    embedding, snapshot, edges, head, tail, schedule, next_sample, negative_schedule,
    next_negative, streams, a, b, gamma, alpha, epoch, n,
):  # fmt: skip
    """One round of the ``edges`` of a pair of blocks: umap-learn's
    ``_optimize_layout_euclidean_single_epoch`` on them, negative samples read from
    ``snapshot`` (the layout as the round began; ``embedding`` itself for one block)."""
    dim = embedding.shape[1]
    for i in edges:
        if next_sample[i] > epoch:
            continue
        j = head[i]
        k = tail[i]
        current = embedding[j]
        other = embedding[k]
        dist_squared = _rdist(current, other)
        if dist_squared > 0.0:
            grad_coeff = -2.0 * a * b * pow(dist_squared, b - 1.0)
            grad_coeff /= a * pow(dist_squared, b) + 1.0
        else:
            grad_coeff = 0.0
        for d in range(dim):
            grad_d = _clip(grad_coeff * (current[d] - other[d]))
            current[d] += grad_d * alpha
            other[d] += -grad_d * alpha
        next_sample[i] += schedule[i]

        n_negative = int((epoch - next_negative[i]) / negative_schedule[i])
        for _ in range(n_negative):
            k = _tau_rand_int(streams[j]) % n
            other = snapshot[k]
            dist_squared = _rdist(current, other)
            if dist_squared > 0.0:
                grad_coeff = 2.0 * gamma * b
                grad_coeff /= (0.001 + dist_squared) * (a * pow(dist_squared, b) + 1)
            elif j == k:
                continue
            else:
                grad_coeff = 0.0
            for d in range(dim):
                if grad_coeff > 0.0:
                    grad_d = _clip(grad_coeff * (current[d] - other[d]))
                else:
                    grad_d = 0
                current[d] += grad_d * alpha
        next_negative[i] += n_negative * negative_schedule[i]
