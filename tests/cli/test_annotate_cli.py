"""``sfvq annotate`` end to end, and ``--layers auto`` in ``sfvq edit``, ``augment`` and ``compare`` (tiny
StyleGAN2 in W with 8 style layers; the built-in DCGAN's feature space, which has none)."""

import json
import textwrap

import numpy as np
import pytest
from sfvq_runs import dcgan_test_run, invoke, sg2_test_run

SCORER = """
class Brightness:
    names = ("brightness",)

    def score(self, images):
        return {"brightness": images.mean(dim=(1, 2, 3))}

def make():
    return Brightness()
"""


@pytest.fixture(scope="module")
def annotated(shared_dir, tmp_path_factory):
    run, model, space, X = sg2_test_run(shared_dir, tmp_path_factory)
    scorer = run.parent / "bright.py"
    scorer.write_text(textwrap.dedent(SCORER))
    res = invoke(
        "annotate", "--run", run, "--bits", 4, "--seeds", "0-1", "--scorer", f"{scorer}:make", "--quiet"
    )
    assert res.exit_code == 0, res.output
    return run, res.output


def test_annotate_writes_the_file_the_heat_maps_and_a_table(annotated):
    run, output = annotated
    assert "4-bit segments" in output and "brightness" in output
    data = json.loads((run / "annotations.json").read_text())
    assert data["scorer"].endswith("bright.py:make") and data["seeds"] == [0, 1]
    rows = data["bits"]["4"]
    assert len(rows) == 15 and all((run / r["heat"]).is_file() for r in rows)
    assert all(r["summary"].startswith(("brightness", "no clear change")) for r in rows)
    assert all(r["layers"][0] < r["layers"][1] <= 8 for r in rows)


def test_edit_layers_auto_uses_the_annotated_range(annotated, tmp_path):
    run, _ = annotated
    row = json.loads((run / "annotations.json").read_text())["bits"]["4"][3]
    a, b = row["layers"]
    res = invoke("edit", "--model", run, "--direction", "4:3", "--layers", "auto", "--sigma", "-1,0,1",
                 "--seeds", "0", "--outdir", tmp_path / "e")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "from annotations.json" in res.output
    edited = np.load(tmp_path / "e" / "latents.npy")  # (sigma, seed, layer, dim)
    moved = np.abs(edited[2] - edited[1]).sum(axis=(0, 2)) > 0  # (layer,)
    assert moved.tolist() == [a <= i < b for i in range(8)]
    opts = json.loads((tmp_path / "e" / "options.json").read_text())["options"]
    assert [opts["layer_start"], opts["layer_stop"]] == [a, b]
    # A direction the file does not hold: computed on the spot.
    res = invoke("edit", "--model", run, "--direction", "4:3-5", "--layers", "auto", "--sigma", "0,1",
                 "--seeds", "0", "--outdir", tmp_path / "e2")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "computed now" in res.output


def test_augment_layers_auto_moves_only_the_annotated_layers(annotated, tmp_path):
    run, _ = annotated
    res = invoke("augment", "--model", run, "--segment", "4:3", "--n", 4, "--layers", "auto",
                 "--outdir", tmp_path / "a")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "--layers auto" in res.output
    opts = json.loads((tmp_path / "a" / "options.json").read_text())["options"]
    row = json.loads((run / "annotations.json").read_text())["bits"]["4"][3]
    assert opts["layers"] in (row["layers"], None)  # None: the annotated range is every layer


def test_compare_layers_auto(annotated, tmp_path):
    run, _ = annotated
    res = invoke("compare", "--model", run, "--methods", "sfvq,ganspace", "--k", 1, "--seeds", "0",
                 "--sigma", "-1,0,1", "--n-samples", 300, "--layers", "auto",
                 "--outdir", tmp_path / "c")  # fmt: skip
    assert res.exit_code == 0, res.output
    auto = json.loads((tmp_path / "c" / "options.json").read_text())["options"]["auto_layers"]
    assert len(auto) == 2 and {k.split("/")[0] for k in auto} == {"sfvq", "ganspace"}
    assert all(0 <= r[0] < r[1] <= 8 for r in auto.values())
    assert "--layers auto" in (tmp_path / "c" / "index.html").read_text()


@pytest.mark.parametrize(
    "args, option, message",
    [
        (["--bits", 9], "--bits", "no 9-bit curve"),
        (["--scorer", "nothing"], "--scorer", "entry point"),
        (["--scorer", "nowhere.py:make"], "--scorer", "no such file"),
        (["--sigma", "0"], "--sigma", "not in the range"),
    ],
)
def test_annotate_errors_name_the_option(annotated, args, option, message):
    run, _ = annotated
    res = invoke("annotate", "--run", run, *args)
    assert res.exit_code == 2, res.output
    assert option in res.output and message in res.output


def test_layers_auto_is_refused_where_it_means_nothing(annotated, tmp_path):
    run, _ = annotated
    res = invoke(
        "edit", "--model", run, "--direction", "4:3", "--layers", "automatic", "--outdir", tmp_path / "e"
    )
    assert res.exit_code == 2 and "or auto" in res.output
    res = invoke("directions", "--model", run, "--save", "x", "--direction", "4:1", "--layers", "auto")
    assert res.exit_code == 2 and "'--layers'" in res.output


def test_a_space_without_layers_has_no_layer_ranges(tmp_path_factory, tmp_path):
    run, model, space, X = dcgan_test_run(tmp_path_factory)
    res = invoke("annotate", "--run", run, "--bits", 2, "--seeds", "0", "--scorer", "none", "--quiet")
    assert res.exit_code == 0, res.output
    assert "no scorer (--scorer none)" in res.output
    rows = json.loads((run / "annotations.json").read_text())["bits"]["2"]
    assert len(rows) == 3 and all(r["layers"] is None and r["layer_share"] is None for r in rows)
    res = invoke("edit", "--model", run, "--direction", "2:1", "--layers", "auto", "--sigma", "0,1",
                 "--seeds", "0", "--outdir", tmp_path / "e")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "no style layers" in res.output


def test_annotate_purity_criterion_records_it_and_its_ranges(annotated, tmp_path):
    """`--criterion purity` chooses ranges by the scorer's shifts: the file says which criterion made its
    ranges (so entries made by the other one are not mixed in) and holds each chosen range's purity."""
    run, _ = annotated
    pixels = json.loads((run / "annotations.json").read_text())
    assert pixels["range_criterion"] == "pixels" and "min_shift" not in pixels["criterion"]
    out = tmp_path / "purity"
    out.mkdir()
    for f in run.iterdir():  # a copy of the run, so the module's other tests keep the pixel file
        if f.is_file() and f.name != "annotations.json":
            (out / f.name).write_bytes(f.read_bytes())
    scorer = run.parent / "bright.py"
    res = invoke("annotate", "--run", out, "--bits", 3, "--seeds", "0-1", "--scorer", f"{scorer}:make",
                 "--criterion", "purity", "--quiet")  # fmt: skip
    assert res.exit_code == 0, res.output
    data = json.loads((out / "annotations.json").read_text())
    assert data["range_criterion"] == "purity" and data["criterion"]["min_shift"] > 0
    rows = data["bits"]["3"]
    assert len(rows) == 7 and all(0 <= r["layers"][0] < r["layers"][1] <= 8 for r in rows)
    assert all(r["layer_purity"] == 1.0 for r in rows)  # one score, one group: every range is pure
    res = invoke("annotate", "--run", out, "--bits", 3, "--scorer", "none", "--criterion", "purity")
    assert res.exit_code == 2 and "purity criterion needs a scorer" in res.output
