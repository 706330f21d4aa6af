"""Lance tables on an S3-compatible object store: a real moto server on 127.0.0.1, with
signature checking on (a wrong secret is refused, as by S3).

Fast: clear errors for a missing bucket and a wrong credential, shard stores and table
listings on the store. Slow (`make test-slow`): the main job with every table on the store
gives the local run's TREC runs; a rerun does nothing; SIGKILL mid-embed and mid-rerank resume
to the uninterrupted outputs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import lance
import numpy as np
import pyarrow as pa
import pytest

from conftest import adi_job, data_dir, kill_when
from listcon.pipeline.store.lance_tables import TableError, list_tables, open_table
from listcon.pipeline.store.ranked_lists import read_trec
from listcon.pipeline.store.shards import ShardStore
from listcon.pipeline.store.workdir import Workdir

BUCKET = "listcon-test"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server process with one bucket and one IAM user's key; yields the AWS environment."""
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    # the first four requests (bucket, user, policy, key) need no signature; every later one does
    server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"},
                              stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError(f"moto_server did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        anonymous = dict(endpoint_url=endpoint, aws_access_key_id="setup", aws_secret_access_key="setup",
                         region_name="us-east-1")
        boto3.client("s3", **anonymous).create_bucket(Bucket=BUCKET)
        iam = boto3.client("iam", **anonymous)
        iam.create_user(UserName="listcon")
        iam.put_user_policy(UserName="listcon", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="listcon")["AccessKey"]
        yield {"AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
               "AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


@pytest.fixture
def s3_env(s3, monkeypatch):
    for key, value in s3.items():
        monkeypatch.setenv(key, value)
    return s3


def test_a_missing_bucket_and_a_wrong_secret_are_one_clear_error_each(s3_env, monkeypatch, caplog, tmp_path):
    from listcon.jobs.cli import main

    with pytest.raises(TableError, match="answered NoSuchBucket; check the bucket"):
        open_table("s3://no-such-bucket/w/passages.lance")
    assert open_table(f"s3://{BUCKET}/nothing-here/passages.lance") is None  # no table yet is not an error
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(TableError, match="answered SignatureDoesNotMatch"):
        open_table(f"s3://{BUCKET}/nothing-here/passages.lance")
    caplog.clear()
    assert main(["embed", str(data_dir("adi")), "--workdir", str(tmp_path / "w"), "--lance-root", f"s3://{BUCKET}/w",
                 "--no-progress"]) == 2
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "SignatureDoesNotMatch" in errors[0].getMessage()
    assert "Traceback" not in caplog.text and "<Error>" not in caplog.text


def test_shards_and_table_listings_live_on_the_store(s3_env):
    root = f"s3://{BUCKET}/shards-test/rankings/.test.run.shards"
    stale = ShardStore(root, {"run": "old"})
    stale.write(0, pa.table({"x": [0]}))
    store = ShardStore(root, {"run": "new"})
    assert not store.done(0)
    store.write(1, pa.table({"x": [1, 2]}))
    store.write(0, pa.table({"x": [0]}))
    assert store.done(0) and store.done(1) and stale.done(0)
    store.discard_others()
    assert not stale.done(0) and store.done(1)
    assert pa.Table.from_batches(list(store.reader(2, pa.schema([("x", pa.int64())]))))["x"].to_pylist() == [0, 1, 2]
    store.clear()
    assert not store.done(0)

    work = Workdir(Path("/unused"), f"s3://{BUCKET}/listing")
    lance.write_dataset(pa.table({"a": [1]}), work.candidates("test"))
    lance.write_dataset(pa.table({"a": [1]}), work.candidates("train"))
    assert list_tables(work.all_candidates) == [work.candidates("test"), work.candidates("train")]
    assert list_tables(f"s3://{BUCKET}/listing/none") == []


RUNS = ["first_stage", "dense", "lexical", "hybrid-rrf", "hybrid-convex", "listcon", "listcon-top20"]
TABLES = ["passages.lance", "queries.lance", "texts.lance", "candidates/test.lance", "rankings/test.lance",
          "training/test.lance"]


def cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    out = subprocess.run([str(BIN / "listcon"), *args, "--no-progress"], env=env, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def killed(args: list[str], env: dict, ready) -> bool:
    return kill_when([str(BIN / "listcon"), *args, "--no-progress"], ready, env, timeout=600) is not None


def keys(s3: dict, prefix: str) -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL"], aws_access_key_id=s3["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=s3["AWS_SECRET_ACCESS_KEY"], region_name=s3["AWS_REGION"])
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def vectors(uri: str) -> tuple[list[str], np.ndarray]:
    table = lance.dataset(uri).to_table(columns=["id", "vector"]).sort_by("id")
    return table["id"].to_pylist(), np.stack(table["vector"].to_numpy(zero_copy_only=False))


@pytest.mark.slow
def test_the_main_job_on_the_object_store_equals_the_local_run(s3, tmp_path, monkeypatch):
    env = {**os.environ, **s3, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
    data = data_dir("adi")
    local, remote = tmp_path / "local", tmp_path / "remote"
    root = f"s3://{BUCKET}/main-job"
    for work, lance_root in ((local, ""), (remote, f'lance_root = "{root}"')):
        (tmp_path / f"{work.name}.toml").write_text(adi_job(work, top=lance_root, rerank="shard_size = 4"))
        cli(["run", str(tmp_path / f"{work.name}.toml")], env)
    for name in RUNS:
        assert read_trec(Workdir(remote).run("test", name)) == read_trec(Workdir(local).run("test", name)), name
    assert not list(remote.glob("**/*.lance")), "every table is on the object store, none in the workdir"
    for key in (k for k in keys(s3, "main-job/") if "/rankings/." in k):
        pytest.fail(f"a rerank shard was left behind: {key}")

    for key, value in s3.items():
        monkeypatch.setenv(key, value)
    versions = [lance.dataset(f"{root}/{t}").version for t in TABLES]
    cli(["run", str(tmp_path / "remote.toml")], env)  # nothing new: nothing written
    assert [lance.dataset(f"{root}/{t}").version for t in TABLES] == versions

    # SIGKILL mid-embed (after the first of 6 commits; batches of 8 texts, so commits come apart),
    # then resume: the vectors of an uninterrupted run with the same flags
    fresh, whole = f"s3://{BUCKET}/killed", f"s3://{BUCKET}/whole"
    embed = ["embed", str(data), "--workdir", str(tmp_path / "killed"), "--chunk-rows", "16", "--batch-size", "8"]
    assert killed([*embed, "--lance-root", fresh], env,
                  lambda: any("/_versions/" in k for k in keys(s3, "killed/passages.lance/")))
    assert 0 < lance.dataset(f"{fresh}/passages.lance").count_rows() < 82
    cli([*embed, "--lance-root", fresh], env)
    cli([*embed, "--workdir", str(tmp_path / "whole"), "--lance-root", whole], env)
    got, want = vectors(f"{fresh}/passages.lance"), vectors(f"{whole}/passages.lance")
    assert got[0] == want[0] and np.array_equal(got[1], want[1])

    # SIGKILL mid-rerank (after some shards reached the store), then resume
    rerank = ["rerank", str(data), "--workdir", str(remote), "--lance-root", root, "--split", "test",
              "--model-dir", str(remote / "head"), "--run-name", "killed", "--shard-size", "4"]
    assert killed(rerank, env, lambda: len(keys(s3, "main-job/rankings/.test.killed.shards/")) >= 2)
    cli(rerank, env)
    assert read_trec(Workdir(remote).run("test", "killed")) == read_trec(Workdir(local).run("test", "listcon"))
    assert not keys(s3, "main-job/rankings/.test.killed.shards/")
