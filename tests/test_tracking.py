"""The face tracker: the assignment worked out by hand, numbers that follow moving faces, answers averaged."""

from dataclasses import replace

import numpy as np
import pytest

from demo.faces import Face
from demo.heads import RangeRule, SpreadRule
from demo.predictor import FaceResult, ImageResult, ModelAnswer
from demo.tracking import FaceTracker, assign, average


def _frame(*faces):
    """A frame's result: (box, age distribution peak, P(female)) per face."""
    results = []
    for n, (box, peak, p_female) in enumerate(faces, start=1):
        probs = np.zeros(116)
        probs[peak - 1] = 1.0
        answer = ModelAnswer(float(peak), peak, peak, p_female, age_probs=probs)
        results.append(FaceResult(n, Face(box, 0.99, None), crop=object(), answers={"a": answer}))
    return ImageResult(size=(640, 480), faces=results, timings_ms={})


def test_assign_finds_the_least_total_cost_and_respects_the_gate():
    # Greedy would take (0, 0) at 1 and leave row 1 with 9; the optimum pairs (0, 1) and (1, 0): 2 + 2.
    cost = np.array([[1.0, 2.0], [2.0, 9.0]])
    assert assign(cost, gate=10) == [(0, 1), (1, 0)]
    assert assign(cost, gate=1.5) == [(0, 0)]  # pairs over the gate are never made
    assert assign(np.array([[0.5], [0.2], [0.9]]), gate=1) == [(1, 0)]  # more rows than columns
    assert assign(np.array([[0.3, 0.1, 0.7]]), gate=1) == [(0, 1)]
    assert assign(np.zeros((0, 2)), gate=1) == []


def test_assign_matches_brute_force_on_random_costs():
    from itertools import permutations

    rng = np.random.default_rng(0)
    for _ in range(200):
        rows, cols = (int(n) for n in rng.integers(1, 5, size=2))
        cost = rng.uniform(0, 2, size=(rows, cols))
        pairs = assign(cost, gate=1.0)
        # Brute force over every pairing: the most pairs within the gate, then the least cost of those.
        best = None
        for perm in permutations(range(cols), min(rows, cols)):
            for chosen_rows in permutations(range(rows), min(rows, cols)):
                kept = sorted((r, c) for r, c in zip(chosen_rows, perm) if cost[r, c] <= 1.0)
                key = (-len(kept), sum(cost[r, c] for r, c in kept))
                if best is None or key < best[0]:
                    best = (key, kept)
        assert len(pairs) == len(best[1]) and sum(cost[r, c] for r, c in pairs) == pytest.approx(best[0][1]), cost


def _box(x: float, size: float = 100) -> tuple:
    return (x, 100, x + size, 100 + size)


def test_a_face_moving_half_its_width_a_frame_keeps_its_number_and_is_drawn_where_it_is():
    tracker = FaceTracker()
    xs = [100, 150, 200, 250, 200, 150, 100, 50, 100, 150]  # half a width a frame, turning twice
    for x in xs:
        face = tracker.update(_frame((_box(x), 30, 0.9))).faces[0]
        assert face.number == 1
        assert face.face.box == _box(x)  # this frame's box: no trail behind a moving face


def test_two_faces_side_by_side_moving_together_keep_their_numbers():
    tracker = FaceTracker()
    for step in range(8):
        x = 40 * step
        result = tracker.update(_frame((_box(x + 120), 50, 0.1), (_box(x), 30, 0.9)))
        assert {f.face.box[0]: f.number for f in result.faces} == {x: 1, x + 120: 2}  # numbered left to right


def test_a_jump_of_more_than_a_face_width_or_a_new_size_is_a_new_face():
    tracker = FaceTracker()
    tracker.update(_frame((_box(100), 30, 0.9)))
    assert tracker.update(_frame((_box(260), 30, 0.9))).faces[0].number == 2  # 1.6 widths away
    assert tracker.update(_frame((_box(260, size=200), 30, 0.9))).faces[0].number == 3  # twice the size


def test_faces_keep_their_numbers_and_a_newcomer_gets_the_next():
    tracker = FaceTracker()
    left, right = (10, 10, 110, 110), (300, 10, 400, 110)
    first = tracker.update(_frame((left, 30, 0.9)))
    assert [f.number for f in first.faces] == [1]
    # The detector lists the newcomer first (higher score): the numbers still follow the faces.
    second = tracker.update(_frame((right, 50, 0.1), ((12, 10, 112, 110), 30, 0.9)))
    numbers = {f.face.box[0] < 200: f.number for f in second.faces}
    assert numbers == {True: 1, False: 2}


def test_a_track_survives_a_missed_frame_and_ends_after_max_missed():
    tracker = FaceTracker(max_missed=2)
    box = (10, 10, 110, 110)
    tracker.update(_frame((box, 30, 0.9)))
    for _ in range(2):
        tracker.update(_frame())
    assert tracker.update(_frame((box, 30, 0.9))).faces[0].number == 1
    for _ in range(3):
        tracker.update(_frame())
    assert tracker.update(_frame((box, 30, 0.9))).faces[0].number == 2


def test_answers_are_averaged_as_distributions():
    tracker = FaceTracker(window=2)
    box = (10, 10, 110, 110)
    tracker.update(_frame((box, 30, 0.8)))
    answer = tracker.update(_frame((box, 40, 0.4))).faces[0].answers["a"]
    # Half the probability at 30, half at 40: mean 35, spread 5; the default rule's range is 35 -/+ 1.2816 x 5.
    assert (answer.age, answer.age_low, answer.age_high) == (35.0, 29, 41)
    assert answer.p_female == pytest.approx(0.6)
    third = tracker.update(_frame((box, 40, 0.4))).faces[0].answers["a"]
    assert third.age == 40.0  # the window holds the last two frames only


def test_average_keeps_a_missing_task_missing():
    answers = [ModelAnswer(30.0, 25, 35, None), ModelAnswer(32.0, 27, 37, None)]
    assert average(answers).p_female is None


def test_average_reads_the_range_at_the_models_level_and_keeps_its_estimates():
    # Each frame's range distribution (tempered) is flat over 30-39; its estimate (the untempered mean) is 33.
    probs = np.zeros(116)
    probs[29:39] = 0.1
    frames = [ModelAnswer(33.0, 30, 38, 0.5, age_probs=probs, range_rule=RangeRule.central(0.5))] * 2
    answer = average(frames)
    assert answer.age == 33.0  # the mean of the frames' estimates, not of the tempered distribution (34.5)
    assert (answer.age_low, answer.age_high) == (32, 37)  # the central 50 %: cdf reaches .25 at 32, .75 at 37
    wide = average([ModelAnswer(33.0, 30, 38, 0.5, age_probs=probs, range_rule=RangeRule.central(0.8))] * 2)
    assert (wide.age_low, wide.age_high) == (30, 38)
    # A rule by region is read at the averaged estimate's region: 33 is in the second (from 32).
    by_region = RangeRule(starts=(1.0, 32.0), lower=(0.1, 0.25), upper=(0.9, 0.75))
    assert (average([ModelAnswer(33.0, 30, 38, 0.5, age_probs=probs, range_rule=by_region)] * 2).age_low) == 32


def test_a_median_models_average_is_the_median_of_the_mean_distribution():
    # Two frames, all of one at 30 and all of the other at 40 (bins 29 and 39): the mean distribution's
    # median is where the first bin ends, 30.5; the mean of the two frames' medians would be 35.
    first, second = np.zeros(116), np.zeros(116)
    first[29], second[39] = 1.0, 1.0
    rule = SpreadRule(below=(1.0,), above=(1.0,), estimate="median")
    answer = average([ModelAnswer(30.0, 30, 30, None, age_probs=first, range_rule=rule),
                      ModelAnswer(40.0, 40, 40, None, age_probs=second, range_rule=rule)])
    assert answer.age == pytest.approx(30.5)
    assert answer.age_low <= round(answer.age) <= answer.age_high


def test_a_still_face_near_the_unsure_threshold_keeps_its_gender_text():
    # P(female) of a still face wavers around a model's threshold of 0.6 (frames 0.52-0.68, averaged over 4).
    rng = np.random.default_rng(0)
    box = (10, 10, 110, 110)
    shown, raw = [], []
    tracker = FaceTracker(window=4)
    for _ in range(60):
        result = _frame((box, 30, float(0.6 + rng.uniform(-0.08, 0.08))))
        for face in result.faces:
            face.answers = {"a": replace(face.answers["a"], unsure_below=0.6)}
        answer = tracker.update(result).faces[0].answers["a"]
        shown.append(answer.gender)
        raw.append(replace(answer, held_gender=None).gender)  # the same average, called without holding
    changes = lambda calls: sum(a != b for a, b in zip(calls, calls[1:]))  # noqa: E731
    assert changes(raw) >= 8  # without hysteresis the text flickers
    assert changes(shown) <= 2
    assert set(shown) <= {"unsure", "female"}


def _crossing(tracker: FaceTracker, speed: float, rng: np.random.Generator, jitter: float, dy: float,
              times=None) -> bool:
    """Two faces walking past each other (one rightwards, one leftwards, `dy` px apart in height), both detected
    in every frame with `jitter` px of noise; True when each kept its number throughout."""
    numbers = None
    for step in range(int(700 / speed) + 2):
        xa, xb = speed * step + rng.normal(0, jitter), 600 - speed * step + rng.normal(0, jitter)
        ya, yb = 100 + rng.normal(0, jitter), 100 + dy + rng.normal(0, jitter)
        boxes = ((xa, ya, xa + 100, ya + 100), 30, 0.9), ((xb, yb, xb + 100, yb + 100), 60, 0.1)
        result = tracker.update(_frame(*boxes), at=None if times is None else times[step])
        now = tuple(next(f.number for f in result.faces if f.face.box[0] == x) for x in (xa, xb))
        numbers = numbers or now
        if now != numbers:
            return False
    return True


def test_two_faces_crossing_keep_their_numbers():
    # The case that swapped deterministically: the other face sat where this one was last seen, a shortcut the
    # tracker no longer takes (each face is matched to where its own motion puts it).
    assert _crossing(FaceTracker(), 40, np.random.default_rng(0), jitter=0, dy=0)
    rng = np.random.default_rng(1)
    # 20-60 px a frame with 3 px of jitter, passing 30 px apart in height: 0 swaps in 300.
    assert sum(not _crossing(FaceTracker(), rng.uniform(20, 60), rng, jitter=3, dy=30) for _ in range(300)) == 0


def test_motion_is_per_second_so_frames_dropped_under_load_keep_a_sliding_face():
    # A face sliding at 150 px a second (1.5 widths), seen 10 times a second, then a second of frames dropped by
    # a busy machine, then 1 to 3 frames a second at irregular times. Counting frames, the tracker expected it
    # 15 px on after the gap, 150 px short of it (measured: a new number); given the times, where it is.
    rng = np.random.default_rng(0)
    times = np.concatenate([np.arange(10) * 0.1, 1.9 + np.cumsum(rng.uniform(1 / 3, 1.0, size=8))])
    numbers = {}
    for given in (True, False):
        tracker = FaceTracker()
        numbers[given] = {tracker.update(_frame((_box(round(150 * t)), 30, 0.9)),
                                         at=float(t) if given else None).faces[0].number for t in times}
    assert numbers[True] == {1} and numbers[False] != {1}


def test_a_face_sliding_to_and_fro_at_a_few_frames_a_second_keeps_its_number():
    # The browser test's camera under load: a face 53 px wide sliding 320 px to and fro every 4 s (three widths a
    # second), frames 0.25-0.6 s apart. Between its first two frames it moves a face width or more, its speed not
    # yet known; at each turn it ends up two steps behind where it was heading. Before the speed slack
    # (SPEED_SLACK), it got a new number in each of these runs.
    def slid(t: float) -> int:
        phase = (t / 4.0) % 1.0
        return 100 + round(320 * (2 * phase if phase < 0.5 else 2 - 2 * phase))

    for seed in range(20):
        times = np.cumsum(np.random.default_rng(seed).uniform(0.25, 0.6, size=30))
        tracker = FaceTracker()
        assert {tracker.update(_frame((_box(slid(t), size=53), 30, 0.9)), at=float(t)).faces[0].number
                for t in times} == {1}, seed


def test_a_face_hidden_behind_another_walking_past_comes_back_with_its_number():
    # The clip: two people walking past each other at 15 px a frame, 8 frames a second, the one behind
    # hidden (not detected) while they overlap: 6 frames, 0.75 s. Then a face turned away for 2 s returns.
    tracker, seen = FaceTracker(), {}
    for step in range(40):
        xa, xb = 100 + 15 * step, 700 - 15 * step  # a walks right in front, b walks left behind
        faces = [((xa, 100, xa + 100, 200), 30, 0.9)]
        hidden = abs(xa - xb) < 50
        if not hidden:
            faces.append(((xb, 100, xb + 100, 200), 60, 0.1))
        result = tracker.update(_frame(*faces), at=step / 8)
        for f in result.faces:
            seen.setdefault("a" if f.face.box[0] == xa else "b", set()).add(f.number)
    assert seen == {"a": {1}, "b": {2}}
    box = (10, 10, 110, 110)
    tracker.update(_frame((box, 30, 0.9)), at=10.0)
    number = tracker.update(_frame((box, 30, 0.9)), at=10.1).faces[0].number
    assert tracker.update(_frame((box, 30, 0.9)), at=12.0).faces[0].number == number  # away 1.9 s: the same
    assert tracker.update(_frame((box, 30, 0.9)), at=14.5).faces[0].number != number  # away 2.5 s: a new face


def test_a_tracker_continuing_a_clip_keeps_the_numbers_and_motion_it_is_given():
    from demo.tracking import Track

    # Face 4 moving 100 px a second to the right, face 7 still; judged again from 1.0 s on.
    tracks = [Track(4, _box(100), seen_at=1.0, velocity=np.array([100.0, 0.0])), Track(7, _box(400), seen_at=1.0)]
    tracker = FaceTracker.continuing(tracks)
    result = tracker.update(_frame((_box(150), 30, 0.9), (_box(400), 60, 0.1), ((250, 300, 350, 400), 40, 0.5)), at=1.5)
    assert [(f.face.box[0], f.number) for f in result.faces] == [(150, 4), (400, 7), (250, 8)]  # a newcomer: 8
    assert len(tracker.tracks[0].answers) == 1  # averaged afresh
    # Faces numbered up to 9 earlier in the clip, gone since: a newcomer is #10, as in a run never stopped. (Alone
    # in the frame, it stands where neither face could have gone in half a second: more than 4 and 2 widths off.)
    later = FaceTracker.continuing(tracks, numbered=9).update(_frame(((520, 360, 620, 460), 40, 0.5)), at=1.5)
    assert [f.number for f in later.faces] == [10]


def test_a_face_too_small_to_judge_keeps_one_number_beside_a_crossing():
    rng, tracker, numbers = np.random.default_rng(0), FaceTracker(), set()
    for step in range(18):
        xa, xb = 40 * step, 600 - 40 * step
        tiny = tuple(v + rng.normal(0, 2) for v in (500, 400, 525, 425))
        result = _frame(((xa, 100, xa + 100, 200), 30, 0.9), ((xb, 130, xb + 100, 230), 60, 0.1), (tiny, 40, 0.5))
        small = result.faces[2]
        result.faces[2] = FaceResult(small.number, small.face, None, {})  # not judged: no answers, no crop
        numbers |= {f.number for f in tracker.update(result, at=step / 8).faces if not f.judged}
    assert len(numbers) == 1
