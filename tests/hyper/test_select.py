"""CUR and farthest-point selection of symmetry functions from a pool."""

import numpy as np
import pytest
from _shared import TEST_DATA

import jnnp
from jnnp.descriptors.grids import symmetry_function_grid
from jnnp.hyper.select import cur_select, feature_matrix, fps_select, select_functions, standardize


def test_cur_spans_the_columns_and_skips_redundant_ones():
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(3, 200))
    # columns: a, 2a + 1, b, a + b, noise-free copy of b, c, constant
    X = np.stack([a, 2 * a + 1, b, a + b, 3 * b, c, np.full(200, 5.0)], axis=1)
    sel = cur_select(X, 3)
    Z, _ = standardize(X)
    assert np.linalg.matrix_rank(Z[:, sel]) == 3          # three independent directions
    assert 6 not in sel                                    # never the constant column
    assert len(set(sel)) == 3
    full = cur_select(X, 7)
    assert sorted(full) == list(range(7)) and full[-1] == 6   # constant column last


def test_fps_prefers_uncorrelated_columns():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(300, 2))
    # 4 near-copies of column 0, 1 of column 1: the second pick must come from the other cluster
    X = np.column_stack([base[:, 0] + 0.01 * rng.normal(size=300) for _ in range(4)] + [base[:, 1]])
    sel = fps_select(X, 2)
    assert (sel[0] < 4) != (sel[1] < 4)
    assert sorted(fps_select(X, 5)) == [0, 1, 2, 3, 4]


def test_fps_matches_a_brute_force_reference():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(50, 12)) @ rng.normal(size=(12, 12))
    sel = fps_select(X, 6)
    Z, _ = standardize(X)
    P = Z.T
    ref = [int(np.argmax(np.linalg.norm(P - P.mean(0), axis=1)))]
    while len(ref) < 6:
        d = np.min(np.linalg.norm(P[:, None] - P[ref][None], axis=-1), axis=1)
        d[ref] = -1
        ref.append(int(np.argmax(d)))
    assert sel == ref


def test_select_functions_returns_smaller_spec_from_a_pool():
    data = jnnp.read(TEST_DATA / "rmd17_ethanol_100.npz")[:10]
    pool = symmetry_function_grid([1, 6, 8], 4.0, n_radial=6, r_min=0.8, angular_eta=(0.02, 0.1), zeta=(1.0, 4.0))
    X = feature_matrix(pool, data, batch_size=5)
    assert [x.shape for x in X] == [(60, pool.n_features[0]), (20, pool.n_features[1]), (10, pool.n_features[2])]
    for method in ("cur", "fps"):
        new, picks = select_functions(pool, X, 7, method)
        assert new.n_features == (7, 7, 7)
        for c, idx in enumerate(picks):
            chosen = {pool.functions[c][j] for j in idx}
            assert set(new.functions[c]) == chosen
            # an O–O function is constant (one O per molecule) and never chosen before others
            assert all(np.std(X[c][:, j]) > 0 for j in idx)
    with pytest.raises(ValueError, match="unknown selection method"):
        select_functions(pool, X, 3, "random")
    with pytest.raises(ValueError, match="cannot select"):
        select_functions(pool, X, 10_000, "cur")


def test_run_config_selects_its_descriptor_on_the_training_structures():
    """``model.descriptor.select``: the run keeps select_n functions per element of the grid (the
    pool), chosen on its training structures; the constant O–O functions of a one-oxygen
    molecule are never among them; without training structures, or with a select_n above the
    pool's size, the error names the key."""
    from jnnp.errors import ConfigError
    from jnnp.pipeline import build_potential_spec

    data = list(jnnp.read(TEST_DATA / "rmd17_ethanol_100.npz")[:12])
    base = ["model.descriptor.cutoff=4.0", "model.descriptor.n_radial=4", "model.descriptor.r_min=0.8",
            "model.descriptor.radial_mode=[shifted, centered]", "model.descriptor.angular_eta=[0.02]",
            "model.descriptor.zeta=[1.0, 4.0]"]
    pool = build_potential_spec(_quickstart_with(base), [1, 6, 8]).descriptor
    cfg = _quickstart_with(base + ["model.descriptor.select=cur", "model.descriptor.select_n=9",
                                   "model.descriptor.select_frames=6"])
    spec = build_potential_spec(cfg, [1, 6, 8], data).descriptor
    assert spec.n_features == (9, 9, 9)
    X = feature_matrix(pool, [data[i] for i in (0, 2, 4, 7, 9, 11)])
    for c, fs in enumerate(spec.functions):
        assert set(fs) <= set(pool.functions[c])
        cols = [pool.functions[c].index(sf) for sf in fs]
        assert all(np.std(X[c][:, j]) > 0 for j in cols)
        assert any(sf.neighbors == (8,) for sf in pool.functions[c])     # the pool has O–O / X–O ones
    assert spec.functions[2] == select_functions(pool, X, 9, "cur")[0].functions[2]
    with pytest.raises(ValueError, match="training structures"):
        build_potential_spec(cfg, [1, 6, 8])
    with pytest.raises(ValueError, match="select_n"):
        build_potential_spec(_quickstart_with(base + ["model.descriptor.select=fps",
                                                      "model.descriptor.select_n=1000"]), [1, 6, 8], data)
    with pytest.raises(ConfigError, match="select"):
        _quickstart_with(["model.descriptor.select=cur"])


def _quickstart_with(overrides):
    """configs/quickstart.yaml with ``overrides``."""
    from jnnp.config import load_config

    return load_config(TEST_DATA.parent.parent / "configs" / "quickstart.yaml", overrides)
