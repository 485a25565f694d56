"""Images go into a repo only if that repo is no more public than the dataset they came from."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.errors import RepositoryNotFoundError

from ..errors import UserError, hub_errors


def is_private(repo_id: str, repo_type: str) -> bool | None:
    """A Hub repo's visibility; None for a repo that does not exist yet."""
    try:
        with hub_errors(f"reading {repo_type} {repo_id}"):
            return bool(HfApi().repo_info(repo_id, repo_type=repo_type).private)
    except UserError as e:
        if isinstance(e.__cause__, RepositoryNotFoundError):
            return None
        raise


def check_images_may_go(source: str, target: str, target_type: str, target_private: bool, what: str,
                        allow: bool = False) -> None:
    """One line (a UserError, before anything is pushed) when ``what``, images of the Hub dataset ``source``,
    would go into a repo more public than it: an existing repo's own visibility counts, else ``target_private``.
    A local folder is the user's own: its images may go anywhere the user pushes them."""
    if allow or Path(source).exists() or not is_private(source, "dataset"):
        return
    existing = is_private(target, target_type)
    if existing if existing is not None else target_private:
        return
    raise UserError(f"{what} would put images of the private dataset {source} into the public {target_type} "
                    f"{target}: make {target} private (--private), or pass --allow_private_images to publish them")
