"""make table1 name=<sweep>: the paper's Table 1 layout (speed-up and tau per model x task x method,
and the mean over tasks) from the rows the sweep's jobs appended to the results store; cells the
sweep asked for and did not get are marked missing. Printed as markdown and written to
<results>/tables/<sweep>.md and .csv.

    python -m ltd.cli.table1 sweep=cpu_table1 [results=results]
"""
import sys

from ltd.cli.app import key_values, user_errors
from ltd.config.files import DEFAULT_RESULTS
from ltd.core.errors import LtdError
from ltd.core.preflight import check_writable
from ltd.core.results import ResultPaths
from ltd.eval.table1 import MISSING, markdown
from ltd.jobs.sweeps import write_table1


def main(argv: list[str]) -> None:
    with user_errors():
        args = key_values(argv, dict(sweep=None, results=DEFAULT_RESULTS), "make table1 name=<sweep> [ARGS=\"results=<dir>\"]")
        if not args["sweep"]:
            raise LtdError("name the sweep: make table1 name=<one of sweeps/*.yaml>")
        check_writable(ResultPaths(args["results"]).table(args["sweep"]).parent, "the table")
        table, out = write_table1(args["sweep"], args["results"])
        print(markdown(table))
        print(f"\n{(table == MISSING).sum().sum()} cells missing; written to {out}.md and {out}.csv")


if __name__ == "__main__":
    main(sys.argv[1:])
