"""``docker/gpu_check.py``, the prepared GPU check: what can be checked without a GPU."""

from __future__ import annotations


def test_gpu_check_compiles_and_its_imports_resolve():
    """docker/gpu_check.py cannot run here (no GPU); it must at least compile and import, and the shell
    script must run it (as a file: spawned preprocess workers re-import the main module by path)."""
    import ast
    import importlib
    from pathlib import Path

    docker = Path(__file__).resolve().parent.parent / "docker"
    assert "docker/gpu_check.py" in (docker / "gpu_check.sh").read_text()
    tree = ast.parse((docker / "gpu_check.py").read_text())
    assert any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            missing = [a.name for a in node.names if not hasattr(module, a.name)]
            assert not missing, f"gpu_check.py imports {missing} from {node.module}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                importlib.import_module(a.name)
