"""Hub first, then weights/: tested with a local folder and a seeded Hub cache, never the network."""

import shutil

import huggingface_hub.constants
import pytest

from demo import sources
from demo.checkpoint import ModelLoadError
from demo.sources import ModelSpec, resolve


def _spec(repo_id, local_dir, revision="v1"):
    return ModelSpec("a", repo_id, revision, local_dir)


def test_repo_id_may_be_a_local_folder(tmp_path):
    shutil.copytree(sources.LOCAL_DIRS["a"], tmp_path / "model")
    resolved = resolve(_spec(str(tmp_path / "model"), tmp_path / "nowhere"))
    assert resolved.folder == tmp_path / "model" and resolved.source.startswith("local folder")


def test_offline_uses_weights_folder_and_says_so():
    resolved = resolve(_spec("someone/unreachable", sources.LOCAL_DIRS["a"]), offline=True)
    assert resolved.folder == sources.LOCAL_DIRS["a"]
    assert (resolved.source, resolved.why_local) == ("the app's own copy, weights/model_a", "offline mode")


def test_unreachable_hub_falls_back_to_weights(monkeypatch, caplog):
    # The Hub client refuses at once, as with a dead network.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    resolved = resolve(_spec("someone/not-cached", sources.LOCAL_DIRS["a"]))
    assert resolved.folder == sources.LOCAL_DIRS["a"]
    assert resolved.source == "the app's own copy, weights/model_a"  # the page: no failure a visitor cannot fix
    assert resolved.why_local == "the Hub could not be reached for someone/not-cached"  # the log: why
    assert "Error" not in resolved.why_local  # plain words, no exception class names


def test_no_hub_and_no_local_copy_names_the_file(tmp_path):
    with pytest.raises(ModelLoadError, match=r"no local copy at .*model.safetensors"):
        resolve(_spec("someone/unreachable", tmp_path / "missing"), offline=True)


def test_seeded_hub_cache_is_used_at_the_pinned_revision(tmp_path, monkeypatch):
    """Lay out a Hub cache as huggingface_hub writes it; the client then serves it offline."""
    cache = tmp_path / "hub"
    repo = cache / "models--someone--model-a"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in ("model.safetensors", "config.json"):
        shutil.copy(sources.LOCAL_DIRS["a"] / name, snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "v1").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    resolved = resolve(_spec("someone/model-a", tmp_path / "unused", revision="v1"))
    assert resolved.source == "Hub someone/model-a@v1"
    assert resolved.folder == snapshot


def test_env_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("AGEGENDER_MODEL_B", str(tmp_path))
    monkeypatch.setenv("AGEGENDER_REVISION", "abc123")
    a, b = sources.specs_from_env()
    assert a.repo_id == sources.HUB_REPOS["a"] and b.repo_id == str(tmp_path)
    assert a.revision == b.revision == "abc123"
    monkeypatch.setenv("AGEGENDER_OFFLINE", "1")
    assert sources.offline_from_env()
