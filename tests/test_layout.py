"""The code's shape, drawn from its imports: no cycle, no stage importing a command, the Space one package."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("training", "space", "localhub", "bench")
COMMANDS = {"dataset", "train", "predict", "faithfulness", "publish_space", "demo", "retrain", "study"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Project modules ``path`` imports, anywhere in the file (function-level imports count too)."""
    name, found = module_name(path), set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {module_name(p): p for p in files}
    return {name: {m for m in imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_no_import_cycle():
    edges, state, cycles = graph(), {}, []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_no_stage_imports_a_command_and_the_space_is_one_package():
    edges = graph()
    stages = {m: deps for m, deps in edges.items() if m.startswith("training.pipeline")}
    assert stages, "no stages found"
    for stage, deps in stages.items():
        assert not {d for d in deps if d.startswith("training.") and d.split(".")[1] in COMMANDS}, stage
    flat = {"app", "inference", "ood", "cam", "feedback", "image_io", "texts"}
    for path in (p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")):
        if path.name != "launcher.py":
            assert not imports(path) & flat, f"{path} imports a Space module outside the space package"


def test_the_space_imports_neither_torch_nor_timm():
    """The Space runs on ONNX Runtime; its requirements.txt has no torch (the served process is checked too,
    in test_space)."""
    heavy = {"torch", "torchvision", "timm", "transformers", "pytorch_grad_cam"}
    for path in (ROOT / "space").glob("*.py"):
        roots = {name.split(".")[0] for name in imports(path)}
        assert not roots & heavy, (path.name, roots & heavy)
    requirements = (ROOT / "space" / "requirements.txt").read_text().lower()
    assert "onnxruntime" in requirements and not any(f"\n{name}" in requirements for name in heavy)


def test_stages_read_recipes_not_arguments():
    """Commands turn their arguments into recipe records once (train_arguments.TrainArguments.recipe); no stage
    reads an arguments object or imports the command line."""
    stages = [p for p in (ROOT / "training" / "pipeline").rglob("*.py")]
    for path in stages:
        tree = ast.parse(path.read_text())
        reads = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                 and isinstance(node.value, ast.Name) and node.value.id == "args"]
        params = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.arg) and node.arg == "args"]
        assert not reads and not params, f"{path.name} reads args at lines {reads + params}"
        assert not {m for m in imports(path) if m in ("training.cli", "training.train_arguments")}, path.name


def test_functions_in_training_stay_short_and_take_few_parameters():
    """No function in training/ over 50 lines or taking more than 8 parameters: a step that needs more takes a
    recipe record (pipeline/recipe.py) or a small typed input."""
    too_big = []
    for path in (ROOT / "training").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            a = node.args
            names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
            count = len(names) + bool(a.vararg) + bool(a.kwarg)
            lines = node.end_lineno - node.lineno + 1
            if lines > 50 or count > 8:
                too_big.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines, {count} params)")
    assert too_big == []
