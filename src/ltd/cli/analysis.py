"""make analysis: the notebooks of analysis/ (jupytext percent files) executed headless on the
results, each written as <out>/<name>.html and .ipynb, its tables as CSV and its figures as PNG
and SVG under <out>/figures/. A notebook whose results are missing is skipped with the command that
makes them.

    python -m ltd.cli.analysis [results=results] [out=<results>/analysis] [only=table1,mmlu] [method=ltd]
                               [reference=tuned] [experiment=<name>]

`method` is the learned method shown (`ltd`, or `ltd-humaneval`: the paper's HumanEval-only
policies); `reference` is the method it is set beside, per cycle along an answer and per MMLU subject;
`experiment` keeps Table 1 to one experiment's rows (a sweep's name; default: every greedy row,
the latest per cell).
"""
import sys
from pathlib import Path

from ltd.analysis.catalogue import NOTEBOOKS
from ltd.analysis.notebooks import run_notebook
from ltd.analysis.sources import Results
from ltd.cli.app import key_values, user_errors
from ltd.config.files import DEFAULT_RESULTS
from ltd.core.errors import LtdError
from ltd.core.preflight import check_writable
from ltd.core.project import PROJECT

ANALYSIS = PROJECT / "analysis"
USAGE = ('make analysis [ARGS="results=<dir> out=<dir> only=<notebook>,... method=<m> reference=<m> '
         'experiment=<name>"]')


def main(argv: list[str]) -> None:
    with user_errors():
        args = key_values(argv, dict(results=DEFAULT_RESULTS, out=None, only=None, method="ltd",
                                          reference="tuned", experiment=None), USAGE)
        results = Results(Path(args["results"]).resolve())
        results.store  # no results at all: one line saying what to run first
        names = [n.name for n in NOTEBOOKS]
        only = args["only"].split(",") if args["only"] else names
        if unknown := sorted(set(only) - set(names)):
            raise LtdError(f"unknown notebook {', '.join(unknown)}; choose from: {', '.join(names)}")
        out = Path(args["out"] or results.paths.analysis).resolve()
        check_writable(out, "the analysis")
        parameters = dict(results=str(results.root), out=str(out), method=args["method"],
                          reference=args["reference"], experiment=args["experiment"])
        failed = []
        for notebook in (n for n in NOTEBOOKS if n.name in only):
            if not notebook.has_results(results, parameters):
                print(f"{notebook.name}: skipped, no results for it yet ({notebook.make})")
                continue
            print(f"{notebook.name}: running analysis/{notebook.name}.py", flush=True)
            outcome = run_notebook(ANALYSIS / f"{notebook.name}.py", out, parameters)
            print(f"{notebook.name}: {'failed, ' + outcome.error if outcome.error else 'written'} -> {outcome.html}")
            failed += [notebook.name] if outcome.error else []
        print(f"figures in {out / 'figures'}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
