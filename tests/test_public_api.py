"""Everything ``sfvq`` exports resolves, and importing the package stays light."""

import subprocess
import sys

import sfvq


def test_every_export_resolves():
    for name in sfvq.__all__:
        assert getattr(sfvq, name) is not None, name


def test_import_does_not_pull_the_heavy_parts():
    heavy = "('PIL', 'matplotlib', 'rich', 'click')"
    code = f"import sys, sfvq; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
