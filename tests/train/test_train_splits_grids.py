"""Data splits and automatic symmetry-function grids (host only, no compilation)."""

import numpy as np
import pytest
from _shared import REPO, TEST_DATA

from jnnp.data.structure import Structure
from jnnp.descriptors.grids import angular_grid, radial_grid, symmetry_function_grid
from jnnp.descriptors.plan import make_plan
from jnnp.train.splits import (Split, make_split, per_system_split, random_split, read_indices,
                               split_from_files, system_keys)


# ---------------------------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------------------------

def test_random_split_reproducible_disjoint():
    a = random_split(100, 0.1, 0.2, seed=3)
    b = random_split(100, 0.1, 0.2, seed=3)
    c = random_split(100, 0.1, 0.2, seed=4)
    assert a.to_dict() == b.to_dict() and a.to_dict() != c.to_dict()
    assert (len(a.train), len(a.validation), len(a.test)) == (70, 10, 20)
    assert sorted(np.concatenate([a.train, a.validation, a.test]).tolist()) == list(range(100))
    assert Split.from_dict(a.to_dict()).to_dict() == a.to_dict()


def test_random_split_keeps_a_training_structure():
    s = random_split(3, 0.45, 0.45, seed=0)
    assert len(s.train) >= 1 and len(s.train) + len(s.validation) + len(s.test) == 3
    with pytest.raises(ValueError):
        random_split(10, 0.6, 0.5)



def test_fixed_test_set_with_random_validation(tmp_path):
    """A given test set (a published one, say) with a random validation fraction of the whole set
    drawn from the rest; index arrays and index files give the same split, as does the config."""
    test_idx = [0, 5, 17, 42, 63, 99]
    s = make_split(range(100), validation=0.1, test=0.5, seed=2, test_indices=test_idx)
    assert s.test.tolist() == test_idx                   # the fixed set, not the fraction
    assert len(s.validation) == 10 and not set(s.validation) & set(test_idx)
    assert sorted(np.concatenate([s.train, s.validation, s.test]).tolist()) == list(range(100))
    assert make_split(range(100), validation=0.1, seed=3, test_indices=test_idx).validation.tolist() \
        != s.validation.tolist()
    (tmp_path / "test.txt").write_text("\n".join(map(str, test_idx)) + "\n")
    f = make_split(range(100), validation=0.1, test=0.5, seed=2, test_indices=tmp_path / "test.txt")
    assert f.to_dict() == s.to_dict()
    # with training indices given the split is exactly the given sets
    t = make_split(range(10), validation=0.3, train_indices=[1, 2, 3], test_indices=[9])
    assert t.train.tolist() == [1, 2, 3] and t.validation.tolist() == [] and t.test.tolist() == [9]
    with pytest.raises(ValueError, match="test indices out of range"):
        make_split(range(10), test_indices=[3, 10])
    with pytest.raises(ValueError, match="overlap"):
        make_split(range(10), validation_indices=[1, 2], test_indices=[2])
    # through a run config (data.split.test_indices), as jnnp train reads it
    from jnnp.config import load_config
    from jnnp.pipeline import load_data

    cfg = load_config(REPO / "configs" / "quickstart.yaml",
                      [f"data.path={TEST_DATA / 'rmd17_ethanol_100.npz'}", "data.test_path=null", "data.index=null",
                       "data.split={validation: 0.1, test: 0.5, seed: 2, test_indices: " + str(tmp_path / "test.txt") + "}"])
    tr, va, te, split = load_data(cfg)
    assert split.to_dict() == s.to_dict() and (len(tr), len(va), len(te)) == (84, 10, 6)


def test_per_system_split():
    systems = ["a"] * 20 + ["b"] * 10
    s = per_system_split(systems, 0.2, 0.1, seed=1)
    for key, n in (("a", 20), ("b", 10)):
        idx = [i for i, k in enumerate(systems) if k == key]
        assert len(np.intersect1d(s.validation, idx)) == round(0.2 * n)
        assert len(np.intersect1d(s.test, idx)) == round(0.1 * n)
    data = [Structure(positions=np.zeros((1, 3)), numbers=[1], source=k) for k in systems]
    assert system_keys(data)[:2] == ["a", "a"]
    assert make_split(data, validation=0.2, test=0.1, seed=1, per_system=True).to_dict() == s.to_dict()
    # a fixed test set (all of system b): the validation part is still drawn within each system
    f = make_split(data, validation=0.2, test=0.0, seed=1, per_system=True, test_indices=range(20, 30))
    assert f.test.tolist() == list(range(20, 30))
    assert len(np.intersect1d(f.validation, range(20))) == 4        # 0.2 of system a's 20
    assert len(f.validation) == 4 and len(f.train) == 16            # b has no structure left
    f = make_split(data, validation=0.2, test=0.0, seed=1, per_system=True, test_indices=[0, 1, 20])
    assert len(np.intersect1d(f.validation, range(20))) == 4
    assert len(np.intersect1d(f.validation, range(20, 30))) == 2
    assert sorted(np.concatenate([f.train, f.validation, f.test]).tolist()) == list(range(30))


def test_split_from_files(tmp_path):
    (tmp_path / "val.txt").write_text("# validation\n3 4\n\n7\n")
    (tmp_path / "test.txt").write_text("0\n")
    s = split_from_files(validation=tmp_path / "val.txt", test=tmp_path / "test.txt", n=10)
    assert s.validation.tolist() == [3, 4, 7] and s.test.tolist() == [0]
    assert s.train.tolist() == [1, 2, 5, 6, 8, 9]
    data = list(range(10))
    tr, va, te = s.apply(data)
    assert va == [3, 4, 7]
    with pytest.raises(ValueError, match="out of range"):
        split_from_files(validation=tmp_path / "val.txt", n=5)
    (tmp_path / "bad.txt").write_text("1\nx\n")
    with pytest.raises(ValueError, match="line 2"):
        read_indices(tmp_path / "bad.txt")
    with pytest.raises(ValueError, match="overlap"):
        Split([1, 2], [2], [])


# ---------------------------------------------------------------------------------------------
# symmetry-function grids
# ---------------------------------------------------------------------------------------------

def test_radial_grid_shifted_and_centered():
    g = radial_grid(4, 1.0, 5.0, "shifted")
    assert [rs for _, rs in g] == pytest.approx([1.0, 2.0, 3.0, 4.0])
    assert all(eta == pytest.approx(0.5) for eta, _ in g)          # η = 1/(2Δ²), Δ = 1 Å
    c = radial_grid(3, 1.0, 5.0, "centered")
    assert [rs for _, rs in c] == [0.0, 0.0, 0.0]
    assert [eta for eta, _ in c] == pytest.approx([0.5, 1 / 18, 1 / 50])   # widths 1, 3, 5 Å
    assert radial_grid(1, 0.5, 4.0)[0][1] == 0.5
    for bad in ((0, 0.5, 4.0, "shifted"), (3, 5.0, 4.0, "shifted"), (3, 0.5, 4.0, "log")):
        with pytest.raises(ValueError):
            radial_grid(*bad)


def test_angular_grid():
    a = angular_grid((0.01, 0.05), (1.0, 2.0, 4.0, 16.0), (-1.0, 1.0))
    assert len(a) == 16 and len(set(a)) == 16
    with pytest.raises(ValueError):
        angular_grid((0.01,), (0.5,), (1.0,))
    with pytest.raises(ValueError):
        angular_grid((0.01,), (1.0,), (2.0,))


def test_symmetry_function_grid_spec():
    spec = symmetry_function_grid([8, 1], cutoff=6.0, n_radial=5, angular_eta=(0.01, 0.05),
                                  zeta=(1.0, 2.0, 4.0, 16.0), lambdas=(-1.0, 1.0), cutoff_type="cos")
    assert spec.elements == (1, 8)
    assert spec.cutoff_type == 1 and spec.cutoff == 6.0
    # per element: 2 neighbour elements × 5 radial + 3 neighbour pairs × 16 angular
    assert spec.n_features == (2 * 5 + 3 * 16,) * 2
    for c, fs in zip(spec.elements, spec.functions):
        assert all(sf.center == c for sf in fs)
        assert len(set(fs)) == len(fs)
        radial = [sf for sf in fs if sf.type == 2]
        angular = [sf for sf in fs if sf.type == 9]
        assert len(radial) == 10 and len(angular) == 48
        assert {sf.neighbors for sf in angular} == {(1, 1), (1, 8), (8, 8)}
    plan = make_plan(spec)
    assert len(plan.pair_blocks) == 4 and len(plan.triplet_blocks) == 6
    narrow = symmetry_function_grid([1], 4.0, n_radial=2, radial_mode="centered", angular_type=3,
                                    angular_cutoff=3.0, zeta=(1.0,), lambdas=(1.0,), angular_eta=(0.0,))
    assert [sf.type for sf in narrow.functions[0]] == [2, 2, 3]
    assert narrow.functions[0][2].rc == 3.0
    # several radial rules: the union of their grids, each (η, r_s) once
    both = symmetry_function_grid([1], 4.0, n_radial=4, r_min=1.0, radial_mode=("shifted", "centered"),
                                  angular=False)
    expected = radial_grid(4, 1.0, 4.0, "shifted") + radial_grid(4, 1.0, 4.0, "centered")
    assert sorted((sf.eta, sf.rs) for sf in both.functions[0]) == sorted(expected)
    twice = symmetry_function_grid([1], 4.0, n_radial=4, radial_mode=("shifted", "shifted"), angular=False)
    assert twice.n_features == (4,)
    radial_only = symmetry_function_grid([1, 6], 4.0, n_radial=3, angular=False)
    assert radial_only.n_features == (6, 6)
    with pytest.raises(ValueError):
        symmetry_function_grid([1], 4.0, angular_type=13)
