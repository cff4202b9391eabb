"""The README's Python examples run as written, so the docs stay honest."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "the README has no python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block.replace("/tmp/", f"{tmp_path}/"), str(README), "exec"), {})


def test_readme_quick_start_matches_the_makefile_and_ci():
    text = README.read_text(encoding="utf-8")
    quick = text.split("## Quick start", 1)[1].split("##", 1)[0]
    commands = re.findall(r"^(make \w+)", quick, flags=re.M)
    assert commands == ["make demo", "make test"]
    makefile = (README.parent / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo:", makefile, flags=re.M) and re.search(r"^test:", makefile, flags=re.M)
    assert "make test" in (README.parent / ".ci" / "run").read_text(encoding="utf-8")


def test_readme_main_job_is_what_make_demo_runs():
    text = README.read_text(encoding="utf-8")
    main_job = re.search(r"<!-- main-job -->.*?```bash\n(.*?)\n```", text, flags=re.S).group(1).strip()
    makefile = (README.parent / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert f"$(BIN)/{main_job}" in recipe


def test_the_main_job_benchmark_times_the_readme_command():
    from benchmarks.main_job import command

    text = README.read_text(encoding="utf-8")
    main_job = re.search(r"<!-- main-job -->.*?```bash\n(.*?)\n```", text, flags=re.S).group(1).strip()
    assert main_job == "sfvq " + " ".join(command()) + " --outdir runs/demo"
