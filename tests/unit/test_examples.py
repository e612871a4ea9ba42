"""Each example in examples/ runs to completion unattended."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("research_agent", "(approved)"),
        ("approval_agent", "approved by ana"),
        ("fanout_agent", "evals: notes on AI agents"),
    ],
)
async def test_example_runs(name: str, expected: str) -> None:
    result = await load(name).main()
    assert expected in result
