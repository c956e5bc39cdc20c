"""Regenerates the must-fire / must-not-fire fixtures of the log-side rules (package-layout,
claims-match-logs, artifact-size, train-time, eval-time, seed-statistics) under
rules/checks/fixtures/. The outputs are committed; run this only to change a case:

    .venv/bin/python examples/make_rule_fixtures.py

Each case starts from the example submission's logs (api.demo.make_log) and edits the lines the
case is about, so a fixture differs from a legal submission in exactly one way. A case that ships a
training script ships it as `variant.json` (the example's own script plus exact-substring edits;
tests/rules/fixture_cases.py writes it out), not as another copy of the example script.
"""
import json
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from api.demo import make_log  # noqa: E402
FX = REPO / "rules" / "checks" / "fixtures"
EXAMPLE_SCRIPT = "examples/legal_submission/train_gpt.py"
SCRIPT = (REPO / EXAMPLE_SCRIPT).read_text()
CODE = len(SCRIPT.encode())

def script(*edits):
    """The example script with (old, new) edits, as the variant.json a case folder holds."""
    text = SCRIPT
    for old, new in edits:
        assert text.count(old) == 1, f"edit target must occur exactly once: {old!r}"
        text = text.replace(old, new, 1)
    return {"base": EXAMPLE_SCRIPT, "edits": [[old, new] for old, new in edits]}

def log(seed, bpb, model=13_900_000, eval_ms=410_000, subs=()):
    t = make_log(SCRIPT, seed, bpb, model, eval_ms)
    for a, b in subs:
        t2 = re.sub(a, b, t, flags=re.M)
        assert t2 != t, (a, b)
        t = t2
    return t

def sj(seeds, bpbs, **extra):
    d = {"author": "fixture", "github_id": "fixture", "name": "fixture case", "date": "2026-03-19",
         "track": "10min_16mb", "val_bpb": round(sum(bpbs) / len(bpbs), 8),
         "seeds": list(seeds),
         "seed_results": {str(s): {"val_bpb": b} for s, b in zip(seeds, bpbs)}}
    d.update(extra)
    return d

README = "# Fixture\n\nA small records folder for one rule case.\n\n```bash\nSEED=1337 torchrun --standalone --nproc_per_node=8 train_gpt.py\n```\n"

def case(module, kind, name, expect, files):
    d = FX / module / kind / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    files.setdefault("README.md", README)
    if "train_gpt.py" in files:
        files["variant.json"] = files.pop("train_gpt.py")
    for rel, content in files.items():
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, (dict, list)):
            content = json.dumps(content, indent=2) + "\n"
        p.write_text(content)
    (d / "expect.json").write_text(json.dumps(expect, indent=2) + "\n")

S3 = (1337, 42, 2025)
B3 = (1.19812340, 1.19903117, 1.19761452)

def three(subs_by_seed=None, **kw):
    out = {}
    for s, b in zip(S3, B3):
        out[f"train_seed{s}.log"] = log(s, b, subs=(subs_by_seed or {}).get(s, ()), **kw)
    return out

# ---------------- package_layout
f = three(); f["submission.json"] = sj(S3, B3)
case("package_layout", "fire", "2026-03-19_missing_script",
     {"outcome": "fail", "message_contains": "train_gpt.py is missing"}, f)
f = three(); f["submission.json"] = "{\"author\": \"x\", \"val_bpb\": 1.19,\n"; f["train_gpt.py"] = script()
case("package_layout", "fire", "2026-03-19_malformed_json", {"outcome": "fail"}, f)
f = three(); f["submission.json"] = sj(S3, B3); f["train_gpt.py"] = script(("def main() -> None:", "def main( -> None:"))
case("package_layout", "fire", "2026-03-19_script_does_not_compile",
     {"outcome": "fail", "message_contains": "does not compile"}, f)
f = {"submission.json": sj(S3, B3), "train_gpt.py": script()}
case("package_layout", "fire", "2026-03-19_no_logs", {"outcome": "fail", "message_contains": "no train log"}, f)
f = three(); f["submission.json"] = sj(S3, B3); f["train_gpt.py"] = script()
case("package_layout", "pass", "2026-03-19_complete", {"outcome": "pass"}, f)
f = three(); d = sj(S3, B3); del d["github_id"]; f["submission.json"] = d; f["train_gpt.py"] = script()
case("package_layout", "pass", "2026_03_19 missing github id",
     {"outcome": "warn", "message_contains": "github_id"}, f)

# ---------------- claims_match_logs
f = three(); d = sj(S3, B3); d["val_bpb"] = 1.1800; f["submission.json"] = d
case("claims_match_logs", "fire", "overclaimed_headline",
     {"outcome": "fail", "evidence_contains": "val_bpb: 1.18", "message_contains": "headline"}, f)
f = three(); d = sj(S3, B3); d["seed_results"]["42"]["val_bpb"] = 1.1950; f["submission.json"] = d
case("claims_match_logs", "fire", "overclaimed_seed",
     {"outcome": "fail", "evidence_contains": "final_int8_sliding_window_exact", "message_contains": "seed 42"}, f)
f = three(); f["submission.json"] = sj(S3, B3)
case("claims_match_logs", "pass", "matching", {"outcome": "pass"}, f)
f = three(); d = sj(S3, B3); d["val_bpb"] = 1.1983; d["seed_results"] = {str(s): {"val_bpb": round(b, 4)} for s, b in zip(S3, B3)}
f["submission.json"] = d
case("claims_match_logs", "pass", "rounded_claims", {"outcome": "pass"}, f)
f = {}
for s, b in zip(S3, B3):
    f[f"train_seed{s}_original.log"] = log(s, b)
    f[f"train_seed{s}_rerun_gptq8s.log"] = log(s, b + 0.0004)
f["submission.json"] = sj(S3, B3)
case("claims_match_logs", "pass", "rerun_logs_next_to_originals", {"outcome": "pass"}, f)
f = {"train_seed1337.log": log(1337, 1.1981)}
d = sj(S3, (1.1950, 1.1960, 1.1955)); d["seed_results"] = {}; f["submission.json"] = d
f["README.md"] = README + "\nLogs for seeds 42 and 2025 are in `extra_logs/seed_{42,2025}.log`.\n"
case("claims_match_logs", "pass", "unshipped_logs_needs_review",
     {"outcome": "needs_review", "message_contains": "not shipped"}, f)

f = {"train_seed1337.log": log(1337, 1.1981)}
f["submission.json"] = sj(S3, (1.1981, 1.1900, 1.1890))   # two claimed seeds have no log; their mean flatters
case("claims_match_logs", "pass", "claimed_seeds_without_logs",
     {"outcome": "needs_review", "message_contains": "without a shipped log"}, f)

# ---------------- artifact_size
f = three(subs_by_seed={42: [(r"^Code size: \d+ bytes", f"Code size (uncompressed): {CODE} bytes\nCode size (compressed): 4100 bytes"),
                              (r"^Serialized model int8\+lzma: \d+ bytes", "Serialized model int8+lzma: 15995901 bytes"),
                              (r"^Total submission size int8\+lzma: \d+ bytes", "Total submission size int8+lzma: 16000001 bytes")]})
f["submission.json"] = sj(S3, B3, bytes_total=15_999_000)
case("artifact_size", "fire", "one_seed_over_cap",
     {"outcome": "fail", "evidence_contains": "Total submission size int8+lzma: 16000001"}, f)
f = three(subs_by_seed={s: [(r"^(Code size|Serialized model|Total submission size).*\n", "")] for s in S3})
f["submission.json"] = sj(S3, B3, bytes_total=16_100_000)
case("artifact_size", "fire", "claimed_over_cap_without_size_lines", {"outcome": "fail"}, f)
f = three(); f["submission.json"] = sj(S3, B3); f["train_gpt.py"] = script()
case("artifact_size", "pass", "under_cap", {"outcome": "pass"}, f)
model = 16_000_000 - CODE + 5_000   # raw script + model is 5,000 over; the compressed wrapper fits
subs = [(r"^Code size: \d+ bytes", f"Code size (uncompressed): {CODE} bytes\nCode size (compressed): 4100 bytes"),
        (r"^Serialized model int8\+lzma: \d+ bytes", f"Serialized model int8+lzma: {model} bytes"),
        (r"^Total submission size int8\+lzma: \d+ bytes", f"Total submission size int8+lzma: {model + 4100} bytes")]
f = three(subs_by_seed={s: subs for s in S3}); f["submission.json"] = sj(S3, B3); f["train_gpt.py"] = script()
case("artifact_size", "pass", "compressed_code_accounting",
     {"outcome": "warn", "message_contains": "compressed-code accounting (accepted since #1530)"}, f)
f = three(subs_by_seed={1337: [(r"^Total submission size int8\+lzma: \d+ bytes", "Total submission size int8+lzma: 16638468 bytes"),
                                (r"^Serialized model int8\+lzma: \d+ bytes", f"Serialized model int8+lzma: {16638468 - CODE} bytes")]})
f["submission.json"] = sj(S3, B3, track="non_record_16mb")
case("artifact_size", "pass", "non_record_over_cap", {"outcome": "warn", "message_contains": "non-record"}, f)

f = three(subs_by_seed={s: [(r"^Serialized model int8\+lzma: \d+ bytes", "Serialized model int8+lzma: 15990000 bytes"),
                             (r"^Total submission size int8\+lzma: \d+ bytes", f"Total submission size int8+lzma: {15990000 + CODE} bytes")]
                         for s in S3})
f["submission.json"] = sj(S3, B3)
case("artifact_size", "pass", "readable_code_pushes_log_total_over_cap",
     {"outcome": "needs_review", "message_contains": "#1412"}, f)
native = script(("import uuid\n", "import subprocess\nimport uuid\n"), (
    "def main() -> None:\n", "def main() -> None:\n    subprocess.run([\"g++\", \"-O3\", \"-shared\", \"ngram/kernel.cpp\", \"-o\", \"kernel.so\"], check=True)\n"))
f = three(); f["submission.json"] = sj(S3, B3); f["train_gpt.py"] = native
f["ngram/kernel.cpp"] = "extern \"C\" int add(int a, int b) { return a + b; }\n"
case("artifact_size", "pass", "uncounted_native_kernel",
     {"outcome": "warn", "evidence_contains": "ngram/kernel.cpp", "message_contains": "no size line counts it"}, f)

# ---------------- train_time
over = [(r"^stopping_early: wallclock_cap train_time:\d+ms", "stopping_early: wallclock_cap train_time:602048ms")]
f = three(subs_by_seed={42: over}); f["submission.json"] = sj(S3, B3)
case("train_time", "fire", "seed_over_600s",
     {"outcome": "fail", "evidence_contains": "train_time:602048ms"}, f)
f = three(); f["submission.json"] = sj(S3, B3)
f["README.md"] = "# Fixture\n\n```bash\nMAX_WALLCLOCK_SECONDS=0 ITERATIONS=13700 torchrun --standalone --nproc_per_node=8 train_gpt.py\n```\n"
case("train_time", "fire", "cap_switched_off_in_run_command",
     {"outcome": "fail", "evidence_contains": "MAX_WALLCLOCK_SECONDS=0"}, f)
f = three(subs_by_seed={s: [(r"^  max_wallclock_seconds: 600.0", "  max_wallclock_seconds: 900.0")] for s in S3})
f["submission.json"] = sj(S3, B3)
case("train_time", "fire", "logged_cap_above_600", {"outcome": "fail", "message_contains": "max_wallclock_seconds=900"}, f)
f = three(); f["submission.json"] = sj(S3, B3)
case("train_time", "pass", "within_limit", {"outcome": "pass"}, f)
f = three(subs_by_seed={2025: [(r"^stopping_early: wallclock_cap train_time:\d+ms", "stopping_early: wallclock_cap train_time:600128ms")]})
f["submission.json"] = sj(S3, B3)
case("train_time", "pass", "march_overshoot_128ms", {"outcome": "warn", "message_contains": "#549"}, f)
f = three(); f["submission.json"] = sj(S3, B3)
f["README.md"] = README + "\nHyperparameter trials used `ITERATIONS=4950, MAX_WALLCLOCK_SECONDS=0`; the submission used the 600 s cap.\n"
case("train_time", "pass", "cap_mentioned_in_prose_only", {"outcome": "pass"}, f)
f = {"train.log": log(1337, 1.2074, subs=[(r"^stopping_early: wallclock_cap train_time:\d+ms", "stopping_early: wallclock_cap train_time:14400039ms"),
                                            (r"^  max_wallclock_seconds: 600.0", "  max_wallclock_seconds: 14400.0")])}
f["submission.json"] = sj((1337,), (1.2074,), track="non-record-unlimited-compute-16mb", wallclock_seconds=14400.039)
case("train_time", "pass", "non_record_four_hours", {"outcome": "not_applicable"}, f)

# ---------------- eval_time
f = three(eval_ms=612_000); f["submission.json"] = sj(S3, B3)
case("eval_time", "fire", "scored_eval_over_600s", {"outcome": "fail", "evidence_contains": "eval_time:612000ms"}, f)
tot = [(r"^(final_int8_sliding_window_exact .*)$", r"\1\ntotal_eval_time:605.2s")]
f = three(subs_by_seed={1337: tot}); f["submission.json"] = sj(S3, B3)
case("eval_time", "fire", "total_eval_time_over_600s", {"outcome": "fail", "evidence_contains": "total_eval_time:605.2s"}, f)
f = three(); f["submission.json"] = sj(S3, B3)
case("eval_time", "pass", "within_limit", {"outcome": "pass"}, f)
strict = [(r"^val_tokens: 62021632$", "val_tokens: 62021632\ndiagnostic quantized val_loss:2.0300 val_bpb:1.2023 eval_time:80000ms\n"
           "ttt_lora:warming up compile (random tokens, no val data)\nttt_lora:compile warmup done (137.6s)\nbeginning TTT eval timer"),
          (r"^(final_int8_sliding_window_exact .*)$", r"\1\ntotal_eval_time:410.0s")]
f = three(subs_by_seed={s: strict for s in S3}); f["submission.json"] = sj(S3, B3)
case("eval_time", "pass", "strict_reading_over_600s", {"outcome": "warn", "message_contains": "strict reading"}, f)

# ---------------- seed_statistics
f = {f"train_seed{s}.log": log(s, b) for s, b in list(zip(S3, B3))[:2]}; f["submission.json"] = sj(S3[:2], B3[:2])
case("seed_statistics", "fire", "two_seeds", {"outcome": "fail", "message_contains": "Only 2"}, f)
NS = (1.20600000, 1.20680000, 1.20620000)
f = {f"train_seed{s}.log": log(s, b) for s, b in zip(S3, NS)}; f["submission.json"] = sj(S3, NS)
case("seed_statistics", "fire", "not_significant", {"outcome": "fail", "message_contains": "is not below 0.25"}, f)
SM = (1.20530000, 1.20540000, 1.20520000)   # ~0.0011 bpb better: p < 0.25, but short of the 0.005-nat margin
f = {f"train_seed{s}.log": log(s, b) for s, b in zip(S3, SM)}; f["submission.json"] = sj(S3, SM)
case("seed_statistics", "fire", "short_of_readme_margin",
     {"outcome": "fail", "policy": "readme-2026-03", "message_contains": "readme-2026-03"}, f)
case("seed_statistics", "pass", "clears_leaderboard_policy", {"outcome": "pass"}, f)
mixed = {2025: [(r"^  model_dim: 448", "  model_dim: 512")]}
f = three(subs_by_seed=mixed); f["submission.json"] = sj(S3, B3)
case("seed_statistics", "fire", "seeds_of_different_configs",
     {"outcome": "fail", "message_contains": "model_dim"}, f)
f = three(); f["submission.json"] = sj(S3, B3)
case("seed_statistics", "pass", "significant_three_seeds", {"outcome": "pass"}, f)
f = three(); f["submission.json"] = sj(S3, B3, track="non_record_16mb")
case("seed_statistics", "pass", "non_record", {"outcome": "not_applicable"}, f)
print("ok")
