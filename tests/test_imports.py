"""The package imports lazily: the pure-PyTorch model code does not pull in Lightning."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cmpt_lightning

INIT = Path(cmpt_lightning.__file__)

#: Run after the statement under test: which Lightning modules it loaded, then whether the
#: probe sees Lightning once a name that needs it is used (it must, or the probe proves nothing).
PROBE = """
import sys
print(sorted(m for m in ("lightning", "lightning.pytorch") if m in sys.modules))
from cmpt_lightning import CMPTModule
print("lightning.pytorch" in sys.modules)
"""


STATEMENTS = [
    "import cmpt_lightning.models",
    "from cmpt_lightning.models import CMPTModel",
    "import cmpt_lightning; cmpt_lightning.CMPTModel",
]


@pytest.fixture(scope="module")
def probed():
    """Each statement's fresh interpreter, all started at once (each mostly waits on imports):
    statement -> (return code, stdout, stderr)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    running = {
        statement: subprocess.Popen(
            [sys.executable, "-c", f"{statement}\n{PROBE}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for statement in STATEMENTS
    }
    results = {}
    try:
        for statement, process in running.items():
            out, err = process.communicate(timeout=300)
            results[statement] = (process.returncode, out, err)
    finally:
        for process in running.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


@pytest.mark.parametrize("statement", STATEMENTS)
def test_model_code_does_not_import_lightning(statement, probed):
    returncode, stdout, stderr = probed[statement]
    assert returncode == 0, stderr
    assert stdout.split("\n")[:2] == ["[]", "True"], stdout


def test_public_names_resolve_to_their_modules():
    import importlib

    names = cmpt_lightning.__all__
    assert names == sorted(names)
    assert set(names) == set(cmpt_lightning._EXPORTS)
    for name in names:
        module, attribute = cmpt_lightning._EXPORTS[name]
        defined = getattr(importlib.import_module(module, "cmpt_lightning"), attribute)
        assert getattr(cmpt_lightning, name) is defined, name
    assert cmpt_lightning.SweepConfig is cmpt_lightning.TestGrid  # the deprecated alias
    assert set(names) <= set(dir(cmpt_lightning))
    with pytest.raises(AttributeError, match="has no attribute 'Nothing'"):
        cmpt_lightning.Nothing  # noqa: B018


def test_star_and_from_imports_work():
    namespace = {}
    exec("from cmpt_lightning import *", namespace)
    assert set(cmpt_lightning.__all__) <= set(namespace)
    from cmpt_lightning import CMPTModule, Food101DataModule
    from cmpt_lightning.datamodules.food101 import Food101DataModule as Defined
    from cmpt_lightning.module import CMPTModule as DefinedModule

    assert Food101DataModule is Defined and CMPTModule is DefinedModule


def test_type_checking_imports_match_the_lazy_table():
    """What type checkers see (``if TYPE_CHECKING:``) is what ``__getattr__`` returns."""
    tree = ast.parse(INIT.read_text())
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
    )
    seen = {
        alias.asname or alias.name: (f".{node.module}", alias.name)
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert seen == cmpt_lightning._EXPORTS
