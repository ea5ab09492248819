"""The README's quick-start commands are what CI runs."""

import re

from _shared import REPO


def _commands():
    text = (REPO / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, re.S)


def test_quick_start_has_exactly_two_commands():
    cmds = _commands()
    assert len(cmds) == 2, cmds
    assert cmds[0].startswith("pip install . && jnnp ")
    assert cmds[1].startswith('pip install ".[test]" && ')


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert _commands()[1] in ci


def test_api_accepts_numpy_inputs_without_jit():
    """The README's eager ``jax.grad(energy_fn)(params, positions, cell, graph)`` on numpy arrays."""
    import jax
    import numpy as np

    import jnnp
    from _shared import TEST_DATA
    from jnnp.descriptors import SymFunc, DescriptorSpec
    from jnnp.model import PotentialSpec, init_potential

    mol = jnnp.read(TEST_DATA / "rmd17_ethanol_100.npz", index=0)[0]
    sfs = [SymFunc(2, c, (e,), 4.0, eta=0.5) for c in (1, 6, 8) for e in (1, 6, 8)]
    sfs += [SymFunc(3, c, (1, 6), 4.0, eta=0.1, lam=-1.0, zeta=2.0) for c in (1, 6, 8)]
    spec = PotentialSpec(DescriptorSpec.from_functions((1, 6, 8), sfs, cutoff_type=6), hidden=(4,),
                         activations=("t", "l"))
    pot = init_potential(spec, jax.random.PRNGKey(0))
    graph = jnnp.model.graph_for(pot, mol)
    energy_fn = jnnp.make_energy_fn(pot.spec)
    e = energy_fn(pot.params, mol.positions, mol.cell, graph)
    grads = jax.grad(energy_fn)(pot.params, mol.positions, mol.cell, graph)
    assert np.isfinite(float(e))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads))
    assert np.isclose(float(e), jnnp.energy(pot, mol), rtol=1e-12)
