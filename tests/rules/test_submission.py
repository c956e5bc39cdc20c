"""load_submission on the fixture folders, on archives of them, and on broken input."""
from __future__ import annotations

import base64
import json
import lzma
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from rules import errors
from rules.errors import InputError
from rules.submission import load_submission

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
RECORDS = SHARED / "fixtures" / "records"
needs_fixtures = pytest.mark.skipif(not RECORDS.is_dir(), reason="../shared fixtures not present")


def _folders() -> list[Path]:
    return sorted(p for p in RECORDS.glob("track_*/*") if p.is_dir())


@needs_fixtures
def test_every_fixture_folder_loads():
    index = {(r["track"], r["folder"]): r for r in json.loads((RECORDS / "index.json").read_text())}
    ids = set()
    for folder in _folders():
        sub = load_submission(folder)
        entry = index[(folder.parent.name, folder.name)]
        assert sub.files == sorted(entry["files"])
        expected_logs = [f for f in entry["files"] if f.endswith((".log", ".txt"))
                         and not f.startswith(("README", "requirements"))]
        assert sorted(log.file for log in sub.logs) == sorted(expected_logs)
        assert sub.track == ("10min_16mb" if folder.parent.name == "track_10min_16mb" else "non_record_16mb")
        assert sub.submission_json is not None and sub.submission_json_error is None
        assert sub.readme and sub.name == folder.name
        assert (sub.requirements is not None) == ("requirements.txt" in entry["files"])
        assert len(sub.sha256) == 64
        ids.add(sub.sha256)
    assert len(ids) == len(_folders())          # different content, different identity


def _make_folder(base: Path) -> Path:
    root = base / "records" / "track_10min_16mb" / "2026-05-01_Test_Sub"
    (root / "logs").mkdir(parents=True)
    (root / "ttt_pr1767").mkdir()
    (root / "README.md").write_text("# test\n")
    (root / "requirements.txt").write_text("brotli\n")
    (root / "submission.json").write_text(json.dumps({"author": "a", "val_bpb": 1.1, "track": "non-record-16mb"}))
    real = "import torch\nprint('hi')\n"
    blob = base64.b85encode(lzma.compress(real.encode())).decode()
    (root / "train_gpt.py").write_text(f"import lzma as L,base64 as B\nexec(L.decompress(B.b85decode({blob!r})))\n")
    (root / "helper.py").write_text("def broken(:\n    pass\n")
    (root / "train_seed42.log").write_text("seed:42\nfinal_int8_zlib_roundtrip_exact val_loss:2.0 val_bpb:1.1\n")
    (root / "logs" / "train0.txt").write_text("seed:0\nquantized_ttt_phased val_loss:2.0 val_bpb:1.05 eval_time:1ms\n")
    (root / "ttt_pr1767" / "eval_seed1.log").write_text("=== seed=1 result ===\nquantized_ttt_phased val_loss:2 val_bpb:1.04\n")
    (root / "binary.log").write_bytes(b"\x00\x01\x02\x03" * 50)
    (root / "latin.txt").write_bytes("final_x val_loss:2.0 val_bpb:1.3\ncaf\xe9\n".encode("latin-1"))
    return root


def test_folder_contents_are_classified(tmp_path):
    root = _make_folder(tmp_path)
    sub = load_submission(root)
    assert sub.track == "10min_16mb"                      # the path wins over submission.json
    logs = {log.file: log for log in sub.logs}
    assert set(logs) == {"train_seed42.log", "logs/train0.txt", "ttt_pr1767/eval_seed1.log", "binary.log", "latin.txt"}
    assert logs["logs/train0.txt"].val_bpb == 1.05 and logs["ttt_pr1767/eval_seed1.log"].seed == 1
    assert logs["binary.log"].is_binary and logs["binary.log"].problems
    assert any("UTF-8" in p for p in logs["latin.txt"].problems) and logs["latin.txt"].val_bpb == 1.3
    srcs = {s.path: s for s in sub.sources}
    assert srcs["train_gpt.py"].text == "import torch\nprint('hi')\n"
    assert srcs["train_gpt.py"].wrapper_layers == ["b85decode", "lzma"]
    assert srcs["train_gpt.py"].raw_bytes == (root / "train_gpt.py").stat().st_size
    assert srcs["train_gpt.py"].syntax_error is None and sub.train_script is srcs["train_gpt.py"]
    assert "helper.py" in srcs["helper.py"].syntax_error and "line 1" in srcs["helper.py"].syntax_error
    assert sub.requirements == "brotli\n" and sub.readme == "# test\n"


def test_same_content_same_id_across_folder_zip_and_tarball(tmp_path):
    root = _make_folder(tmp_path / "src")
    by_folder = load_submission(root)
    zpath = tmp_path / "sub.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                zf.write(p, f"{root.name}/{p.relative_to(root).as_posix()}")
    tpath = tmp_path / "sub.tgz"
    with tarfile.open(tpath, "w:gz") as tf:
        tf.add(root, arcname=root.name)
    by_zip = load_submission(zpath, workdir=tmp_path / "w1")
    by_tar = load_submission(tpath, workdir=tmp_path / "w2")
    assert by_folder.sha256 == by_zip.sha256 == by_tar.sha256
    assert by_zip.name == by_tar.name == "2026-05-01_Test_Sub"
    assert by_zip.files == by_folder.files
    assert str(by_zip.root).startswith(str(tmp_path / "w1"))
    # a change of one byte changes the id
    (root / "README.md").write_text("# test!\n")
    assert load_submission(root).sha256 != by_folder.sha256


def test_archive_without_a_single_folder_and_track_from_archive_path(tmp_path):
    d = tmp_path / "track_non_record_16mb"
    d.mkdir()
    zpath = d / "2026-05-02_Flat.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("README.md", "x")
        zf.writestr("train.log", "final_x val_loss:2 val_bpb:1.2\n")
    sub = load_submission(zpath, workdir=tmp_path / "w")
    assert sub.name == "2026-05-02_Flat" and sub.track == "non_record_16mb"
    assert sub.submission_json is None and "No submission.json" in sub.submission_json_error


def test_archive_of_a_pr_diff_layout(tmp_path):
    root = _make_folder(tmp_path / "src")
    tpath = tmp_path / "pr.tar.gz"
    with tarfile.open(tpath, "w:gz") as tf:
        tf.add(tmp_path / "src" / "records", arcname="records")
    sub = load_submission(tpath, workdir=tmp_path / "w")
    assert sub.name == "2026-05-01_Test_Sub" and sub.track == "10min_16mb"
    assert sub.sha256 == load_submission(root).sha256


def test_track_from_submission_json_and_malformed_json(tmp_path):
    root = tmp_path / "2026-05-03_J"
    root.mkdir()
    (root / "submission.json").write_text(json.dumps({"track": "non-record-unlimited-compute-16mb"}))
    assert load_submission(root).track == "non_record_16mb"
    (root / "submission.json").write_text('{"val_bpb": 1.1,,}')
    sub = load_submission(root)
    assert sub.submission_json is None and "not valid JSON" in sub.submission_json_error
    assert sub.track is None
    (root / "submission.json").write_text("[1, 2]")
    assert "not an object" in load_submission(root).submission_json_error


def test_input_errors(tmp_path):
    with pytest.raises(InputError) as e:
        load_submission(tmp_path / "missing")
    assert e.value.code == errors.NOT_FOUND
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.md").write_text("not a records file")
    with pytest.raises(InputError) as e:
        load_submission(empty)
    assert e.value.code == errors.NOT_A_RECORDS_FOLDER
    text = tmp_path / "file.txt"
    text.write_text("hello")
    with pytest.raises(InputError) as e:
        load_submission(text)
    assert e.value.code == errors.NOT_A_RECORDS_FOLDER
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04garbage" * 10)
    with pytest.raises(InputError) as e:
        load_submission(bad, workdir=tmp_path / "w")
    assert e.value.code == errors.BAD_ARCHIVE
    evil = tmp_path / "evil.tgz"
    with tarfile.open(evil, "w:gz") as tf:
        info = tarfile.TarInfo("../escape.log")
        tf.addfile(info)
    with pytest.raises(InputError) as e:
        load_submission(evil, workdir=tmp_path / "w3")
    assert e.value.code == errors.UNSAFE_PATH
    assert not (tmp_path / "escape.log").exists() and not (tmp_path / "w3" / ".." / "escape.log").exists()


def test_symlinks_in_a_folder_are_not_followed(tmp_path):
    root = tmp_path / "2026-05-04_L"
    root.mkdir()
    (root / "README.md").write_text("x")
    secret = tmp_path / "secret.log"
    secret.write_text("final_x val_loss:2 val_bpb:0.1\n")
    (root / "train.log").symlink_to(secret)
    sub = load_submission(root)
    assert sub.logs == [] and sub.files == ["README.md"]
    assert any("symbolic link" in p for p in sub.problems)


@needs_fixtures
def test_fixture_folder_as_archive_matches_the_folder(tmp_path):
    folder = RECORDS / "track_10min_16mb" / "2026-04-09_A2_Muon097_3Seed"
    archive = Path(shutil.make_archive(str(tmp_path / folder.name), "gztar", folder.parent, folder.name))
    a, b = load_submission(folder), load_submission(archive, workdir=tmp_path / "w")
    assert a.sha256 == b.sha256
    assert [log.val_bpb for log in a.logs] == [log.val_bpb for log in b.logs]
