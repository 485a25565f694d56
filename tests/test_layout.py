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


def test_no_pipeline_step_imports_a_command_and_the_space_is_one_package():
    edges = graph()
    steps = {m: deps for m, deps in edges.items() if m.startswith("training.pipeline")}
    assert steps, "no pipeline modules found"
    for step, deps in steps.items():
        assert not {d for d in deps if d.startswith("training.") and d.split(".")[1] in COMMANDS}, step
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


def test_pipeline_steps_read_recipes_not_arguments():
    """Commands turn their arguments into recipe records once (train_arguments.TrainArguments.recipe); no pipeline
    module reads an arguments object or imports the command line."""
    for path in (ROOT / "training" / "pipeline").rglob("*.py"):
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


FLOW = ("data", "features", "head", "trust", "evaluate", "export")


def test_the_pipeline_is_laid_out_in_flow_order():
    """training/pipeline/ holds the recipe records and one sub-package per step of the flow, each saying in one
    line what it is for; the README's "How it works" names them in the same order."""
    pipeline = ROOT / "training" / "pipeline"
    assert sorted(p.name for p in pipeline.glob("*.py")) == ["__init__.py", "recipe.py"]
    assert sorted(p.name for p in pipeline.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(FLOW)
    for name in FLOW:
        doc = ast.get_docstring(ast.parse((pipeline / name / "__init__.py").read_text()))
        assert doc and "\n" not in doc.strip(), name
    readme = (ROOT / "README.md").read_text().split("## How it works")[1]
    positions = [readme.index(f"pipeline/{name}/") for name in FLOW]
    assert positions == sorted(positions), positions
