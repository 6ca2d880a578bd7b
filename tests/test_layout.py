"""The shape of the code: layers import only downwards (no cycle anywhere in src/), no function
runs past a screen, the entry points stay thin (docs/layout.md), and torch.load unpickles
nothing but weights."""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "ltd"

# Lowest first: a folder of ltd imports from its own layer and below (docs/layout.md says what each holds).
LAYERS = [
    {"core"},
    {"kernels"},
    {"models"},
    {"decoding"},
    {"traces"},
    {"eval"},
    {"baselines", "rl", "drafter"},
    {"config"},
    {"controllers"},
    {"benchmarks", "analysis"},
    {"jobs"},
    {"cli"},
]


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(("ltd", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
        found[name] = ast.parse(path.read_text())
    return found


def imports(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ltd."):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.startswith("ltd.")}
    return names


def unit(module: str) -> str:
    return module.split(".")[1]


MODULES = modules()


def test_every_folder_has_a_layer_and_imports_only_downwards():
    layer = {name: i for i, units in enumerate(LAYERS) for name in units}
    assert {unit(m) for m in MODULES if m != "ltd"} <= set(layer), "a new folder needs its layer here"
    upwards = [f"{m} imports {t}" for m, tree in MODULES.items() for t in imports(tree)
               if layer[unit(t)] > layer[unit(m)]]
    assert upwards == []


def test_no_module_outside_a_folder():
    assert sorted(path.name for path in SRC.glob("*.py")) == ["__init__.py"]


def test_no_import_cycle():
    graph = {m: {t for t in imports(tree) if t in MODULES} for m, tree in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in graph[module]:
            assert state.get(target) != 1, " -> ".join(path + [module, target])
            if target not in state:
                visit(target, path + [module])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [])


def test_no_function_longer_than_sixty_lines():
    long = [f"{m}.{node.name}: {node.end_lineno - node.lineno + 1} lines" for m, tree in MODULES.items()
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > 60]
    assert long == []


def test_no_call_passes_more_than_five_values_by_position():
    """Past five, a reader cannot tell which value is which: name them (keyword arguments)."""
    crowded = [f"{m}:{node.lineno}: {ast.unparse(node.func)}" for m, tree in MODULES.items() for node in ast.walk(tree)
               if isinstance(node, ast.Call) and sum(not isinstance(a, ast.Starred) for a in node.args) > 5]
    assert crowded == []


def docstrings(tree: ast.Module) -> set[int]:
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}


def test_every_results_path_comes_from_the_registry_and_no_config_value_is_a_template():
    """ltd.core.results builds every path under results/; config values are plain values (Hydra
    interpolates them), never str.format templates."""
    built = [f"{m}:{node.lineno}: {node.value!r}" for m, tree in MODULES.items() if m != "ltd.core.results"
             for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
             and "results/" in node.value and id(node) not in docstrings(tree)]
    formatted = [f"{m}:{node.lineno}" for m, tree in MODULES.items() for node in ast.walk(tree)
                 if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"]
    assert built == [] and formatted == []


def test_entry_points_are_under_a_tenth_of_the_code():
    lines = {path: len(path.read_text().splitlines()) for path in SRC.rglob("*.py")}
    cli = sum(n for path, n in lines.items() if path.parent.name == "cli")
    assert cli / sum(lines.values()) < 0.10



def test_every_torch_load_is_weights_only():
    """Unpickling runs code: every file ltd loads with torch.load is read as weights only."""
    calls = [(path.relative_to(SRC), line) for path in sorted(SRC.rglob("*.py"))
             for line in path.read_text().splitlines() if "torch.load(" in line]
    assert calls, "no torch.load found: the test reads the wrong folder"
    unsafe = [f"{path}: {line.strip()}" for path, line in calls if "weights_only=True" not in line]
    assert not unsafe, unsafe


def test_an_installed_wheel_carries_the_projects_configs_data_sweeps_and_notebooks(tmp_path):
    """`pip install .` (not editable) runs from site-packages: every tracked file of conf/, data/, sweeps/
    and analysis/ is in the wheel under ltd/project/ (src/ltd/project links to them here)."""
    import shutil
    import subprocess
    import sys
    import zipfile

    root, tree = SRC.parents[1], tmp_path / "tree"  # built from a copy: the build leaves nothing in the checkout
    for part in ("src", "conf", "data", "sweeps", "analysis", "pyproject.toml", "README.md"):
        copy = shutil.copytree if (root / part).is_dir() else shutil.copy
        copy(root / part, tree / part, **({"symlinks": True, "ignore": shutil.ignore_patterns(
            "__pycache__", "*.egg-info")} if copy is shutil.copytree else {}))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", str(tree),
                    "-w", str(tmp_path)], check=True, capture_output=True)
    names = set(zipfile.ZipFile(next(tmp_path.glob("ltd-*.whl"))).namelist())
    tracked = subprocess.run(["git", "ls-files", "conf", "data", "sweeps", "analysis"], cwd=root, capture_output=True,
                             text=True, check=True).stdout.split()
    missing = [path for path in tracked if f"ltd/project/{path}" not in names]
    assert tracked and missing == []


def test_the_lock_file_pins_every_dependency_and_make_setup_installs_from_it():
    """requirements.lock (uv pip compile's output) pins each of pyproject.toml's dependencies and
    extras exactly; make setup installs under it."""
    import re
    import tomllib

    root = SRC.parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *(d for extra in project["optional-dependencies"].values() for d in extra)]
    name = lambda requirement: re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
    entries = [line.split("#")[0].strip() for line in (root / "requirements.lock").read_text().splitlines()]
    pinned = dict(entry.split("==", 1) for entry in entries if entry)
    assert [name(r) for r in wanted if name(r) not in pinned] == []
    assert "-c requirements.lock -e '.[test,analysis]'" in (root / "Makefile").read_text()
