"""Run the analysis notebooks headless: each is a jupytext percent-format .py file (diffable, read
in any editor); its cell tagged `parameters` gets a cell after it with the run's values (as
papermill does), nbclient executes it in a fresh kernel, and the executed notebook is written as
.ipynb and as HTML. A cell that fails stops that notebook, not the others."""
from dataclasses import dataclass
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter

from ltd.core.atomic import write_file


@dataclass
class Outcome:
    notebook: str
    html: Path
    error: str | None = None  # the failing cell's error, one line


def with_parameters(notebook, parameters: dict):
    """`notebook` with a cell of `parameters` after its `parameters` cell (at the top if none)."""
    source = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    tagged = [i for i, c in enumerate(notebook.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    notebook.cells.insert(tagged[0] + 1 if tagged else 0, cell)
    return notebook


def run_notebook(source: Path, out: Path, parameters: dict, timeout: int = 1200) -> Outcome:
    """Execute `source` with `parameters` in a kernel started in its own directory; writes
    <out>/<name>.ipynb and .html (whatever ran, when a cell failed)."""
    notebook = with_parameters(jupytext.read(source), parameters)
    # The kernel's own log stays quiet below errors: its warning about local TCP says nothing of the analysis.
    client = NotebookClient(notebook, kernel_name="python3", timeout=timeout,
                            extra_arguments=["--IPKernelApp.log_level=ERROR"],
                            resources={"metadata": {"path": str(Path(source).parent)}})
    error = None
    try:
        client.execute()
    except CellExecutionError as failure:
        error = f"{failure.ename}: {failure.evalue}"
    name = Path(source).stem
    html, _ = HTMLExporter().from_notebook_node(notebook)
    write_file(out / f"{name}.ipynb", lambda tmp: nbformat.write(notebook, tmp))
    write_file(out / f"{name}.html", lambda tmp: tmp.write_text(html))
    return Outcome(name, out / f"{name}.html", error)
