"""``sfvq avatars``: build the rendered-faces data set, train the small StyleGAN2 and the factor classifier,
export ``builtin:avatars-sg2``, and run the ground-truth benchmark of direction methods on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from sfvq.avatars.benchmark_config import GroundTruthConfig
from sfvq.cli.options import (
    FLOATS,
    LAYER_RANGE_OR_AUTO,
    device_option,
    network_option,
    outdir_option,
    quiet_option,
)
from sfvq.parsing import AUTO_LAYERS

_DEFAULT_DATA = "runs/avatars-data"


def _threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


@click.group()
def avatars() -> None:
    """A world with known factors: rendered faces, a small StyleGAN2 and a factor read-out."""


@avatars.command("build-dataset")
@outdir_option(default=_DEFAULT_DATA)
@click.option("--count", type=click.IntRange(min=1), default=20_000, show_default=True, help="Faces.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Data-set seed.")
@click.option(
    "--resolution",
    "resolutions",
    type=click.Choice(["8", "16", "32", "64", "128", "256"]),
    multiple=True,
    default=("64", "32"),
    show_default=True,
    help="Stored image size (repeat for several).",
)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True, help="Render processes.")
@click.option("--force", is_flag=True, help="Rebuild even if OUTDIR holds a data set.")
@quiet_option()
def build_dataset(
    outdir: Path, count: int, seed: int, resolutions: tuple[str, ...], workers: int, force: bool, quiet: bool
) -> None:
    """Render COUNT faces (python-avatars + cairosvg) with their factors into OUTDIR (cached)."""
    from sfvq.avatars.dataset import DatasetError, build_dataset
    from sfvq.io import read_json, write_options

    res = sorted({int(r) for r in resolutions}, reverse=True)
    try:
        path, built = build_dataset(
            outdir, count, seed, res, workers=workers, progress=not quiet, force=force
        )
    except DatasetError as e:
        raise click.UsageError(str(e)) from e
    write_options(
        outdir,
        "avatars build-dataset",
        {"outdir": str(outdir), "count": count, "seed": seed, "resolutions": res, "workers": workers},
    )
    meta = read_json(path / "dataset.json")
    if built:
        rate = count / max(meta["render_seconds"], 1e-9)
        click.echo(f"rendered {count} faces {res} in {meta['render_seconds']:.1f}s ({rate:.1f}/s) -> {path}")
    else:
        click.echo(f"{path} already holds this data set (seed {seed}, {count} faces, {res}); nothing to do")


@avatars.command("train")
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=_DEFAULT_DATA,
    show_default=True,
    help="Data set from build-dataset.",
)
@outdir_option("Run directory; a checkpoint there is resumed.", default="runs/avatars-train")
@click.option("--kimg", type=click.FloatRange(min=0, min_open=True), default=300.0, show_default=True)
@click.option("--resolution", type=click.Choice(["16", "32", "64"]), default="32", show_default=True)
@click.option("--batch", type=click.IntRange(min=2), default=32, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--checkpoint-kimg", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True
)
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None, help="Stop after this.")
@click.option("--z-dim", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--w-dim", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--mapping-layers", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--channel-base", type=click.IntRange(min=1), default=1024, show_default=True)
@click.option("--channel-max", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.0025, show_default=True)
@click.option("--r1-gamma", type=click.FloatRange(min=0), default=1.0, show_default=True, help="R1 weight.")
@click.option("--style-mixing", type=click.FloatRange(0, 1), default=0.9, show_default=True)
@click.option("--ema-kimg", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True)
@click.option("--noise/--no-noise", default=False, show_default=True, help="Per-pixel noise inputs in G.")
@device_option(None, "Default: cuda if available, else cpu.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Torch CPU threads.")
@quiet_option()
def train_cmd(
    data: Path,
    outdir: Path,
    kimg: float,
    resolution: str,
    batch: int,
    seed: int,
    checkpoint_kimg: float,
    minutes: float | None,
    z_dim: int,
    w_dim: int,
    mapping_layers: int,
    channel_base: int,
    channel_max: int,
    lr: float,
    r1_gamma: float,
    style_mixing: float,
    ema_kimg: float,
    noise: bool,
    device: str | None,
    threads: int | None,
    quiet: bool,
) -> None:
    """Train the small StyleGAN2 on the rendered faces (resumes OUTDIR/checkpoint.pt when present)."""
    from sfvq.avatars.dataset import DatasetError
    from sfvq.avatars.train import TrainConfig, TrainingError, train
    from sfvq.io import write_options

    _threads(threads)
    try:
        config = TrainConfig(
            resolution=int(resolution),
            z_dim=z_dim,
            w_dim=w_dim,
            mapping_layers=mapping_layers,
            channel_base=channel_base,
            channel_max=channel_max,
            batch=batch,
            g_lr=lr,
            d_lr=lr,
            r1_gamma=r1_gamma,
            style_mixing=style_mixing,
            ema_kimg=ema_kimg,
            use_noise=noise,
            seed=seed,
            kimg=kimg,
            checkpoint_kimg=checkpoint_kimg,
        )
    except TrainingError as e:
        raise click.UsageError(str(e)) from e
    dev = _device(device)
    options: dict[str, Any] = {"data": str(data), "outdir": str(outdir), "device": dev, "threads": threads}
    options.update(config.to_dict(), minutes=minutes)
    write_options(outdir, "avatars train", options)
    try:
        summary = train(data, outdir, config, device=dev, minutes=minutes, progress=not quiet, log=click.echo)
    except DatasetError as e:
        raise click.BadParameter(str(e), param_hint="'--data'") from e
    except TrainingError as e:
        raise click.UsageError(str(e)) from e
    state = "stopped early (--minutes)" if summary["stopped_early"] else "done"
    click.echo(
        f"{state}: {summary['nimg']} / {summary['target_nimg']} images, {summary['seconds']:.0f}s this call, "
        f"{summary['images_per_minute']:.0f} images/min on {dev}; samples in {outdir / 'samples'}"
    )


@avatars.command("train-classifier")
@click.option(
    "--data", type=click.Path(file_okay=False, path_type=Path), default=_DEFAULT_DATA, show_default=True
)
@outdir_option(
    "Where avatars-classifier.safetensors + .json go (sfvq/avatars/weights to ship it).",
    default="runs/avatars-classifier",
)
@click.option("--resolution", type=click.Choice(["16", "32", "64"]), default="32", show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Stop after this many steps.")
@click.option("--batch", type=click.IntRange(min=2), default=128, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-3, show_default=True)
@click.option("--width", type=click.IntRange(min=4), default=32, show_default=True)
@click.option("--holdout", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@device_option(None, "Default: cuda if available, else cpu.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Torch CPU threads.")
@quiet_option()
def train_classifier_cmd(
    data: Path,
    outdir: Path,
    resolution: str,
    epochs: int,
    max_steps: int | None,
    batch: int,
    lr: float,
    width: int,
    holdout: float,
    seed: int,
    device: str | None,
    threads: int | None,
    quiet: bool,
) -> None:
    """Train the factor classifier on renders; print and save its held-out accuracy per factor."""
    from sfvq.avatars import CLASSIFIER_FILE
    from sfvq.avatars.classifier import ClassifierError, save_classifier, train_classifier
    from sfvq.avatars.dataset import DatasetError, load_dataset
    from sfvq.io import write_options

    _threads(threads)
    try:
        ds = load_dataset(data, int(resolution))
    except DatasetError as e:
        raise click.BadParameter(str(e), param_hint="'--data' / '--resolution'") from e
    dev = _device(device)
    options = {
        "data": str(data),
        "outdir": str(outdir),
        "resolution": int(resolution),
        "epochs": epochs,
        "max_steps": max_steps,
        "batch": batch,
        "lr": lr,
        "width": width,
        "holdout": holdout,
        "seed": seed,
        "device": dev,
    }
    write_options(outdir, "avatars train-classifier", options)
    try:
        model, report = train_classifier(
            ds.images,
            ds.codes,
            ds.vocab,
            epochs=epochs,
            batch=batch,
            lr=lr,
            seed=seed,
            holdout=holdout,
            width=width,
            device=dev,
            max_steps=max_steps,
            progress=not quiet,
        )
    except ClassifierError as e:
        raise click.UsageError(str(e)) from e
    data_info = {"path": str(Path(data).resolve()), "seed": ds.meta["seed"], "count": ds.meta["count"]}
    path = save_classifier(model, outdir / CLASSIFIER_FILE, {"report": report, "data": data_info})
    click.echo(f"{'factor':<16} {'values':>6} {'held-out acc':>12} {'majority':>9} {'confidence':>10}")
    for k, v in report["heldout"].items():
        click.echo(
            f"{k:<16} {len(ds.vocab[k]):>6} {v['accuracy']:>12.3f} {v['majority']:>9.3f} "
            f"{v['confidence']:>10.3f}"
        )
    click.echo(
        f"mean held-out accuracy {report['mean_heldout_accuracy']:.3f} on {report['heldout_images']} faces "
        f"({report['steps']} steps, {report['seconds']:.0f}s) -> {path}"
    )


def _copy_classifier(path: Path, outdir: Path) -> None:
    """Copy a classifier's weights and JSON into ``outdir`` under the shipped names (atomically)."""
    import shutil

    from sfvq.atomic import atomic_path
    from sfvq.avatars import CLASSIFIER_FILE

    target = outdir / CLASSIFIER_FILE
    for src, dst in ((path, target), (path.with_suffix(".json"), target.with_suffix(".json"))):
        if src.resolve() != dst.resolve():
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)


@avatars.command("export")
@click.option(
    "--run",
    "run_dir",
    type=click.Path(exists=True, path_type=Path),
    default="runs/avatars-train",
    show_default=True,
    help="Training run directory (or its checkpoint.pt).",
)
@outdir_option("Default: sfvq/avatars/weights (where builtin:avatars-sg2 is loaded from).", required=False)
@click.option(
    "--classifier",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A factor classifier (.safetensors): record how confidently factors read on generated faces.",
)
@click.option("--samples", type=click.IntRange(min=1), default=1000, show_default=True)
def export_cmd(run_dir: Path, outdir: Path | None, classifier: Path | None, samples: int) -> None:
    """Export G_ema of a training run as avatars-sg2.safetensors + .json (loads as builtin:avatars-sg2).

    With --classifier, the classifier's two files are copied beside it (shipped with the generator)."""
    from sfvq.avatars import WEIGHTS_DIR
    from sfvq.avatars.classifier import ClassifierError
    from sfvq.avatars.export import export_generator
    from sfvq.avatars.train import TrainingError
    from sfvq.io import write_options

    out = outdir or WEIGHTS_DIR
    try:
        path, meta = export_generator(run_dir, out, classifier=classifier, quality_samples=samples)
    except TrainingError as e:
        raise click.BadParameter(str(e), param_hint="'--run'") from e
    except ClassifierError as e:
        raise click.BadParameter(str(e), param_hint="'--classifier'") from e
    if classifier is not None:
        _copy_classifier(classifier, Path(out))
    write_options(
        out,
        "avatars export",
        {
            "run": str(run_dir),
            "outdir": str(out),
            "classifier": classifier and str(classifier),
            "samples": samples,
        },
    )
    click.echo(
        f"exported G_ema after {meta['training']['kimg']:.1f} kimg "
        f"({meta['bytes'] / 2**20:.2f} MiB) -> {path}"
    )
    quality = meta.get("quality", {}).get("factors", {})
    if quality:
        head = ("factor", "conf. generated", "conf. real", "acc. real", "share TV")
        click.echo(f"{head[0]:<16} {head[1]:>15} {head[2]:>10} {head[3]:>9} {head[4]:>8}")

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    for k, v in quality.items():
        click.echo(
            f"{k:<16} {num(v['generated_confidence']):>15} {num(v['real_confidence']):>10} "
            f"{num(v['real_accuracy']):>9} {num(v['share_tv_distance']):>8}"
        )


_GT = GroundTruthConfig()  # the library's benchmark settings are the command's defaults


@avatars.command("benchmark")
@network_option(
    help="A generator with a W space trained on the avatars (built-in name or exported .safetensors).",
    default="builtin:avatars-sg2",
)
@click.option(
    "--classifier",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Factor classifier (.safetensors). Default: the one shipped beside builtin:avatars-sg2.",
)
@outdir_option(default="runs/avatars-benchmark")
@click.option(
    "--bits",
    default=",".join(map(str, _GT.bits)),
    show_default=True,
    help="SFVQ bitrates whose segments are measured.",
)
@click.option("--methods", default=",".join(_GT.methods), show_default=True, help="Directions beside SFVQ.")
@click.option(
    "--k", type=click.IntRange(min=1), default=_GT.k, show_default=True, help="Directions per method."
)
@click.option(
    "--n", type=click.IntRange(min=2), default=_GT.n, show_default=True, help="Seeds edited per direction."
)
@click.option(
    "--steps",
    type=FLOATS,
    default=",".join(f"{s:g}" for s in _GT.steps),
    show_default=True,
    help="Edit sizes (std units, both signs).",
)
@click.option(
    "--fit-n", type=click.IntRange(min=2), default=_GT.fit_n, show_default=True, help="W samples to fit."
)
@click.option(
    "--mi-n", type=click.IntRange(min=2), default=_GT.mi_n, show_default=True, help="Faces for the curve MI."
)
@click.option(
    "--purity",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="Purity a pure direction needs. Default: above the purest random direction.",
)
@click.option(
    "--random-k",
    type=click.IntRange(min=1),
    default=_GT.random_k,
    show_default=True,
    help="Random directions.",
)
@click.option("--floor", type=click.FloatRange(0, 1), default=_GT.floor, show_default=True)
@click.option("--latentclr-steps", type=click.IntRange(min=1), default=_GT.latentclr_steps, show_default=True)
@click.option(
    "--match-change",
    type=click.FloatRange(min=0, min_open=True),
    default=_GT.match_change,
    show_default=True,
    help="Per-face change at which purities are also compared (matched effect size).",
)
@click.option(
    "--layers",
    type=LAYER_RANGE_OR_AUTO,
    default=None,
    help="W+ layers every edit touches, e.g. 4-7 (default: all). auto: also measure every W set with each "
    "direction on its own range, chosen as `sfvq annotate` does (rows <set>@auto beside the others).",
)
@click.option(
    "--auto-sigma",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="With --layers auto: edit size (stds) the ranges are chosen at. Default: sfvq annotate's per "
    "bitrate (the finest bitrate's for the other methods).",
)
@click.option(
    "--auto-seeds",
    type=click.IntRange(min=1),
    default=_GT.auto_seeds,
    show_default=True,
    help="With --layers auto: seeds the ranges are chosen on (the ones after the measured seeds).",
)
@click.option(
    "--auto-criterion",
    type=click.Choice(["pixels", "purity"]),
    default=_GT.auto_criterion,
    show_default=True,
    help="With --layers auto: choose each range by the image change it keeps (pixels, as sfvq annotate) "
    "or by how purely it moves one factor group on the auto seeds (purity; needs random in --methods).",
)
@click.option(
    "--style-spaces",
    default="",
    help="Also fit and measure SFVQ curves in these StyleSpace variants, e.g. s,s:coarse,s:middle,s:4-7 "
    "(named sfvq-s:coarse-5bit; their edits touch their group's style codes, --layers does not apply).",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@device_option(None, "Default: cuda if available, else cpu.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Torch CPU threads.")
@quiet_option("No progress bars.")
def benchmark_cmd(
    network: str,
    classifier: Path | None,
    outdir: Path,
    bits: str,
    methods: str,
    k: int,
    n: int,
    steps: list[float],
    fit_n: int,
    mi_n: int,
    purity: float | None,
    random_k: int,
    floor: float,
    latentclr_steps: int,
    match_change: float,
    layers: tuple[int, int] | str | None,
    auto_sigma: float | None,
    auto_seeds: int,
    auto_criterion: str,
    style_spaces: str,
    seed: int,
    device: str | None,
    threads: int | None,
    quiet: bool,
) -> None:
    """Ground-truth benchmark: each method's directions, factor by factor (purity, coverage), and how well
    ranges of the SFVQ curve separate factor values. Prints the tables; writes benchmark.json and .md."""
    from sfvq.avatars.benchmark import markdown_report, run_ground_truth
    from sfvq.avatars.classifier import ClassifierError, load_avatars_classifier, load_classifier
    from sfvq.generators.base import GeneratorError
    from sfvq.generators.registry import load_generator
    from sfvq.io import atomic_open, write_json, write_options

    _threads(threads)
    try:
        bit_list = tuple(int(b) for b in bits.split(","))
    except ValueError:
        raise click.BadParameter(
            f"{bits!r} is not a comma-separated list of integers", param_hint="'--bits'"
        ) from None
    method_list = tuple(m.strip() for m in methods.split(",") if m.strip())
    config = GroundTruthConfig(
        n=n, steps=tuple(steps), k=k, bits=bit_list, methods=method_list, fit_n=fit_n, purity=purity,
        random_k=random_k, floor=floor, layers=None if layers == AUTO_LAYERS else layers,
        auto_layers=layers == AUTO_LAYERS, auto_sigma=auto_sigma, auto_seeds=auto_seeds,
        auto_criterion=auto_criterion,
        match_change=match_change, mi_n=mi_n,
        latentclr_steps=latentclr_steps, seed=seed,
        style_spaces=tuple(x.strip() for x in style_spaces.split(",") if x.strip()),
    )  # fmt: skip
    try:
        config.check()
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    dev = _device(device)
    try:
        G = load_generator(network, device=dev)
    except GeneratorError as e:
        raise click.BadParameter(str(e), param_hint="'--network'") from e
    try:
        clf = load_classifier(classifier, device=dev) if classifier else load_avatars_classifier(device=dev)
    except ClassifierError as e:
        raise click.BadParameter(str(e), param_hint="'--classifier'") from e
    settings = {"network": network, "classifier": classifier and str(classifier), "device": dev}
    write_options(outdir, "avatars benchmark", {**settings, **config.__dict__})
    log = (lambda s: None) if quiet else (lambda s: click.echo(s, err=True))
    try:
        result = run_ground_truth(G, clf, config, log=log, progress=not quiet)
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    table = markdown_report(result)
    write_json(outdir / "benchmark.json", result.to_dict())
    with atomic_open(outdir / "benchmark.md", "w") as f:
        f.write(table)
    click.echo(table)
    click.echo(f"{result.seconds:.0f} s -> {outdir / 'benchmark.json'}")
