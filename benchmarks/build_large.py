"""Builds larger than memory: time, output and peak memory of ``smic/hs`` on a generated tree of several GB.

Writes ``build_throughput``'s fake SMIC-HS raw tree once (its ``plan_clips`` and
``write_tree``: 164 clips, 640x480 BMP frames holding a rendered face) and
hard-links its subject folders again under new subject numbers (s1 -> s101,
s201, ...), so a tree of ``--replicas`` copies (about 0.34 GB of examples each
at crop 224) costs the disk of one. Every build is its own process,
``datasets.build``'s command line with the shuffler's memory limit
(``spill.MEMORY_LIMIT_BYTES``) set first, and its peak memory is that
process's peak resident set (``ru_maxrss`` from ``os.wait4``). The builds:

1. one clip: the process without data (imports, dlib's models);
2. ``--small_replicas`` copies held in memory (the limit above the data: TFDS's
   path without a spill, whose memory grows with the data);
3. the same copies spilled past the default limit, whose files must equal
   those of (2) byte for byte;
4. ``--replicas`` copies spilled past the default limit.

It reports each build's wall time (process start included), clips/s, MB/s of
examples written, output size and peak RSS, and the ratios of the large build
to the small one. Last, TFDS's shuffler runs alone (in this process) on the
records of the small build, in memory and spilled, and of the large one,
spilled: the difference is the spill's own cost, which a build's time on a
busy machine cannot show. The trees and datasets are removed at the end
(unless ``--keep``).

    python -m benchmarks.build_large [--replicas=8 --small_replicas=2 --workdir=/tmp]
    python -m benchmarks.build_large --clips=8 --replicas=2 --small_replicas=1   # a quick run
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from array_record.python.array_record_data_source import ArrayRecordDataSource
from tensorflow_datasets.core import shuffle

from benchmarks.build_throughput import plan_clips, write_tree
from datasets.core import spill
from merjax import stamps

DATASET = "smic/hs"
FRAME_SIZE = (640, 480)
SUBJECT_STRIDE = 100      # copy k of subject sN is s{N + 100 k} (SMIC-HS's subjects end at s20)
IN_MEMORY_LIMIT = 1 << 62  # bytes: a limit no build reaches, so nothing is spilled
# One build: sets the shuffler's memory limit (argv[1]), then runs datasets.build's command line (argv[2:]).
BUILD_PROCESS = ("import sys; import tensorflow_datasets as tfds; from datasets.core import spill; "
                 "from datasets.build import main; spill.MEMORY_LIMIT_BYTES = int(sys.argv[1]); "
                 "tfds.disable_progress_bar(); main(sys.argv[2:])")


@dataclasses.dataclass(frozen=True)
class BuildRun:
    label: str
    clips: int
    limit: int
    seconds: float
    peak_rss: int              # bytes
    output_bytes: int          # the array_record shards
    digests: dict[str, str]    # file name -> sha256 of every file of the prepared dataset
    report: str                # the build report's first line
    dataset_dir: Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=8, help="copies of SMIC-HS's 164 clips in the large tree")
    parser.add_argument("--small_replicas", type=int, default=2, help="copies in the small tree")
    parser.add_argument("--clips", type=int, default=None,
                        help="write only this many of the 164 clips (spread evenly; a quick run); default all")
    parser.add_argument("--detector_upsample", type=int, default=0,
                        help="dlib HOG upsampling (0 is enough for these ~190 px faces)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None,
                        help="folder for the trees and data dirs (a fresh subfolder, removed at the end "
                             "unless --keep); default: the system temp folder")
    parser.add_argument("--keep", action="store_true", help="keep the trees and the built datasets")
    args = parser.parse_args()
    if not 1 <= args.small_replicas < args.replicas:
        raise SystemExit(f"need 1 <= --small_replicas < --replicas, got {args.small_replicas} and {args.replicas}")
    return args


def linked_tree(base: Path, destination: Path, replicas: int) -> int:
    """``replicas`` copies of ``base``'s HS subjects as hard links under ``destination``; returns the clips."""
    clips = 0
    for subject in sorted((base / "HS").iterdir()):
        number = int(subject.name.removeprefix("s"))
        for replica in range(replicas):
            copy = destination / "HS" / f"s{number + SUBJECT_STRIDE * replica}"
            for frame in subject.rglob("*.bmp"):
                (copy / frame.relative_to(subject)).parent.mkdir(parents=True, exist_ok=True)
                os.link(frame, copy / frame.relative_to(subject))
            clips += sum(1 for _ in subject.glob("micro/*/*"))
    return clips


def one_clip_tree(base: Path, destination: Path) -> None:
    """The first clip of ``base`` alone, hard-linked under ``destination``."""
    clip = sorted((base / "HS").glob("*/micro/*/*"))[0]
    copy = destination / clip.relative_to(base)
    copy.mkdir(parents=True)
    for frame in clip.iterdir():
        os.link(frame, copy / frame.name)


def digests(folder: Path) -> dict[str, str]:
    return {path.name: stamps.digest_file(path) for path in sorted(folder.iterdir())
            if path.is_file()}


def run_build(workdir: Path, label: str, tree: Path, clips: int, limit: int, detector_upsample: int) -> BuildRun:
    """Builds ``tree`` in a process of its own; returns its time, peak RSS and output."""
    data_dir, log = workdir / f"data_{label}", workdir / f"{label}.log"
    argv = [sys.executable, "-c", BUILD_PROCESS, str(limit), DATASET, f"--data_dir={data_dir}",
            f"--manual_dir={tree}", f"--detector_upsample={detector_upsample}"]
    with open(log, "wb") as output:
        started = time.perf_counter()
        pid = os.posix_spawn(sys.executable, argv, os.environ, file_actions=[
            (os.POSIX_SPAWN_DUP2, output.fileno(), 1), (os.POSIX_SPAWN_DUP2, output.fileno(), 2)])
        _, status, usage = os.wait4(pid, 0)
        seconds = time.perf_counter() - started
    lines = log.read_text().splitlines()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{label} build failed (exit {os.waitstatus_to_exitcode(status)}); log {log}:\n"
                         + "\n".join(lines[-20:]))
    dataset_dir = Path(lines[-1])
    leftovers = [path.name for path in data_dir.rglob("*.tmp")]
    if leftovers:
        raise SystemExit(f"{label} build left spill files behind: {leftovers[:3]}")
    run = BuildRun(label, clips, limit, seconds, usage.ru_maxrss * 1024,
                   sum(path.stat().st_size for path in dataset_dir.glob("*.array_record*")), digests(dataset_dir),
                   next(line for line in lines if line.startswith("clips found:")), dataset_dir)
    print(f"{label}: {seconds:.1f} s, peak RSS {run.peak_rss / 2**30:.2f} GiB, output "
          f"{run.output_bytes / 2**30:.2f} GiB; {run.report}", flush=True)
    return run


def shuffle_pass(run: BuildRun, limit: int, spill_dir: Path) -> tuple[float, str]:
    """TFDS's shuffler alone on ``run``'s records at ``limit``: seconds to add them all and give them back
    shuffled (reading the array_record files included), and a digest of the order given back."""
    files = sorted(str(path) for path in run.dataset_dir.glob("*.array_record-*"))
    default = spill.MEMORY_LIMIT_BYTES
    spill.MEMORY_LIMIT_BYTES = limit
    try:
        with spill.tf_free_spill(), ArrayRecordDataSource(files) as records:
            started = time.perf_counter()
            shuffler = shuffle.Shuffler(spill_dir, hash_salt="train")
            for index, record in enumerate(records):
                shuffler.add(index, record)
            order = hashlib.sha256()
            for key, _ in shuffler:
                order.update(key.to_bytes(spill.KEY_BYTES, "big"))
            return time.perf_counter() - started, order.hexdigest()
    finally:
        spill.MEMORY_LIMIT_BYTES = default


def limit_text(run: BuildRun) -> str:
    """The run's in-memory limit and whether its examples passed it (spilled)."""
    if run.limit == IN_MEMORY_LIMIT:
        return "none: all in memory"
    return f"{run.limit / 2**20:.0f} MiB: {'spilled' if run.output_bytes > run.limit else 'in memory'}"


def main() -> None:
    args = parse_args()
    command = " ".join(["python -m benchmarks.build_large", *(shlex.quote(a) for a in sys.argv[1:])])
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="build_large_", dir=args.workdir))
    load_start = os.getloadavg()
    print(f"build_large: {DATASET}, {args.small_replicas} and {args.replicas} copies of "
          f"{args.clips or 164} of SMIC-HS's clips, "
          f"{FRAME_SIZE[0]}x{FRAME_SIZE[1]} BMP, crop 224, detector_upsample {args.detector_upsample}; "
          f"{os.cpu_count()} CPUs, load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}; "
          f"workdir {workdir}", flush=True)
    try:
        started = time.perf_counter()
        frames = write_tree(workdir / "raw", plan_clips(args.seed, args.clips), FRAME_SIZE, args.seed)
        os.sync()
        small_clips = linked_tree(workdir / "raw", workdir / "small", args.small_replicas)
        large_clips = linked_tree(workdir / "raw", workdir / "large", args.replicas)
        one_clip_tree(workdir / "raw", workdir / "one")
        print(f"trees: {frames} frames written, linked into {small_clips} and {large_clips} clips, "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        upsample = args.detector_upsample
        default = spill.MEMORY_LIMIT_BYTES
        one = run_build(workdir, "one_clip", workdir / "one", 1, default, upsample)
        small_memory = run_build(workdir, "small_in_memory", workdir / "small", small_clips, IN_MEMORY_LIMIT, upsample)
        small_spill = run_build(workdir, "small_spilled", workdir / "small", small_clips, default, upsample)
        large_spill = run_build(workdir, "large_spilled", workdir / "large", large_clips, default, upsample)
        shuffles = [shuffle_pass(run, limit, workdir) for run, limit in (
            (small_memory, IN_MEMORY_LIMIT), (small_memory, default), (large_spill, default))]
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    load_end = os.getloadavg()
    identical = small_spill.digests == small_memory.digests

    print(f"\nload average at the end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")
    print(f"\n## {DATASET} builds past the shuffle buffer (crop 224; default limit "
          f"{default / 2**20:.0f} MiB)\n")
    print("| build | clips | examples GiB | in-memory limit: shuffle | wall s | clips/s | MB/s written | peak RSS GiB "
          "| RSS above one-clip build GiB |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for run in (one, small_memory, small_spill, large_spill):
        print(f"| {run.label} | {run.clips} | {run.output_bytes / 2**30:.2f} | {limit_text(run)} "
              f"| {run.seconds:.1f} | {run.clips / run.seconds:.2f} | {run.output_bytes / 1e6 / run.seconds:.2f} "
              f"| {run.peak_rss / 2**30:.2f} | {(run.peak_rss - one.peak_rss) / 2**30:.2f} |")
    print(f"\nsmall spilled vs in memory: files {'byte-identical' if identical else 'DIFFER'} "
          f"({len(small_spill.digests)} files); time ratio {small_spill.seconds / small_memory.seconds:.3f}; "
          f"peak RSS {small_spill.peak_rss / 2**30:.2f} vs {small_memory.peak_rss / 2**30:.2f} GiB")
    print(f"large / small: data {large_spill.output_bytes / small_spill.output_bytes:.2f}x, peak RSS (spilled) "
          f"{large_spill.peak_rss / small_spill.peak_rss:.3f}x, peak RSS above the one-clip build "
          f"{(large_spill.peak_rss - one.peak_rss) / max(small_spill.peak_rss - one.peak_rss, 1):.3f}x")
    (memory_s, memory_order), (spill_s, spill_order), (large_s, _) = shuffles
    gib = small_memory.output_bytes / 2**30
    print(f"shuffler alone ({small_memory.clips} records, {gib:.2f} GiB): in memory {memory_s:.1f} s, spilled "
          f"{spill_s:.1f} s (order {'the same' if memory_order == spill_order else 'DIFFERENT'}): the spill costs "
          f"{(spill_s - memory_s) / gib:.1f} s per GiB; {large_spill.clips} records "
          f"({large_spill.output_bytes / 2**30:.2f} GiB) spilled: {large_s:.1f} s")
    print(f"\ncommand: {command}")
    if not identical or memory_order != spill_order:
        raise SystemExit("spilled and in-memory builds (or shuffles) differ")


if __name__ == "__main__":
    main()
