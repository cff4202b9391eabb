"""Your own images, measured (issue 15): projection, placement and edits of images no generator drew.

    python -m benchmarks.real_images              # both parts (about 40 minutes on 2 busy CPU cores)
    python -m benchmarks.real_images --quick      # 32 avatars, 150 steps: a smoke run
    python -m benchmarks.real_images --framing    # measure the faces-dcgan framing of sfvq.align again

Part 1, ``builtin:avatars-sg2``: ``--n`` (200) avatars rendered afresh from data seed ``--data-seed`` (7;
the generator and the classifier were trained on seed 0) are projected into W (300 steps) and into W+ (600
steps). Reported: PSNR and SSIM of the projections; per factor, how often the factor classifier reads the
same value on the photo and on its projection (and, as a check, how often it reads the truth on the
photos); where the photos lie on a 6-bit curve fitted to 20,000 W samples (seed 0, as the ground-truth
benchmark fits it): their distance to the curve as a percentile of the sampled latents' distances, next to
that of generated faces; and whether an edit along each of the 15 segments of the 4-bit curve (+-1 std)
shifts the factors of the photos' projections as it shifts those of generated faces: per segment, the
cosine between the two signed shifts of the mean predicted distributions (all factor values), and whether
both move the same factor most. The same comparison between two disjoint sets of generated faces is the
reference.

Part 2, ``builtin:faces-dcgan``: scikit-image's ``data.astronaut()`` (a NASA portrait, public domain),
aligned with dlib's landmarks in the generator's framing, projected into the feature space of a 5-bit run
(10,000 samples, seed 0) and into Z; its place on the curve, edits along the segments around it, and dlib's
identity distance between the photo and its projection (0.6 is dlib's same-person threshold), next to the
distance from the photo to the nearest corner and to random faces of the generator.

``--only settings`` (run only when asked for): the evidence for the projection defaults. The first
``--sweep-n`` (50) of those avatars projected into W and the astronaut into the feature space under the
base settings and with one setting changed at a time (no edge term, a learning rate of 0.15, latent noise
of 0.05): PSNR, SSIM, the classifier's agreement, the astronaut's identity distance.

Prints markdown tables, writes ``results.json`` into ``--outdir`` and the pictures into ``--pictures``
(docs/real-images/).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

AVATARS = "builtin:avatars-sg2"
DCGAN = "builtin:faces-dcgan"
KEY_FACTORS = ("background", "skin", "glasses", "hat")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _stats(x: np.ndarray) -> dict[str, float]:
    x = np.asarray(x, dtype=np.float64)
    return {
        "mean": float(x.mean()),
        "median": float(np.median(x)),
        "p10": float(np.percentile(x, 10)),
        "p90": float(np.percentile(x, 90)),
    }


def _project_all(
    projector: Any, targets: Any, chunk: int, init: Any = None, label: str = ""
) -> dict[str, Any]:
    """Project targets (N, C, H, W) chunk by chunk -> full (N, L, D), vectors, images, psnr, ssim, seconds."""
    import torch

    fulls, vecs, imgs, psnrs, ssims = [], [], [], [], []
    started = time.perf_counter()
    for start in range(0, len(targets), chunk):
        part = targets[start : start + chunk]
        r = projector.project(part, init=None if init is None else init[start : start + chunk])
        fulls.append(r.full)
        vecs.append(r.vectors)
        imgs.append(r.images)
        psnrs.append(r.psnr())
        ssims.append(r.ssim())
        done = min(start + chunk, len(targets))
        print(
            f"  {label}: {done}/{len(targets)} projected ({time.perf_counter() - started:.0f} s)", flush=True
        )
    return {
        "full": torch.cat(fulls),
        "vectors": torch.cat(vecs),
        "images": torch.cat(imgs),
        "psnr": np.concatenate(psnrs),
        "ssim": np.concatenate(ssims),
        "seconds": time.perf_counter() - started,
    }


def _shift(space: Any, classifier: Any, full: Any, d: Any, step: float) -> np.ndarray:
    """Signed shift of the mean predicted distribution, edited by +step minus by -step -> flat (sum K,)."""
    import torch

    with torch.no_grad():
        images = space.render_edits(full, [d.vector], [step * d.std, -step * d.std], d.layers)[
            :, 0
        ]  # (S, 2, ...)
        p = classifier.predict_proba(images.transpose(0, 1).reshape(-1, *images.shape[2:]))  # (2S rows)
    S = full.shape[0]
    parts = [(q.reshape(2, S, -1).mean(1)[0] - q.reshape(2, S, -1).mean(1)[1]).numpy() for q in p.values()]
    return np.concatenate(parts)  # in the classifier's factor order


def _per_factor(shift: np.ndarray, vocab: dict[str, tuple[str, ...]]) -> np.ndarray:
    """Flat signed shifts -> total-variation shift per factor (F,)."""
    out, i = [], 0
    for values in vocab.values():
        out.append(0.5 * np.abs(shift[i : i + len(values)]).sum())
        i += len(values)
    return np.array(out)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def _compare_shifts(a: np.ndarray, b: np.ndarray, vocab: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    fa, fb = _per_factor(a, vocab), _per_factor(b, vocab)
    names = list(vocab)
    return {
        "cosine": _cosine(a, b),
        "top_a": names[int(fa.argmax())],
        "top_b": names[int(fb.argmax())],
        "same_top": bool(fa.argmax() == fb.argmax()),
        "size_a": float(fa.max()),
        "size_b": float(fb.max()),
    }


# ---------------------------------------------------------------------------------------------- avatars
def avatars_part(args: argparse.Namespace, pictures: Path) -> dict[str, Any]:
    import torch

    from sfvq import SFVQ
    from sfvq.avatars.classifier import load_avatars_classifier, uint8_to_input
    from sfvq.avatars.dataset import render_faces
    from sfvq.directions import segment_directions
    from sfvq.generators.base import to_uint8
    from sfvq.generators.registry import load_generator
    from sfvq.images import labelled_grid
    from sfvq.io import save_png
    from sfvq.locate import percentile_of, reference_distances
    from sfvq.project import ProjectionSettings, Projector
    from sfvq.spaces import LatentSpace

    print(f"## builtin:avatars-sg2: {args.n} avatars of data seed {args.data_seed}", flush=True)
    t0 = time.perf_counter()
    faces, factors = render_faces(args.data_seed, range(args.n), (32,), workers=args.workers)
    photos = faces[32]  # (n, 32, 32, 3) uint8
    targets = uint8_to_input(photos)  # (n, 3, 32, 32) in [-1, 1]
    print(f"  rendered in {time.perf_counter() - t0:.0f} s", flush=True)
    G = load_generator(AVATARS)
    space = LatentSpace(G, "w")
    clf = load_avatars_classifier()
    vocab = clf.vocab
    X = np.ascontiguousarray(space.sample(args.fit_n, seed=0, progress=False), dtype=np.float32)
    t0 = time.perf_counter()
    model = SFVQ(6, random_state=0, verbose=False).fit(X)
    print(f"  6-bit curve fitted on {args.fit_n} W samples in {time.perf_counter() - t0:.0f} s", flush=True)

    settings = ProjectionSettings(
        steps=args.steps, lr=args.lr, latent_noise=args.latent_noise, edge_weight=args.edge_weight
    )
    w = _project_all(Projector(space, settings=settings, reference=X), targets, args.chunk, label="W")
    plus_settings = ProjectionSettings(
        steps=args.plus_steps, lr=args.lr, latent_noise=args.latent_noise, edge_weight=args.edge_weight
    )
    plus_proj = Projector(space, plus=True, settings=plus_settings, reference=X)
    wp = _project_all(plus_proj, targets, args.chunk, label="W+")

    # the classifier on photos and projections
    p_photo = clf.predict_proba(targets)
    truth = {k: np.array([vocab[k].index(f[k]) for f in factors]) for k in vocab}
    reading: dict[str, Any] = {"truth_on_photos": {}, "agreement_w": {}, "agreement_w_plus": {}}
    for name, proj in (("agreement_w", w), ("agreement_w_plus", wp)):
        p_proj = clf.predict_proba(proj["images"])
        for k in vocab:
            same = (p_photo[k].argmax(1) == p_proj[k].argmax(1)).float().mean()
            reading[name][k] = float(same)
    for k in vocab:
        reading["truth_on_photos"][k] = float((p_photo[k].argmax(1).numpy() == truth[k]).mean())

    # placement: percentiles of the photos' distances among the sampled latents', and of generated faces'
    ref = reference_distances(model, X)
    gen_full = space.encode_seeds(range(100_000, 100_000 + args.n))  # (n, L, D): faces the curve never saw
    gen_vec = gen_full[:, 0].numpy()

    def percentiles(vectors: np.ndarray) -> np.ndarray:
        d = (
            model.project(torch.as_tensor(vectors, dtype=torch.float32), bits=6)
            .sqdist.double()
            .sqrt()
            .numpy()
        )
        return np.array([percentile_of(float(v), ref[6]) for v in d])

    pct = {
        "photos_w": percentiles(w["vectors"].numpy()),
        "photos_w_plus_mean": percentiles(wp["vectors"].numpy()),
        "generated": percentiles(gen_vec),
    }
    placement = {
        k: {**_stats(v), "off_map_99": float((v >= 99).mean()), "above_95": float((v >= 95).mean())}
        for k, v in pct.items()
    }

    # edits: the 15 segments of the 4-bit curve, +-1 std, on photos (W and W+ projections) and generated faces
    dirs = segment_directions(model, 4, X)
    half = args.n // 2
    rows, cos_w, cos_wp, cos_ref, top_w, top_ref = [], [], [], [], [], []
    for d in dirs:
        s_gen = _shift(space, clf, gen_full, d, args.edit_step)
        s_w = _shift(space, clf, w["full"], d, args.edit_step)
        s_wp = _shift(space, clf, wp["full"], d, args.edit_step)
        s_a = _shift(space, clf, gen_full[:half], d, args.edit_step)
        s_b = _shift(space, clf, gen_full[half:], d, args.edit_step)
        cw, cwp, cr = (
            _compare_shifts(s_w, s_gen, vocab),
            _compare_shifts(s_wp, s_gen, vocab),
            _compare_shifts(s_a, s_b, vocab),
        )
        cos_w.append(cw["cosine"])
        cos_wp.append(cwp["cosine"])
        cos_ref.append(cr["cosine"])
        top_w.append(cw["same_top"])
        top_ref.append(cr["same_top"])
        rows.append({"segment": d.name, "w": cw, "w_plus": cwp, "generated_halves": cr})
    edits = {
        "step_std": args.edit_step,
        "segments": rows,
        "cosine_w": _stats(np.array(cos_w)),
        "cosine_w_plus": _stats(np.array(cos_wp)),
        "cosine_generated_halves": _stats(np.array(cos_ref)),
        "same_top_factor_w": float(np.mean(top_w)),
        "same_top_factor_w_plus": float(np.mean([r["w_plus"]["same_top"] for r in rows])),
        "same_top_factor_generated_halves": float(np.mean(top_ref)),
    }

    # pictures: photos, W and W+ projections; one photo and one generated face edited along a segment
    k = min(16, args.n)
    tiles = np.concatenate([photos[:k], to_uint8(w["images"][:k]), to_uint8(wp["images"][:k])])
    labels = [f"photo {i}" for i in range(k)] + ["W"] * k + ["W+"] * k
    save_png(pictures / "avatars_projections.png", labelled_grid(tiles, labels, k, pad=2, min_cell=64))
    best = max(range(len(rows)), key=lambda i: rows[i]["w"]["size_b"])
    d = dirs[best]
    sig = [s * d.std for s in (-2, -1, 0, 1, 2)]
    with torch.no_grad():
        a = space.render_edits(w["full"][:4], [d.vector], sig, d.layers)[:, 0]  # (4, 5, C, H, W)
        b = space.render_edits(gen_full[:4], [d.vector], sig, d.layers)[:, 0]
    grid = to_uint8(torch.cat([a, b]).reshape(-1, *a.shape[2:]))
    labels = [f"{'photo' if r < 4 else 'generated'} {s:+d} std" for r in range(8) for s in (-2, -1, 0, 1, 2)]
    save_png(pictures / "avatars_edit.png", labelled_grid(grid, labels, 5, pad=2, min_cell=64))

    return {
        "n": args.n,
        "data_seed": args.data_seed,
        "settings": {
            "steps_w": args.steps,
            "steps_w_plus": args.plus_steps,
            "lr": args.lr,
            "latent_noise": args.latent_noise,
            "edge_weight": args.edge_weight,
        },
        "psnr_w": _stats(w["psnr"]),
        "ssim_w": _stats(w["ssim"]),
        "psnr_w_plus": _stats(wp["psnr"]),
        "ssim_w_plus": _stats(wp["ssim"]),
        "seconds_w": w["seconds"],
        "seconds_w_plus": wp["seconds"],
        "reading": reading,
        "placement": placement,
        "edits": edits,
        "edit_picture_segment": d.name,
    }


def avatars_tables(r: dict[str, Any]) -> str:
    out = [f"### builtin:avatars-sg2: {r['n']} fresh avatars (data seed {r['data_seed']})", ""]
    rows = []
    for name, key in (("W", "w"), ("W+", "w_plus")):
        p, s = r[f"psnr_{key}"], r[f"ssim_{key}"]
        rows.append(
            [name, p["mean"], p["median"], p["p10"], s["mean"], s["median"], s["p10"], r[f"seconds_{key}"]]
        )
    out += [
        _table(["space", "PSNR mean", "median", "p10", "SSIM mean", "median", "p10", "seconds"], rows),
        "",
    ]
    rd = r["reading"]
    rows = [
        [
            k + (" **" if k in KEY_FACTORS else ""),
            rd["truth_on_photos"][k],
            rd["agreement_w"][k],
            rd["agreement_w_plus"][k],
        ]
        for k in rd["agreement_w"]
    ]
    out += [_table(["factor", "classifier = truth (photos)", "photo = projection (W)", "(W+)"], rows), ""]
    pl = r["placement"]
    rows = [[k, v["median"], v["p90"], v["above_95"], v["off_map_99"]] for k, v in pl.items()]
    out += [
        _table(
            ["latents (6-bit curve)", "median percentile", "p90", "share >= 95", "share >= 99 (off map)"],
            rows,
        ),
        "",
    ]
    e = r["edits"]
    rows = [
        [s["segment"], s["w"]["top_b"], s["w"]["top_a"], s["w"]["cosine"], s["w_plus"]["cosine"],
         s["generated_halves"]["cosine"]]
        for s in e["segments"]
    ]  # fmt: skip
    head = ["segment", "top factor (generated)", "top factor (photos, W)", "cosine W", "cosine W+",
            "cosine generated halves"]  # fmt: skip
    out += [
        _table(head, rows),
        "",
        f"median cosine: photos (W) {e['cosine_w']['median']:.3f}, "
        f"photos (W+) {e['cosine_w_plus']['median']:.3f}, "
        f"two halves of the generated faces {e['cosine_generated_halves']['median']:.3f}; same top factor: "
        f"{e['same_top_factor_w']:.2f} (W), {e['same_top_factor_w_plus']:.2f} (W+), "
        f"{e['same_top_factor_generated_halves']:.2f} (generated halves)",
        "",
    ]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- astronaut
def dcgan_part(args: argparse.Namespace, pictures: Path) -> dict[str, Any]:
    import torch
    from PIL import Image
    from skimage import data as skdata

    from sfvq import SFVQ
    from sfvq.align import crop_quad
    from sfvq.directions import spec_direction
    from sfvq.generators.base import to_uint8
    from sfvq.generators.registry import load_generator
    from sfvq.images import labelled_grid
    from sfvq.io import save_png
    from sfvq.locate import place, placement_figure, reference_distances, segments_around
    from sfvq.project import ProjectionSettings, Projector, prepare_target
    from sfvq.scorers import IdentityScorer
    from sfvq.spaces import LatentSpace

    print("## builtin:faces-dcgan: scikit-image's astronaut", flush=True)
    photo = Image.fromarray(skdata.astronaut())
    G = load_generator(DCGAN)
    space = LatentSpace(G, "features")
    X = np.ascontiguousarray(space.sample(args.dcgan_n, seed=0, progress=False), dtype=np.float32)
    model = SFVQ(5, random_state=0, verbose=False).fit(X)
    target = prepare_target(photo, G, "auto")
    settings = ProjectionSettings(
        steps=args.dcgan_steps, lr=args.lr, latent_noise=args.latent_noise, edge_weight=args.edge_weight
    )
    feat = Projector(space, settings=settings, reference=X).project(target.tensor)
    zspace = LatentSpace(G, "z")
    zproj = Projector(zspace, settings=settings).project(target.tensor)
    ref = reference_distances(model, X)
    placement = place(model, feat.vectors[0], ref, nearest=4)
    # edits along the segments around its place at 5 bits, +-2 std
    segs = segments_around(placement, 5, 1)
    dirs = [spec_direction(model, f"5:{s}", X) for s in segs]
    sig = [-2.0, -1.0, 0.0, 1.0, 2.0]
    with torch.no_grad():
        edited = space.render_edits(
            feat.full, [d.vector for d in dirs], [[s * d.std for s in sig] for d in dirs], None
        )[0]  # (M, 5, C, H, W)
        corners = to_uint8(
            space.render(model.codebooks_[5][[n["corner"] for n in placement.bits[5]["nearest"]]])
        )
        random_faces = space.render_full(space.encode_seeds(range(500, 564)))
    scorer = IdentityScorer()
    photo64 = to_uint8(target.tensor)
    e_photo = scorer.analyse(photo64)
    e_feat = scorer.analyse(feat.images)
    e_z = scorer.analyse(zproj.images)
    e_corner = scorer.analyse(corners[:1])
    e_random = scorer.analyse(random_faces)
    e_edit = scorer.analyse(edited.reshape(-1, *edited.shape[2:]))
    ident = {
        "photo_vs_projection_features": float(scorer.distance(e_photo.embeddings[0], e_feat.embeddings[0])),
        "photo_vs_projection_z": float(scorer.distance(e_photo.embeddings[0], e_z.embeddings[0])),
        "photo_vs_nearest_corner": float(scorer.distance(e_photo.embeddings[0], e_corner.embeddings[0])),
        "photo_vs_random_faces": _stats(scorer.distance(e_photo.embeddings[0], e_random.embeddings)),
        "projection_vs_edits": _stats(scorer.distance(e_feat.embeddings[0], e_edit.embeddings)),
        "detected": {"photo": bool(e_photo.detected[0]), "projection": bool(e_feat.detected[0])},
        "threshold": 0.6,
    }
    # pictures
    big = crop_quad(photo, target.alignment.quad, 256)
    save_png(pictures / "astronaut_aligned.png", big)
    tiles = np.concatenate([photo64, to_uint8(feat.images), to_uint8(zproj.images), corners])
    labels = ["photo (aligned)", f"features ({feat.psnr()[0]:.1f} dB)", f"z ({zproj.psnr()[0]:.1f} dB)"]
    labels += [f"corner {n['corner']}" for n in placement.bits[5]["nearest"]]
    save_png(pictures / "astronaut.png", labelled_grid(tiles, labels, len(tiles), pad=3, min_cell=128))
    near = {}
    with torch.no_grad():
        for b, info in placement.bits.items():
            near[b] = to_uint8(space.render(model.codebooks_[b][[n["corner"] for n in info["nearest"]]]))
    figure = placement_figure(photo64[0], to_uint8(feat.images)[0], near, placement)
    save_png(pictures / "astronaut_placement.png", figure)
    grid = to_uint8(edited.reshape(-1, *edited.shape[2:]))
    labels = [f"{d.name} {s:+g} std" for d in dirs for s in sig]
    save_png(pictures / "astronaut_edits.png", labelled_grid(grid, labels, len(sig), pad=3, min_cell=96))
    return {
        "alignment": target.describe(),
        "features": feat.summary(0),
        "z": zproj.summary(0),
        "space": space.describe(),
        "fit_n": args.dcgan_n,
        "placement": placement.to_json(),
        "edit_segments": [d.name for d in dirs],
        "identity": ident,
    }


def dcgan_tables(r: dict[str, Any]) -> str:
    out = ["### builtin:faces-dcgan: scikit-image's astronaut, aligned", ""]
    rows = [[name, r[key]["psnr"], r[key]["ssim"], r[key]["seconds"]] for name, key in
            (("features (the run's space)", "features"), ("z", "z"))]  # fmt: skip
    out += [_table(["space", "PSNR (dB)", "SSIM", "seconds"], rows), ""]
    rows = [
        [b, v["t"], v["distance"], v["percentile"], ", ".join(str(n["corner"]) for n in v["nearest"])]
        for b, v in r["placement"]["bits"].items()
    ]
    out += [_table(["bits", "t", "distance", "percentile", "nearest corners"], rows), ""]
    o = r["placement"]["outlier"]
    out += [f"outlier score at {o['bits']} bits: percentile {o['percentile']}, {o['ratio']} x the median "
            f"distance, off the map: {o['off_map']}", ""]  # fmt: skip
    i = r["identity"]
    rows = [
        ["photo vs projection (features)", i["photo_vs_projection_features"]],
        ["photo vs projection (z)", i["photo_vs_projection_z"]],
        ["photo vs nearest corner", i["photo_vs_nearest_corner"]],
        ["photo vs 64 random faces (median)", i["photo_vs_random_faces"]["median"]],
        ["photo vs 64 random faces (min)", min(i["photo_vs_random_faces"].values())],
        ["projection vs its edits (median)", i["projection_vs_edits"]["median"]],
    ]
    out += [_table(["dlib identity distance", "value"], rows), ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- settings
# One setting changed at a time from the base (--lr, --edge-weight, --latent-noise); the evidence for
# ProjectionSettings' defaults.
VARIANTS: dict[str, dict[str, float]] = {
    "base": {},
    "no edge term": {"edge_weight": 0.0},
    "lr 0.15": {"lr": 0.15},
    "latent noise 0.05": {"latent_noise": 0.05},
}


def settings_part(args: argparse.Namespace) -> dict[str, Any]:
    """The first ``--sweep-n`` fresh avatars projected into W (``--steps``) and the aligned astronaut into
    the faces-dcgan feature space (``--dcgan-steps``) under each of :data:`VARIANTS`: PSNR, SSIM, the
    classifier's agreement between photo and projection, dlib's identity distance for the astronaut."""
    from PIL import Image
    from skimage import data as skdata

    from sfvq.avatars.classifier import load_avatars_classifier, uint8_to_input
    from sfvq.avatars.dataset import render_faces
    from sfvq.generators.base import to_uint8
    from sfvq.generators.registry import load_generator
    from sfvq.project import ProjectionSettings, Projector, prepare_target
    from sfvq.scorers import IdentityScorer
    from sfvq.spaces import LatentSpace

    n = min(args.sweep_n, args.n)
    print(f"## projection settings: {n} avatars (data seed {args.data_seed}) and the astronaut", flush=True)
    faces, _ = render_faces(args.data_seed, range(n), (32,), workers=args.workers)
    targets = uint8_to_input(faces[32])  # (n, 3, 32, 32) in [-1, 1]
    space = LatentSpace(load_generator(AVATARS), "w")
    clf = load_avatars_classifier()
    X = np.ascontiguousarray(space.sample(args.fit_n, seed=0, progress=False), dtype=np.float32)
    p_photo = clf.predict_proba(targets)
    G = load_generator(DCGAN)
    fspace = LatentSpace(G, "features")
    XF = np.ascontiguousarray(fspace.sample(args.dcgan_n, seed=0, progress=False), dtype=np.float32)
    target = prepare_target(Image.fromarray(skdata.astronaut()), G, "auto")
    scorer = IdentityScorer()
    e_photo = scorer.analyse(to_uint8(target.tensor))
    base = {"lr": args.lr, "edge_weight": args.edge_weight, "latent_noise": args.latent_noise}
    out: dict[str, Any] = {"n": n, "base": base, "steps": args.steps, "dcgan_steps": args.dcgan_steps}
    rows = {}
    for name, change in VARIANTS.items():
        kw = {**base, **change}
        settings = ProjectionSettings(steps=args.steps, **kw)
        w = _project_all(Projector(space, settings=settings, reference=X), targets, args.chunk, label=name)
        p_proj = clf.predict_proba(w["images"])
        agree = {k: float((p_photo[k].argmax(1) == p_proj[k].argmax(1)).float().mean()) for k in clf.vocab}
        t0 = time.perf_counter()
        dsettings = ProjectionSettings(steps=args.dcgan_steps, **kw)
        feat = Projector(fspace, settings=dsettings, reference=XF).project(target.tensor)
        e_feat = scorer.analyse(feat.images)
        rows[name] = {
            "settings": kw,
            "psnr_w": _stats(w["psnr"]),
            "ssim_w": _stats(w["ssim"]),
            "agreement_w": agree,
            "seconds_w": w["seconds"],
            "astronaut": {
                **feat.summary(0),
                "identity_distance": float(scorer.distance(e_photo.embeddings[0], e_feat.embeddings[0])),
                "seconds": time.perf_counter() - t0,
            },
        }
        print(f"  {name}: W PSNR {rows[name]['psnr_w']['mean']:.2f} dB, astronaut "
              f"{rows[name]['astronaut']['psnr']:.2f} dB", flush=True)  # fmt: skip
    out["variants"] = rows
    return out


def settings_tables(r: dict[str, Any]) -> str:
    b = r["base"]
    out = [
        f"### Projection settings, one changed at a time (base: lr {b['lr']}, edge weight "
        f"{b['edge_weight']}, latent noise {b['latent_noise']}; {r['n']} avatars in W, {r['steps']} "
        f"steps; the astronaut in the faces-dcgan feature space, {r['dcgan_steps']} steps)",
        "",
    ]
    head = ["setting", "avatars PSNR mean", "SSIM mean"]
    head += [f"agree {k}" for k in KEY_FACTORS]
    head += ["astronaut PSNR", "SSIM", "identity distance"]
    rows = []
    for name, v in r["variants"].items():
        a = v["astronaut"]
        rows.append(
            [name, v["psnr_w"]["mean"], v["ssim_w"]["mean"]]
            + [v["agreement_w"][k] for k in KEY_FACTORS]
            + [a["psnr"], a["ssim"], a["identity_distance"]]
        )
    out += [_table(head, rows), ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- framing
def measure_framing(samples: int = 256) -> dict[str, Any]:
    """The framing of builtin:faces-dcgan: anchor points on its faces against the FFHQ-aligned astronaut."""
    import torch
    from skimage import data as skdata

    from sfvq.align import NoFaceError, align_face, anchor_points, detect_face, fit_framing
    from sfvq.generators.base import to_uint8
    from sfvq.generators.registry import load_generator

    G = load_generator(DCGAN)
    with torch.no_grad():
        z = torch.from_numpy(G.z_for_seeds(range(samples)))
        faces = to_uint8(G.synthesis(G.mapping(z)))
    points = []
    for im in faces:
        try:
            points.append(anchor_points(detect_face(im).landmarks) / im.shape[0])
        except NoFaceError:
            continue
    ffhq = align_face(skdata.astronaut(), 256)
    ref = anchor_points(detect_face(ffhq.image).landmarks) / 256
    framing = fit_framing(ref[None], np.stack(points))
    return {"faces": samples, "with_a_face": len(points), "framing": framing.describe()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="avatars rendered and projected")
    ap.add_argument("--data-seed", type=int, default=7, help="data seed of the avatars (training used 0)")
    ap.add_argument("--steps", type=int, default=300, help="projection steps in W")
    ap.add_argument("--plus-steps", type=int, default=600, help="projection steps in W+")
    ap.add_argument("--dcgan-steps", type=int, default=500, help="projection steps of the astronaut")
    ap.add_argument("--lr", type=float, default=0.4)
    ap.add_argument("--latent-noise", type=float, default=0.0)
    ap.add_argument(
        "--edge-weight", type=float, default=1.0, help="weight of the projection loss's edge term"
    )
    ap.add_argument("--edit-step", type=float, default=1.0, help="edit step in std units (applied with +-)")
    ap.add_argument("--fit-n", type=int, default=20_000, help="W samples of the avatars curve")
    ap.add_argument("--dcgan-n", type=int, default=10_000, help="feature samples of the DCGAN run")
    ap.add_argument("--chunk", type=int, default=50, help="targets projected together")
    ap.add_argument("--workers", type=int, default=2, help="processes rendering avatars")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--sweep-n", type=int, default=50, help="avatars projected per setting (--only settings)")
    ap.add_argument(
        "--only",
        choices=["avatars", "dcgan", "settings"],
        default=None,
        help="one part (settings: the projection settings compared, run only when asked for)",
    )
    ap.add_argument("--quick", action="store_true", help="32 avatars, 150 steps")
    ap.add_argument("--framing", action="store_true", help="only measure the faces-dcgan framing")
    ap.add_argument("--outdir", type=Path, default=Path("runs/real-images"))
    ap.add_argument("--pictures", type=Path, default=Path("docs/real-images"))
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.framing:
        print(json.dumps(measure_framing(), indent=2))
        return
    if args.quick:
        args.n, args.steps, args.plus_steps, args.dcgan_steps = 32, 150, 150, 150
        args.fit_n, args.dcgan_n = 5000, 3000
    args.outdir.mkdir(parents=True, exist_ok=True)
    args.pictures.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "load_average_start": list(os.getloadavg()),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    started = time.perf_counter()
    tables = []
    if args.only in (None, "avatars"):
        results["avatars"] = avatars_part(args, args.pictures)
        tables.append(avatars_tables(results["avatars"]))
        print(tables[-1], flush=True)
    if args.only in (None, "dcgan"):
        results["dcgan"] = dcgan_part(args, args.pictures)
        tables.append(dcgan_tables(results["dcgan"]))
        print(tables[-1], flush=True)
    if args.only == "settings":
        results["settings"] = settings_part(args)
        print(settings_tables(results["settings"]), flush=True)
    results["seconds"] = time.perf_counter() - started
    results["load_average_end"] = list(os.getloadavg())
    from sfvq.io import write_json

    path = args.outdir / "results.json"
    if args.only is not None and path.is_file():  # one part run again: keep the other's figures
        previous = json.loads(path.read_text(encoding="utf-8"))
        results = {**previous, **results, "runs": [*previous.get("runs", []), results["args"]]}
    write_json(path, results)
    every = [avatars_tables(results["avatars"])] if "avatars" in results else []
    every += [dcgan_tables(results["dcgan"])] if "dcgan" in results else []
    every += [settings_tables(results["settings"])] if "settings" in results else []
    (args.outdir / "tables.md").write_text("\n\n".join(every) + "\n", encoding="utf-8")
    print(
        f"wrote {args.outdir / 'results.json'}, {args.outdir / 'tables.md'} and pictures in {args.pictures}"
    )


if __name__ == "__main__":
    main()
