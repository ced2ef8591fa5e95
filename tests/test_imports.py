"""Every module of the package imports on its own (no circular or missing imports)."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import pluralign

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(pluralign.__path__, prefix="pluralign.")
)


def test_the_package_has_its_core_modules():
    assert {"pluralign.registry", "pluralign.config.core", "pluralign.models.loading",
            "pluralign.cli.main"} <= set(MODULES)


@pytest.mark.parametrize("module", [m for m in MODULES if m != "pluralign.__main__"])
def test_module_imports(module):
    importlib.import_module(module)


def test_import_pluralign_is_light():
    # `pluralign --help` must answer fast: the top-level import must not pull torch.
    code = "import sys, pluralign, pluralign.cli.main; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_lazy_load_model_attribute():
    from pluralign.models import load_model

    assert pluralign.load_model is load_model
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = pluralign.nope
