"""Host-side MD output: thermo CSV, trajectories (extxyz / ASE .traj), progress line, atomic writes.

Everything here runs on the host with numpy arrays (pull device arrays once per chunk). Files
speak fs, K, eV, Å, GPa, Å³ and name the unit in every header/key:

* `ThermoLog` — CSV ``step,time_fs,temperature_K,e_pot_eV,e_kin_eV,e_tot_eV,pressure_GPa,volume_A3``
  and extra columns named by the caller (unit in the name, e.g. ``e_conserved_eV``).
* `TrajectoryWriter` — extended XYZ (written here, exact float round trip) or ASE ``.traj``;
  velocities in Å/fs in extxyz (key ``velocity_unit=A/fs``), ASE units in ``.traj``.
* `ProgressMeter` — live step / simulated ps / ns/day / atom-steps/s / T / E_tot line.
* `atomic_write_bytes` / `atomic_write_npz` — tmp file + ``os.replace`` (restart files).

Both writers accept ``resume_from_step=n``: everything already on disk with ``step > n`` is
dropped (as is a torn last row/frame from a crash), so a restarted run continues seamlessly.
"""

from __future__ import annotations

import io
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from jnnp.atomic import atomic_write_bytes, atomic_write_npz  # noqa: F401  (re-exported)
from jnnp.units import TIME_UNIT_FS

__all__ = [
    "THERMO_COLUMNS",
    "check_column_names",
    "ThermoLog",
    "read_thermo",
    "TrajectoryWriter",
    "ProgressMeter",
    "atomic_write_bytes",
    "atomic_write_npz",
]

THERMO_COLUMNS = ("step", "time_fs", "temperature_K", "e_pot_eV", "e_kin_eV", "e_tot_eV",
                  "pressure_GPa", "volume_A3")
_THERMO_REQUIRED = ("step", "time_fs", "temperature_K", "e_pot_eV", "e_kin_eV")
_COLUMN_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # what numpy.genfromtxt(names=True) keeps as is


# --------------------------------------------------------------------------------------------
# atomic writes


# --------------------------------------------------------------------------------------------
# thermo CSV


def _fmt_float(x: float) -> str:
    """Shortest exact round-trip repr; NaN/None -> empty field."""
    if x is None:
        return ""
    x = float(x)
    if math.isnan(x):
        return ""
    return repr(x)


def check_column_names(names) -> tuple:
    """Validate extra thermo column names (see `ThermoLog`); returns them as a tuple.

    Raises:
        ValueError: naming the bad or repeated names.
    """
    extra = tuple(names)
    bad = [c for c in extra if not isinstance(c, str) or not _COLUMN_RE.fullmatch(c)]
    if bad:
        raise ValueError(f"thermo column names {bad} must start with a letter and use only letters, "
                         "digits and '_' (put the unit in the name, e.g. 'com_x_A')")
    dup = sorted({c for c in extra if c in THERMO_COLUMNS or extra.count(c) > 1})
    if dup:
        raise ValueError(f"thermo column names {dup} repeat a column ({THERMO_COLUMNS} and the extras)")
    return extra


class ThermoLog:
    """CSV thermo log ``step,time_fs,temperature_K,e_pot_eV,e_kin_eV,e_tot_eV,pressure_GPa,volume_A3``
    followed by ``extra_columns``.

    Args:
        path: CSV file. Without ``resume_from_step`` it is (re)created with just the header.
        resume_from_step: keep the existing rows with ``step <= resume_from_step`` (and drop a
            torn last line), then append after them. A missing file is created fresh.
        extra_columns: further column names, used verbatim as headers (so they carry their unit,
            e.g. ``com_x_A``): a letter, then letters, digits and ``_``. A resumed log must have
            the same columns.

    Rows are written with exact float round trip; pressure/volume fields are left empty when not
    available (``numpy.genfromtxt(path, delimiter=",", names=True)`` reads them as NaN).
    """

    def __init__(self, path, resume_from_step: int | None = None, extra_columns=()):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        extra = check_column_names(extra_columns)
        self.columns = THERMO_COLUMNS + extra
        self._header = ",".join(self.columns)
        if (resume_from_step is None or not self.path.exists()
                or self.path.stat().st_size == 0):
            atomic_write_bytes(self.path, (self._header + "\n").encode())
        else:
            self._truncate(int(resume_from_step))
        self._fh = open(self.path, "a", encoding="utf-8")

    def _truncate(self, last_step: int) -> None:
        with open(self.path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        if not lines or lines[0].strip() != self._header:
            raise ValueError(f"{self.path}: not a jnnp thermo log with these columns (header "
                             f"{lines[0][:200]!r}, expected {self._header!r})")
        kept = [lines[0]]
        n_fields = len(self.columns)
        for line in lines[1:]:
            fields = line.split(",")
            if len(fields) != n_fields:
                continue  # empty or torn line
            try:
                step = int(fields[0])
            except ValueError:
                continue
            if step <= last_step:
                kept.append(line)
        atomic_write_bytes(self.path, ("\n".join(kept) + "\n").encode())

    def append(self, rows: dict) -> int:
        """Append a chunk of samples and flush.

        Args:
            rows: column name -> scalar or (S,) array. Required: ``step``, ``time_fs``,
                ``temperature_K``, ``e_pot_eV``, ``e_kin_eV``; ``e_tot_eV`` defaults to
                ``e_pot_eV + e_kin_eV``; ``pressure_GPa``/``volume_A3`` and the extra columns
                are optional (NaN or missing -> empty field).

        Returns:
            Number of rows written.
        """
        unknown = set(rows) - set(self.columns)
        if unknown:
            raise ValueError(f"unknown thermo columns {sorted(unknown)}; expected {self.columns}")
        missing = [c for c in _THERMO_REQUIRED if c not in rows]
        if missing:
            raise ValueError(f"thermo rows lack columns {missing}")
        cols = {k: np.atleast_1d(np.asarray(v)) for k, v in rows.items()}
        n = max(len(v) for v in cols.values())
        if "e_tot_eV" not in cols:
            cols["e_tot_eV"] = (np.broadcast_to(cols["e_pot_eV"], (n,)).astype(float)
                                + np.broadcast_to(cols["e_kin_eV"], (n,)).astype(float))
        try:
            cols = {k: np.broadcast_to(v, (n,)) for k, v in cols.items()}
        except ValueError:
            raise ValueError("thermo columns have different lengths: "
                             f"{ {k: np.shape(v) for k, v in rows.items()} }") from None
        steps = cols["step"]
        if not np.all(np.asarray(steps) == np.round(np.asarray(steps, float))):
            raise ValueError("thermo 'step' must be integer")
        out = []
        for i in range(n):
            fields = [str(int(steps[i]))]
            for c in self.columns[1:]:
                fields.append(_fmt_float(cols[c][i]) if c in cols else "")
            out.append(",".join(fields))
        if out:
            self._fh.write("\n".join(out) + "\n")
        self._fh.flush()
        return n

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_thermo(path) -> dict[str, np.ndarray]:
    """Read a thermo CSV into ``{column: (S,) array}`` (``step`` int; empty fields -> NaN)."""
    data = np.genfromtxt(path, delimiter=",", names=True, dtype=float, ndmin=1)
    out = {name: np.asarray(data[name], dtype=float).reshape(-1) for name in data.dtype.names}
    if "step" in out:
        out["step"] = out["step"].astype(np.int64)
    return out


# --------------------------------------------------------------------------------------------
# trajectories

_STEP_RE = re.compile(rb"(?:^|\s)step=(-?\d+)")


def _xyz_frames(path: Path):
    """Yield ``(start, end, step)`` byte ranges of the complete frames of an extxyz file."""
    with open(path, "rb") as f:
        pos = 0
        while True:
            start = pos
            line = f.readline()
            if not line:
                return
            if not line.endswith(b"\n"):
                return  # torn
            pos += len(line)
            try:
                natoms = int(line.strip())
            except ValueError:
                return  # corrupt tail
            comment = f.readline()
            if not comment.endswith(b"\n"):
                return
            pos += len(comment)
            for _ in range(natoms):
                atom = f.readline()
                if not atom.endswith(b"\n"):
                    return
                pos += len(atom)
            m = _STEP_RE.search(comment)
            yield start, pos, (int(m.group(1)) if m else None)


def _truncate_xyz(path: Path, last_step: int) -> None:
    frames = list(_xyz_frames(path))
    kept = [(s, e) for s, e, step in frames if step is None or step <= last_step]
    size = path.stat().st_size
    prefix_end = 0
    is_prefix = True
    for s, e in kept:
        if s != prefix_end:
            is_prefix = False
            break
        prefix_end = e
    if is_prefix:
        if prefix_end != size:
            with open(path, "r+b") as f:
                f.truncate(prefix_end)
        return
    with open(path, "rb") as f:
        data = f.read()
    atomic_write_bytes(path, b"".join(data[s:e] for s, e in kept))


def _truncate_traj(path: Path, last_step: int) -> None:
    from ase.io.trajectory import Trajectory

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with Trajectory(path, "r") as src, Trajectory(tmp, "w") as dst:
            try:
                n = len(src)
            except Exception:  # pragma: no cover - unreadable file
                n = 0
            for i in range(n):
                try:
                    atoms = src[i]
                except Exception:  # torn last frame
                    break
                step = atoms.info.get("step")
                if step is None or int(step) <= last_step:
                    dst.write(atoms)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _symbols(numbers) -> list[str]:
    from ase.data import chemical_symbols

    return [chemical_symbols[int(z)] for z in numbers]


class TrajectoryWriter:
    """Append MD frames to extended XYZ or ASE ``.traj``.

    Args:
        path: output file.
        numbers: (N,) atomic numbers.
        cell: (3, 3) lattice vectors as rows [Å] (all zeros for a non-periodic system).
        pbc: bool or (3,) bools.
        fmt: ``"extxyz"`` or ``"traj"``; default from the suffix (``.traj`` -> traj, else extxyz).
        resume_from_step: keep the frames with ``step <= resume_from_step`` already in ``path``
            (dropping a torn last frame) and append after them; ``None`` starts a new file.

    extxyz frames carry ``Lattice=``, ``Properties=species:S:1:pos:R:3[:forces:R:3]
    [:velocities:R:3]``, ``energy=`` [eV], ``time_fs=``, ``step=``, ``pbc=``; floats are written
    with shortest exact round-trip precision. Velocities are Å/fs there (``velocity_unit=A/fs``);
    ``.traj`` stores them as ASE velocities (Å per Å·sqrt(amu/eV)) and step/time_fs in
    ``atoms.info``.
    """

    def __init__(self, path, numbers, cell, pbc, fmt: str | None = None,
                 resume_from_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fmt is None:
            fmt = "traj" if self.path.suffix == ".traj" else "extxyz"
        fmt = fmt.lower()
        if fmt == "xyz":
            fmt = "extxyz"
        if fmt not in ("extxyz", "traj"):
            raise ValueError(f"unknown trajectory format {fmt!r}; expected 'extxyz' or 'traj'")
        self.fmt = fmt
        self.numbers = np.asarray(numbers, dtype=np.int64).reshape(-1)
        self.n_atoms = len(self.numbers)
        self.cell = np.asarray(cell, dtype=float).reshape(3, 3)
        self.pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
        self._species = _symbols(self.numbers)
        resume = resume_from_step is not None and self.path.exists() and self.path.stat().st_size > 0
        if fmt == "extxyz":
            if resume:
                _truncate_xyz(self.path, int(resume_from_step))
                self._fh = open(self.path, "a", encoding="utf-8")
            else:
                self._fh = open(self.path, "w", encoding="utf-8")
        else:
            from ase.io.trajectory import Trajectory

            if resume:
                _truncate_traj(self.path, int(resume_from_step))
                self._fh = Trajectory(self.path, "a")
            else:
                self._fh = Trajectory(self.path, "w")

    # -- public

    def append(self, positions, *, step, time_fs, forces=None, energy=None, velocities=None,
               cell=None) -> int:
        """Append one frame ((N, 3) arrays) or a chunk of frames ((F, N, 3), step/time_fs (F,)).

        Args:
            positions: [Å]. forces: [eV/Å] or None. energy: [eV] or None.
            velocities: [Å/fs] or None. cell: (3, 3) or (F, 3, 3) [Å]; default: the constructor's.
            step: integer step index; time_fs: simulation time [fs].

        Returns:
            Number of frames written (the file is flushed).
        """
        pos = np.asarray(positions, dtype=float)
        single = pos.ndim == 2
        if single:
            pos = pos[None]
        if pos.ndim != 3 or pos.shape[1:] != (self.n_atoms, 3):
            raise ValueError(f"positions must be ({self.n_atoms}, 3) or (F, {self.n_atoms}, 3), "
                             f"got {np.shape(positions)}")
        nf = pos.shape[0]

        def frames(x, tail):
            if x is None:
                return None
            x = np.asarray(x, dtype=float)
            return np.broadcast_to(x, (nf,) + tail) if x.shape == tail else x.reshape((nf,) + tail)

        frc = frames(forces, (self.n_atoms, 3))
        vel = frames(velocities, (self.n_atoms, 3))
        cells = frames(self.cell if cell is None else cell, (3, 3))
        steps = np.broadcast_to(np.asarray(step), (nf,))
        times = np.broadcast_to(np.asarray(time_fs, dtype=float), (nf,))
        energies = None if energy is None else np.broadcast_to(np.asarray(energy, dtype=float), (nf,))
        for i in range(nf):
            kw = dict(step=int(steps[i]), time_fs=float(times[i]), cell=cells[i],
                      forces=None if frc is None else frc[i],
                      velocities=None if vel is None else vel[i],
                      energy=None if energies is None else float(energies[i]))
            if self.fmt == "extxyz":
                self._fh.write(self._xyz_frame(pos[i], **kw))
            else:
                self._traj_frame(pos[i], **kw)
        self.flush()
        return nf

    def flush(self) -> None:
        if self.fmt == "extxyz":
            self._fh.flush()
        else:
            # ASE syncs each frame itself; just push the bytes to the OS.
            fd = getattr(getattr(self._fh, "backend", None), "fd", None)
            if fd is not None and hasattr(fd, "flush"):
                fd.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- formats

    def _xyz_frame(self, pos, *, step, time_fs, cell, forces, velocities, energy) -> str:
        props = "species:S:1:pos:R:3"
        cols = [pos]
        if forces is not None:
            props += ":forces:R:3"
            cols.append(forces)
        if velocities is not None:
            props += ":velocities:R:3"
            cols.append(velocities)
        header = []
        if np.any(cell != 0.0):
            header.append('Lattice="' + " ".join(repr(float(x)) for x in cell.reshape(-1)) + '"')
        header.append(f"Properties={props}")
        if energy is not None:
            header.append(f"energy={energy!r}")
        header.append(f"time_fs={time_fs!r}")
        header.append(f"step={step:d}")
        if velocities is not None:
            header.append("velocity_unit=A/fs")
        header.append('pbc="' + " ".join("T" if p else "F" for p in self.pbc) + '"')
        data = np.concatenate(cols, axis=1).tolist()
        buf = io.StringIO()
        buf.write(f"{self.n_atoms}\n{' '.join(header)}\n")
        for sym, row in zip(self._species, data):
            buf.write(sym + " " + " ".join(map(repr, row)) + "\n")
        return buf.getvalue()

    def _traj_frame(self, pos, *, step, time_fs, cell, forces, velocities, energy) -> None:
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = Atoms(numbers=self.numbers, positions=pos, cell=cell, pbc=self.pbc)
        if velocities is not None:
            # Å/fs -> ASE velocity unit Å / (Å·sqrt(amu/eV)).
            atoms.set_velocities(np.asarray(velocities) * TIME_UNIT_FS)
        atoms.info["step"] = step
        atoms.info["time_fs"] = time_fs
        results = {}
        if energy is not None:
            results["energy"] = energy
        if forces is not None:
            results["forces"] = np.array(forces)
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        self._fh.write(atoms)


# --------------------------------------------------------------------------------------------
# progress


class ProgressMeter:
    """Live progress: step, simulated ps, ns/day, atom-steps/s, T [K], E_tot [eV].

    Uses tqdm when installed (``use_tqdm=None``), otherwise a carriage-return line on ``file``
    (stderr). Rates are measured from the first `update` call onward (so the first chunk's
    compilation does not drag them down); the first update reports the rate since construction.

    Args:
        total_steps: final step index of the run.
        timestep_fs: time step [fs].
        n_atoms: atoms in the system.
        start_step: step the run (re)starts from.
        file: stream (default ``sys.stderr``).
        use_tqdm: force/disable tqdm; None = use it if importable.
        min_interval_s: minimum seconds between redraws of the plain line.
    """

    def __init__(self, total_steps: int, timestep_fs: float, n_atoms: int, *, start_step: int = 0,
                 file=None, use_tqdm: bool | None = None, min_interval_s: float = 0.2):
        self.total_steps = int(total_steps)
        self.timestep_fs = float(timestep_fs)
        self.n_atoms = int(n_atoms)
        self.file = sys.stderr if file is None else file
        self.min_interval_s = float(min_interval_s)
        self.step = int(start_step)
        self._t0 = time.perf_counter()
        self._ref = (self._t0, self.step)
        self._first = True
        self._last_draw = -math.inf
        self._width = 0
        self.temperature_K = math.nan
        self.e_tot_eV = math.nan
        self._bar = None
        if use_tqdm is None or use_tqdm:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                if use_tqdm:
                    raise
            else:
                self._bar = tqdm(total=self.total_steps, initial=self.step, unit="step",
                                 file=self.file, dynamic_ncols=True, smoothing=0.0)

    def rates(self) -> dict[str, float]:
        """``{"ns_per_day", "atom_steps_per_s", "steps_per_s"}`` over the measuring window."""
        t_ref, s_ref = self._ref
        dt = time.perf_counter() - t_ref
        ds = self.step - s_ref
        steps_per_s = ds / dt if dt > 0 and ds > 0 else math.nan
        return {
            "steps_per_s": steps_per_s,
            "ns_per_day": steps_per_s * self.timestep_fs * 1e-6 * 86400.0,
            "atom_steps_per_s": steps_per_s * self.n_atoms,
        }

    def describe(self) -> str:
        """The status text (without the tqdm bar)."""
        r = self.rates()
        return (f"step {self.step}/{self.total_steps} | t {self.step * self.timestep_fs * 1e-3:.3f} ps"
                f" | {r['ns_per_day']:.3g} ns/day | {r['atom_steps_per_s']:.3g} atom-steps/s"
                f" | T {self.temperature_K:.1f} K | E_tot {self.e_tot_eV:.6f} eV")

    def update(self, step: int, temperature_K: float | None = None,
               e_tot_eV: float | None = None) -> None:
        """Report that the run reached ``step`` (with the latest T [K] and E_tot [eV])."""
        prev = self.step
        self.step = int(step)
        if temperature_K is not None:
            self.temperature_K = float(temperature_K)
        if e_tot_eV is not None:
            self.e_tot_eV = float(e_tot_eV)
        now = time.perf_counter()
        text = self.describe()  # first call: rate since construction
        if self._first:
            self._first = False
            self._ref = (now, self.step)
        if self._bar is not None:
            self._bar.update(self.step - prev)
            self._bar.set_postfix_str(text.split(" | ", 1)[1], refresh=True)
            return
        if now - self._last_draw >= self.min_interval_s or self.step >= self.total_steps:
            self._last_draw = now
            pad = max(0, self._width - len(text))
            self._width = len(text)
            self.file.write("\r" + text + " " * pad)
            self.file.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._width:
            self.file.write("\n")
            self.file.flush()
            self._width = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
