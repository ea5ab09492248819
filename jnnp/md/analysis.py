"""Trajectory analysis (host side, numpy): RDF, MSD / diffusion, energy drift, plots.

Units: Å, fs (inputs), ps where noted, eV. Cells are (3, 3) with lattice vectors as rows; every
routine is periodic-aware and works for orthorhombic and triclinic cells.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "perpendicular_widths",
    "rdf",
    "msd",
    "DiffusionResult",
    "diffusion_coefficient",
    "energy_drift",
    "plot_rdf",
    "plot_msd",
    "plot_thermo",
]

_A2_PER_PS_TO_CM2_PER_S = 1e-16 / 1e-12  # 1 Å²/ps = 1e-4 cm²/s


def _species_number(z) -> int:
    if isinstance(z, str):
        from ase.data import atomic_numbers

        try:
            return int(atomic_numbers[z])
        except KeyError:
            raise ValueError(f"unknown element symbol {z!r}") from None
    return int(z)


def perpendicular_widths(cell) -> np.ndarray:
    """(3,) distances between opposite faces of the cell [Å] (``V / |a_j × a_k|``)."""
    cell = np.asarray(cell, dtype=float).reshape(3, 3)
    vol = abs(np.linalg.det(cell))
    areas = np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    return vol / areas


# --------------------------------------------------------------------------------------------
# RDF


def rdf(frames_positions, cell, numbers, pair=(8, 8), r_max: float | None = None,
        n_bins: int = 200, *, chunk_elements: int = 2_000_000):
    """Partial radial distribution function g_AB(r) of a periodic system.

    Args:
        frames_positions: (F, N, 3) or (N, 3) Cartesian positions [Å] (wrapped or not).
        cell: (3, 3) lattice vectors as rows [Å], or (F, 3, 3) per-frame cells (NPT).
        numbers: (N,) atomic numbers.
        pair: (A, B) atomic numbers or symbols, or None for all atoms.
        r_max: largest distance [Å]; default and maximum is half the smallest perpendicular
            width of the cell (the minimum-image range). Larger values raise ValueError.
        n_bins: number of histogram bins on [0, r_max].
        chunk_elements: memory bound (pair distances held at once).

    Returns:
        ``(r, g)``: (n_bins,) bin centres [Å] and g(r). For A == B each unordered pair is counted
        once and normalised by N_A(N_A-1)/2 pairs; for A != B by N_A·N_B pairs, so an ideal gas
        gives g = 1 in expectation.
    """
    pos = np.asarray(frames_positions, dtype=float)
    if pos.ndim == 2:
        pos = pos[None]
    if pos.ndim != 3 or pos.shape[2] != 3:
        raise ValueError(f"frames_positions must be (F, N, 3), got {pos.shape}")
    n_frames, n_atoms, _ = pos.shape
    cells = np.asarray(cell, dtype=float)
    cells = np.broadcast_to(cells.reshape(3, 3), (n_frames, 3, 3)) if cells.shape == (3, 3) \
        else cells.reshape(n_frames, 3, 3)
    numbers = np.asarray(numbers).reshape(-1)
    if len(numbers) != n_atoms:
        raise ValueError(f"numbers has {len(numbers)} entries for {n_atoms} atoms")

    widths = np.array([perpendicular_widths(c).min() for c in cells])
    if np.any(widths <= 0) or not np.all(np.isfinite(widths)):
        raise ValueError("rdf needs a non-degenerate periodic cell")
    half = 0.5 * widths.min()
    if r_max is None:
        r_max = half
    r_max = float(r_max)
    if not r_max > 0:
        raise ValueError(f"r_max must be positive, got {r_max}")
    if r_max > half * (1 + 1e-12):
        raise ValueError(f"r_max = {r_max:.6g} Å exceeds half the smallest perpendicular cell width "
                         f"({half:.6g} Å); the minimum-image RDF is only valid up to there")

    if pair is None:
        idx_a = idx_b = np.arange(n_atoms)
        same = True
    else:
        za, zb = (_species_number(z) for z in pair)
        idx_a = np.flatnonzero(numbers == za)
        idx_b = np.flatnonzero(numbers == zb)
        same = za == zb
    na, nb = len(idx_a), len(idx_b)
    n_pairs = na * (na - 1) / 2 if same else na * nb
    if n_pairs <= 0:
        raise ValueError(f"no {pair} pairs among the atoms (counts {na}, {nb})")

    dr = r_max / n_bins
    counts = np.zeros(n_bins, dtype=np.int64)
    rows = max(1, int(chunk_elements) // max(nb, 1))
    for f in range(n_frames):
        h = cells[f]
        inv = np.linalg.inv(h)
        pa = pos[f, idx_a]
        pb = pos[f, idx_b]
        for start in range(0, na, rows):
            stop = min(na, start + rows)
            d = pb[None, :, :] - pa[start:stop, None, :]
            s = d @ inv
            s -= np.rint(s)
            d = s @ h
            r = np.sqrt(np.einsum("ijk,ijk->ij", d, d))
            mask = r < r_max
            if same:
                # unordered pairs once: j > i (idx_a == idx_b here)
                mask &= np.arange(nb)[None, :] > np.arange(start, stop)[:, None]
            k = (r[mask] / dr).astype(np.int64)
            counts += np.bincount(k[k < n_bins], minlength=n_bins)

    edges = np.linspace(0.0, r_max, n_bins + 1)
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    volumes = np.abs(np.linalg.det(cells))
    expected = n_pairs * shell * np.sum(1.0 / volumes)  # ideal-gas pairs per bin, all frames
    return 0.5 * (edges[1:] + edges[:-1]), counts / expected


# --------------------------------------------------------------------------------------------
# MSD and diffusion


def msd(positions, times_fs, numbers=None, species=None, *, chunk_columns: int = 3072):
    """Mean-squared displacement averaged over atoms and all time origins (FFT, O(F log F)).

    Args:
        positions: (F, N, 3) UNWRAPPED positions [Å] (jnnp MD positions are unwrapped).
        times_fs: (F,) uniformly spaced sample times [fs].
        numbers: (N,) atomic numbers (needed with ``species``).
        species: atomic number / symbol or a list of them to select atoms; None = all atoms.
        chunk_columns: memory bound for the FFT (atom-coordinates transformed at once).

    Returns:
        ``(lag_fs, msd)``: (F,) lag times [fs] starting at 0 and MSD [Å²]; lag m averages over the
        F - m origins.
    """
    pos = np.asarray(positions, dtype=float)
    if pos.ndim != 3 or pos.shape[2] != 3:
        raise ValueError(f"positions must be (F, N, 3), got {pos.shape}")
    t = np.asarray(times_fs, dtype=float).reshape(-1)
    n_frames = pos.shape[0]
    if len(t) != n_frames:
        raise ValueError(f"times_fs has {len(t)} entries for {n_frames} frames")
    if n_frames < 2:
        raise ValueError("msd needs at least two frames")
    dt = np.diff(t)
    if not (dt[0] > 0 and np.allclose(dt, dt[0], rtol=1e-6, atol=1e-9 * abs(dt[0]))):
        raise ValueError("msd needs uniformly spaced, increasing times_fs")
    if species is not None:
        if numbers is None:
            raise ValueError("msd: species selection needs numbers")
        sel_z = [species] if np.ndim(species) == 0 or isinstance(species, str) else list(species)
        sel = np.isin(np.asarray(numbers).reshape(-1), [_species_number(z) for z in sel_z])
        pos = pos[:, sel]
    n_sel = pos.shape[1]
    if n_sel == 0:
        raise ValueError(f"msd: no atoms of species {species}")

    x = (pos - pos[:1]).reshape(n_frames, -1)  # per-atom origin shift (MSD-invariant; precision)
    sq = np.sum(x * x, axis=1)  # (F,) Σ_atoms |r_t|²
    nfft = 1 << int(np.ceil(np.log2(2 * n_frames)))
    power = np.zeros(nfft // 2 + 1)
    for c in range(0, x.shape[1], chunk_columns):
        spec = np.fft.rfft(x[:, c:c + chunk_columns], n=nfft, axis=0)
        power += np.sum(spec.real ** 2 + spec.imag ** 2, axis=1)
    acf = np.fft.irfft(power, n=nfft)[:n_frames]  # Σ_t r_t · r_{t+m}
    m = np.arange(n_frames)
    # Σ_{t=0}^{F-m-1} (|r_{t+m}|² + |r_t|²) = 2Σ|r|² - Σ_{k<m} (|r_k|² + |r_{F-1-k}|²)
    tails = np.concatenate([[0.0], np.cumsum(sq[:-1] + sq[::-1][:-1])])
    s1 = 2.0 * sq.sum() - tails
    out = (s1 - 2.0 * acf) / (n_frames - m) / n_sel
    out[0] = 0.0
    return t - t[0], np.maximum(out, 0.0)


class DiffusionResult(NamedTuple):
    """Einstein-relation fit MSD = 2·dim·D·t + c over ``fit_range_fs``."""

    D_A2_per_ps: float
    D_cm2_per_s: float
    slope_A2_per_fs: float
    intercept_A2: float
    fit_range_fs: tuple[float, float]


def diffusion_coefficient(lag_fs, msd_A2, fit_range=None, *, dim: int = 3) -> DiffusionResult:
    """Self-diffusion coefficient from the linear regime of the MSD (D = slope / 6 in 3D).

    Args:
        lag_fs: (L,) lag times [fs]. msd_A2: (L,) MSD [Å²].
        fit_range: (t_min, t_max) [fs] of the fit window (inclusive); default: 10 %–50 % of the
            largest lag (skips the ballistic start and the noisy long-lag tail).
        dim: dimensionality (3 -> slope/6).

    Returns:
        `DiffusionResult` with D in Å²/ps and cm²/s (1 Å²/ps = 1e-4 cm²/s).
    """
    lag = np.asarray(lag_fs, dtype=float).reshape(-1)
    y = np.asarray(msd_A2, dtype=float).reshape(-1)
    if fit_range is None:
        fit_range = (0.1 * lag.max(), 0.5 * lag.max())
    lo, hi = float(fit_range[0]), float(fit_range[1])
    sel = (lag >= lo) & (lag <= hi)
    if sel.sum() < 2:
        raise ValueError(f"fit range {fit_range} fs holds {int(sel.sum())} MSD points; need >= 2")
    slope, intercept = np.polyfit(lag[sel], y[sel], 1)
    d_a2_ps = slope / (2.0 * dim) * 1e3
    return DiffusionResult(float(d_a2_ps), float(d_a2_ps * _A2_PER_PS_TO_CM2_PER_S), float(slope),
                           float(intercept), (lo, hi))


# --------------------------------------------------------------------------------------------
# energy conservation


def energy_drift(time_fs, e_tot_eV, n_atoms: int) -> dict[str, float]:
    """Linear drift and fluctuations of the total energy (NVE quality check).

    Returns a dict with:
        ``slope_eV_per_atom_per_ps``: slope of a least-squares line through E_tot/N.
        ``intercept_eV_per_atom``: its value at time 0.
        ``total_drift_eV_per_atom``: slope × run length.
        ``max_abs_dev_eV_per_atom``: max |E_tot(t) - E_tot(t_0)| / N.
        ``rmsd_eV_per_atom``: RMS of E_tot/N about its mean (fluctuation incl. drift).
        ``rms_residual_eV_per_atom``: RMS of E_tot/N about the fitted line (drift removed).
        ``duration_ps``: run length.
    """
    t_ps = np.asarray(time_fs, dtype=float).reshape(-1) * 1e-3
    e = np.asarray(e_tot_eV, dtype=float).reshape(-1) / float(n_atoms)
    if len(t_ps) != len(e) or len(e) < 2:
        raise ValueError("energy_drift needs matching time/energy arrays with >= 2 samples")
    slope, e_at_t0 = np.polyfit(t_ps - t_ps[0], e, 1)  # centred for conditioning
    intercept = e_at_t0 - slope * t_ps[0]
    resid = e - (slope * t_ps + intercept)
    duration = float(t_ps[-1] - t_ps[0])
    return {
        "slope_eV_per_atom_per_ps": float(slope),
        "intercept_eV_per_atom": float(intercept),
        "total_drift_eV_per_atom": float(slope * duration),
        "max_abs_dev_eV_per_atom": float(np.max(np.abs(e - e[0]))),
        "rmsd_eV_per_atom": float(np.sqrt(np.mean((e - e.mean()) ** 2))),
        "rms_residual_eV_per_atom": float(np.sqrt(np.mean(resid ** 2))),
        "duration_ps": duration,
    }


# --------------------------------------------------------------------------------------------
# plots (matplotlib, Agg; no pyplot global state)


def _figure(nrows=1, ncols=1, figsize=(6.0, 4.0)):
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover
        raise ImportError("plotting needs matplotlib: pip install 'jnnp[plot]'") from None
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig, png_path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(png_path, dpi=120)
    return png_path


def plot_rdf(r, g, png_path, *, label: str | None = None, title: str | None = None) -> Path:
    """Plot g(r) (``g`` an array, or ``{label: g}`` for several curves) to a PNG."""
    fig, axes = _figure()
    ax = axes[0, 0]
    curves = g if isinstance(g, dict) else {label: g}
    for lab, gv in curves.items():
        ax.plot(r, gv, label=lab)
    ax.axhline(1.0, color="0.6", lw=0.8, ls="--")
    ax.set_xlabel("r [Å]")
    ax.set_ylabel("g(r) [dimensionless]")
    ax.set_xlim(left=0.0)
    if any(lab is not None for lab in curves):
        ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, png_path)


def plot_msd(lag_fs, msd_A2, png_path, *, fit: DiffusionResult | None = None,
             label: str | None = None, title: str | None = None) -> Path:
    """Plot MSD [Å²] against lag time [ps] (and the Einstein fit, if given) to a PNG."""
    fig, axes = _figure()
    ax = axes[0, 0]
    lag_ps = np.asarray(lag_fs, dtype=float) * 1e-3
    ax.plot(lag_ps, msd_A2, label=label or "MSD")
    if fit is not None:
        lo, hi = fit.fit_range_fs
        tt = np.linspace(lo, hi, 50)
        ax.plot(tt * 1e-3, fit.slope_A2_per_fs * tt + fit.intercept_A2, "--",
                label=f"fit: D = {fit.D_A2_per_ps:.4g} Å²/ps = {fit.D_cm2_per_s:.3g} cm²/s")
    ax.set_xlabel("lag time [ps]")
    ax.set_ylabel("MSD [Å²]")
    ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, png_path)


def plot_thermo(csv_path, png_path, *, title: str | None = None) -> Path:
    """Plot a `jnnp.md.output.ThermoLog` CSV (T, E_tot, E_pot, E_kin, and P/V if present)."""
    from jnnp.md.output import read_thermo

    d = read_thermo(csv_path)
    t_ps = d["time_fs"] * 1e-3
    panels = [("temperature_K", "T [K]"), ("e_tot_eV", "E_tot [eV]"), ("e_pot_eV", "E_pot [eV]"),
              ("e_kin_eV", "E_kin [eV]")]
    for key, lab in (("pressure_GPa", "P [GPa]"), ("volume_A3", "V [Å³]")):
        if key in d and np.any(np.isfinite(d[key])):
            panels.append((key, lab))
    fig, axes = _figure(len(panels), 1, figsize=(7.0, 1.8 * len(panels) + 0.6))
    for ax, (key, lab) in zip(axes[:, 0], panels):
        ax.plot(t_ps, d[key], lw=0.9)
        ax.set_ylabel(lab)
        ax.ticklabel_format(axis="y", useOffset=False)
    axes[-1, 0].set_xlabel("time [ps]")
    if title:
        axes[0, 0].set_title(title)
    return _save(fig, png_path)
