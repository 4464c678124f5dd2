"""The server never imports torch to run a workflow that only averages arrays.

The server imports a package's ``__init__`` (for ``PACKAGE``) and its workflow module; both
must leave torch unimported (issue 9, item 10: torch alone is ~570 MB of server RSS). Checked
in a fresh interpreter, since this test process imports torch for other tests.
"""

from __future__ import annotations

import json
import subprocess
import sys

from fedsilo.federation import package_names

_PROBE = """
import importlib, json, sys
from fedsilo.federation import get_package
from fedsilo.strategies import get_strategy
import fedsilo.workflows
loaded = {}
for name in sys.argv[1:]:
    package = get_package(name)
    importlib.import_module(package.workflow.__module__)
    loaded[name] = package.workflow.__module__
# glm's sgd solver is imported by its workflow on first use; it must be torch-free too.
importlib.import_module("fedsilo.packages.glm.sgd")
get_strategy("FedAdam", {})
print(json.dumps({"loaded": loaded, "torch": "torch" in sys.modules}))
"""


def test_no_package_or_workflow_imports_torch_on_the_server() -> None:
    names = package_names()
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *names], capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout)
    assert sorted(result["loaded"]) == names
    assert result["torch"] is False


def test_lazy_re_exports_still_resolve() -> None:
    from fedsilo.packages.ffnet import FFNetExecutor, FFNetModel, build_module
    from fedsilo.packages.glm import GLMExecutor

    assert FFNetExecutor.__name__ == "FFNetExecutor"
    assert FFNetModel.__module__ == "fedsilo.packages.ffnet.export"
    assert callable(build_module)
    assert GLMExecutor.__module__ == "fedsilo.packages.glm.client"
