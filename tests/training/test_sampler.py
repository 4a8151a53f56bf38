"""WeightedMultitaskSampler: mixture, sample-level rank split, bucketing, exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ofasys.training.sampler import (SamplerStateError, WeightedMultitaskSampler, bucket_order, cut_batches,
                                     mixture_probabilities, padding_fraction)

from .fakes import FakeTaskData, make_tasks

WEIGHTS = {"caption": 0.3, "grounding": 0.3, "vqa": 0.1, "infill": 0.3}


def sampler(tasks=None, weights=WEIGHTS, **kw) -> WeightedMultitaskSampler:
    args = dict(max_tokens=256, max_batch_size=16, pool_size=64, seed=7)
    args.update(kw)
    return WeightedMultitaskSampler(tasks if tasks is not None else make_tasks(), weights, **args)


def take(s: WeightedMultitaskSampler, n: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(b.task, b.indices) for b in (s.next_batch() for _ in range(n))]


def chi_square(counts: dict[str, int], probs: dict[str, float]) -> float:
    total = sum(counts.values())
    return sum((counts.get(k, 0) - total * p) ** 2 / (total * p) for k, p in probs.items() if p > 0)


# ---------------------------------------------------------------------------------------- mixture

def test_task_frequencies_match_weights():
    s = sampler()
    draws = [s.choose_task() for _ in range(5000)]
    counts = {k: draws.count(k) for k in WEIGHTS}
    # 3 degrees of freedom: P(chi2 > 16.27) = 0.001 under the null.
    assert chi_square(counts, s.probabilities) < 16.27, counts
    assert s.probabilities == pytest.approx({k: v / sum(WEIGHTS.values()) for k, v in WEIGHTS.items()})


def test_weights_as_sequence_and_zero_weight_task_is_never_drawn():
    s = sampler(weights=[1.0, 1.0, 0.0, 2.0])
    drawn = {b.task for b in (s.next_batch() for _ in range(400))}
    assert drawn == {"caption", "grounding", "infill"}
    empty = sampler([FakeTaskData("a", 10), FakeTaskData("empty", 0)], weights={"a": 1, "empty": 0})
    take(empty, 5)
    json.dumps(empty.state_dict())


def test_temperature_mode_probabilities_and_frequencies():
    tasks = make_tasks({"big": 1000, "mid": 100, "small": 10})
    sizes = np.array([1000, 100, 10], dtype=float)
    for t in (1.0, 2.0, 100.0):
        s = sampler(tasks, weights=None, mixture="temperature", temperature=t)
        expected = sizes ** (1 / t) / (sizes ** (1 / t)).sum()
        assert list(s.probabilities.values()) == pytest.approx(expected.tolist())
    s = sampler(tasks, weights=None, mixture="temperature", temperature=2.0)
    draws = [s.choose_task() for _ in range(5000)]
    counts = {k: draws.count(k) for k in s.probabilities}
    assert chi_square(counts, s.probabilities) < 13.82, counts  # 2 dof, p = 0.001
    # T -> infinity flattens towards uniform
    flat = mixture_probabilities(["a", "b"], [1000, 10], None, mixture="temperature", temperature=1e6)
    assert flat["a"] == pytest.approx(0.5, abs=1e-3)


def test_mixture_errors_are_loud():
    tasks = make_tasks({"a": 10, "b": 10})
    with pytest.raises(ValueError, match="ignore the given non-uniform weights"):
        sampler(tasks, weights={"a": 1, "b": 3}, mixture="temperature")
    with pytest.raises(ValueError, match="lack"):
        sampler(tasks, weights={"a": 1})
    with pytest.raises(ValueError, match=">= 0"):
        sampler(tasks, weights={"a": 1, "b": -1})
    with pytest.raises(ValueError, match="no samples"):
        sampler([FakeTaskData("a", 10), FakeTaskData("empty", 0)], weights=None)


# -------------------------------------------------------------------------------------- batching

def test_batches_respect_token_budget_and_max_batch_size():
    tasks = make_tasks()
    s = sampler(tasks, max_tokens=200, max_batch_size=12)
    lengths = {t.name: t.lengths for t in tasks}
    for task, idx in take(s, 300):
        lens = lengths[task][list(idx)]
        assert 1 <= len(idx) <= 12
        assert len(idx) * lens.max() <= 200 or len(idx) == 1


def test_cut_batches_oversized_sample_is_alone():
    assert cut_batches([0, 1, 2], [5, 100, 5], max_tokens=50, max_batch_size=8) == [[0, 2], [1]]


def test_bucketing_reduces_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 129, size=4096)
    indices = np.arange(4096)
    fractions = {}
    for sort in (True, False):
        batches = []
        for start in range(0, 4096, 512):  # pools of 512 like the sampler
            pool = indices[start : start + 512]
            batches += cut_batches(pool, lengths[pool], max_tokens=2048, max_batch_size=64, sort=sort)
        fractions[sort] = padding_fraction(batches, lengths)
    # And what the sampler itself yields (pools of 512 over a task with the same length law):
    task = FakeTaskData("long", 4096, min_len=2, max_len=128)
    s = WeightedMultitaskSampler([task], None, max_tokens=2048, max_batch_size=64, pool_size=512, seed=1)
    yielded = [b.indices for b in (s.next_batch() for _ in range(100))]
    realised = padding_fraction(yielded, task.lengths)
    print(f"\nmean padding fraction: bucketed {fractions[True]:.3f}, sampler {realised:.3f}, "
          f"unbucketed {fractions[False]:.3f}")
    assert fractions[True] < fractions[False] / 4
    assert realised < fractions[False] / 4


class TwoSided:
    """A task whose samples have [encoder, decoder] positions, as shards store them: an image-sized
    encoder with a varying prompt, and a decoder of varying length."""

    def __init__(self, name: str, n: int, seed: int = 0):
        rng = np.random.default_rng([seed, n])
        self.name = name
        self.lengths = np.stack([64 + rng.integers(0, 40, n), rng.integers(2, 120, n)], axis=1).astype(np.int32)

    def __len__(self) -> int:
        return len(self.lengths)


def test_the_budget_bounds_both_sides():
    """Each side's padded size is within max_tokens: a long decoder limits a batch whose encoders
    are short, and the other way round."""
    lengths = np.array([[10, 40], [10, 40], [10, 40], [40, 10], [40, 10], [40, 10], [90, 90]])
    batches = cut_batches(list(range(7)), lengths, max_tokens=100, max_batch_size=8, sort=False)
    assert batches == [[0, 1], [2, 3], [4, 5], [6]]  # 3 x 40 > 100 on the decoder, then the encoder
    # budgeting the encoder alone would batch three 40-long decoders: 120 padded decoder positions
    assert cut_batches(list(range(7)), lengths[:, 0], max_tokens=100, max_batch_size=8, sort=False)[0] == [0, 1, 2]
    task = TwoSided("t", 2000)
    s = WeightedMultitaskSampler([task], None, max_tokens=1024, max_batch_size=64, pool_size=256, seed=1)
    sizes = []
    for _ in range(200):
        idx = list(s.next_batch().indices)
        enc, dec = task.lengths[idx].max(axis=0)
        assert len(idx) * enc <= 1024 and len(idx) * dec <= 1024
        sizes.append(len(idx))
    assert min(sizes) < 10 < max(sizes)  # long decoders make small batches, short ones large


def test_bucketing_sorts_by_the_side_that_varies_most():
    fixed_encoder = np.array([[78, 9], [78, 3], [78, 6], [78, 3]])
    assert bucket_order(fixed_encoder).tolist() == [1, 3, 2, 0]  # by decoder; ties keep their order
    frames = np.array([[40, 7], [25, 9], [60, 8], [25, 3]])  # audio frames vary more than the transcript
    assert bucket_order(frames).tolist() == [3, 1, 0, 2]
    speech_out = np.array([[9, 400], [12, 150], [10, 260]])  # text in, frames out: the decoder leads
    assert bucket_order(speech_out).tolist() == [1, 2, 0]
    assert bucket_order(np.array([5, 1, 3])).tolist() == [1, 2, 0]  # one side


def test_padding_fraction_reports_each_side_and_both():
    lengths = np.array([[10, 1], [10, 3]])
    assert padding_fraction([[0, 1]], lengths, 0) == 0.0
    assert padding_fraction([[0, 1]], lengths, 1) == pytest.approx(1 - 4 / 6)
    assert padding_fraction([[0, 1]], lengths) == pytest.approx(1 - 24 / 26)


def test_two_sided_bucketing_keeps_padding_small_and_resumes_exactly():
    tasks = [TwoSided("a", 3000), TwoSided("b", 500, seed=1)]
    s = WeightedMultitaskSampler(tasks, None, max_tokens=2048, max_batch_size=32, pool_size=512, seed=4)
    full = take(s, 120)
    batches = [list(i) for t, i in full if t == "a"]
    unsorted = cut_batches(np.arange(512), tasks[0].lengths[:512], max_tokens=2048, max_batch_size=32, sort=False)
    # the decoder varies most, so it leads the order and is nearly unpadded; the encoder follows at random
    assert padding_fraction(batches, tasks[0].lengths, 1) < 0.05
    assert padding_fraction(batches, tasks[0].lengths) < padding_fraction(unsorted, tasks[0].lengths) / 2
    first = WeightedMultitaskSampler(tasks, None, max_tokens=2048, max_batch_size=32, pool_size=512, seed=4)
    assert take(first, 50) == full[:50]
    resumed = WeightedMultitaskSampler(tasks, None, max_tokens=2048, max_batch_size=32, pool_size=512, seed=4)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert take(resumed, 70) == full[50:]


# ------------------------------------------------------------------------------ ranks and epochs

@pytest.mark.parametrize("n, world", [(100, 3), (64, 2), (7, 4)])
def test_ranks_are_disjoint_and_cover_each_epoch(n, world):
    task = FakeTaskData("t", n)
    ranks = [WeightedMultitaskSampler([task], None, max_tokens=64, max_batch_size=4, pool_size=16,
                                      seed=3, rank=r, world_size=world) for r in range(world)]
    streams = []
    for s in ranks:
        flat: list[int] = []
        while len(flat) < 3 * n:
            flat += s.next_batch().indices
        streams.append(flat)
    for epoch in range(2):
        seen = []
        for r, flat in enumerate(streams):
            # Rank r's share of each epoch: stream positions g = epoch*n + p with g = r (mod world).
            shares = [len(range(r, (e + 1) * n, world)) - len(range(r, e * n, world)) for e in range(3)]
            start = sum(shares[:epoch])
            seen.append(flat[start : start + shares[epoch]])
        merged = [i for part in seen for i in part]
        assert sorted(merged) == list(range(n)), f"epoch {epoch} not covered exactly once across ranks"


def test_no_rank_starves_when_a_task_has_fewer_samples_than_ranks():
    tasks = [FakeTaskData("tiny", 2), FakeTaskData("big", 50)]
    for r in range(4):
        s = WeightedMultitaskSampler(tasks, None, max_tokens=64, max_batch_size=4, pool_size=8,
                                     seed=0, rank=r, world_size=4)
        batches = take(s, 200)
        assert {t for t, _ in batches} == {"tiny", "big"}
        assert all(len(idx) >= 1 for _, idx in batches)


def test_same_task_on_every_rank_and_different_samples():
    world = 3
    ranks = [sampler(rank=r, world_size=world) for r in range(world)]
    seqs = [take(s, 200) for s in ranks]
    tasks_per_rank = [[t for t, _ in seq] for seq in seqs]
    assert tasks_per_rank[0] == tasks_per_rank[1] == tasks_per_rank[2]
    for step in range(20):  # early steps: still inside epoch 0 of every task, so strictly disjoint
        sets = [set(seq[step][1]) for seq in seqs]
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_epochs_roll_over_and_every_epoch_is_a_permutation():
    task = FakeTaskData("t", 5, min_len=4, max_len=4)  # equal lengths: bucketing keeps stream order
    s = WeightedMultitaskSampler([task], None, max_tokens=1000, max_batch_size=2, pool_size=100, seed=0)
    flat: list[int] = []
    for _ in range(1000):
        flat += s.next_batch().indices
    epochs = [sorted(flat[i : i + 5]) for i in range(0, 500, 5)]
    assert all(e == [0, 1, 2, 3, 4] for e in epochs)
    orders = {tuple(flat[i : i + 5]) for i in range(0, 500, 5)}
    assert len(orders) > 10  # each epoch gets its own permutation


# ---------------------------------------------------------------------------- determinism/resume

def test_determinism_same_seed_same_sequence_other_seed_differs():
    assert take(sampler(), 100) == take(sampler(), 100)
    assert take(sampler(), 100) != take(sampler(seed=8), 100)


@pytest.mark.parametrize("rank, world", [(0, 1), (1, 2)])
def test_resume_continues_the_exact_sequence(rank, world):
    full = take(sampler(rank=rank, world_size=world), 50)
    first = sampler(rank=rank, world_size=world)
    assert take(first, 20) == full[:20]
    state = json.loads(json.dumps(first.state_dict()))  # must survive JSON
    resumed = sampler(rank=rank, world_size=world)
    resumed.load_state_dict(state)
    assert resumed.steps == 20
    assert take(resumed, 30) == full[20:]


def test_state_dict_contents():
    s = sampler()
    take(s, 10)
    state = s.state_dict()
    assert state["steps"] == 10 and state["world_size"] == 1
    task = state["tasks"]["caption"]
    assert set(task) >= {"epoch", "position", "consumed", "pending", "rng", "num_samples"}
    assert all(isinstance(i, int) for b in task["pending"] for i in b)
    assert state["mixture_rng"]["bit_generator"] == "PCG64"


def test_resume_with_other_world_size_or_data_fails_loudly():
    s = sampler(rank=0, world_size=2)
    take(s, 5)
    state = s.state_dict()
    with pytest.raises(SamplerStateError, match="world_size=2 but this run has world_size=4"):
        sampler(rank=0, world_size=4).load_state_dict(state)
    with pytest.raises(SamplerStateError, match="rank 0 loaded on rank 1"):
        sampler(rank=1, world_size=2).load_state_dict(state)
    with pytest.raises(SamplerStateError, match="data changed"):
        sampler(make_tasks({"caption": 10, "grounding": 200, "vqa": 97, "infill": 150}),
                rank=0, world_size=2).load_state_dict(state)
    with pytest.raises(SamplerStateError, match="batching"):
        sampler(rank=0, world_size=2, max_tokens=512).load_state_dict(state)
    with pytest.raises(SamplerStateError, match="probabilities"):
        sampler(rank=0, world_size=2, weights=None).load_state_dict(state)


@pytest.mark.parametrize("world_size", [1, 2])
def test_each_batch_names_the_epoch_its_samples_belong_to(world_size):
    """Per-sample augmentation is keyed by the batch's epoch: every sample occurs once per epoch and
    rank, and epochs only grow."""
    tasks = [FakeTaskData("t", 37)]
    for rank in range(world_size):
        s = WeightedMultitaskSampler(tasks, {"t": 1.0}, max_tokens=64, max_batch_size=4, pool_size=8, seed=3,
                                     rank=rank, world_size=world_size)
        seen: dict[int, list[int]] = {}
        last = 0
        for _ in range(60):
            b = s.next_batch()
            assert b.epoch >= last
            last = b.epoch
            seen.setdefault(b.epoch, []).extend(b.indices)
        assert last >= 2
        for epoch in range(last):  # complete epochs: exactly this rank's stream positions of that epoch
            positions = [g - epoch * 37 for g in range(rank, 37 * (epoch + 1), world_size) if g // 37 == epoch]
            assert sorted(seen[epoch]) == sorted(s._streams["t"].permutation(epoch)[positions].tolist())
