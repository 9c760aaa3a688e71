"""The library is plain Python: importing any of it loads no Dagster."""

import subprocess
import sys

IMPORT_EVERY_LIB_MODULE = """
import importlib, pkgutil, sys
import feedback_loop.lib as lib
for module in pkgutil.walk_packages(lib.__path__, "feedback_loop.lib."):
    importlib.import_module(module.name)
print(sorted(name for name in sys.modules if name.split(".")[0] == "dagster"))
"""


def test_no_lib_module_imports_dagster():
    out = subprocess.run([sys.executable, "-c", IMPORT_EVERY_LIB_MODULE], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
