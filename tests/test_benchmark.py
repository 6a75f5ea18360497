"""tools.benchmark times what the app serves: the detector on its served engine beside stock MTCNN."""

from demo.engine import default_engine
from tools.benchmark import compare_detection, frame_640x480


def test_detection_is_compared_on_the_served_engine_too():
    # --engine served once timed stock MTCNN alone, with nothing to compare it to.
    times = compare_detection(40, frame_640x480(), runs=1, device="cpu", engines=["served"])
    assert set(times) == {f"demo.mtcnn ({default_engine('detector')})", "facenet-pytorch"}
    assert all(t["median"] > 0 for t in times.values())
