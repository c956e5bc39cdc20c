"""`pgolf-audit check` as a user runs it (a subprocess of the installed console script): exit codes,
the verdict JSON's contract keys (verdict.md), and one clean line on stderr — never a traceback —
for input that cannot be read."""
from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from api.demo import ILLEGAL, LEGAL, build

REPO = Path(__file__).resolve().parents[2]
EXE = REPO / ".venv" / "bin" / "pgolf-audit"
pytestmark = pytest.mark.skipif(not EXE.exists(), reason="the console script is not installed in .venv")

SUBMISSION_KEYS = {"name", "author", "github_id", "track", "claimed_val_bpb", "sha256", "files"}
RULE_KEYS = {"id", "code", "title", "outcome", "message", "measured", "limit", "evidence"}
EVIDENCE_KEYS = {"source", "file", "line", "text"}
SEED_KEYS = {"seed", "log", "val_bpb", "val_loss", "artifact_bytes", "code_bytes", "train_time_s", "eval_time_s", "steps"}
STAT_KEYS = {"n", "mean_bpb", "std_bpb", "baseline", "test", "p_value", "alpha", "margin_bpb", "significant"}
RULE_IDS = ["package-layout", "claims-match-logs", "artifact-size", "train-time", "eval-time",
            "calibration-within-budget", "seed-statistics", "ttt-score-first", "ngram-target-in-key",
            "two-pass-rescore", "gptq-on-validation", "validation-in-training", "normalized-distribution",
            "byte-accounting", "network-access"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), "check", *args], capture_output=True, text=True, timeout=120, cwd=REPO)


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli") / "records" / "track_10min_16mb"
    return {"legal": build(LEGAL, root / LEGAL.folder), "illegal": build(ILLEGAL, root / ILLEGAL.folder)}


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _assert_clean_error(p: subprocess.CompletedProcess, code: str | None = None) -> None:
    assert p.returncode == 3, (p.returncode, p.stdout[-500:], p.stderr[-500:])
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error["), p.stderr
    if code:
        assert lines[0].startswith(f"error[{code}]"), lines[0]
    assert p.stdout == ""


def test_json_follows_the_verdict_contract(examples):
    p = run(str(examples["legal"]), "--json")
    assert "Traceback" not in p.stderr
    d = json.loads(p.stdout)
    assert d["schema"] == "pgolf-audit/verdict/1"
    assert p.returncode == {"pass": 0, "fail": 1, "needs_review": 2}[d["outcome"]]
    assert d["policy"] == "leaderboard-2026-04"
    assert SUBMISSION_KEYS <= set(d["submission"]) and d["submission"]["track"] == "10min_16mb"
    assert [r["id"] for r in d["rules"]] == RULE_IDS
    for r in d["rules"]:
        assert RULE_KEYS <= set(r) and r["code"].startswith("PG") and r["message"]
        assert r["outcome"] in ("pass", "fail", "warn", "needs_review", "not_applicable")
        for e in r["evidence"]:
            assert EVIDENCE_KEYS <= set(e) and e["source"] in ("code", "log", "json", "readme", "run", "trace")
    assert len(d["seeds"]) == 3 and all(SEED_KEYS <= set(s) for s in d["seeds"])
    st = d["statistics"]
    assert STAT_KEYS <= set(st) and st["test"] == "welch-one-sided" and st["n"] == 3
    assert st["baseline"]["name"] and len(st["baseline"]["seeds"]) >= 2
    assert d["runs"] == []
    by_id = {r["id"]: r for r in d["rules"]}
    assert by_id["artifact-size"]["outcome"] == "pass" and by_id["package-layout"]["outcome"] == "pass"


def test_policy_flag_changes_the_policy(examples):
    d = json.loads(run(str(examples["legal"]), "--json", "--policy", "readme-2026-03").stdout)
    assert d["policy"] == "readme-2026-03" and d["statistics"]["alpha"] == 0.01


def test_an_illegal_submission_exits_1(examples):
    p = run(str(examples["illegal"]), "--json")
    d = json.loads(p.stdout)
    assert p.returncode == 1 and d["outcome"] == "fail"
    assert {r["id"]: r["outcome"] for r in d["rules"]}["artifact-size"] == "fail"


def test_table_and_markdown(examples):
    t = run(str(examples["illegal"]))
    assert t.returncode == 1 and t.stdout.startswith("pgolf-audit: FAIL") and "PG201" in t.stdout
    m = run(str(examples["illegal"]), "--markdown")
    assert m.returncode == 1 and "| code | rule | outcome |" in m.stdout and "<details>" in m.stdout
    assert "`train_seed" in m.stdout   # evidence as file:line


def test_a_zip_of_the_folder_gives_the_same_verdict(examples, tmp_path):
    z = tmp_path / "sub.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in examples["legal"].rglob("*"):
            zf.write(f, f"{LEGAL.folder}/{f.relative_to(examples['legal'])}")
    a = json.loads(run(str(examples["legal"]), "--json").stdout)
    b = json.loads(run(str(z), "--json").stdout)
    assert a["submission"]["sha256"] == b["submission"]["sha256"]
    assert [r["outcome"] for r in a["rules"]] == [r["outcome"] for r in b["rules"]]


@pytest.mark.parametrize("args,code", [
    (["/nonexistent/path/to/records"], "not_found"),
    ([], "usage"),
    (["--json", "--markdown", "x"], "usage"),
    (["--bogus", "x"], "usage"),
])
def test_bad_usage_and_paths_exit_3(args, code):
    _assert_clean_error(run(*args), code)


def test_unknown_policy_exits_3(examples):
    _assert_clean_error(run(str(examples["legal"]), "--policy", "readme-2099"), "unknown_policy")


def test_corrupt_zip_exits_3(tmp_path):
    z = tmp_path / "broken.zip"
    z.write_bytes(b"PK\x03\x04" + b"\x00garbage" * 40)
    _assert_clean_error(run(str(z)))


def test_a_file_that_is_not_an_archive_exits_3(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hello")
    _assert_clean_error(run(str(f)))


def test_missing_submission_json_is_a_fail_not_a_crash(examples, tmp_path):
    d = _copy(examples["legal"], tmp_path / "2026-03-19_NoJson")
    (d / "submission.json").unlink()
    p = run(str(d), "--json")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    rules = {r["id"]: r for r in json.loads(p.stdout)["rules"]}
    assert rules["package-layout"]["outcome"] == "fail" and "submission.json" in rules["package-layout"]["message"]
    assert rules["claims-match-logs"]["outcome"] == "not_applicable"


def test_log_with_missing_lines_is_reviewed_not_crashed(examples, tmp_path):
    d = _copy(examples["legal"], tmp_path / "2026-03-19_Truncated")
    for log in d.glob("train_seed*.log"):
        text = log.read_text().splitlines()
        log.write_text("\n".join(text[: len(text) // 2]) + "\n")      # cut before sizes and scores
    p = run(str(d), "--json")
    assert p.returncode in (1, 2) and "Traceback" not in p.stderr
    rules = {r["id"]: r for r in json.loads(p.stdout)["rules"]}
    assert rules["claims-match-logs"]["outcome"] == "needs_review"
    assert rules["seed-statistics"]["outcome"] == "fail"


def test_binary_log_does_not_crash(examples, tmp_path):
    d = _copy(examples["legal"], tmp_path / "2026-03-19_Binary")
    (d / "train_seed42.log").write_bytes(bytes(range(256)) * 64)
    p = run(str(d), "--json")
    assert p.returncode in (1, 2) and "Traceback" not in p.stderr
    d_json = json.loads(p.stdout)
    assert any(s["log"] == "train_seed42.log" for s in d_json["seeds"])


def test_script_that_does_not_parse_fails_package_layout(examples, tmp_path):
    d = _copy(examples["legal"], tmp_path / "2026-03-19_BadScript")
    (d / "train_gpt.py").write_text("def main(:\n    pass\n")
    p = run(str(d), "--json")
    assert p.returncode == 1 and "Traceback" not in p.stderr
    rules = {r["id"]: r for r in json.loads(p.stdout)["rules"]}
    assert rules["package-layout"]["outcome"] == "fail" and "compile" in rules["package-layout"]["message"]


def test_help_exits_0():
    p = run("--help")
    assert p.returncode == 0 and "--policy" in p.stdout


def test_demo_audits_both_examples():
    p = subprocess.run([str(EXE), "demo", "--offline", "--strict"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert p.returncode == 0, p.stderr
    assert "pgolf-audit: PASS" in p.stdout and "outcome: FAIL" in p.stdout
    assert "PG201 artifact-size: fail" in p.stdout


def test_committed_examples_match_the_generator(tmp_path):
    """examples/*_submission are `pgolf-audit demo --write` output: regenerate them after editing
    a script (the logs carry the script's byte count)."""
    for spec in (LEGAL, ILLEGAL):
        built = build(spec, tmp_path / spec.key)
        committed = REPO / "examples" / spec.key
        names = sorted(p.name for p in built.iterdir())
        assert names == sorted(p.name for p in committed.iterdir() if p.name != "__pycache__")
        for name in names:
            assert (built / name).read_bytes() == (committed / name).read_bytes(), f"{spec.key}/{name} is stale"
