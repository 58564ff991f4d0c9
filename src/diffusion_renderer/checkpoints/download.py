"""``diffusion-renderer download``: fetch the official checkpoints with huggingface_hub.

Only the files the models need are fetched (the official script also pulls guardrail folders and READMEs),
into the official layout that :mod:`diffusion_renderer.checkpoints.official` reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from diffusion_renderer.checkpoints.official import TOKENIZER_FILES
from diffusion_renderer.models.configs import OFFICIAL_DIT_DIRS, OFFICIAL_TOKENIZER_DIR


@dataclass(frozen=True)
class OfficialRepo:
    repo_id: str
    local_dir: str
    files: tuple[str, ...]


# The model repos moved from zianw/ to nvidia/ in October 2025; both hold model.pt at their root.
OFFICIAL_REPOS: tuple[OfficialRepo, ...] = (
    OfficialRepo(f"nvidia/{OFFICIAL_DIT_DIRS['inverse']}", OFFICIAL_DIT_DIRS["inverse"], ("model.pt",)),
    OfficialRepo(f"nvidia/{OFFICIAL_DIT_DIRS['forward']}", OFFICIAL_DIT_DIRS["forward"], ("model.pt",)),
    OfficialRepo(f"nvidia/{OFFICIAL_TOKENIZER_DIR}", OFFICIAL_TOKENIZER_DIR, TOKENIZER_FILES),
)

Fetch = Callable[..., str]


def select_repos(components: Sequence[str] | None = None) -> list[OfficialRepo]:
    """Repos for ``components`` (``inverse``, ``forward``, ``tokenizer``); all when ``None``."""
    names = {"inverse": OFFICIAL_REPOS[0], "forward": OFFICIAL_REPOS[1], "tokenizer": OFFICIAL_REPOS[2]}
    if components is None:
        return list(OFFICIAL_REPOS)
    unknown = sorted(set(components) - set(names))
    if unknown:
        raise ValueError(f"unknown component(s) {', '.join(unknown)} (known: {', '.join(names)})")
    return [names[c] for c in components]


def download_official(
    checkpoint_dir: str | Path,
    components: Sequence[str] | None = None,
    token: str | None = None,
    fetch: Fetch | None = None,
) -> Path:
    """Download into ``checkpoint_dir/<official folder>/``; files already present are not fetched again.

    ``fetch`` defaults to ``huggingface_hub.snapshot_download`` (injected in tests, where there is no hub).
    """
    if fetch is None:
        from huggingface_hub import snapshot_download as fetch
    root = Path(checkpoint_dir)
    for repo in select_repos(components):
        target = root / repo.local_dir
        if all((target / name).is_file() for name in repo.files):
            continue
        fetch(repo_id=repo.repo_id, local_dir=str(target), allow_patterns=list(repo.files), token=token)
        missing = [name for name in repo.files if not (target / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{repo.repo_id}: download did not provide {', '.join(missing)}")
    return root
