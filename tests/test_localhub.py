"""The local Hub, through the real huggingface_hub client."""

import os

import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import RepositoryNotFoundError

from localhub.ctl import free_port, start
from training.errors import UserError, hub_errors


def test_large_lfs_upload_round_trips_and_history_is_kept(hub, tmp_path):
    api = HfApi()
    api.create_repo("demo/lfs-roundtrip")
    payload = os.urandom(11 * 1024 * 1024)
    (tmp_path / "big.bin").write_bytes(payload)
    first = api.upload_file(path_or_fileobj=str(tmp_path / "big.bin"), path_in_repo="big.bin",
                            repo_id="demo/lfs-roundtrip")
    api.upload_file(path_or_fileobj=b"second", path_in_repo="note.txt", repo_id="demo/lfs-roundtrip")

    entry = next(f for f in api.list_repo_tree("demo/lfs-roundtrip") if f.path == "big.bin")
    assert entry.lfs is not None and entry.size == len(payload)
    downloaded = hf_hub_download("demo/lfs-roundtrip", "big.bin", cache_dir=tmp_path / "cache")
    assert open(downloaded, "rb").read() == payload

    commits = api.list_repo_commits("demo/lfs-roundtrip")
    assert len(commits) == 3  # initial + two uploads, newest first
    assert commits[1].commit_id == first.oid
    # The old commit still resolves by id, without the file added later.
    assert "note.txt" not in api.list_repo_files("demo/lfs-roundtrip", revision=first.oid)


def test_exist_ok_and_conflict(hub):
    api = HfApi()
    api.create_repo("demo/twice")
    api.create_repo("demo/twice", exist_ok=True)
    with pytest.raises(Exception) as info:
        api.create_repo("demo/twice")
    assert info.value.response.status_code == 409


def test_private_repo_is_invisible_without_token(hub):
    api = HfApi()
    api.create_repo("demo/secret", repo_type="dataset", private=True)
    assert api.repo_info("demo/secret", repo_type="dataset").private
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).repo_info("demo/secret", repo_type="dataset")


def test_missing_folder_is_entry_not_found(hub):
    from huggingface_hub.errors import RemoteEntryNotFoundError

    HfApi().create_repo("demo/tree", exist_ok=True)
    with pytest.raises(RemoteEntryNotFoundError):
        list(HfApi().list_repo_tree("demo/tree", path_in_repo="data"))


@pytest.mark.parametrize("token", [False, "wrong-token"])
def test_writes_need_the_right_token(hub, token):
    with pytest.raises(UserError, match="refused the credentials"), hub_errors("creating demo/x"):
        HfApi(token=token).create_repo("demo/needs-token")


def test_data_survives_a_restart(tmp_path):
    port, data_dir = free_port(), tmp_path / "hub"
    process = start(port, data_dir, token="t")
    api = HfApi(endpoint=f"http://127.0.0.1:{port}", token="t")
    api.create_repo("demo/persist")
    api.upload_file(path_or_fileobj=b"kept", path_in_repo="a.txt", repo_id="demo/persist")
    process.terminate()
    process.wait(timeout=10)
    process = start(port, data_dir, token="t")
    try:
        path = hf_hub_download("demo/persist", "a.txt", endpoint=f"http://127.0.0.1:{port}", token="t",
                               cache_dir=tmp_path / "cache")
        assert open(path, "rb").read() == b"kept"
    finally:
        process.terminate()
        process.wait(timeout=10)
