"""Injection throughput: lensfinder's injector beside lenstronomy's bare rendering.

    python benchmarks/inject.py            # --n 300 --size 101

On one core (numpy/scipy single-threaded), for ``--n`` parameter sets drawn from the
default priors (theta_E 1-3", Sersic sources of the mock's population), at 101 x 101 px:

* ``lensfinder.injection.arcs.inject``: ray-tracing the part of the cutout the lensed light can
  reach (4 x 4 points per pixel, once for the three bands), each band's Gaussian PSF, the
  arc's photon noise, fluxes and matched-filter S/N, added to a cutout;
* lenstronomy's bare rendering of the same three images: ``ImageModel.image`` on the
  whole 101 x 101 grid per band (supersampling 4, Gaussian PSF of the band's FWHM,
  convolution at pixel level as the injector's), models built once outside the clock;
* the whole ``inject`` rule's work, ``write_injection_set``: deflector cuts, reading the
  fp16 cutouts, injecting, fp16 shards with index and checksums, the example mosaic.

It also checks that the two renderings are the same images (largest difference relative
to each image's peak). Prints injections per second per core and the ratios.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lensfinder.constants import PIXSCALE  # noqa: E402
from lensfinder.cutouts.shards import ShardWriter  # noqa: E402
from lensfinder.injection.arcs import inject
from lensfinder.injection.config import InjectionConfig, draw_params
from lensfinder.injection.sets import write_injection_set

PSF = {"G": 1.29, "R": 1.18, "Z": 1.11}
DEPTH = {"G": 2800.0, "R": 1000.0, "Z": 170.0}


def deflector(i=0, dx=0.2, dy=-0.1):
    row = {"RELEASE": 10000, "BRICKID": 1, "OBJID": i, "RA": 150.0 + i * 1e-2, "DEC": 2.0, "TYPE": "DEV",
           "REGION": "DECaLS", "ZEXP_BIN": "4", "MAG_G": 20.5, "MAG_R": 19.2, "MAG_Z": 18.4, "MAG_G_DERED": 20.4,
           "MAG_R_DERED": 19.15, "SWEEP": "sweep-150p000-155p005", "CENTER_DX": dx, "CENTER_DY": dy}
    for b in "GRZ":
        row[f"PSFSIZE_{b}"], row[f"PSFDEPTH_{b}"], row[f"MW_TRANSMISSION_{b}"] = PSF[b], DEPTH[b], 0.9
    return row


def lenstronomy_models(size, x0, y0):
    from lenstronomy.Data.pixel_grid import PixelGrid
    from lenstronomy.Data.psf import PSF as LPSF
    from lenstronomy.ImSim.image_model import ImageModel
    from lenstronomy.LensModel.lens_model import LensModel
    from lenstronomy.LightModel.light_model import LightModel

    grid = PixelGrid(nx=size, ny=size, transform_pix2angle=np.array([[-PIXSCALE, 0.0], [0.0, PIXSCALE]]),
                     ra_at_xy_0=x0 * PIXSCALE, dec_at_xy_0=-y0 * PIXSCALE)  # pixel (x0, y0) at (0, 0); East = -x
    lens, light = LensModel(["SIE", "SHEAR"]), LightModel(["SERSIC_ELLIPSE"])
    models = [ImageModel(grid, LPSF(psf_type="GAUSSIAN", fwhm=PSF[b], truncation=4.0), lens_model_class=lens,
                         source_model_class=light,
                         kwargs_numerics={"supersampling_factor": 4, "supersampling_convolution": False})
              for b in "GRZ"]
    return models, light


def bare_images(models, light, params, fluxes):
    kw_lens, kw_source = params.lenstronomy_kwargs()
    total = float(light.total_flux(kw_source)[0])
    out = []
    for model, flux in zip(models, fluxes):
        src = [{**kw_source[0], "amp": flux / total}]
        out.append(model.image(kwargs_lens=kw_lens, kwargs_source=src))
    return np.stack(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--size", type=int, default=101)
    args = ap.parse_args()
    n, size = args.n, args.size
    cfg = InjectionConfig()
    rng = np.random.default_rng(0)
    params = [draw_params(rng, cfg) for _ in range(n)]
    row = pd.Series(deflector())
    x0, y0 = size // 2 + row.CENTER_DX, size // 2 + row.CENTER_DY
    background = np.random.default_rng(1).normal(0, 0.01, (3, size, size)).astype(np.float16).astype(np.float32)
    models, light = lenstronomy_models(size, x0, y0)
    trans = [0.9, 0.9, 0.9]

    # the same images? (noise off: the injector's arc is the image minus the background)
    quiet = InjectionConfig(noise=False)
    worst = 0.0
    for p in params[:20]:
        ours = inject(background, row, p, quiet, rng)[0].astype(np.float64) - background
        theirs = bare_images(models, light, p, p.source_fluxes(trans))
        worst = max(worst, float(np.max(np.abs(ours - theirs)) / np.max(theirs)))
    # warm both up, then time
    inject(background, row, params[0], cfg, rng)
    bare_images(models, light, params[0], params[0].source_fluxes(trans))
    t0 = time.perf_counter()
    for p in params:
        inject(background, row, p, cfg, rng)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p in params:
        bare_images(models, light, p, p.source_fluxes(trans))
    t_bare = time.perf_counter() - t0

    # the whole rule: deflectors, fp16 cutouts read, injections, shards, mosaic
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n_def = 50
        rows = [deflector(i) for i in range(n_def)]
        pd.DataFrame(rows).to_parquet(tmp / "objects.parquet")
        w = ShardWriter(tmp / "cutouts", size, "dr10")
        for r in rows:
            w.add(background, {k: r[k] for k in ("RELEASE", "BRICKID", "OBJID", "RA", "DEC", "CENTER_DX", "CENTER_DY")})
        w.close(n_def)
        pd.DataFrame({"RELEASE": [10000], "BRICKID": [1], "OBJID": [10 ** 6], "RA": [10.0], "DEC": [0.0],
                      "LABEL": [1], "SPLIT": ["train"]}).to_parquet(tmp / "labels.parquet")
        per_cell = max(1, n // 32)
        rule_cfg = InjectionConfig(grid={"n_per_bin": per_cell})
        t0 = time.perf_counter()
        summary = write_injection_set([tmp / "objects.parquet"], [tmp / "cutouts/manifest.json"],
                                      tmp / "labels.parquet", [], rule_cfg, tmp / "inj", progress=False)
        t_rule = time.perf_counter() - t0
        n_rule = summary["injections"]

    print(f"{n} injections at {size} x {size} px, one core")
    print(f"same images: largest |injector - lenstronomy| / peak = {worst:.2e} (first 20, noise off)")
    print("| what | injections/s/core | ratio to lenstronomy |")
    print("|---|---|---|")
    print(f"| lenstronomy bare rendering (3 bands) | {n / t_bare:.1f} | 1 |")
    print(f"| lensfinder.injection.arcs.inject | {n / t_ours:.1f} | {t_bare / t_ours:.2f} |")
    rule_rate = n_rule / t_rule
    print(f"| write_injection_set ({n_rule}, shards) | {rule_rate:.1f} | {rule_rate / (n / t_bare):.2f} |")


if __name__ == "__main__":
    main()
