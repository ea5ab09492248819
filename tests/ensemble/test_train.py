"""Vectorised training: each vmapped member equals its own separate training run (float64)."""

import dataclasses

import jax
import numpy as np
import pytest

from _ensemble_data import ethanol, tiny_spec
from jnnp.ensemble.members import (Member, init_members, member_arrays, member_energies, member_grid, subset_masks,
                                   unstack_tree)
from jnnp.ensemble.train import mask_batch, train_members
from jnnp.model.potential import Potential, init_potential
from jnnp.train.batch import Batcher
from jnnp.train.loop import TrainSettings, fit, make_optimizer_for
from jnnp.train.loss import LossConfig
from jnnp.train.normalize import normalize_potential, refit_shifts
from jnnp.train.step import init_train_state, make_train_step
from md._models import fast_compiles

CFG = TrainSettings(epochs=2, batch_size=4, learning_rate=5e-3, force_weight=1.0, seed=3, patience=5, plots=False,
                    cache_graphs=False, normalize=False)
MEMBERS = [Member(seed=0, learning_rate=5e-3, force_weight=1.0),
           Member(seed=1, learning_rate=2e-3, force_weight=3.0, energy_weight=0.5, train_fraction=0.5)]


def _leaves_close(a, b, rtol):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=1e-13)


@pytest.fixture(scope="module")
def vmapped():
    """Both members trained together for 2 epochs (no normalisation: the start points are the
    raw `init_potential` weights, so the separate runs can start from the very same ones; no
    validation set, so the best epoch is chosen by training loss and only train steps compile —
    the validation path is covered by the sweep tests)."""
    spec = tiny_spec()
    train, val = ethanol(0, 8), []
    masks = subset_masks(MEMBERS, len(train))
    # member 1 learns from the 4 structures of the first batch of epoch 1: the second batch of
    # that epoch holds none of them (no step for member 1 there)
    masks[1] = False
    masks[1][Batcher(spec, train, CFG.batch_size).order(0, CFG.seed)[:CFG.batch_size]] = True
    params0 = init_members(spec, MEMBERS, train, masks=masks, normalize=False)
    with fast_compiles():
        best, hist = train_members(spec, params0, member_arrays(MEMBERS, CFG.learning_rate), train, val, CFG,
                                   masks=masks, progress=False)
    return spec, train, val, masks, params0, best, hist


def test_member_equals_a_separate_fit(vmapped, tmp_path):
    """Member 0 (all structures, reference learning rate) is trained as `jnnp.train.fit` would."""
    spec, train, val, masks, params0, best, hist = vmapped
    start = Potential(spec, unstack_tree(params0)[0])
    cfg = dataclasses.replace(CFG, force_weight=MEMBERS[0].force_weight)
    with fast_compiles():
        ref, ref_hist = fit(start, train, val, cfg, tmp_path, progress=False)
    assert hist.best_epoch[0] == ref_hist.best_epoch == 2
    for key in ("train_loss", "train_energy_rmse", "train_force_rmse", "lr"):
        np.testing.assert_allclose([r[key] for r in hist.member(0)], ref_hist.column(key), rtol=1e-12)
    _leaves_close(unstack_tree(best)[0], ref.params, rtol=1e-12)


def test_masked_member_equals_separate_steps_on_its_subset(vmapped):
    """Member 1 (other seed, learning rate, loss weights, half the data) equals the single-model
    train step with its own optimiser and loss on batches whose other structures are unlabelled."""
    spec, train, val, masks, params0, best, hist = vmapped
    m = MEMBERS[1]
    cfg = dataclasses.replace(CFG, learning_rate=m.learning_rate)
    batcher = Batcher(spec, train, CFG.batch_size)
    optimizer = make_optimizer_for(cfg, batcher.n_batches())
    with fast_compiles():
        step = make_train_step(spec, optimizer, LossConfig(m.energy_weight, m.force_weight))
        state = init_train_state(unstack_tree(params0)[1], optimizer)
        losses, skipped = [], 0
        for epoch in range(CFG.epochs):
            sse_e = n_e = sse_f = n_f = 0.0
            for b in batcher.batches(epoch, CFG.seed):
                idx = np.asarray(b.index)
                mask = np.where(idx >= 0, masks[1][np.maximum(idx, 0)], False)
                if not mask.any():  # no structure of the member's subset: no step for it
                    skipped += 1
                    continue
                state, met = step(state, mask_batch(b, mask))
                sse_e += float(met["energy_mse"]) * float(met["energy_count"])
                n_e += float(met["energy_count"])
                sse_f += float(met["force_mse"]) * float(met["force_count"])
                n_f += float(met["force_count"])
            losses.append(m.energy_weight * sse_e / n_e + m.force_weight * sse_f / n_f)
    np.testing.assert_allclose([r["train_loss"] for r in hist.member(1)], losses, rtol=1e-10)
    assert hist.best_epoch[1] == CFG.epochs
    # the learning rate enters as a factor on the reference-rate update: equal to rounding; the
    # reference energies are refitted at the end on the member's own subset
    expected = refit_shifts(Potential(spec, state.params), batcher, include=masks[1]).params
    _leaves_close(unstack_tree(best)[1], expected, rtol=1e-9)
    assert masks[1].sum() == 4 and masks[0].all() and skipped >= 1


def test_members_really_differ(vmapped):
    spec, train, val, masks, params0, best, hist = vmapped
    a, b = unstack_tree(best)
    assert not np.allclose(a["networks"][0]["params"]["layer_0"]["kernel"],
                           b["networks"][0]["params"]["layer_0"]["kernel"])
    assert hist.stop_reason == "completed" and not hist.failures
    assert len(hist.rows()) == 2 * CFG.epochs


def test_init_members_normalises_like_a_single_model():
    """Shared scaling and energy unit from the whole training set; each member's reference
    energies fitted on its own subset to E minus its initial network energies."""
    spec = tiny_spec()
    train = ethanol(0, 8)
    members = [Member(seed=0), Member(seed=1, train_fraction=0.5)]
    masks = subset_masks(members, len(train))
    batcher = Batcher(spec, train, 4)
    with fast_compiles():
        p = init_members(spec, members, train, masks=masks, batcher=batcher)
        single = normalize_potential(init_potential(spec, jax.random.PRNGKey(0)), train, batcher=batcher)
        energies = member_energies(spec, p, batcher, len(train))
    p0, p1 = unstack_tree(p)
    _leaves_close(p0, single.params, rtol=1e-12)
    _leaves_close(p1["scaling"], single.params["scaling"], rtol=0)
    assert float(p1["energy"]["scale"]) == float(single.params["energy"]["scale"])
    E = np.array([s.energy for s in train])
    # member 1's initial model has no mean energy error on its own subset (one composition)
    assert abs(np.mean(energies[1, masks[1]] - E[masks[1]])) < 1e-9
    assert abs(np.mean(energies[1, ~masks[1]] - E[~masks[1]])) > 1e-6


def test_member_grid_and_masks():
    base = Member(seed=0, learning_rate=1e-3)
    grid = member_grid(base, {"force_weight": [1, 10], "seed": [0, 1, 2]})
    assert len(grid) == 6 and grid[1] == Member(seed=1, learning_rate=1e-3, force_weight=1.0)
    zipped = member_grid(base, {"force_weight": [1, 10], "seed": [4, 5]}, mode="zip")
    assert [(m.force_weight, m.seed) for m in zipped] == [(1.0, 4), (10.0, 5)]
    with pytest.raises(ValueError, match="equally long"):
        member_grid(base, {"force_weight": [1, 10], "seed": [4]}, mode="zip")
    with pytest.raises(ValueError, match="unknown sweep parameter"):
        member_grid(base, {"hidden": [3]})
    masks = subset_masks([Member(seed=s, train_fraction=0.3) for s in range(3)] + [Member()], 10)
    assert masks.sum(1).tolist() == [3, 3, 3, 10]
    assert len({tuple(m) for m in masks[:3]}) == 3  # different seeds, different subsets
    arr = member_arrays(grid, reference_lr=2e-3)
    assert np.allclose(arr["lr_scale"], 0.5) and arr["force_weight"].tolist() == [1, 1, 1, 10, 10, 10]


def test_weight_average_is_refused_for_members():
    """The members' learning-rate factors act after the optimiser, where an average kept inside
    it would not see them: refused with a message naming the key."""
    with pytest.raises(ValueError, match="ema_decay"):
        train_members(None, None, {}, [], cfg=TrainSettings(ema_decay=0.9))
