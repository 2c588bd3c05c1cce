"""A Ray cluster simulated on this machine: a node removed mid-job costs no video.

The head node has no CPUs (as on a real cluster, it only drives), so every decode task and the
model actor run on the one worker node; removing it mid-job kills work in flight for sure,
and a node that joins afterwards must finish the job."""

from __future__ import annotations

import pytest

from tests.conftest import write_video

ray = pytest.importorskip("ray", reason="the Ray engine needs ray (pip install -e '.[dev]' installs it)")

from ray.cluster_utils import Cluster  # noqa: E402

from tagger.engines.ray import RayEngine, RaySettings, connect  # noqa: E402
from tagger.options import TagOptions  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture
def two_nodes():
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    worker = cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    connect(cluster.address)
    yield cluster, worker
    ray.shutdown()
    cluster.shutdown()


def test_a_node_removed_mid_job_still_gives_every_video_exactly_once(two_nodes, tiny_model, tmp_path):
    cluster, worker = two_nodes
    colours = ["red", "green", "blue"]
    paths = [str(write_video(tmp_path / f"v{i}.mp4", [colours[i % 3]] * 120)) for i in range(9)]
    engine = RayEngine(str(tiny_model), TagOptions(), RaySettings(workers=1))
    assert len(ray.nodes()) == 2
    seen = []
    for result in engine.tag(paths):
        seen.append(result)
        if len(seen) == 1:
            # Tasks and the actor on it die with it; Ray reruns them on the new node.
            cluster.remove_node(worker)
            replacement = cluster.add_node(num_cpus=2)
    assert sorted(r.path for r in seen) == sorted(paths)
    assert len(seen) == len(paths)
    assert all(r.ok for r in seen)
    for result in seen:
        index = int(result.path.rsplit("v", 1)[1].split(".")[0])
        assert result.tags[0].label == colours[index % 3]
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert worker.node_id not in alive and replacement.node_id in alive
