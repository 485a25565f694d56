"""Every route of the local Hub against hostile values: 4xx for each, no file's content in any answer or log."""

import json
import secrets
from collections import Counter
from urllib.parse import quote

import httpx
import pytest
from huggingface_hub import HfApi

from localhub.errors import HubError
from localhub.paths import check_path, is_ref_name, is_repo_name
from tests.conftest import _TMP, TOKEN
from tests.test_localhub_abuse import add, commit_lines

AUTH = {"Authorization": f"Bearer {TOKEN}"}
CANARY = f"canary-{secrets.token_hex(8)}"


@pytest.fixture(scope="module")
def target(hub, tmp_path_factory) -> dict:
    """A repo with a file and a PR, a secret file outside the Hub, and a symlink planted among the repo's refs."""
    api = HfApi()
    api.create_repo("demo/fuzz", exist_ok=True)
    api.upload_file(path_or_fileobj=b"hello", path_in_repo="a.txt", repo_id="demo/fuzz")
    api.create_commit("demo/fuzz", [], commit_message="a PR", create_pr=True)
    secret = tmp_path_factory.mktemp("outside") / "secret.txt"
    secret.write_text(f"{CANARY}\n")
    heads = _TMP / "hub" / "repos" / "model" / "demo" / "fuzz" / "refs" / "heads"
    (heads / "planted").symlink_to(secret)
    return {"url": hub, "secret": str(secret), "log": _TMP / "hub" / "server.log"}


def hostile_values(secret: str) -> list[str]:
    return [
        secret, secret.lstrip("/"), "/etc/passwd", "/", "..", "../..", "../" * 12 + secret.lstrip("/"),
        "refs/heads/../../../../" + secret.lstrip("/"), "refs/pr/../1", "refs/heads/", "refs/tags/..",
        "%2e%2e%2f%2e%2e", "..%2f..%2f", "%252e%252e%252f", "....//....//", "..\\..\\windows",
        "main\0", "ma\0in", "\0", "x" * 10_000, "main/" + "y" * 10_000,
        "\u2025", "\uff0e\uff0e\uff0f\uff0e\uff0e", "\uff4d\uff41\uff49\uff4e", "main\u200b", "m\u0430in",
        "planted", "refs/heads/planted", "~root", "$(id)", "*", "?", "#", "%", "%%", "\r\nX-Injected: 1",
        "\u0661", "refs/pr/\u0661", "refs/pr/0", "refs/pr/-1", "CON", ".git", ".lock", "main.lock",
    ]


def encoded(value: str) -> str:
    """Every byte but letters and digits percent-encoded: dots too, or the client would drop '..' segments."""
    return "".join(chr(b) if chr(b).isascii() and chr(b).isalnum() else f"%{b:02X}" for b in value.encode())


def valid_path(value: str) -> bool:
    try:
        check_path(value)
        return True
    except HubError:
        return False


# A slot's own rule for values that are not hostile there (a file may be called "$(id)"; a branch "CON"):
# those may succeed. Every other value must get a 4xx.
PATH, REF, REPO = valid_path, is_ref_name, is_repo_name


def FOLDER(value: str) -> bool:  # noqa: N802 - a rule, like the three above
    return valid_path(value.removesuffix("/"))


def requests_for(value: str) -> list[tuple[str, str, dict, object]]:
    """(method, path, keyword arguments, the slot's rule or None) for each route and slot the value can reach."""
    v = encoded(value)
    repo = "/api/models/demo/fuzz"
    commit = commit_lines(add("fuzzed.txt"))
    return [
        ("GET", f"{repo}/revision/{v}", {}, None), ("GET", f"{repo}/tree/{v}", {}, None),
        ("GET", f"{repo}/tree/main/{v}", {}, None), ("GET", f"{repo}/commits/{v}", {}, None),
        ("GET", f"/demo/fuzz/resolve/{v}/a.txt", {}, None), ("HEAD", f"/demo/fuzz/resolve/{v}/a.txt", {}, None),
        ("GET", f"/demo/fuzz/resolve/main/{v}", {}, None), ("GET", f"/api/models/{v}/fuzz", {}, None),
        ("GET", f"/static-spaces/demo/fuzz/{v}", {}, None), ("HEAD", f"/static-spaces/demo/fuzz/{v}", {}, None),
        ("GET", f"/static-spaces/demo/{v}/index.html", {}, None),
        ("GET", f"/api/models/demo/{v}", {}, None), ("GET", f"/api/{v}", {}, None),
        ("POST", f"{repo}/paths-info/{v}", {"data": {"paths": ["a.txt"]}}, None),
        ("POST", f"{repo}/paths-info/main", {"data": {"paths": [value]}}, FOLDER),
        ("POST", f"{repo}/preupload/{v}", {"json": {"files": [{"path": "b.txt", "size": 1, "sample": ""}]}}, None),
        ("POST", f"{repo}/preupload/main", {"json": {"files": [{"path": value, "size": 1, "sample": ""}]}}, PATH),
        ("POST", f"{repo}/commit/{v}", {"content": commit}, None),
        ("POST", f"{repo}/commit/main", {"content": commit_lines(add(value))}, PATH),
        ("POST", f"{repo}/branch/{v}", {"json": {}}, REF),
        ("POST", f"{repo}/branch/fuzz-{secrets.token_hex(4)}", {"json": {"startingPoint": value}}, REF),
        ("DELETE", f"{repo}/branch/{v}", {}, REF),
        ("POST", f"{repo}/tag/{v}", {"json": {"tag": f"t{secrets.token_hex(4)}"}}, None),
        ("POST", f"{repo}/tag/main", {"json": {"tag": value}}, REF), ("DELETE", f"{repo}/tag/{v}", {}, REF),
        ("GET", f"{repo}/discussions/{v}", {}, None),
        ("POST", f"{repo}/discussions/{v}/comment", {"json": {"comment": "x"}}, None),
        ("POST", f"{repo}/discussions/1/{v}", {"json": {"comment": "x"}}, None),
        ("PUT", f"/lfs-upload/{v}?sig=x&size=1", {"content": b"x"}, None),
        ("POST", "/demo/fuzz.git/info/lfs/objects/batch", {"json": {"operation": "upload", "objects": [
            {"oid": value, "size": 1}]}}, None),
        ("PUT", f"{repo}/settings", {"json": {"private": value}}, None),
        ("POST", "/api/repos/create", {"json": {"name": value, "type": "model"}}, REPO),
    ]


def test_every_route_answers_every_hostile_value_with_4xx_and_never_a_files_content(target):
    log_start = target["log"].stat().st_size
    values = hostile_values(target["secret"])
    tried, wrong = 0, []
    # A new connection for each request: a test process paused past the server's keep-alive timeout (a loaded
    # CI machine) would otherwise send into a connection the server has just closed.
    with httpx.Client(base_url=target["url"], headers=AUTH, timeout=30,
                      limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for value in values:
            for method, path, kwargs, rule in requests_for(value):
                response = client.request(method, path, **kwargs)
                tried += 1
                allowed = range(200, 500) if rule is not None and rule(value) else range(400, 500)
                if response.status_code not in allowed or CANARY in response.text or \
                        CANARY in json.dumps(dict(response.headers)):
                    wrong.append((method, path[:120], response.status_code, value[:30]))
        refs = client.get("/api/models/demo/fuzz/refs").json()
    assert wrong == [], f"{len(wrong)} of {tried}: {sorted(Counter(wrong).items())[:20]}"
    assert tried == len(values) * len(requests_for("x")) and tried > 1000
    assert sum(rule is None or not rule(v) for v in values for *_, rule in requests_for(v)) > 1000  # 4xx expected
    assert CANARY not in json.dumps(refs)
    log = target["log"].read_bytes()[log_start:].decode(errors="replace")
    assert CANARY not in log and "Traceback" not in log and "internal error" not in log
    print(f"fuzz: {len(values)} hostile values x {len(requests_for('x'))} route slots = {tried} requests")


def test_a_symlink_among_the_refs_is_neither_listed_nor_followed(target):
    heads = _TMP / "hub" / "repos" / "model" / "demo" / "fuzz" / "refs" / "heads"
    (heads / "planted-too").symlink_to(target["secret"])
    refs = httpx.get(f"{target['url']}/api/models/demo/fuzz/refs").text
    assert "planted-too" not in refs and CANARY not in refs
    for revision in ("planted-too", "refs/heads/planted-too"):
        answer = httpx.get(f"{target['url']}/api/models/demo/fuzz/revision/{encoded(revision)}")
        assert answer.status_code == 404 and CANARY not in answer.text


def test_a_revision_that_is_a_file_and_one_that_is_not_get_the_same_answer(target):
    present = httpx.get(f"{target['url']}/api/models/demo/fuzz/revision/{quote(target['secret'], safe='')}")
    absent = httpx.get(f"{target['url']}/api/models/demo/fuzz/revision/{quote(target['secret'] + 'x', safe='')}")
    assert present.status_code == absent.status_code == 404
    assert present.json()["error"].replace(target["secret"], "S") == absent.json()["error"].replace(
        target["secret"] + "x", "S")
    made = httpx.post(f"{target['url']}/api/models/demo/fuzz/branch/x", headers=AUTH,
                      json={"startingPoint": target["secret"]})
    assert made.status_code == 404 and CANARY not in made.text


def test_paths_info_refuses_a_huge_form_before_parsing_it(target):
    huge = "&".join(["paths=a"] * 300_000).encode()  # 2.4 MB of form
    response = httpx.post(f"{target['url']}/api/models/demo/fuzz/paths-info/main", content=huge,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413
    many = "&".join(["paths=a"] * 20_000).encode()  # under the byte cap, over the field cap
    response = httpx.post(f"{target['url']}/api/models/demo/fuzz/paths-info/main", content=many,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400
    assert HfApi().get_paths_info("demo/fuzz", ["a.txt"])[0].path == "a.txt"  # the client's own form still works
