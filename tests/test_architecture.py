"""The layout is the architecture: each layer is a subpackage, dependencies point one way, and nothing cycles.

Read from the source with `ast` (every import, lazy ones inside functions included), so the rules hold for code
paths a test run may never reach.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from support import ROOT

PACKAGE_DIR = ROOT / "scripts" / "rollout_pipeline"
LAYERS = ("collect", "verify", "stages", "rl", "reference", "cli", "tooling")
# layer -> the layers it must never import
FORBIDDEN = {
    "collect": {"reference", "rl", "stages", "cli", "tooling"},
    "verify": {"collect", "reference", "rl", "stages", "cli", "tooling"},
    "stages": {"collect", "reference", "rl", "cli", "tooling"},
    "reference": {"collect", "rl", "stages", "cli", "tooling"},
    "rl": {"cli", "tooling"},
    # The real model servers the test tiers, demos and benchmarks start: the core alone, so a tier's own
    # interpreter can run them; only the demos' front ends (cli/) import them.
    "tooling": {"collect", "verify", "stages", "rl", "reference", "cli"},
}
MAX_CORE_MODULES = 7
SCRIPTS_DIR = ROOT / "scripts"
# Where the pipeline's files live is named in paths.py alone: a string that is nothing but such a path, anywhere else,
# restates it (words such as "metrics" are keys, not paths).
PATH_LITERAL = re.compile(r"(data|metrics|reports)/[\w.\-/]*|params\.yaml")
PATHS_MODULE = "paths.py"
# Run by the vLLM tier's own interpreter, which has none of our packages: each imports nothing of ours, so it parses
# its own command line (the LoRA trainer; the conversion of the model into the folder vLLM serves).
OWN_COMMAND_LINE = {"rl/lora_trainer.py", "tooling/smollm2_hf.py"}


def _module_name(package_dir: Path, path: Path) -> str:
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """module -> the package modules it imports (a `from X import name` of a submodule counts; so do lazy imports)."""
    top = package_dir.name
    modules = {_module_name(package_dir, p): p for p in package_dir.rglob("*.py")}
    graph = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)
        # An import of a package's module also loads the package's own __init__: not an edge back to it.
        ancestors = {module.rsplit(".", i)[0] for i in range(1, module.count(".") + 1)}
        graph[module] = {m for m in found if m in modules and m.startswith(top)} - {module} - ancestors
    return graph


def layer_of(module: str) -> str | None:
    """The layer a module belongs to (None for the core modules and the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in LAYERS else None


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, imports in graph.items():
        layer = layer_of(module)
        banned = FORBIDDEN.get(layer, set()) if layer else set(LAYERS)
        found += [f"{module} imports {imported}" for imported in imports if layer_of(imported) in banned]
    return sorted(found)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for nxt in sorted(graph[module]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_every_layer_is_a_subpackage_with_a_docstring_that_says_what_it_may_import():
    for layer in LAYERS:
        init = PACKAGE_DIR / layer / "__init__.py"
        assert init.is_file(), f"{layer}/ is not a package"
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and "import" in doc, f"{layer}/__init__.py: say what the layer is for and what it may import"


def test_only_a_small_core_sits_at_the_top():
    core = sorted(p.stem for p in PACKAGE_DIR.glob("*.py") if p.name != "__init__.py")
    assert len(core) <= MAX_CORE_MODULES, f"top-level modules {core}: move role-specific ones into a layer"


def test_every_module_says_its_job_in_a_docstring():
    missing = sorted(
        str(p.relative_to(PACKAGE_DIR))
        for p in PACKAGE_DIR.rglob("*.py")
        if not ast.get_docstring(ast.parse(p.read_text()))
    )
    assert not missing


def test_dependencies_point_one_way():
    assert layer_violations(import_graph(PACKAGE_DIR)) == []


def test_there_is_no_import_cycle():
    assert find_cycle(import_graph(PACKAGE_DIR)) is None


def path_literals(package_dir: Path) -> list[str]:
    """`module:line 'path'` for each string constant (f-string parts included, docstrings not) that is a path of the
    pipeline's files, outside paths.py."""
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        name = str(path.relative_to(package_dir))
        if name == PATHS_MODULE:
            continue
        tree = ast.parse(path.read_text(), str(path))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        found += [
            f"{name}:{node.lineno} {node.value!r}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and PATH_LITERAL.fullmatch(node.value)
        ]
    return found


def command_line_parsers(package_dir: Path) -> list[str]:
    """The modules outside cli/ that import argparse: each would be a front end living in a library layer."""
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        name = str(path.relative_to(package_dir))
        if name.startswith("cli/") or name in OWN_COMMAND_LINE:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import) and any(alias.name == "argparse" for alias in node.names):
                found.append(name)
            elif isinstance(node, ast.ImportFrom) and node.module == "argparse":
                found.append(name)
    return found


def script_shape_problems(script: Path) -> list[str]:
    """What keeps `scripts/<verb>.py` from being the three lines every stage script is: a docstring, the import of
    `script_main` from `rollout_pipeline.cli.<verb>`, and its call under `if __name__ == "__main__"`."""
    body = ast.parse(script.read_text(), str(script)).body
    expected = [
        f"from rollout_pipeline.cli.{script.stem} import script_main",
        "if __name__ == '__main__':\n    script_main()",
    ]
    if not ast.get_docstring(ast.Module(body=body, type_ignores=[])):
        return [f"{script.name}: no docstring saying what it runs"]
    code = [ast.unparse(node) for node in body[1:]]
    return [] if code == expected else [f"{script.name}: {code} instead of {expected}"]


def test_each_path_of_the_pipelines_files_is_named_once_in_paths_py():
    assert path_literals(PACKAGE_DIR) == []


# What a settings parameter or field must not be annotated as: nothing, anything, or a bare mapping (a dict's keys
# are read as strings a reader and a type checker cannot follow, and two shapes of one idea come back).
UNTYPED = re.compile(r"(typing\.)?(Any|object|dict|Dict|Mapping|MutableMapping)(\[.*\])?( \| None)?")


def _is_settings(name: str) -> bool:
    return name in ("settings", "agent") or name.endswith("_settings")


def untyped_settings(package_dir: Path, layer: str) -> list[str]:
    """Parameters and class fields named `settings`, `*_settings` or `agent` in a layer that are annotated `Any`, a
    `dict` (or another mapping), or not at all: a run's settings and its agent's are typed (collect/settings.py,
    collect/agent_settings.py), so that a reader and a type checker know what a function receives."""
    found = []
    for path in sorted((package_dir / layer).rglob("*.py")):
        where = path.relative_to(package_dir)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                arguments = node.args
                for argument in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]:
                    annotation = ast.unparse(argument.annotation) if argument.annotation else None
                    if _is_settings(argument.arg) and (annotation is None or UNTYPED.fullmatch(annotation)):
                        found.append(f"{where}:{node.lineno} {node.name}({argument.arg}: {annotation})")
            elif isinstance(node, ast.ClassDef):
                for field in node.body:
                    if isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name):
                        annotation = ast.unparse(field.annotation)
                        if _is_settings(field.target.id) and UNTYPED.fullmatch(annotation):
                            found.append(f"{where}:{field.lineno} {node.name}.{field.target.id}: {annotation}")
    return found


def test_the_collector_engine_takes_typed_settings_and_a_typed_agent_never_a_dict_or_any():
    assert untyped_settings(PACKAGE_DIR, "collect") == []


def test_the_settings_check_catches_settings_or_an_agent_taken_as_any_as_a_dict_or_unannotated(tmp_path):
    (tmp_path / "collect").mkdir()
    (tmp_path / "collect" / "engine.py").write_text(
        "from typing import Any\n"
        "def run(settings: Any) -> None: ...\n"
        "def fetch(run_settings) -> None: ...\n"
        "def typed(settings: CollectSettings, agent: AgentSettings, agent_name: str) -> None: ...\n"
        "def score(row: dict, agent: dict) -> None: ...\n"
        "async def ask(agent: dict[str, Any] | None, fetch_settings: Mapping[str, Any]) -> None: ...\n"
        "class ScoreSettings:\n"
        "    agent_name: str\n"
        "    agent: dict  # the agent's section of params.yaml\n"
        "    settings: CollectSettings\n"
    )
    assert untyped_settings(tmp_path, "collect") == [
        "collect/engine.py:2 run(settings: Any)",
        "collect/engine.py:3 fetch(run_settings: None)",
        "collect/engine.py:5 score(agent: dict)",
        "collect/engine.py:6 ask(agent: dict[str, Any] | None)",
        "collect/engine.py:6 ask(fetch_settings: Mapping[str, Any])",
        "collect/engine.py:9 ScoreSettings.agent: dict",
    ]


def test_only_the_front_ends_in_cli_parse_a_command_line():
    assert command_line_parsers(PACKAGE_DIR) == []


def test_the_modules_that_parse_their_own_command_line_import_nothing_of_ours():
    """They run in the vLLM tier's interpreter, which has none of the package's dependencies."""
    graph = import_graph(PACKAGE_DIR)
    own = {f"{PACKAGE_DIR.name}.{name.removesuffix('.py').replace('/', '.')}" for name in OWN_COMMAND_LINE}
    assert own <= set(graph)
    assert {module: graph[module] for module in own if graph[module]} == {}


def test_every_stage_script_is_the_same_three_lines_that_call_its_front_end_in_cli():
    scripts = sorted(SCRIPTS_DIR.glob("*.py"))
    assert scripts
    assert [problem for script in scripts for problem in script_shape_problems(script)] == []


def test_the_shape_checks_catch_a_restated_path_a_parser_outside_cli_and_a_script_that_parses(tmp_path):
    package = _fake_package(
        tmp_path,
        {
            "__init__.py": "",
            "paths.py": 'ROLLOUTS_DIR = "data/rollouts"\n',
            "stages/__init__.py": "",
            "stages/pair.py": '"""Reads data/rollouts/<name>.jsonl."""\nimport argparse\n\n'
            'def source(name):\n    return f"data/rollouts/{name}.jsonl"\n',
            "cli/__init__.py": "",
            "cli/pair.py": "import argparse\n",
        },
    )
    assert path_literals(package) == ["stages/pair.py:5 'data/rollouts/'"]
    assert command_line_parsers(package) == ["stages/pair.py"]
    thin, fat = tmp_path / "pair.py", tmp_path / "filter.py"
    thin.write_text(
        '"""Stage pair."""\n\nfrom rollout_pipeline.cli.pair import script_main\n\n'
        'if __name__ == "__main__":\n    script_main()\n'
    )
    fat.write_text('"""Stage filter."""\n\nimport argparse\n\nargparse.ArgumentParser().parse_args()\n')
    assert script_shape_problems(thin) == []
    assert len(script_shape_problems(fat)) == 1


def _fake_package(root: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        path = root / "rollout_pipeline" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root / "rollout_pipeline"


def test_the_checks_catch_a_stage_that_imports_the_collector_and_a_cycle(tmp_path):
    package = _fake_package(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "from rollout_pipeline.jsonl import x\n",
            "jsonl.py": "def f():\n    from . import errors\n",
            "stages/__init__.py": "",
            "stages/pair.py": "from ..collect.transport import post\n",
            "collect/__init__.py": "",
            "collect/transport.py": "from rollout_pipeline.errors import E\n",
        },
    )
    graph = import_graph(package)
    assert layer_violations(graph) == ["rollout_pipeline.stages.pair imports rollout_pipeline.collect.transport"]
    assert find_cycle(graph) == ["rollout_pipeline.errors", "rollout_pipeline.jsonl", "rollout_pipeline.errors"]


def test_every_phony_make_target_has_a_recipe():
    """A declared target without a recipe prints "Nothing to be done" and exits 0: a fake pass."""
    import re

    makefile = (ROOT / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1).split()
    for target in phony:
        rule = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n)*)", makefile, re.M)
        assert rule, f"{target} is declared .PHONY but has no rule"
        prerequisites = rule.group(0).split("\n")[0].split("##")[0]
        # A recipe, or an alias for a file rule that has one (setup: $(STAMP)).
        assert rule.group(1).strip() or "$(" in prerequisites, f"{target} has no recipe"


def executor_problems(interface: type, executors: list[type]) -> list[str]:
    """What keeps each executor from being the interface and nothing more: not a subclass of it, a method of it
    left abstract, one with another signature than the interface's, or a public method the interface lacks (which
    the Collector could call on one executor and not the others)."""
    import inspect

    methods = {name for name, _ in inspect.getmembers(interface, inspect.isfunction) if not name.startswith("_")}
    found = []
    for executor in executors:
        name = executor.__name__
        if not issubclass(executor, interface):
            found.append(f"{name}: not a subclass of {interface.__name__}")
            continue
        found += [f"{name}: {method} not implemented" for method in sorted(executor.__abstractmethods__)]
        for method in sorted(methods):
            theirs, ours = inspect.signature(getattr(executor, method)), inspect.signature(getattr(interface, method))
            if theirs != ours:
                found.append(f"{name}.{method}{theirs} differs from {interface.__name__}.{method}{ours}")
        own = {m for m, _ in inspect.getmembers(executor, inspect.isfunction) if not m.startswith("_")}
        found += [f"{name}.{method}: not in {interface.__name__}" for method in sorted(own - methods)]
    return found


def test_the_three_executors_implement_the_one_executor_interface_and_nothing_beside_it():
    from rollout_pipeline.collect.executor import Executor
    from rollout_pipeline.collect.one_process import OneProcess
    from rollout_pipeline.collect.processes import Processes
    from rollout_pipeline.collect.ray_executor import RayExecutor

    assert executor_problems(Executor, [OneProcess, Processes, RayExecutor]) == []


def test_every_executor_class_in_collect_is_one_the_interface_check_covers():
    """A fourth executor (or one renamed) would escape the check above: every subclass of Executor in collect/,
    read from the source, is one of the three."""
    found = sorted(
        f"{path.stem}.{node.name}"
        for path in (PACKAGE_DIR / "collect").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.ClassDef) and any(ast.unparse(base) == "Executor" for base in node.bases)
    )
    assert found == ["one_process.OneProcess", "processes.Processes", "ray_executor.RayExecutor"]


def test_the_executor_check_catches_a_drifted_signature_a_missing_method_an_extra_one_and_a_stranger():
    from rollout_pipeline.collect.executor import Executor, Job, Outcome

    class Drifted(Executor):
        def collect(self, job: Job, parallel: int) -> Outcome: ...

        def stop(self) -> None: ...

    class Incomplete(Executor):
        def collect(self, job: Job) -> Outcome: ...

    class Wider(Executor):
        def collect(self, job: Job) -> Outcome: ...

        def stop(self) -> None: ...

        def endpoints(self) -> dict: ...

    class Stranger:
        def collect(self, job: Job) -> Outcome: ...

    assert executor_problems(Executor, [Drifted, Incomplete, Wider, Stranger]) == [
        "Drifted.collect(self, job: 'Job', parallel: 'int') -> 'Outcome' differs from Executor.collect(self, job: "
        "'Job') -> 'Outcome'",
        "Incomplete: stop not implemented",
        "Wider.endpoints: not in Executor",
        "Stranger: not a subclass of Executor",
    ]
