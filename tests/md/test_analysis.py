"""RDF, MSD/diffusion, energy drift and plots of jnnp.md.analysis (synthetic data, fast)."""

import itertools

import numpy as np
import pytest

from jnnp.md.analysis import (
    diffusion_coefficient,
    energy_drift,
    msd,
    perpendicular_widths,
    plot_msd,
    plot_rdf,
    plot_thermo,
    rdf,
)
from jnnp.md.output import ThermoLog

ORTHO = np.diag([20.0, 22.0, 24.0])
TRICLINIC = np.array([[21.0, 0.0, 0.0], [6.0, 20.0, 0.0], [-4.0, 5.0, 22.0]])
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _ideal_gas(cell, n_atoms, n_frames, seed, unwrap=True):
    rng = np.random.default_rng(seed)
    frac = rng.random((n_frames, n_atoms, 3))
    if unwrap:  # random lattice shifts: the RDF must not care about wrapping
        frac += rng.integers(-2, 3, size=frac.shape)
    return frac @ cell


def _check_ideal(cell, r, g, n_pairs, n_frames, r_max):
    """|g - 1| within 5 sigma (Poisson) in every well-populated bin; the mean within 1 %."""
    dr = r_max / len(r)
    edges = np.linspace(0, r_max, len(r) + 1)
    expected = n_pairs * 4 / 3 * np.pi * np.diff(edges ** 3) / abs(np.linalg.det(cell)) * n_frames
    ok = expected > 200
    assert ok.sum() > 0.8 * len(r)
    sigma = 1 / np.sqrt(expected[ok])
    assert np.all(np.abs(g[ok] - 1) < 5 * sigma), np.max(np.abs(g[ok] - 1) / sigma)
    w = expected[ok]
    assert abs(np.sum(g[ok] * w) / np.sum(w) - 1) < 0.01
    assert np.allclose(r, edges[:-1] + dr / 2)


@pytest.mark.parametrize("cell", [ORTHO, TRICLINIC], ids=["orthorhombic", "triclinic"])
def test_rdf_ideal_gas_is_one(cell):
    n, f = 1200, 3
    pos = _ideal_gas(cell, n, f, seed=1)
    r_max = 0.5 * perpendicular_widths(cell).min()
    numbers = np.full(n, 8)
    r, g = rdf(pos, cell, numbers, pair=(8, 8), r_max=r_max, n_bins=40)
    _check_ideal(cell, r, g, n * (n - 1) / 2, f, r_max)


@pytest.mark.parametrize("cell", [ORTHO, TRICLINIC], ids=["orthorhombic", "triclinic"])
def test_rdf_ideal_gas_mixed_species(cell):
    n, f = 1200, 3
    pos = _ideal_gas(cell, n, f, seed=2)
    numbers = np.where(np.arange(n) % 3 == 0, 1, 8)  # 400 H, 800 O
    r_max = 0.5 * perpendicular_widths(cell).min()
    n_h, n_o = 400, 800
    r, g_ho = rdf(pos, cell, numbers, pair=("H", "O"), r_max=r_max, n_bins=40)
    _check_ideal(cell, r, g_ho, n_h * n_o, f, r_max)
    _, g_oh = rdf(pos, cell, numbers, pair=(8, 1), r_max=r_max, n_bins=40)
    np.testing.assert_allclose(g_oh, g_ho, rtol=1e-12)
    r20, g_hh = rdf(pos, cell, numbers, pair=(1, 1), r_max=r_max, n_bins=20)
    _check_ideal(cell, r20, g_hh, n_h * (n_h - 1) / 2, f, r_max)


def test_rdf_counts_match_brute_force_images():
    """Strongly skewed cell: minimum image by fractional rounding equals a search over images."""
    cell = np.array([[10.0, 0.0, 0.0], [8.0, 9.0, 0.0], [-7.0, 6.5, 9.5]])
    rng = np.random.default_rng(3)
    n = 40
    pos = (rng.random((n, 3)) + rng.integers(-3, 4, (n, 3))) @ cell
    numbers = np.full(n, 14)
    r_max = 0.5 * perpendicular_widths(cell).min()
    n_bins = 25
    r, g = rdf(pos, cell, numbers, pair=(14, 14), r_max=r_max, n_bins=n_bins)
    frac = pos @ np.linalg.inv(cell)
    wrapped = (frac - np.floor(frac)) @ cell
    shifts = np.array(list(itertools.product(range(-2, 3), repeat=3))) @ cell
    dists = []
    for i in range(n):
        for j in range(i + 1, n):
            d = np.linalg.norm(wrapped[j] - wrapped[i] + shifts, axis=1)
            dists.extend(d[d < r_max])
    ref, _ = np.histogram(dists, bins=np.linspace(0, r_max, n_bins + 1))
    edges = np.linspace(0, r_max, n_bins + 1)
    expected = n * (n - 1) / 2 * 4 / 3 * np.pi * np.diff(edges ** 3) / abs(np.linalg.det(cell))
    np.testing.assert_allclose(g * expected, ref, atol=1e-9)
    assert ref.sum() > 50


def test_rdf_simple_cubic_peak_at_lattice_constant():
    a, m = 3.1, 6
    grid = np.array(list(itertools.product(range(m), repeat=3)), dtype=float) * a
    rng = np.random.default_rng(4)
    frames = grid[None] + 0.05 * rng.standard_normal((2, len(grid), 3))
    cell = np.eye(3) * a * m
    numbers = np.full(len(grid), 29)
    r, g = rdf(frames, cell, numbers, pair=(29, 29), r_max=0.5 * a * m, n_bins=300)
    dr = r[1] - r[0]
    assert abs(r[np.argmax(g)] - a) <= dr
    # Same crystal described by a sheared (triclinic) cell: identical g(r) up to its half width.
    sheared = cell.copy()
    sheared[1] += cell[0]
    r_max = 0.5 * perpendicular_widths(sheared).min()
    assert r_max == pytest.approx(0.5 * a * m / np.sqrt(2))
    r1, g1 = rdf(frames, cell, numbers, pair=(29, 29), r_max=r_max, n_bins=200)
    r2, g2 = rdf(frames, sheared, numbers, pair=(29, 29), r_max=r_max, n_bins=200)
    assert abs(r1[np.argmax(g1)] - a) <= r1[1] - r1[0]
    g = g1
    np.testing.assert_allclose(g2, g, rtol=1e-12, atol=1e-12)


def test_rdf_r_max_beyond_half_width_raises():
    pos = _ideal_gas(TRICLINIC, 10, 1, seed=5)
    half = 0.5 * perpendicular_widths(TRICLINIC).min()
    with pytest.raises(ValueError, match="perpendicular"):
        rdf(pos, TRICLINIC, np.full(10, 8), r_max=half * 1.01)
    r, _ = rdf(pos, TRICLINIC, np.full(10, 8), n_bins=10)  # default r_max = half width
    assert r[-1] + (r[1] - r[0]) / 2 == pytest.approx(half)


def _msd_brute(pos):
    f = pos.shape[0]
    return np.array([np.mean(np.sum((pos[m:] - pos[:f - m]) ** 2, axis=-1)) for m in range(f)])


def test_msd_fft_matches_windowed_all_origins():
    rng = np.random.default_rng(6)
    pos = np.cumsum(rng.standard_normal((57, 7, 3)), axis=0) + 100.0
    lag, m = msd(pos, np.arange(57) * 2.0)
    np.testing.assert_allclose(lag, np.arange(57) * 2.0)
    np.testing.assert_allclose(m, _msd_brute(pos), rtol=1e-9, atol=1e-9)


def test_msd_random_walk_recovers_D():
    d_true = 0.25  # Å²/ps
    dt_fs = 2.0
    n_frames, n_atoms = 2000, 500
    sigma = np.sqrt(2 * d_true * 1e-3 * dt_fs)  # per component, D in Å²/fs
    rng = np.random.default_rng(7)
    steps = sigma * rng.standard_normal((n_frames, n_atoms, 3))
    steps[0] = 0
    pos = np.cumsum(steps, axis=0) + rng.random((1, n_atoms, 3)) * 30
    lag, m = msd(pos, 1000.0 + np.arange(n_frames) * dt_fs)
    fit = diffusion_coefficient(lag, m, fit_range=(20.0, 400.0))
    assert fit.D_A2_per_ps == pytest.approx(d_true, rel=0.04)  # seeds 0-9: |err| < 3 %
    assert fit.D_cm2_per_s == pytest.approx(fit.D_A2_per_ps * 1e-4)
    assert abs(fit.intercept_A2) < 0.05 * fit.slope_A2_per_fs * 400


def test_msd_ballistic_and_species_selection():
    rng = np.random.default_rng(8)
    n = 12
    numbers = np.array([1, 8] * (n // 2))
    v = rng.standard_normal((n, 3)) * 0.01  # Å/fs
    v[numbers == 8] *= 0.1
    t = np.arange(30) * 0.5
    pos = rng.random((n, 3)) * 5 + t[:, None, None] * v[None]
    lag, m = msd(pos, t)
    np.testing.assert_allclose(m, np.mean(np.sum(v ** 2, 1)) * lag ** 2, rtol=1e-9, atol=1e-14)
    for z in (1, "O"):
        zz = 1 if z == 1 else 8
        _, mz = msd(pos, t, numbers=numbers, species=z)
        vz = v[numbers == zz]
        np.testing.assert_allclose(mz, np.mean(np.sum(vz ** 2, 1)) * lag ** 2, rtol=1e-9, atol=1e-14)
    with pytest.raises(ValueError, match="uniformly"):
        msd(pos, t ** 1.5)


def test_energy_drift_recovers_slope():
    n_atoms = 64
    t_fs = np.arange(0, 20001, 10.0) + 500.0
    slope = 2.5e-4  # eV/atom/ps
    rng = np.random.default_rng(9)
    noise = 1e-4 * rng.standard_normal(t_fs.size)
    e = n_atoms * (-3.2 + slope * t_fs * 1e-3 + noise)
    d = energy_drift(t_fs, e, n_atoms)
    assert d["slope_eV_per_atom_per_ps"] == pytest.approx(slope, rel=0.02)
    assert d["intercept_eV_per_atom"] == pytest.approx(-3.2, abs=1e-5)
    assert d["duration_ps"] == pytest.approx(20.0)
    assert d["total_drift_eV_per_atom"] == pytest.approx(slope * 20.0, rel=0.02)
    assert d["rms_residual_eV_per_atom"] == pytest.approx(1e-4, rel=0.1)
    assert d["max_abs_dev_eV_per_atom"] == pytest.approx(np.max(np.abs(e / n_atoms - e[0] / n_atoms)))
    exact = energy_drift(t_fs, n_atoms * (1.0 - 3e-3 * t_fs * 1e-3), n_atoms)
    assert exact["slope_eV_per_atom_per_ps"] == pytest.approx(-3e-3, rel=1e-9)
    assert exact["rms_residual_eV_per_atom"] < 1e-12


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == PNG_MAGIC


def test_plots_write_png(tmp_path):
    pytest.importorskip("matplotlib")
    r = np.linspace(0.05, 5, 50)
    p = plot_rdf(r, {"O-O": 1 + np.sin(r), "O-H": np.ones_like(r)}, tmp_path / "rdf.png")
    assert _is_png(p)
    assert _is_png(plot_rdf(r, np.ones_like(r), tmp_path / "sub" / "rdf1.png", title="g"))
    lag = np.arange(100) * 5.0
    m = 6e-3 * lag
    fit = diffusion_coefficient(lag, m)
    assert fit.D_A2_per_ps == pytest.approx(1.0)
    assert _is_png(plot_msd(lag, m, tmp_path / "msd.png", fit=fit))
    with ThermoLog(tmp_path / "thermo.csv") as log:
        s = np.arange(0, 200, 10)
        log.append({"step": s, "time_fs": s * 0.5, "temperature_K": 300 + np.sin(s),
                    "e_pot_eV": -10 + 0.01 * np.cos(s), "e_kin_eV": 0.5 + 0.01 * np.sin(s)})
    assert _is_png(plot_thermo(tmp_path / "thermo.csv", tmp_path / "thermo.png"))
    with ThermoLog(tmp_path / "thermo_npt.csv") as log:
        log.append({"step": s, "time_fs": s * 0.5, "temperature_K": 300 + np.sin(s),
                    "e_pot_eV": -10 + 0.01 * np.cos(s), "e_kin_eV": 0.5 + 0.01 * np.sin(s),
                    "pressure_GPa": 0.1 * np.sin(s), "volume_A3": 1000 + np.cos(s)})
    assert _is_png(plot_thermo(tmp_path / "thermo_npt.csv", tmp_path / "thermo_npt.png"))
