"""MD restart files: the exact integrator state and neighbour graph, to continue a run bit for bit.

``restart.npz`` holds ``step``, the PRNG key, every array leaf of the integrator state (``state_*``;
for NPT this includes the box: reference box and box position) and of the neighbour state
(``graph_*``), and ``neighbor_meta``: JSON with the static capacities of the neighbour buffers
(``GraphFns.describe``). On load the state leaves go into a template state of the same run, and
the graph leaves into a template from ``GraphFns.restore`` built with exactly the saved
capacities — so a run that had reallocated bigger buffers continues with them, compiles the same
program, and gives the same trajectory as an uninterrupted run.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np

from jnnp.atomic import atomic_write_npz

__all__ = ["save_restart", "load_restart"]

_FORMAT = 2


def save_restart(path, step: int, state, graph_state, key, graph_meta: dict) -> None:
    """Write the restart file atomically (see the module docstring)."""
    arrays = {f"state_{i:04d}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(state))}
    arrays.update({f"graph_{i:04d}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(graph_state))})
    atomic_write_npz(path, format=np.asarray(_FORMAT), step=np.asarray(step),
                     key=np.asarray(jax.random.key_data(key)),
                     neighbor_meta=np.asarray(json.dumps(graph_meta, default=_jsonable)), **arrays)


def load_restart(path, state_template, restore_graph):
    """``(step, state, graph_state, key)`` from ``path``.

    Args:
        state_template: an integrator state of this run (same ensemble, atoms and dtype).
        restore_graph: ``restore_graph(positions, graph_meta) -> template graph state``
            (`GraphFns.restore` with the run's other arguments bound).

    Raises:
        ValueError: the file does not belong to a run like this one (naming what differs).
    """
    with np.load(path) as data:
        files = set(data.files)
        if "format" not in files or int(data["format"]) != _FORMAT:
            raise ValueError(f"{path}: not a jnnp MD restart file of format {_FORMAT} (keys {sorted(files)[:6]}...)")
        state = _fill(path, "state", data, state_template, check_shapes=True)
        meta = json.loads(str(data["neighbor_meta"]))
        graph = _fill(path, "graph", data, restore_graph(state.position, meta), check_shapes=False)
        return int(data["step"]), state, graph, jax.random.wrap_key_data(jnp.asarray(data["key"]))


def _fill(path, prefix, data, template, check_shapes):
    leaves, treedef = jax.tree.flatten(template)
    names = sorted(k for k in data.files if k.startswith(prefix + "_"))
    if len(names) != len(leaves):
        raise ValueError(f"{path}: {len(names)} saved {prefix} arrays, but this run's {prefix} has "
                         f"{len(leaves)} (ensemble or neighbour method changed?)")
    out = []
    for name, leaf in zip(names, leaves):
        x = data[name]
        dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype  # leaves may be floats
        if np.dtype(x.dtype) != np.dtype(dtype):
            raise ValueError(f"{path}: {name} has dtype {x.dtype}, this run uses {dtype} (precision changed?)")
        if check_shapes and x.shape != tuple(np.shape(leaf)):
            raise ValueError(f"{path}: {name} has shape {x.shape}, this run's is {tuple(np.shape(leaf))} "
                             f"(another structure?)")
        # Python scalars (e.g. jax-md's chain time constants) stay scalars: as arrays they would
        # lose weak typing and promote the float32 parts of the state they multiply.
        weak = isinstance(leaf, (int, float)) or getattr(leaf, "weak_type", False)
        out.append(x.item() if weak and x.shape == () else jnp.asarray(x))
    return jax.tree.unflatten(treedef, out)


def _jsonable(o):
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")
