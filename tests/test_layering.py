"""The packages' dependencies point one way: nothing imports the gateway but the gateway
itself; ``core`` imports no other package of ours; none of them pulls in torch."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

LOWER = ["core", "engines", "kb", "rag", "chat", "mcp_server"]
OURS = {"core", "engines", "kb", "rag", "chat", "mcp_server", "gateway"}
HEAVY = {"gateway", "torch", "rwkv", "FlagEmbedding", "transformers"}


def _imports(package: str) -> set[tuple[str, str]]:
    """(file, top-level package) of every import in the package, lazy ones included."""
    found: set[tuple[str, str]] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            else:
                continue
            found.update((str(path.relative_to(ROOT)), n.split(".")[0]) for n in names)
    return found


@pytest.mark.parametrize("package", LOWER)
def test_no_package_imports_the_gateway(package: str) -> None:
    assert [f for f, top in _imports(package) if top == "gateway"] == []


def test_core_imports_no_other_package_of_ours() -> None:
    assert [(f, top) for f, top in _imports("core") if top in OURS - {"core"}] == []


@pytest.mark.parametrize(
    "module",
    [
        "core.errors",
        "engines.registry",
        "engines.config",
        "kb.service",
        "kb.store",
        "rag.service",
        "rag.catalog",
        "chat.core",
        "mcp_server.server",
    ],
)
def test_importing_a_package_in_a_fresh_interpreter_loads_no_gateway_nor_torch(
    module: str,
) -> None:
    code = (
        f"import json, sys, {module}; "
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {HEAVY!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []
