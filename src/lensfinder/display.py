"""The Legacy Surveys RGB rendering of g, r, z cutouts, and mosaics of them."""

from __future__ import annotations

import numpy as np

from lensfinder.plots import pyplot, save_figure, save_note

# band -> (RGB plane, scale) of legacypipe's sdss_rgb / the viewer's dr2_rgb for grz
RGB_SCALES = {"g": (2, 6.0), "r": (1, 3.4), "z": (0, 2.2)}


def sdss_rgb(cutout, bands=("g", "r", "z"), m=0.03, Q=20.0) -> np.ndarray:
    """RGB image in [0, 1] of a (3, H, W) cutout in nanomaggies, band order g, r, z.

    Returns (H, W, 3) with row 0 = South (display with ``origin='lower'`` for North up,
    East left), exactly the arcsinh transform of the Legacy Surveys viewer.
    """
    cutout = np.asarray(cutout, dtype=np.float64)
    h, w = cutout.shape[1:]
    rgb = np.zeros((h, w, 3))
    xs = {}
    for img, band in zip(cutout, bands):
        plane, scale = RGB_SCALES[band]
        xs[band] = img * scale + m
    intensity = np.mean([np.maximum(0, x) for x in xs.values()], axis=0)
    intensity = np.where(intensity == 0, 1e-6, intensity)
    gain = np.arcsinh(Q * intensity) / np.sqrt(Q) / intensity
    for band, x in xs.items():
        rgb[:, :, RGB_SCALES[band][0]] = np.clip(x * gain, 0, 1)
    return rgb


def save_mosaic(cutouts, path, labels=None, ncol=6, tile_inches=1.8):
    """Write a PNG mosaic of cutouts (N, 3, H, W), North up and East left, with labels
    (atomically: a partial mosaic never carries the name); with no cutout, a note that says so."""
    if len(cutouts) == 0:
        save_note(path, "nothing to show")
        return
    plt = pyplot()

    n = len(cutouts)
    ncol = max(1, min(ncol, n))
    nrow = max(1, int(np.ceil(n / ncol)))
    fig, axes = plt.subplots(nrow, ncol, figsize=(ncol * tile_inches, nrow * tile_inches), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, cut in enumerate(cutouts):
        ax = axes.ravel()[i]
        ax.imshow(sdss_rgb(cut), origin="lower", interpolation="nearest")
        if labels is not None:
            ax.set_title(labels[i], fontsize=7)
    save_figure(fig, path, dpi=110)
