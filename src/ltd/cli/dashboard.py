"""make dashboard: the `ltd` W&B project's workspace and report as code (ltd.jobs.dashboard), written to
<out>/workspace.json and report.json; published, their URLs printed, when W&B is online and logged in.

    python -m ltd.cli.dashboard [entity=<W&B entity>] [project=ltd] [results=results] [out=<results>/dashboard]
"""
import sys

from ltd.cli.app import key_values, user_errors
from ltd.config.files import DEFAULT_RESULTS
from ltd.core.errors import LtdError
from ltd.core.preflight import check_writable
from ltd.core.results import ResultPaths
from ltd.jobs import dashboard

USAGE = 'make dashboard ARGS="[entity=<W&B entity>] [project=ltd] [results=results] [out=<results>/dashboard]"'


def main(argv: list[str]) -> None:
    with user_errors():
        args = key_values(argv, dict(entity="", project="ltd", results=DEFAULT_RESULTS, out=""), USAGE)
        if not args["project"] or not args["results"]:
            raise LtdError(f"project and results need a value: {USAGE}")
        out = args["out"] or ResultPaths(args["results"]).report("dashboard")
        check_writable(out, "the dashboard's specs")
        online = dashboard.can_publish()
        if online and not args["entity"]:
            raise LtdError('publishing (W&B online, logged in) needs the entity: make dashboard ARGS="entity=<your '
                           'entity>" (WANDB_MODE=offline only writes the specs)')
        entity = args["entity"] or dashboard.ENTITY_PLACEHOLDER
        views = {"workspace": dashboard.workspace(entity, args["project"]),
                 "report": dashboard.report(entity, args["project"])}
        written = " and ".join(map(str, dashboard.write_specs(views, out)))
        if not online:
            print(f'wrote {written} (W&B offline or not logged in); to publish: wandb login, then WANDB_MODE=online '
                  f'make dashboard ARGS="entity=<your entity>"')
            return
        for name, url in dashboard.publish(views).items():
            print(f"{name}: {url}")


if __name__ == "__main__":
    main(sys.argv[1:])
