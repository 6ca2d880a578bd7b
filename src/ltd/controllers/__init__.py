"""Who decides: the heuristic baselines, the learned baselines, LTD, and the registry that builds
any of them (or a static tree) from a config. The contract the engine calls is ltd.decoding.controller."""
