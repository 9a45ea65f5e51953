"""The package's shape: no import circles (lazy imports inside functions count too), the data
layer below eval, engine and train, modules short enough to read in one sitting, and the run
directory's names in one place."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
from helpers import REPO

from ift import rundir
from ift.atomic import replacing, write_text


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """ift module -> the ift modules it imports anywhere in its body."""
    modules = {_module_name(p): p for p in (REPO / "ift").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                deps |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
        graph[name] = {d for d in deps if d in modules and d != name and not name.startswith(d + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_circles():
    graph = import_graph()
    assert "ift.train" in graph["ift.cli"] and "ift.checkpoint" in graph["ift.rundir"]  # lazy imports are seen
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    assert find_cycle({**graph, "ift.checkpoint": graph["ift.checkpoint"] | {"ift.rundir"}}) is not None


MAX_LINES = 350
LONGER = {"ift/config.py"}  # every field of the config tree with its docstring and check, by design


def test_no_module_over_350_lines_but_the_config():
    lengths = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in (REPO / "ift").rglob("*.py")}
    assert "ift/train.py" in lengths and LONGER <= set(lengths)
    over = {p: n for p, n in lengths.items() if n > MAX_LINES and p not in LONGER}
    assert not over, f"over {MAX_LINES} lines: {over}"


UPPER = ("ift.eval", "ift.engine", "ift.train")


def reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module `start` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for dep in graph[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def upward_imports(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    return {
        m: sorted(d for d in reaches(graph, m) if d.startswith(UPPER))
        for m in graph
        if m.startswith("ift.data") and any(d.startswith(UPPER) for d in reaches(graph, m))
    }


def test_no_data_module_imports_eval_engine_or_train():
    """Not directly, nor through another module: the data layer is below them."""
    graph = import_graph()
    assert "ift.data.prepare" in graph and "ift.data.heldout" in graph["ift.data.prepare"]
    assert upward_imports(graph) == {}
    bent = {**graph, "ift.model": graph["ift.model"] | {"ift.engine"}}  # the check sees a detour too
    assert "ift.data.prepare" in upward_imports(bent)


def test_run_directory_names(tmp_path):
    run = rundir.RunDir(str(tmp_path / "r"))
    names = {
        k: os.path.relpath(getattr(run, k), run.path)
        for k in ("config", "mixture", "metrics", "tokenizer", "checkpoints", "wandb_id", "requeues", "eval", "export")
    }
    # read by tools outside the code (README "Run directory"): these names never change
    assert names == {
        "config": "config.yaml",
        "mixture": "mixture.json",
        "metrics": "metrics.jsonl",
        "tokenizer": "tokenizer",
        "checkpoints": "checkpoints",
        "wandb_id": "wandb_run_id",
        "requeues": "requeues.jsonl",
        "eval": "eval",
        "export": "export",
    }
    ckpt = tmp_path / "r" / "checkpoints" / "step_00000004"
    assert rundir.of_checkpoint(str(ckpt)) == run
    assert run.read_wandb_id() is None and run.newest_checkpoint() is None
    os.makedirs(run.path)
    run.write_wandb_id("abc123")
    assert run.read_wandb_id() == "abc123"


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "sub" / "state.json"
    write_text(str(target), "old")
    with pytest.raises(RuntimeError), replacing(str(target)) as tmp, open(tmp, "w") as f:
        f.write("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and os.listdir(target.parent) == ["state.json"]  # no temporary left
    with replacing(str(tmp_path / "folder")) as tmp:  # a folder, replaced whole
        os.makedirs(tmp)
        (Path(tmp) / "a").write_text("1")
    assert os.listdir(tmp_path / "folder") == ["a"]
