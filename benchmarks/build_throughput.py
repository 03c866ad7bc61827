"""Build throughput of ``smic/hs`` at SMIC-HS size: first-frame landmarks vs landmarks on every frame.

Writes a fake SMIC-HS raw tree (``HS/s1/micro/negative/s1_ne_01/image######.bmp``)
with the real database's shape: its 16 subjects and their clip counts per class
(164 clips = negative 70, positive 51, surprise 43; ``synthetic_me.SMIC_HS_COUNTS``),
clip lengths drawn like ``synthetic_me/smic_like`` (11..58 frames, mean 30;
seeded), absolute 6-digit frame numbers and 640x480 BMP frames holding a
rendered face (as in ``tests/fake_databases``) about 190 px wide, drifting a
few pixels from frame to frame. The tree's writing is timed on its own. Then
``datasets.build.build('smic/hs', ...)`` runs twice into separate data dirs,
with first-frame landmarks (the default ``FaceOptions(crop_size=224)``) and
with ``every_frame_landmarks=True``; each build's wall time gives clips/s and
frames/s, and their ratio the cost of every-frame landmarks. The build report
(class counts, count check, quirks) is printed for each. Last, a breakdown on a
sample of clips, in this process, splits a clip's cost into reading the frames
(PIL decode), detecting the face on the first frame (dlib HOG), the first
frame's landmarks, cropping, encoding the example (TFDS features, zlib) and
landmarks on every frame, and predicts the ratio from it.

    python -m benchmarks.build_throughput [--frame_size=640x480 --clips=164 --sample=10 --workdir=/tmp]
    python -m benchmarks.build_throughput --frame_size=320x240 --clips=20   # a quick run
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import tensorflow_datasets as tfds

from datasets.build import build
from datasets.core.builder import FaceOptions, read_build_report, report_lines
from datasets.core.frames import read_clip
from datasets.core.quirks import QuirkLog
from datasets.smic import smic
from datasets.synthetic_me import render, synthetic_me
from merjax import faces as face_ops
from merjax.data import labels, schema

DATASET = "smic/hs"
EMOTIONS = smic.EMOTIONS  # negative, positive, surprise: the order of SMIC_HS_COUNTS' rows
# The rendered face's landmarks span ~0.75 of the render's side across (jaw) and the face
# with its forehead ~0.9 down: a 250 px render puts a ~190 x 230 px face in a 640x480 frame,
# the size of the faces in SMIC-HS's raw frames. Render side and drift scale with the frame height.
RENDER_SIDE_AT_480 = 250
DRIFT_AT_480 = 3            # max |shift| in pixels from the frame-0 position, per axis
BACKGROUND = 90             # grey canvas, as tests/fake_databases
FIRST_NUMBER = (100000, 900000)  # absolute frame numbers of a clip start in this range


@dataclasses.dataclass(frozen=True)
class PlannedClip:
    index: int
    subject: str
    subject_index: int
    emotion: str
    name: str          # s1_ne_01
    first_number: int
    num_frames: int


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frame_size", default="640x480", help="WIDTHxHEIGHT of the raw frames")
    parser.add_argument("--clips", type=int, default=None,
                        help="build only this many clips (spread evenly over the 164); default all")
    parser.add_argument("--sample", type=int, default=10, help="clips timed step by step for the breakdown")
    parser.add_argument("--crop_size", type=int, default=FaceOptions().crop_size)
    parser.add_argument("--detector_upsample", type=int, default=FaceOptions().detector_upsample,
                        help="dlib HOG upsampling (1 default; 0 is enough for SMIC's ~190 px faces)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None,
                        help="folder for the raw tree and the two data dirs (a fresh subfolder, removed "
                             "at the end unless --keep); default: the system temp folder")
    parser.add_argument("--keep", action="store_true", help="keep the raw tree and the built datasets")
    return parser.parse_args()


def frame_size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise SystemExit(f"--frame_size {text!r}: expected WIDTHxHEIGHT, e.g. 640x480")
    return int(width), int(height)


def clip_length(rng: np.random.Generator) -> int:
    """A Beta(2, b) length on smic_like's 11..58 frames with mean 30 (as synthetic_me draws them)."""
    config = synthetic_me.SMIC_LIKE
    low, high = config.frames
    b = 2.0 * (high - low) / (config.mean_frames - low) - 2.0
    return low + round(rng.beta(2.0, b) * (high - low))


def plan_clips(seed: int, limit: int | None) -> list[PlannedClip]:
    """SMIC-HS's clips subject by subject, class by class; ``limit`` keeps that many, evenly spread."""
    plan = []
    for subject_index, (subject, row) in enumerate(synthetic_me.SMIC_HS_COUNTS.items()):
        for emotion, count in zip(EMOTIONS, row):
            for number in range(1, count + 1):
                rng = np.random.default_rng([seed, 1, len(plan)])
                name = f"{subject}_{synthetic_me.CLASS_ABBREVIATIONS[emotion]}_{number:02d}"
                plan.append(PlannedClip(len(plan), subject, subject_index, emotion, name,
                                        int(rng.integers(*FIRST_NUMBER)), clip_length(rng)))
    if limit is not None and limit < len(plan):
        if limit < 1:
            raise SystemExit(f"--clips must be at least 1, got {limit}")
        plan = [plan[int(i)] for i in np.linspace(0, len(plan) - 1, limit).round()]
    return plan


def subject_face(subject_index: int, side: int) -> np.ndarray:
    """The subject's rendered neutral face, uint8 BGR [side, side, 3] (tests/fake_databases' identity seeds)."""
    identity = render.sample_identity(np.random.default_rng([7, 0, subject_index]))
    face = np.clip(render.render_neutral(identity, side), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(face[..., ::-1])


def write_tree(root: Path, plan: list[PlannedClip], size: tuple[int, int], seed: int) -> int:
    """Writes the clips' BMP frames under ``root/HS``; returns the number of frames written."""
    width, height = size
    side = max(8, round(RENDER_SIDE_AT_480 * height / 480))
    drift = max(1, round(DRIFT_AT_480 * height / 480))
    if side + 2 * drift > min(width, height):
        raise SystemExit(f"--frame_size {width}x{height} is too small for a {side} px face")
    top0, left0 = (height - side) // 2, (width - side) // 2
    faces: dict[int, np.ndarray] = {}
    canvas = np.full((height, width, 3), BACKGROUND, np.uint8)
    frames = 0
    for clip in plan:
        if clip.subject_index not in faces:
            faces[clip.subject_index] = subject_face(clip.subject_index, side)
        face = faces[clip.subject_index]
        folder = root / "HS" / clip.subject / "micro" / clip.emotion / clip.name
        folder.mkdir(parents=True)
        rng = np.random.default_rng([seed, 2, clip.index])
        for t in range(clip.num_frames):
            dy, dx = (int(v) for v in rng.integers(-drift, drift + 1, size=2))
            top, left = top0 + dy, left0 + dx
            canvas[...] = BACKGROUND
            canvas[top:top + side, left:left + side] = face
            if not cv2.imwrite(str(folder / f"image{clip.first_number + t:06d}.bmp"), canvas):
                raise RuntimeError(f"cannot write frames into {folder}")
            frames += 1
    return frames


def warm_up(workdir: Path, tree: Path, plan: list[PlannedClip], options: FaceOptions) -> None:
    """Builds a one-clip copy of the tree once, so neither timed build pays the first build's one-off imports."""
    clip = min(plan, key=lambda c: c.num_frames)
    relative = Path("HS") / clip.subject / "micro" / clip.emotion / clip.name
    (workdir / "warm_raw" / relative).mkdir(parents=True)
    for path in (tree / relative).iterdir():
        os.link(path, workdir / "warm_raw" / relative / path.name)
    build(DATASET, str(workdir / "warm_data"), str(workdir / "warm_raw"), overwrite=True, faces=options)


def timed_build(workdir: Path, tree: Path, label: str, options: FaceOptions) -> tuple[float, dict]:
    started = time.perf_counter()
    dataset_dir = build(DATASET, str(workdir / f"data_{label}"), str(tree), overwrite=True, faces=options)
    seconds = time.perf_counter() - started
    report = read_build_report(dataset_dir)
    print(f"\n{label} build: {seconds:.1f} s -> {dataset_dir}")
    print("\n".join(f"  {line}" for line in report_lines(report)))
    return seconds, report


def breakdown(tree: Path, plan: list[PlannedClip], sample: int, options: FaceOptions) -> dict[str, float]:
    """Seconds per step summed over ``sample`` clips spread over the plan, plus their clip and frame counts."""
    sources = smic.locate_clips(tree, "hs", "raw", False, QuirkLog())
    chosen = [sources[int(i)] for i in np.unique(np.linspace(0, len(sources) - 1, min(sample, len(sources))).round())]
    detector = options.make_detector()
    features = schema.features(labels.SMIC_3, options.crop_size)
    detector.detect_face(np.full((64, 64, 3), BACKGROUND, np.uint8))  # loads the models
    steps = dict.fromkeys(("read", "detect", "first_landmarks", "crop", "encode", "every_landmarks"), 0.0)
    frames = 0
    clock = 0.0

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        steps[step] += now - clock
        clock = now

    for source in chosen:
        clock = time.perf_counter()
        images, _ = read_clip(source.frames, source.where, QuirkLog())
        lap("read")
        box = detector.detect_face(images[0])
        if box is None:
            raise RuntimeError(f"{source.where}: no face on the first frame")
        lap("detect")
        first = detector.landmarks(images[0], box)
        lap("first_landmarks")
        crop_box = face_ops.face_box(first, options.margin)
        crops = face_ops.crop_frames(images, crop_box, options.crop_size)
        landmarks = face_ops.to_crop_coordinates(np.repeat(first[None], len(images), 0), crop_box,
                                                 options.crop_size).astype(np.float32)
        lap("crop")
        features.encode_example({
            "frames": crops, "landmarks": landmarks, "label": 0, "emotion": source.emotion,
            "subject": source.subject, "clip": source.clip, "dataset": source.dataset, "onset": 0,
            "apex": -1, "offset": len(images) - 1, "fps": source.fps, "action_units": source.action_units,
            "objective_class": source.objective_class})
        lap("encode")
        for image in images:
            detector.landmarks(image, box)
        lap("every_landmarks")
        frames += len(images)
    return {**steps, "clips": len(chosen), "frames": frames}


def main() -> None:
    args = parse_args()
    tfds.disable_progress_bar()
    size = frame_size(args.frame_size)
    command = " ".join(["python -m benchmarks.build_throughput", *(shlex.quote(a) for a in sys.argv[1:])])
    plan = plan_clips(args.seed, args.clips)
    counts = {emotion: sum(c.emotion == emotion for c in plan) for emotion in EMOTIONS}
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="build_throughput_", dir=args.workdir))
    tree = workdir / "raw"
    load_start = os.getloadavg()
    print(f"build throughput: {DATASET}, {len(plan)} clips ({', '.join(f'{k} {v}' for k, v in counts.items())}) "
          f"of {len({c.subject for c in plan})} subjects, {size[0]}x{size[1]} BMP frames; {os.cpu_count()} CPUs, "
          f"load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}; workdir {workdir}")
    try:
        started = time.perf_counter()
        total_frames = write_tree(tree, plan, size, args.seed)
        os.sync()  # written frames are on disk before the builds start
        generate_s = time.perf_counter() - started
        tree_bytes = sum(p.stat().st_size for p in tree.rglob("*.bmp"))
        lengths = [c.num_frames for c in plan]
        print(f"raw tree: {total_frames} frames (clip length {min(lengths)}..{max(lengths)}, mean "
              f"{np.mean(lengths):.1f}), {tree_bytes / 2**30:.2f} GiB, written in {generate_s:.1f} s")

        first_options = FaceOptions(crop_size=args.crop_size, detector_upsample=args.detector_upsample)
        every_options = dataclasses.replace(first_options, every_frame_landmarks=True)
        warm_up(workdir, tree, plan, first_options)
        first_s, first_report = timed_build(workdir, tree, "first_frame", first_options)
        every_s, every_report = timed_build(workdir, tree, "every_frame", every_options)
        parts = breakdown(tree, plan, args.sample, first_options)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    load_end = os.getloadavg()

    written = [sum(r["class_counts"].values()) for r in (first_report, every_report)]
    base = sum(parts[k] for k in ("read", "detect", "first_landmarks", "crop", "encode"))
    sample_clips, sample_frames = parts["clips"], parts["frames"]
    print(f"\nload average at the end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")
    print(f"\n## smic/hs build throughput ({len(plan)} clips, {total_frames} frames, {size[0]}x{size[1]}, "
          f"crop {args.crop_size})\n")
    print("| landmarks | build s | clips/s | frames/s | clips written |")
    print("|---|---:|---:|---:|---:|")
    for label, seconds, count in (("first frame", first_s, written[0]), ("every frame", every_s, written[1])):
        print(f"| {label} | {seconds:.1f} | {len(plan) / seconds:.2f} | {total_frames / seconds:.1f} | {count} |")
    print(f"\nevery-frame / first-frame time: {every_s / first_s:.3f} "
          f"(first-frame only is {every_s / first_s:.2f}x as fast, i.e. {first_s / every_s:.3f} of the time)")
    print(f"tree generation (not in the builds): {generate_s:.1f} s")
    print(f"\n### breakdown on {sample_clips} clips ({sample_frames} frames), first-frame path + every-frame extra\n")
    print("| step | ms / clip | ms / frame | share of first-frame work |")
    print("|---|---:|---:|---:|")
    names = {"read": "read frames (PIL BMP decode)", "detect": "face detection, first frame (dlib HOG)",
             "first_landmarks": "landmarks, first frame", "crop": "crop + resize all frames",
             "encode": "encode example (TFDS, zlib)", "every_landmarks": "landmarks on every frame (extra)"}
    for key, name in names.items():
        share = f"{parts[key] / base:.1%}" if key != "every_landmarks" else f"+{parts[key] / base:.1%}"
        print(f"| {name} | {1000 * parts[key] / sample_clips:.1f} | {1000 * parts[key] / sample_frames:.2f} "
              f"| {share} |")
    per_clip_build = first_s / len(plan)
    print(f"\nfirst-frame build per clip: {1000 * per_clip_build:.1f} ms; the steps above per clip: "
          f"{1000 * base / sample_clips:.1f} ms (the rest: TFDS writing, shuffling, statistics)")
    landmark_s = parts["every_landmarks"] / sample_frames
    print(f"every-frame extra per frame: measured {1000 * (every_s - first_s) / total_frames:.2f} ms "
          f"(build difference), sampled {1000 * landmark_s:.2f} ms (dlib shape predictor)")
    print(f"predicted every/first ratio: {(first_s + landmark_s * total_frames) / first_s:.3f} (first-frame build "
          f"+ sampled landmarks per frame), {(base + parts['every_landmarks']) / base:.3f} (sampled steps "
          f"alone); measured {every_s / first_s:.3f}")
    print(f"\ncommand: {command}")


if __name__ == "__main__":
    main()
