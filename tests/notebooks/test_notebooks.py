"""The notebooks in notebooks/ run top to bottom with their small (FAST) settings, and are stored
without outputs.

Each notebook runs in a fresh kernel of this Python (a temporary kernelspec, so a user's own
``python3`` kernel cannot interfere), in a temporary working directory, with the shipped data of
tests/data and matplotlib's Agg backend. A notebook that raises fails its test; the notebooks
also assert their own checks (e.g. gradients against finite differences).
"""

import json
import sys

import pytest
from _shared import REPO, TEST_DATA

NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = ["01_quickstart.ipynb", "02_descriptors.ipynb", "03_hypergradients.ipynb", "04_committees.ipynb"]
TIMEOUT_S = 600  # per cell; the FAST notebooks take well under a minute in all


def test_the_four_notebooks_are_there_and_listed_in_the_readme():
    assert [p.name for p in NOTEBOOKS] == EXPECTED
    readme = (NOTEBOOK_DIR / "README.md").read_text()
    for name in EXPECTED:
        assert name in readme, f"notebooks/README.md does not list {name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    nb = json.loads(path.read_text())
    assert nb["nbformat"] == 4
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, f"{path.name} has no code cells"
    for k, cell in enumerate(code):
        assert cell.get("outputs") == [], f"{path.name}: code cell {k} stores outputs (strip them before committing)"
        assert cell.get("execution_count") is None, f"{path.name}: code cell {k} stores an execution count"
    # the size knobs sit in one cell near the top
    knobs = [k for k, c in enumerate(code) if "JNNP_NOTEBOOK_FAST" in "".join(c["source"])]
    assert knobs == [0], f"{path.name}: the JNNP_NOTEBOOK_FAST knob belongs in the first code cell only"


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
    """A kernelspec for this interpreter in a private Jupyter data directory."""
    pytest.importorskip("ipykernel")
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "jnnp-notebook-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "jnnp notebook test", "language": "python"}))
    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_PATH", str(root))
    yield "jnnp-notebook-test"
    mp.undo()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_name, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # the kernel inherits this environment: small settings, the shipped data, no display
    monkeypatch.setenv("JNNP_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("JNNP_DATA_DIR", str(TEST_DATA))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=kernel_name, timeout=TIMEOUT_S,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()   # raises CellExecutionError naming the cell and the exception
    # it wrote its results into its own run folder (relative to the working directory)
    out = tmp_path / "runs" / path.stem
    assert any(out.glob("*.png")), f"{path.name} wrote no plots into {out}"
