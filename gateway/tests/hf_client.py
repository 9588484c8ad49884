"""Runs the real `huggingface_hub` client against a Cairn gateway.

Goal: prove that an unmodified client pointed at the gateway with HF_ENDPOINT downloads exact
bytes (snapshot_download, hf_hub_download, HfFileSystem ranged reads) and maps the gateway's
errors to the right exceptions.

Environment (set by gateway/tests/it/hf.rs, or by hand against any gateway):
  CAIRN_GATEWAY_URL   base URL, e.g. http://127.0.0.1:8080
  CAIRN_FIXTURE_DIR   the folder that was published (files are compared against it)
  CAIRN_MODEL_REPO    org/name of a public model repo holding that folder
  CAIRN_DATASET_REPO  org/name of a public dataset repo holding that folder
  CAIRN_PRIVATE_REPO  org/name of a model repo restricted to API keys
  CAIRN_COMMIT        the 40-hex commit id of the published folder
  CAIRN_PRIVATE_TOKEN an API key (cairn_<id>_<secret>) with read:repo:<private repo>; optional,
                      the private-repository read checks are skipped without it
Prints one line per check and 'N passed, N failed'; exits 1 if any check failed.
"""

import atexit
import os
import shutil
import sys
import tempfile
import traceback

URL = os.environ["CAIRN_GATEWAY_URL"].rstrip("/")
os.environ["HF_ENDPOINT"] = URL  # must be set before huggingface_hub is imported
# The client's cache goes to a folder of this run only, removed when the run ends.
_HF_HOME = tempfile.mkdtemp(prefix="cairn-hf-home-", dir=os.environ.get("CAIRN_TMP_DIR"))
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.pop("HF_HUB_OFFLINE", None)
os.environ.pop("HF_TOKEN", None)

from huggingface_hub import HfApi, HfFileSystem, hf_hub_download, snapshot_download  # noqa: E402
from huggingface_hub.errors import (  # noqa: E402
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

FIXTURE = os.environ["CAIRN_FIXTURE_DIR"]
MODEL = os.environ["CAIRN_MODEL_REPO"]
DATASET = os.environ["CAIRN_DATASET_REPO"]
PRIVATE = os.environ["CAIRN_PRIVATE_REPO"]
COMMIT = os.environ["CAIRN_COMMIT"]
TOKEN = os.environ.get("CAIRN_PRIVATE_TOKEN")


def require(ok, what):
    """Fails the check unless `ok`. Not `assert`: Python drops asserts under -O or
    PYTHONOPTIMIZE, and every check would then pass."""
    if not ok:
        raise AssertionError(what)


def fixture_files():
    out = {}
    for root, _, files in os.walk(FIXTURE):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, FIXTURE).replace(os.sep, "/")] = p
    return out


def read(p):
    with open(p, "rb") as fh:
        return fh.read()


def same_tree(folder):
    want = fixture_files()
    for rel, src in want.items():
        got = os.path.join(folder, rel)
        require(os.path.exists(got), f"{rel} missing from {folder}")
        require(read(got) == read(src), f"{rel} differs")


def check_snapshot_model():
    folder = snapshot_download(MODEL)
    same_tree(folder)
    require(os.path.basename(folder) == COMMIT, folder)


def check_snapshot_dataset():
    same_tree(snapshot_download(DATASET, repo_type="dataset"))


def check_snapshot_by_commit_to_local_dir():
    d = tempfile.mkdtemp(dir=_HF_HOME)
    snapshot_download(MODEL, revision=COMMIT, local_dir=d)
    same_tree(d)


def check_hf_hub_download():
    for rel, src in fixture_files().items():
        got = hf_hub_download(MODEL, rel)
        require(read(got) == read(src), rel)
    got = hf_hub_download(DATASET, "config.json", repo_type="dataset", revision=COMMIT)
    require(read(got) == read(os.path.join(FIXTURE, "config.json")), "config.json differs")


def check_model_info():
    info = HfApi().model_info(MODEL)
    require(info.sha == COMMIT, info.sha)
    require(info.id == MODEL, 'info.id == MODEL')
    names = {s.rfilename for s in info.siblings}
    require(names == set(fixture_files()), names)
    require(info.private is False, 'info.private is False')
    info = HfApi().dataset_info(DATASET, revision=COMMIT)
    require(info.sha == COMMIT, 'info.sha == COMMIT')


def check_list_tree_and_paths_info():
    api = HfApi()
    files = {f.path: f.size for f in api.list_repo_tree(MODEL, recursive=True) if hasattr(f, "size") and f.size is not None and not f.path.endswith("/")}
    want = {k: os.path.getsize(v) for k, v in fixture_files().items()}
    for k, v in want.items():
        require(files.get(k) == v, (k, files.get(k), v))
    top = {f.path for f in api.list_repo_tree(MODEL)}
    require("sub" in top and "sub/dir/README.md" not in top, top)
    infos = api.get_paths_info(MODEL, ["config.json", "sub", "nope"])
    require({i.path for i in infos} == {"config.json", "sub"}, infos)


def check_hffs_ranged_read():
    fs = HfFileSystem()
    src = read(os.path.join(FIXTURE, "model.safetensors"))
    path = f"{MODEL}/model.safetensors"
    require(fs.size(path) == len(src), 'fs.size(path) == len(src)')
    with fs.open(path, "rb", block_size=64 * 1024) as f:
        for start, n in [(0, 1), (len(src) - 1, 1), (1_048_570, 20), (2_000_000, 300_000)]:
            f.seek(start)
            got = f.read(n)
            require(got == src[start : start + n], (start, n, len(got)))
    ds = f"datasets/{DATASET}/sub/dir/README.md"
    require(fs.cat(ds) == read(os.path.join(FIXTURE, "sub/dir/README.md")), "README.md differs")
    listed = {os.path.basename(p) for p in fs.ls(MODEL, detail=False)}
    require("model.safetensors" in listed, listed)


def expect(exc, fn):
    try:
        fn()
    except exc:
        return
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"expected {exc.__name__}, got {type(e).__name__}: {e}") from e
    raise AssertionError(f"expected {exc.__name__}, nothing was raised")


def expect_bad_token(fn):
    """`fn` raises the client's plain HTTP error for a 401, not "not found" nor "gated"."""
    try:
        fn()
    except (RepositoryNotFoundError, GatedRepoError) as e:
        raise AssertionError(f"a bad token was taken for {type(e).__name__}: {e}") from e
    except HfHubHTTPError as e:
        status = getattr(e.response, "status_code", None)
        if status != 401:
            raise AssertionError(f"expected a 401, got {status}: {e}") from e
        return
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"expected HfHubHTTPError, got {type(e).__name__}: {e}") from e
    raise AssertionError("expected a 401, nothing was raised")


def check_errors():
    expect(RepositoryNotFoundError, lambda: hf_hub_download("cairn-test/does-not-exist", "config.json"))
    expect(RepositoryNotFoundError, lambda: snapshot_download("cairn-test/does-not-exist"))
    expect(RevisionNotFoundError, lambda: hf_hub_download(MODEL, "config.json", revision="0" * 40))
    expect(RevisionNotFoundError, lambda: HfApi().model_info(MODEL, revision="v9"))
    expect(EntryNotFoundError, lambda: hf_hub_download(MODEL, "no/such/file.bin"))
    # Without a key a private repository is one that does not exist, as on the Hub.
    expect(RepositoryNotFoundError, lambda: hf_hub_download(PRIVATE, "config.json"))
    expect(RepositoryNotFoundError, lambda: HfApi().model_info(PRIVATE))
    if TOKEN:
        # A well-formed key with a wrong secret is a bad token: 401, on private and public
        # repositories alike, as the Hub answers an invalid token.
        wrong = TOKEN[:-1] + ("E" if TOKEN.endswith("A") else "A")
        for repo in (PRIVATE, MODEL):
            # A fresh cache: with a cached copy the client would serve it despite the refusal.
            empty = tempfile.mkdtemp(dir=_HF_HOME)
            expect_bad_token(
                lambda: hf_hub_download(repo, "config.json", token=wrong, cache_dir=empty)
            )
            expect_bad_token(lambda: HfApi().model_info(repo, token=wrong))


def check_private_with_token():
    if not TOKEN:
        print("     (no CAIRN_PRIVATE_TOKEN: private reads not checked)")
        return
    info = HfApi().model_info(PRIVATE, token=TOKEN)
    require(info.private is True, info.private)
    require(info.sha == COMMIT, info.sha)
    got = hf_hub_download(PRIVATE, "config.json", token=TOKEN)
    require(read(got) == read(os.path.join(FIXTURE, "config.json")), "config.json differs")
    d = tempfile.mkdtemp(dir=_HF_HOME)
    snapshot_download(PRIVATE, token=TOKEN, local_dir=d)
    same_tree(d)
    fs = HfFileSystem(token=TOKEN)
    src = read(os.path.join(FIXTURE, "model.safetensors"))
    with fs.open(f"{PRIVATE}/model.safetensors", "rb", block_size=64 * 1024) as f:
        f.seek(1_000_000)
        require(f.read(1000) == src[1_000_000:1_001_000], "ranged read of the private repo differs")


CHECKS = [
    check_model_info,
    check_snapshot_model,
    check_snapshot_dataset,
    check_snapshot_by_commit_to_local_dir,
    check_hf_hub_download,
    check_list_tree_and_paths_info,
    check_hffs_ranged_read,
    check_errors,
    check_private_with_token,
]

if __name__ == "__main__":
    import huggingface_hub

    print(f"huggingface_hub {huggingface_hub.__version__} against {URL}")
    passed = failed = 0
    for check in CHECKS:
        try:
            check()
            passed += 1
            print(f"ok   {check.__name__}")
        except Exception:  # noqa: BLE001
            failed += 1
            print(f"FAIL {check.__name__}")
            traceback.print_exc()
    print(f"hf_client: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
