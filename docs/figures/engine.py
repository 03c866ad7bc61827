"""Draws docs/figures/engine.png: the data flow of merjax's experiment engine (``python docs/figures/engine.py``)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

# (x, y) centres on a 16 x 9 canvas; text; colour group.
BOXES = {
    "raw": (1.3, 7.6, "raw database\n(manual_dir) or\nsynthetic_me", "data"),
    "builder": (4.1, 7.6, "TFDS builder\nface crop, landmarks,\nAUs, objective class", "data"),
    "prepared": (7.0, 7.6, "prepared copy\narray_record, versioned,\nstamped by its sources", "disk"),
    "load": (10.0, 7.6, "load + resize\nClipSet: streams,\nlandmarks, labels, AUs", "data"),
    "ops": (13.3, 7.6, "clip operations\ncrop_regions, magnify,\nrank pool, TIM", "data"),
    "opcache": (13.3, 5.8, "clip-op cache\ndata_dir/clip_ops/<digest>", "disk"),
    "protocol": (1.6, 4.4, "protocol\nsubject folds: train /\nval (training subjects) / test", "engine"),
    "stages": (4.6, 4.4, "stages\nper fold or per run;\ninit_from earlier stage", "engine"),
    "sampler": (7.6, 4.4, "sampler\nframes, windows, random\nwindow, whole clip, image", "engine"),
    "batch": (10.6, 4.4, "batch contract\ninputs | targets |\nweights | masks", "engine"),
    "prefix": (13.6, 3.6, "frozen-prefix cache\n(stream 'features')", "disk"),
    "model": (2.0, 1.6, "model by name\nbackbone: endpoints,\npreprocess, weights", "model"),
    "loss": (5.0, 1.6, "loss by name\ncross_entropy, focal;\ntarget weights", "model"),
    "step": (8.3, 1.6, "train_step(state, batch)\nloss bound before jit;\nvmap over folds (optional)", "model"),
    "report": (12.0, 1.6, "clip predictions → pooled\nUF1 / UAR / accuracy,\nbootstrap, chance, figures", "engine"),
}
COLOURS = {"data": "#dbe9f6", "disk": "#f3e3c3", "engine": "#d9f0d3", "model": "#f6d5e5"}
# (from, to, curvature): straight unless a box lies between
ARROWS = [("raw", "builder", 0), ("builder", "prepared", 0), ("prepared", "load", 0), ("load", "ops", 0),
          ("ops", "opcache", 0), ("opcache", "sampler", 0), ("protocol", "stages", 0), ("stages", "sampler", 0),
          ("sampler", "batch", 0), ("prefix", "batch", 0), ("batch", "step", 0), ("model", "step", 0.25),
          ("loss", "step", 0), ("step", "report", 0), ("stages", "model", 0)]
HALF_WIDTH, HALF_HEIGHT = 1.3, 0.7


def edge_point(x: float, y: float, dx: float, dy: float) -> tuple[float, float]:
    """Where the ray from a box's centre (x, y) in direction (dx, dy) leaves the box."""
    scale = min(HALF_WIDTH / abs(dx) if dx else float("inf"), HALF_HEIGHT / abs(dy) if dy else float("inf"))
    return x + dx * scale, y + dy * scale


def main() -> None:
    fig, ax = plt.subplots(figsize=(16, 10))
    ax.set_xlim(0, 15.2)
    ax.set_ylim(-1.5, 9)
    ax.axis("off")
    for x, y, text, group in BOXES.values():
        ax.add_patch(FancyBboxPatch((x - HALF_WIDTH + 0.05, y - HALF_HEIGHT + 0.05), 2 * HALF_WIDTH - 0.1,
                                    2 * HALF_HEIGHT - 0.1, boxstyle="round,pad=0.05",
                                    facecolor=COLOURS[group], edgecolor="#444444"))
        ax.text(x, y, text, ha="center", va="center", fontsize=10)
    for start, end, curvature in ARROWS:
        (x0, y0, *_), (x1, y1, *_) = BOXES[start], BOXES[end]
        dx, dy = x1 - x0, y1 - y0
        if curvature:   # leave and enter through the bottom edges, arcing below the boxes in between
            begin, finish = (x0, y0 - HALF_HEIGHT), (x1, y1 - HALF_HEIGHT)
        else:
            begin, finish = edge_point(x0, y0, dx, dy), edge_point(x1, y1, -dx, -dy)
        ax.add_patch(FancyArrowPatch(begin, finish, arrowstyle="-|>", mutation_scale=16, color="#333333",
                                     connectionstyle=f"arc3,rad={curvature}"))
    legend = [plt.Rectangle((0, 0), 1, 1, facecolor=colour, edgecolor="#444444") for colour in COLOURS.values()]
    ax.legend(legend, ["data (datasets/, merjax.data)", "on disk, stamped, refused when stale",
                       "engine (experiments/cv.py, stages.py; merjax.data.samplers, batches)",
                       "model and step (merjax.models, merjax.train)"],
              loc="lower center", bbox_to_anchor=(0.5, -0.02), ncol=2, fontsize=10, frameon=False)
    ax.set_title("merjax: data flow of one run (every method: a model, a config, perhaps a clip operation)",
                 fontsize=14)
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "engine.png"), dpi=80)


if __name__ == "__main__":
    main()
