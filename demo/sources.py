"""Where the app's models come from: the Hub at a pinned revision, else the copies in weights/.

The repo ids and the revision live here, in one place; environment variables or the app's
command-line flags override them:

    AGEGENDER_MODEL_A   Hub repo id (or a local folder) for Model A
    AGEGENDER_MODEL_B   the same for Model B
    AGEGENDER_REVISION  Hub revision (tag, branch or commit) for both
    AGEGENDER_OFFLINE=1 never contact the Hub; HF_HUB_OFFLINE=1 does the same
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from demo.cards import CARD_NAME
from demo.checkpoint import CONFIG_NAME, WEIGHTS_NAME, LoadedModel, ModelLoadError, load_model

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
HUB_REPOS = {"a": "agegender-demo/age-gender-model-a", "b": "agegender-demo/age-gender-model-b"}
# training.push --tag writes this tag, so the app never picks up an untested upload by accident.
HUB_REVISION = "v1"
LOCAL_DIRS = {"a": REPO_ROOT / "weights" / "model_a", "b": REPO_ROOT / "weights" / "model_b"}


@dataclass(frozen=True)
class ModelSpec:
    key: str
    repo_id: str
    revision: str
    local_dir: Path


@dataclass(frozen=True)
class ResolvedModel:
    key: str
    folder: Path
    source: str  # for the page, e.g. "Hub agegender-demo/...@v1" or "the app's own copy, weights/model_a"
    why_local: str | None = None  # for the log: why the Hub's copy is not the one used


def specs_from_env(keys: list[str] | None = None) -> list[ModelSpec]:
    revision = os.environ.get("AGEGENDER_REVISION", HUB_REVISION)
    return [ModelSpec(key, os.environ.get(f"AGEGENDER_MODEL_{key.upper()}", HUB_REPOS[key]), revision, LOCAL_DIRS[key])
            for key in (keys or list(HUB_REPOS))]


def offline_from_env() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("AGEGENDER_OFFLINE", "HF_HUB_OFFLINE"))


def resolve(spec: ModelSpec, offline: bool = False) -> ResolvedModel:
    """A local folder holding the model: the repo id itself if it is a folder, the Hub, or weights/."""
    if Path(spec.repo_id).is_dir():
        return ResolvedModel(spec.key, Path(spec.repo_id), f"local folder {spec.repo_id}")
    reason = "offline mode"
    if not offline:
        try:
            from huggingface_hub import snapshot_download

            # The card comes too: the page shows what the model measured (demo.cards).
            folder = snapshot_download(spec.repo_id, revision=spec.revision,
                                       allow_patterns=[WEIGHTS_NAME, CONFIG_NAME, CARD_NAME])
            return ResolvedModel(spec.key, Path(folder), f"Hub {spec.repo_id}@{spec.revision}")
        except Exception as error:  # no network, unknown repo, missing revision: all fall back
            reason = hub_failure(error, spec)
            log.debug("model %s: the Hub said: %s", spec.key, error)
    if not (spec.local_dir / WEIGHTS_NAME).is_file():
        missing = spec.local_dir / WEIGHTS_NAME
        raise ModelLoadError(f"model {spec.key.upper()}: {reason}, and no local copy at {missing}")
    # The page says where the weights are, not that the Hub failed: a visitor cannot act on that, and
    # before the Hub repos are published it is the normal case. The log keeps the reason.
    return ResolvedModel(spec.key, spec.local_dir, f"the app's own copy, {_short(spec.local_dir)}", reason)


def hub_failure(error: Exception, spec: ModelSpec) -> str:
    """Why the Hub gave no model, in words for the page and the log (the library's message is long)."""
    from huggingface_hub import errors

    if isinstance(error, errors.RevisionNotFoundError):
        return f"the Hub has no revision {spec.revision} of {spec.repo_id}"
    if isinstance(error, errors.RepositoryNotFoundError | errors.GatedRepoError):
        return f"the Hub has no public repo {spec.repo_id}"
    if isinstance(error, errors.OfflineModeIsEnabled):
        return "the Hub client is in offline mode"
    return f"the Hub could not be reached for {spec.repo_id}"


def _short(path: Path) -> str:
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def load_models(specs: list[ModelSpec], offline: bool = False, device: str = "cpu"
                ) -> tuple[dict[str, LoadedModel], dict[str, str]]:
    """Resolve and load every model; returns the models and a source line for each."""
    models, sources = {}, {}
    for spec in specs:
        resolved = resolve(spec, offline)
        models[spec.key] = load_model(resolved.folder, device)
        sources[spec.key] = resolved.source
        log.info("model %s (%s) from %s%s", spec.key.upper(), models[spec.key].config.name, resolved.source,
                 f" ({resolved.why_local})" if resolved.why_local else "")
    return models, sources
