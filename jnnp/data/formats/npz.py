"""Reader for molecular ``.npz`` data sets: rMD17 keys, and the sGDML/MD17 aliases.

Keys (rMD17 name, sGDML alias):

* ``nuclear_charges`` / ``z``: (N,) atomic numbers.
* ``coords`` / ``R``: (nframes, N, 3) positions [Å by default].
* ``energies`` / ``E``: (nframes,) or (nframes, 1) total energies [kcal/mol by default], optional.
* ``forces`` / ``F``: (nframes, N, 3) forces [kcal/mol/Å by default], optional.

Other keys (``old_indices``, ``old_energies``, ...) are ignored. Structures are non-periodic.
"""

from __future__ import annotations

import zipfile

import numpy as np

from jnnp.data.formats import check_finite
from jnnp.data.structure import Dataset, Structure
from jnnp.errors import DataFormatError
from jnnp.units import energy_factor, length_factor

__all__ = ["read_npz"]

_KEYS = {"numbers": ("nuclear_charges", "z"), "coords": ("coords", "R"),
         "energies": ("energies", "E"), "forces": ("forces", "F")}


def read_npz(path, *, length_unit: str = "angstrom", energy_unit: str = "kcal/mol") -> Dataset:
    """Read an rMD17 (or sGDML MD17) ``.npz`` file.

    Args:
        path: the ``.npz`` file.
        length_unit: unit of ``coords`` (rMD17: Å).
        energy_unit: unit of ``energies`` (rMD17: kcal/mol); forces in ``energy_unit``/``length_unit``.

    Returns:
        `Dataset` of non-periodic structures: positions (N, 3) Å, energy eV, forces (N, 3) eV/Å;
        ``source`` = path, ``index`` = row in the file.

    Raises:
        DataFormatError: unreadable file, missing ``nuclear_charges``/``coords``, wrong shapes,
            invalid atomic numbers, NaN/inf values.
    """
    path = str(path)
    lf, ef = length_factor(length_unit), energy_factor(energy_unit)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: _get(data, keys) for name, keys in _KEYS.items()}
            files = sorted(data.files)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataFormatError(path, "a readable .npz archive", str(exc)) from None
    for name in ("numbers", "coords"):
        if arrays[name] is None:
            raise DataFormatError(path, f"key {' or '.join(repr(k) for k in _KEYS[name])}",
                                  f"keys {files}")
    numbers = np.asarray(arrays["numbers"]).astype(np.int64).reshape(-1)
    n = numbers.size
    coords = _check(path, "coords", arrays["coords"], (None, n, 3))
    nf = coords.shape[0]
    energies = arrays["energies"]
    if energies is not None and energies.ndim == 2 and energies.shape[1] == 1:
        energies = energies[:, 0]
    energies = _check(path, "energies", energies, (nf,))
    forces = _check(path, "forces", arrays["forces"], (nf, n, 3))
    if n == 0 or numbers.min() < 1 or numbers.max() > 118:
        raise DataFormatError(path, "atomic numbers in 1..118 in 'nuclear_charges'",
                              str(numbers.tolist()))
    return Dataset([
        Structure(positions=coords[i] * lf, numbers=numbers,
                  energy=None if energies is None else energies[i] * ef,
                  forces=None if forces is None else forces[i] * (ef / lf),
                  source=path, index=i)
        for i in range(nf)
    ])


def _get(data, keys):
    for key in keys:
        if key in data.files:
            return data[key]
    return None


def _check(path, name, arr, shape):
    """Check ``arr`` against ``shape`` (None = any), cast to float64, reject NaN/inf."""
    if arr is None:
        return None
    if arr.ndim != len(shape) or any(s is not None and a != s for a, s in zip(arr.shape, shape)):
        dims = ["nframes" if s is None else str(s) for s in shape]
        want = "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
        raise DataFormatError(path, f"'{name}' of shape {want}", f"shape {arr.shape}")
    arr = np.asarray(arr, dtype=np.float64)
    check_finite(arr, path, f"'{name}'")
    return arr
