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


def _modules_after(code: str) -> str:
    """Which heavy modules a fresh interpreter holds after running ``code``."""
    probe = f"{code}; import sys; print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return run.stdout.strip()


def test_the_version_and_the_package_do_not_load_torch():
    assert _modules_after("import sfvq; sfvq.__version__; from sfvq._version import __version__") == "[]"
    # The estimator is imported on first use, and then it is the real class.
    assert "torch" in _modules_after("from sfvq import SFVQ; assert SFVQ.__module__ == 'sfvq.quantizer'")


def test_the_command_line_starts_without_torch():
    # `sfvq --help` and `sfvq --version` must not pay for torch: every command loads it on first use.
    assert "torch" not in _modules_after("import sfvq.cli")
