"""Draws merjax's face region templates on a real face: ``python docs/figures/face_regions.py``.

The face is scikit-image's astronaut (Eileen Collins, public domain, bundled
with the wheel: no network), its 68 landmarks come from dlib
(``merjax.faces.DlibLandmarks``, ``pip install dlib-bin face-recognition-models``).
Top row: seed 002's six boxes, seed 003's three boxes with the eyes masked, and
seed 001's Grad-CAM regions (landmark hulls). Bottom rows: the crops each
template gives, at their output sizes (``merjax.faces.regions.crop_regions``).
Writes ``docs/figures/face_regions.png`` next to this script.
"""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import skimage.data  # noqa: E402

from merjax.faces import DlibLandmarks  # noqa: E402
from merjax.faces import regions  # noqa: E402

OUTPUT = pathlib.Path(__file__).with_suffix(".png")
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:cyan")
VIEW_MARGIN = 0.45   # of the landmarks' extent, around the face in the top row


def astronaut_landmarks() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut image [512,512,3] and dlib's 68 landmarks of her face."""
    image = skimage.data.astronaut()
    detector = DlibLandmarks()
    box = detector.detect_face(image)
    if box is None:
        raise RuntimeError("dlib found no face in skimage.data.astronaut()")
    return image, detector.landmarks(image, box)


def view_window(landmarks: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """A square (x0, y0, x1, y1) around the landmarks, grown by ``VIEW_MARGIN``, inside the image."""
    low, high = landmarks.min(0), landmarks.max(0)
    centre, half = (low + high) / 2, (high - low).max() * (0.5 + VIEW_MARGIN)
    x0, y0 = np.maximum(np.floor(centre - half), 0).astype(int)
    x1, y1 = np.minimum(np.ceil(centre + half), (shape[1], shape[0])).astype(int)
    return x0, y0, x1, y1


def draw_boxes(ax, boxes: dict[str, tuple[int, int, int, int]], window: tuple[int, int, int, int]) -> None:
    """Box outlines (pixel edges) with their names, in the window's coordinates."""
    for colour, (name, (x0, y0, x1, y1)) in zip(COLOURS, boxes.items()):
        left, top = x0 - window[0] - 0.5, y0 - window[1] - 0.5
        ax.add_patch(plt.Rectangle((left, top), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=1.6))
        ax.text(left + 1, top + 1, name, color="white", fontsize=6.5, va="top",
                bbox={"facecolor": colour, "alpha": 0.8, "pad": 1.0, "linewidth": 0})


def panel(ax, image: np.ndarray, window: tuple[int, int, int, int], title: str) -> None:
    x0, y0, x1, y1 = window
    ax.imshow(image[y0:y1, x0:x1], interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def crops_row(fig, subfigure, crops: dict[str, np.ndarray], title: str) -> None:
    """The crops side by side at their relative sizes, each named with its (width x height)."""
    widths = [crop.shape[2] for crop in crops.values()]
    axes = subfigure.subplots(1, len(crops), width_ratios=widths)
    subfigure.suptitle(title, fontsize=9)
    for colour, ax, (name, crop) in zip(COLOURS, axes, crops.items()):
        ax.imshow(crop[0], interpolation="nearest")
        ax.set_title(f"{name}\n{crop.shape[2]}x{crop.shape[1]}", fontsize=7, color=colour)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(1.6)


def main() -> None:
    image, landmarks = astronaut_landmarks()
    shape = image.shape[:2]
    window = view_window(landmarks, shape)
    fig = plt.figure(figsize=(12, 8.4), dpi=110, layout="constrained")
    fig.suptitle("merjax.faces.regions on skimage's astronaut (dlib 68 landmarks); "
                 "boxes from the first frame, fixed for the clip", fontsize=10)
    top, seed002_row, seed003_row = fig.subfigures(3, 1, height_ratios=[2.4, 1.0, 1.0])
    axes = top.subplots(1, 3)

    panel(axes[0], image, window, "seed002: six regions (seed 002 §4.1.2)")
    draw_boxes(axes[0], regions.region_boxes("seed002", landmarks, shape), window)

    keep = regions.region_mask("seed003", landmarks, shape)
    dimmed = np.where(keep[..., None], image, (image * 0.35).astype(np.uint8))
    panel(axes[1], dimmed, window, "seed003: three regions, eyes masked (dimmed: not kept)")
    draw_boxes(axes[1], regions.region_boxes("seed003", landmarks, shape), window)

    panel(axes[2], image, window, "seed 001 Grad-CAM regions (hull_mask)")
    for colour, (name, indices) in zip(COLOURS, regions.FEATURE_GROUPS.items()):
        mask = regions.hull_mask(landmarks, shape, groups={name: indices})
        x0, y0, x1, y1 = window
        axes[2].contour(mask[y0:y1, x0:x1].astype(np.float32), levels=[0.5], colors=colour, linewidths=1.4)
        centre = landmarks[list(indices)].mean(0) - (x0, y0)
        axes[2].text(*centre, name, color="white", fontsize=6.5, ha="center", va="center",
                     bbox={"facecolor": colour, "alpha": 0.8, "pad": 1.0, "linewidth": 0})
    for ax in axes:
        x0, y0 = window[:2]
        ax.plot(landmarks[:, 0] - x0, landmarks[:, 1] - y0, ".", color="yellow", markersize=2)

    crops_row(fig, seed002_row, regions.crop_regions("seed002", image[None], landmarks[None]),
              "seed002 crops (width x height)")
    crops_row(fig, seed003_row, regions.crop_regions("seed003", image[None], landmarks[None]),
              "seed003 crops, eyes blanked")
    fig.savefig(OUTPUT)
    plt.close(fig)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
