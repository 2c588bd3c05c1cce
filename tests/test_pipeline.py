"""tag(): whole-video scoring, batching across files, and one bad file costing one file."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from tagger.clips import pool
from tagger.clips.decode import DecodeJob, make_job, run_job
from tagger.clips.pool import DecodePool, InlineDecoder, default_workers
from tagger.engines.local import tag
from tagger.labels import Labelling
from tagger.options import TagOptions
from tagger.records import DecodeError


def crashing_decoder(job: DecodeJob):  # type: ignore[no-untyped-def]
    """Worker that dies like a segfaulting decoder on files named crash*, hangs on hang*."""
    name = os.path.basename(job.path)
    if name.startswith("crash"):
        os._exit(139)
    if name.startswith("hang"):
        time.sleep(120)
    return run_job(job)


def failing_decoder(job: DecodeJob):  # type: ignore[no-untyped-def]
    """Worker that refuses every file, to show which decoder ``tag`` used."""
    raise DecodeError(f"refused {os.path.basename(job.path)}")


def _scores(result) -> dict[str, float]:  # type: ignore[no-untyped-def]
    return {t.label: t.score for t in result.tags}


def test_video_score_is_the_mean_over_its_clips(video_factory, classifier):
    # 20 s: blue, then green, then red; four clips see different colours.
    path = str(video_factory(["blue"] * 70 + ["green"] * 60 + ["red"] * 70, fps=10))
    options = TagOptions(clips=4, top_k=3, workers=1)
    [result] = list(tag([path], classifier, options))

    _, clips = run_job(make_job(path, classifier.prep, classifier.stride, options))
    per_clip = classifier.predict(np.stack([c.frames for c in clips]))
    expected = per_clip.mean(axis=0)

    assert result.clips == len(clips) == 4
    got = _scores(result)
    for i, label in enumerate(classifier.labels):
        assert got[label] == pytest.approx(expected[i], abs=1e-5)
    # Not the first clip, not the max: the clips disagree, and the result is their mean.
    assert per_clip.argmax(axis=1).tolist() != [per_clip[0].argmax()] * 4
    assert not np.allclose(per_clip[0], expected, atol=0.05)
    assert not np.allclose(per_clip.max(axis=0), expected, atol=0.05)


def test_each_clip_keeps_its_span_and_scores(video_factory, classifier):
    path = str(video_factory(["blue"] * 70 + ["green"] * 60 + ["red"] * 70, fps=10))
    options = TagOptions(clips=4, top_k=3)
    [result] = list(tag([path], classifier, options, decoder=InlineDecoder()))

    _, clips = run_job(make_job(path, classifier.prep, classifier.stride, options))
    per_clip = classifier.predict(np.stack([c.frames for c in clips]))
    assert result.classes == tuple(classifier.labels)
    assert [(c.start_s, c.end_s) for c in result.clip_scores] == [(c.start_s, c.end_s) for c in clips]
    assert np.allclose([c.scores for c in result.clip_scores], per_clip, atol=1e-5)
    # In time order, and the first and last clips see the first and last colours.
    starts = [c.start_s for c in result.clip_scores]
    assert starts == sorted(starts) and starts[-1] > 10
    labels = [result.classes[int(np.argmax(c.scores))] for c in result.clip_scores]
    assert (labels[0], labels[-1]) == ("blue", "red")


def test_three_crops_of_a_clip_are_averaged_into_its_score(video_factory, classifier):
    from tagger.clips.crops import views

    from .conftest import COLORS

    # Red, green and blue thirds side by side: each of the three crops sees another colour.
    side = np.zeros((48, 144, 3), dtype=np.uint8)
    for i, name in enumerate(("red", "green", "blue")):
        side[:, 48 * i : 48 * (i + 1)] = COLORS[name]
    path = str(video_factory(lambda i: side if i < 40 else None, size=(144, 48)))
    options = TagOptions(clips=2, crops=3)
    [result] = list(tag([path], classifier, options, decoder=InlineDecoder()))
    _, clips = run_job(make_job(path, classifier.prep, classifier.stride, options))
    for clip, scored in zip(clips, result.clip_scores, strict=True):
        crops = classifier.predict(np.stack(views(clip.frames, classifier.prep.crop, 3)))
        assert len({int(p.argmax()) for p in crops}) == 3  # the views do differ
        assert np.allclose(scored.scores, crops.mean(axis=0), atol=1e-5)


def test_action_only_in_the_second_half_is_found(video_factory, classifier):
    # 30 s of blue, the "action" (red) only in the last third.
    path = str(video_factory(["blue"] * 200 + ["red"] * 100, fps=10))
    [result] = list(tag([path], classifier, TagOptions(top_k=3, workers=1)))
    assert result.ok and result.clips == 3
    assert _scores(result)["red"] > 0.25

    # What the pipeline of the guide sees (the first clip only) misses it.
    first = DecodeJob(
        path,
        num_frames=classifier.prep.num_frames,
        stride=classifier.stride,
        clips=1,
        short_side=classifier.prep.short_side,
        crop=classifier.prep.crop,
    )
    _, [opening] = run_job(first)
    assert opening.start_s < 15
    red = classifier.labels.index("red")
    assert classifier.predict(opening.frames[None])[0, red] < 0.1


def test_batches_cross_file_boundaries_without_mixing_videos(video_factory, classifier):
    paths = [
        str(video_factory(colors * 120, fps=10)) for colors in (["red"], ["green"], ["blue"], ["red", "blue"])
    ]
    one_by_one = {r.path: r for r in tag(paths, classifier, TagOptions(batch_size=1, top_k=3, workers=1))}
    batched = {r.path: r for r in tag(paths, classifier, TagOptions(batch_size=5, top_k=3, workers=2))}
    assert set(batched) == set(paths)
    for path in paths:
        a, b = _scores(one_by_one[path]), _scores(batched[path])
        assert a.keys() == b.keys()
        for label in a:
            assert a[label] == pytest.approx(b[label], abs=1e-5)
    assert next(t.label for t in batched[paths[0]].tags) == "red"
    assert next(t.label for t in batched[paths[2]].tags) == "blue"


def test_crash_and_hang_cost_one_file_each(video_factory, classifier):
    good = str(video_factory(["green"] * 40, name="good.mp4"))
    crash = str(video_factory(["green"] * 40, name="crash.mp4"))
    hang = str(video_factory(["green"] * 40, name="hang.mp4"))
    options = TagOptions(top_k=1)
    with DecodePool(2, timeout_s=3, worker=crashing_decoder) as crashing:
        results = {r.path: r for r in tag([crash, hang, good], classifier, options, decoder=crashing)}

    assert set(results) == {good, crash, hang}
    assert results[good].ok and results[good].tags[0].label == "green"
    assert results[crash].status == "error" and "crashed" in results[crash].error
    assert results[hang].status == "error" and "longer than 3 s" in results[hang].error


def test_bad_file_becomes_an_error_result(tmp_path, video_factory, classifier):
    bad = tmp_path / "notavideo.mp4"
    bad.write_text("this is not a video")
    good = str(video_factory(["red"] * 40))
    results = {r.path: r for r in tag([str(bad), good], classifier, TagOptions(workers=1))}
    assert results[good].ok
    assert results[str(bad)].status == "error"
    assert results[str(bad)].error and "Traceback" not in results[str(bad)].error


def test_top_tags_threshold_and_k():
    probs = np.array([0.1, 0.6, 0.3])
    labels = ["a", "b", "c"]

    def top(k: int, threshold: float | None) -> tuple[list[str], bool]:
        tags, unsure = Labelling(top_k=k, threshold=threshold).tags(labels, probs)
        return [t.label for t in tags], unsure

    assert top(2, None) == (["b", "c"], False)
    assert top(3, 0) == (["b", "c", "a"], False)
    assert top(3, 0.25) == (["b", "c"], False)
    assert top(3, 0.9) == ([], True)


def test_a_started_decoder_is_used_and_left_open(video_factory, classifier):
    import multiprocessing

    path = str(video_factory(["red"] * 20))

    def started() -> int:
        return len(set(multiprocessing.active_children()) - before)

    before = set(multiprocessing.active_children())
    decoder = DecodePool(2, worker=failing_decoder)
    assert started() == 0  # nothing runs before start()
    with decoder.start():
        deadline = time.monotonic() + 30
        while started() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started() == 2  # up before the first file

        # The caller's decoder (its worker function) is used, not the default one ...
        [refused] = list(tag([path], classifier, TagOptions(top_k=1), decoder=decoder))
        assert not refused.ok and "refused" in (refused.error or "")
        # ... and stays open for the next call.
        [again] = list(tag([path], classifier, TagOptions(top_k=1), decoder=decoder))
        assert "refused" in (again.error or "")
    assert started() == 0
    # Without a decoder, tag makes (and closes) its own with the real decoder.
    [tagged] = list(tag([path], classifier, TagOptions(top_k=1, workers=1)))
    assert tagged.ok and tagged.tags[0].label == "red"


def test_default_workers_follow_the_device(monkeypatch):
    monkeypatch.setattr(pool.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert default_workers("cpu") == 8  # the model needs the other half
    assert default_workers("cuda") == 15  # decoding is the bound: all but one core
    monkeypatch.setattr(pool.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert default_workers("cpu") == 1 and default_workers("cuda") == 1


def test_no_forward_pass_starts_after_a_stop(video_factory, classifier):
    """A stop during a forward pass ends the stream after it: clips not yet scored are dropped."""
    import threading

    paths = [str(video_factory(["red"] * 40)) for _ in range(3)]
    stop = threading.Event()
    calls: list[int] = []
    original = classifier.predict

    def predict(clips, planes=None):  # type: ignore[no-untyped-def]
        calls.append(len(clips))
        if len(calls) == 1:
            stop.set()  # SIGTERM arrives while the first batch runs
        return original(clips, planes)

    classifier.predict = predict
    try:
        # Four clips per video, one per forward pass: without the stop, twelve passes.
        results = list(tag(paths, classifier, TagOptions(clips=4, batch_size=1, workers=1), stop=stop))
    finally:
        classifier.predict = original
    assert calls == [1]
    assert results == []  # no video had all its clips scored, so none is reported


def test_without_a_stop_every_clip_is_scored(video_factory, classifier):
    import threading

    paths = [str(video_factory(["red"] * 40)) for _ in range(3)]
    calls: list[int] = []
    original = classifier.predict

    def predict(clips, planes=None):  # type: ignore[no-untyped-def]
        calls.append(len(clips))
        return original(clips, planes)

    classifier.predict = predict
    try:
        options = TagOptions(clips=4, batch_size=1, workers=1)
        results = list(tag(paths, classifier, options, stop=threading.Event()))
    finally:
        classifier.predict = original
    assert len(calls) == 12 and sorted(r.path for r in results) == sorted(paths)
