"""The Ray engine against the local engine on this machine, its decode rate per CPU, and a
simulated 2-node cluster against 1 node.

    python bench/bench_ray.py [--files 32] [--clips 2] [--rounds 3] [--cpus 2]

Files: ``common.ucf101_sized`` (320x240, 25 fps, MPEG-4 Part 2, 7 s). Model: the "tiny"
VideoMAE of ``common.make_model`` (16 x 224 x 224 input, random weights), so the figures are
about decoding, moving clips and batching, where an engine's overhead shows.

1. Engines, in one process: the local engine (its decode processes started and its model
   loaded once, as ``vidtag scan`` does) and the Ray engine on a local Ray of ``--cpus`` CPUs
   (one model actor; the actor pool and its model load are part of every Ray job, as they
   are of every ``scan --engine ray``). Rounds time both in an order that alternates; the
   ratio of clips/s is taken within a round.
   Each engine runs a job of half the files and one of all of them: the slope between the two
   is the rate once running, and the intercept what a job costs to start (for Ray: the actor
   pool and its model load, paid by every ``scan --engine ray``).
2. Decode alone on Ray: the same decode tasks with the model stage replaced by a count, so
   clips/s divided by the CPUs is the rate of one decode CPU.
3. A simulated cluster (``ray.cluster_utils.Cluster``, a head with no CPUs): one worker node
   of ``--cpus`` CPUs, then two. Both share this machine's cores, so this shows that work
   spreads over nodes and what that costs, not a speed-up the cores cannot give.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import CACHE, machine, make_model, spread, ucf101_sized


def timed(engine, files: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    results = list(engine.tag(files))
    seconds = time.perf_counter() - started
    failed = [r.error for r in results if not r.ok]
    if failed or len(results) != len(files):
        raise SystemExit(f"{len(failed)} failed, {len(results)} of {len(files)}: {failed[:2]}")
    return seconds, sum(r.clips for r in results)


def decode_only(engine, files: list[str]) -> tuple[float, int]:
    """Clips/s of the Ray decode stage alone (clips counted in a task, never sent back)."""
    from tagger.clips.decode import make_job
    from tagger.engines.ray import decode_rows

    ray = engine.ray
    job = make_job("", engine.spec.prep, engine.spec.stride, engine.options)
    items = ray.data.from_items([{"path": p} for p in files], override_num_blocks=len(files))
    clips = items.flat_map(
        decode_rows,
        fn_kwargs={
            "job": job,
            "crop": engine.spec.prep.crop,
            "crops": 1,
            "timeout_s": 120.0,
            "clip_shape": engine.spec.clip_shape,
        },
    )
    counts = clips.map_batches(lambda b: {"n": [int((b["slot"] >= 0).sum())]}, batch_format="numpy")
    started = time.perf_counter()
    total = sum(int(row["n"]) for row in counts.iter_rows())
    return time.perf_counter() - started, total


def cluster_rate(model: Path, files: list[str], options, nodes: int, cpus: int, rounds: int) -> list[float]:
    import ray
    from ray.cluster_utils import Cluster

    from tagger.engines.ray import RayEngine, RaySettings, connect

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        for _ in range(nodes):
            cluster.add_node(num_cpus=cpus)
        cluster.wait_for_nodes()
        connect(cluster.address)
        engine = RayEngine(str(model), options, RaySettings(workers=nodes))
        timed(engine, files[:4])  # warm: workers started, imports done
        rates = []
        for _ in range(rounds):
            seconds, clips = timed(engine, files)
            rates.append(clips / seconds)
        return rates
    finally:
        ray.shutdown()
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=32)
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()

    import ray

    from tagger.classify import load_classifier
    from tagger.clips.pool import DecodePool, default_workers
    from tagger.engines.local import LocalEngine
    from tagger.engines.ray import RayEngine, RaySettings, connect
    from tagger.options import TagOptions

    model = make_model("tiny")
    files = ucf101_sized(CACHE / "ucf101_sized", args.files, distinct=min(args.files, 16))
    options = TagOptions(clips=args.clips)
    print(f"machine: {machine()}; {len(files)} files x {args.clips} clips; tiny model")

    classifier = load_classifier(str(model), "cpu")
    with tempfile.TemporaryDirectory(), DecodePool(default_workers("cpu")).start() as pool:
        local = LocalEngine(classifier, options, pool)
        connect(num_cpus=args.cpus)
        remote = RayEngine(str(model), options, RaySettings())
        engines = {"local": local, "ray": remote}
        for engine in engines.values():
            timed(engine, files[:4])  # warm
        half = files[: len(files) // 2]
        whole: dict[str, list[float]] = {name: [] for name in engines}
        steady: dict[str, list[float]] = {name: [] for name in engines}
        fixed: dict[str, list[float]] = {name: [] for name in engines}
        job_ratio, steady_ratio = [], []
        for r in range(args.rounds):
            order = list(engines) if r % 2 == 0 else list(reversed(engines))
            for name in order:
                t_half, c_half = timed(engines[name], half)
                t_all, c_all = timed(engines[name], files)
                whole[name].append(c_all / t_all)
                # Two job sizes: the slope is the rate once running, the intercept the cost of a job.
                steady[name].append((c_all - c_half) / (t_all - t_half))
                fixed[name].append(t_half - c_half / steady[name][-1])
            job_ratio.append(whole["ray"][-1] / whole["local"][-1])
            steady_ratio.append(steady["ray"][-1] / steady["local"][-1])
            print(
                f"round {r + 1}: "
                + ", ".join(
                    f"{n} {whole[n][-1]:.1f} clips/s ({steady[n][-1]:.1f} once running)" for n in order
                )
            )
        decode = [decode_only(remote, files) for _ in range(args.rounds)]
        per_cpu = [clips / seconds / args.cpus for seconds, clips in decode]
    ray.shutdown()

    one = cluster_rate(model, files, options, 1, args.cpus, args.rounds)
    two = cluster_rate(model, files, options, 2, args.cpus, args.rounds)

    print()
    print("| run | clips/s, whole job | clips/s once running | seconds per job (start-up) |")
    print("|---|---|---|---|")
    for name in engines:
        rates = f"{spread(whole[name], '.1f')} | {spread(steady[name], '.1f')}"
        print(f"| {name} engine | {rates} | {spread(fixed[name])} |")
    print(f"| ray / local, within a round | {spread(job_ratio)} | {spread(steady_ratio)} | |")
    print()
    print(f"Ray decode only, per decode CPU: {spread(per_cpu, '.1f')} clips/s")
    print(f"simulated cluster, 1 worker node of {args.cpus} CPUs: {spread(one, '.1f')} clips/s")
    print(f"simulated cluster, 2 worker nodes of {args.cpus} CPUs: {spread(two, '.1f')} clips/s")
    scaling = statistics.median(two) / statistics.median(one)
    print(f"2 nodes / 1 node (the same {args.cpus} real cores): {scaling:.2f}")


if __name__ == "__main__":
    main()
