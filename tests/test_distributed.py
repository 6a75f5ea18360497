"""Training on two processes with torchrun (gloo on the CPU) equals one process, and resumes on another count."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import ROOT
from training.train import main

# dlib's ResNet has no BatchNorm (its statistics would stay per process on the CPU), and without dropout and
# augmentation the only randomness left is the order of the faces, which every process draws alike.
ARGS = ["--model", "a", "--architecture", "dlib_resnet", "--recipe", "from_scratch", "--input-size", "104",
        "--batch-size", "4", "--no-amp", "--dropout", "0", "--no-augment", "--device", "cpu", "--threads", "1"]


def torchrun(args: list[str], processes: int = 2, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "training.train", *args]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def weights(run) -> dict[str, torch.Tensor]:
    return torch.load(run / "resume.pt", weights_only=True)["model"]


def assert_same_weights(a: dict, b: dict, lr: float = 2e-3) -> None:
    """Equal to float rounding: the sums run in another order on two processes.

    AdamW divides each update by the gradient's own running scale, so a weight whose gradient is
    numerically zero (1e-12 one way, -1e-12 the other) can move by up to the learning rate either way;
    a few in ten thousand do, more as steps go on. Every other weight agrees to 1e-5.
    """
    assert a.keys() == b.keys()
    diff = torch.cat([(a[k].float() - b[k].float()).abs().flatten() for k in a])
    assert (diff > 1e-5).float().mean() < 1e-3, int((diff > 1e-5).sum())
    assert diff.max() < 2 * lr


def test_two_processes_train_the_weights_one_process_trains(tiny_pack, tmp_path):
    args = [*ARGS, "--data", str(tiny_pack), "--epochs", "2"]
    main([*args, "--out", str(tmp_path / "one")])
    proc = torchrun([*args, "--out", str(tmp_path / "two")])
    output = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, output[-3000:]
    assert_same_weights(weights(tmp_path / "one"), weights(tmp_path / "two"))
    # The same kind of run folder, written once (by rank 0), with the global batch's history.
    one, two = ((tmp_path / d / "history.csv").read_text().splitlines() for d in ("one", "two"))
    assert len(two) == len(one) == 3 and two[0] == one[0]
    assert {p.name for p in (tmp_path / "two").iterdir()} == {p.name for p in (tmp_path / "one").iterdir()}


def test_a_run_killed_mid_epoch_resumes_on_another_number_of_processes(tiny_pack, tmp_path):
    args = [*ARGS, "--data", str(tiny_pack), "--epochs", "2"]
    main([*args, "--out", str(tmp_path / "straight")])
    run = tmp_path / "killed"
    proc = torchrun([*args, "--out", str(run)], start_new_session=True)
    history = run / "history.csv"
    deadline = time.monotonic() + 300
    while not ((run / "resume.pt").is_file() and history.read_text().count("\n") == 2):  # epoch 1 saved
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0].decode()[-3000:]
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # in epoch 2, as a lost machine would
    proc.wait()
    assert history.read_text().count("\n") == 2  # epoch 2 never finished
    main(["--out", str(run), "--resume"])  # one process now
    assert history.read_text().count("\n") == 3
    assert_same_weights(weights(tmp_path / "straight"), weights(run))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_two_stage_training_runs_on_the_gpu(tiny_pack, tmp_path):
    main(["--model", "b", "--data", str(tiny_pack), "--out", str(tmp_path / "gpu"), "--epochs", "2",
          "--batch-size", "8", "--device", "cuda"])
    assert (tmp_path / "gpu" / "model.safetensors").is_file()
