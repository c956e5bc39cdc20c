"""The GPU worker's entry point `worker.reproduce.run_seed`: folder from the blob store, log
streamed into it, run recorded in the store, judging queued after the job's last seed."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.worker.test_reproduce_runs import TINY
from worker.tracer import write_shard


@pytest.fixture()
def service(tmp_path, monkeypatch):
    from store import repo
    from store.blobs import BlobStore
    from store.db import migrate, session_scope
    from store.settings import Settings

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    write_shard(data / "fineweb_train_000000.bin", rng.integers(0, 64, 20_000))
    write_shard(data / "fineweb_val_000000.bin", rng.integers(0, 64, 1025))
    settings = Settings(home=tmp_path / "home", data_dir=data)
    settings.ensure_dirs()
    migrate(settings.database_url)
    import worker.reproduce as rep
    monkeypatch.setattr(rep, "_settings", lambda: settings)
    judged: list[str] = []
    monkeypatch.setattr(rep, "_queue_judge", judged.append)

    folder = tmp_path / "2026-05-01_Tiny"
    folder.mkdir()
    shutil.copy(TINY, folder / "train_gpt.py")
    (folder / "README.md").write_text("```bash\nMODE=socket python train_gpt.py\n```\n")
    blobs = BlobStore(settings.blob_dir)
    sha = "ab" * 32
    key = blobs.put_tree(folder, sha, "track_10min_16mb/2026-05-01_Tiny")
    with session_scope(settings.database_url) as s:
        sub, _ = repo.create_or_get_submission(s, sha256=sha, source_kind="upload", folder_key=key)
        job = repo.create_job(s, sub, "reproduce", deadline_s=3600, params={"seeds": [1, 2]})
        for seed in (1, 2):
            repo.create_run(s, sub, seed=seed, nproc=1, job=job, log_key=BlobStore.log_key(sub.id, f"seed-{seed}"))
        ids = (sub.id, job.id)
    return settings, blobs, ids, judged


def test_run_seed_records_runs_and_queues_judging_after_the_last(service):
    from store import repo
    from store.db import session_scope
    from worker.reproduce import run_seed

    settings, blobs, (sub_id, job_id), judged = service
    assert run_seed(sub_id, 1, 1, job_id) == "ok"
    assert judged == []                                   # seed 2 still queued
    assert run_seed(sub_id, 2, 1, job_id) == "ok"
    assert judged == [sub_id]
    assert run_seed(sub_id, 2, 1, job_id) == "ok"         # a redelivered message does not run again
    assert judged == [sub_id]
    with session_scope(settings.database_url) as s:
        runs = sorted(repo.get_submission(s, sub_id).runs, key=lambda r: r.seed)
        for r in runs:
            assert r.status == "ok" and r.exit_code == 0
            assert {"first_step", "train_end", "end"} <= set(r.timings)
            assert r.artifact_bytes and r.artifact_bytes > 0
            assert "sandbox" in r.gpu and "network_isolated" in r.gpu["sandbox"]
            log = blobs.get_bytes(r.log_key).decode()
            assert "legal_ttt_exact" in log and "step:1/" in log
            trace = [json.loads(x) for x in blobs.get_bytes(r.trace_key).decode().splitlines() if x.strip()]
            assert any(e["e"] == "net" and not e["allowed"] for e in trace)


def test_run_seed_without_data_is_an_infrastructure_error(service, monkeypatch, tmp_path):
    from store import repo
    from store.db import session_scope
    from worker.reproduce import run_seed

    settings, _, (sub_id, job_id), judged = service
    settings.data_dir = tmp_path / "missing"
    monkeypatch.delenv("PGOLF_DATA_DIR", raising=False)
    assert run_seed(sub_id, 1, 1, job_id) == "infra_error"
    with session_scope(settings.database_url) as s:
        run = next(r for r in repo.get_submission(s, sub_id).runs if r.seed == 1)
        assert run.status == "infra_error" and "data" in run.error
