"""The HTML report, rendered without a browser: content, escaping, charts, odd verdicts."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

from api.report import render_report, step_points
from report_samples import RULE_IDS, XSS, XSS_IMG, sample_verdict, step_log


class _Tags(HTMLParser):
    """Collects tags/attributes so tests can assert on structure, not on raw substrings only."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> _Tags:
    p = _Tags()
    p.feed(html)
    return p


def charts(html: str) -> dict[str, str]:
    """chart name -> its <svg>…</svg> source."""
    return {m.group(1): m.group(0) for m in
            re.finditer(r'<svg class="chart" data-chart="([^"]+)".*?</svg>', html, re.S)}


def test_every_rule_evidence_and_numbers_are_on_the_page():
    verdict, logs = sample_verdict()
    html = render_report(verdict, logs=logs, submission={"id": "s1", "status": "reported"},
                         base_url="http://audit.example")
    tags = parse(html)
    rule_boxes = [a for t, a in tags.tags if t == "details" and "data-rule" in a]
    assert [a["data-rule"] for a in rule_boxes][0] == "artifact-size"     # problems first
    assert {a["data-rule"] for a in rule_boxes} == {rid for rid, _ in RULE_IDS}
    for rid, code in RULE_IDS:
        assert code in html
    attention = html.split('id="problems"')[1].split('id="statistics"')[0]
    assert [m for m in re.findall(r'href="#rule-([a-z-]+)"', attention)] == [
        "artifact-size", "calibration-within-budget", "ngram-target-in-key"]   # fail, review, warn
    assert "train_seed1234.log:77" in html and "train_gpt.py:1412" in html
    assert "hessians = collect_hessians(model, calib_loader)" in html
    assert "16,000,086" in html and "16,000,000" in html                  # measured vs limit
    assert re.search(r'data-count="fail">1<', html)
    assert re.search(r'data-count="needs_review">1<', html)
    assert re.search(r'data-count="warn">1<', html)
    assert "<title>FAIL" in html
    # both policies and the baseline row
    assert "readme-2026-03" in html and "leaderboard-2026-04" in html
    assert "0.3100" in html and "0.0021" in html
    assert "PR1787 PolarNS" in html and "1.06340" in html                # baseline mean of its seeds
    # seeds table: one row per seed, the over-limit artifact flagged
    seeds_table = html.split('id="seeds-table"')[1].split("</table>")[0]
    assert seeds_table.count("</tr>") == 1 + 3
    assert re.search(r'class="num mono over">16,000,086<', seeds_table)
    # reproduction: both runs, delta to the claim, link to the run log
    runs_table = html.split('id="runs-table"')[1].split("</table>")[0]
    assert "1.06151" in runs_table and "+0.00031" in runs_table
    assert "timeout" in runs_table and "killed after 1300 s" in runs_table
    assert 'href="http://audit.example/v1/submissions/s1/runs/r1/log"' in runs_table
    assert "NVIDIA H100 80GB HBM3 ×8 driver 550.54" in runs_table
    assert "601.2 s" in runs_table and "529.2 s" in runs_table              # from wall_s
    assert 'href="http://audit.example/v1/submissions/s1/verdict"' in html


def test_charts_have_one_series_per_seed_and_axes():
    verdict, logs = sample_verdict(with_runs=False)
    html = render_report(verdict, logs=logs)
    c = charts(html)
    assert set(c) == {"train-loss", "val-bpb", "bpb-strip"}
    for name in ("train-loss", "val-bpb"):
        series = re.findall(r'<polyline class="series" data-series="([^"]+)"', c[name])
        assert series == ["seed 42", "seed 314", "seed 1234"]
        assert ">step</text>" in c[name]                                    # x axis label
        assert len(re.findall(r'class="tick"', c[name])) >= 6
    # both step-line shapes were read: each curve has one point per logged train step
    for poly in re.findall(r'<polyline class="series"[^>]* points="([^"]+)"', c["train-loss"]):
        assert len(poly.split()) == 20
    # strip chart: 3 claimed dots + 3 baseline dots, baseline labelled
    assert c["bpb-strip"].count('class="dot"') == 6
    assert ">baseline PR #1787<title>baseline PR #1787</title>" in c["bpb-strip"]


def test_run_logs_are_dashed_series_and_extra_logs_listed_not_plotted():
    verdict, logs = sample_verdict()
    logs["train_seed42_original_rerun.log"] = step_log(42)
    html = render_report(verdict, logs=logs)
    train = charts(html)["train-loss"]
    assert re.findall(r'data-series="([^"]+)"', train) == ["seed 42", "seed 314", "seed 1234", "run seed 42"]
    assert train.count('stroke-dasharray="6 4"') == 1
    assert "train_seed42_original_rerun.log" in html.split('id="curves"')[1]


def test_submission_text_is_escaped_everywhere():
    verdict, logs = sample_verdict(malicious=True)
    html = render_report(verdict, logs=logs, submission={"id": "x", "repo": "javascript:alert(1)//a/b", "pr": 3})
    tags = parse(html)
    assert not any(t == "script" for t, _ in tags.tags)
    assert not any(t == "img" for t, _ in tags.tags)
    assert not any(k.startswith("on") for _, a in tags.tags for k in a)   # no event handlers
    assert "javascript:" not in " ".join(a.get("href", "") for _, a in tags.tags)
    assert "&lt;script&gt;alert(&#39;xss&#39;)&lt;/script&gt;" in html
    assert XSS not in html and XSS_IMG not in html
    assert "README&#34;&gt;&lt;img src=x onerror=alert(1)&gt;.md:3" in html
    # the page forbids scripts outright, in case anything ever slips through
    assert "default-src 'none'" in html and "script-src" not in html


def test_svg_text_from_submissions_is_escaped():
    verdict, logs = sample_verdict(with_runs=False)
    verdict["seeds"][0]["seed"] = "<b>42</b>"
    verdict["statistics"]["baseline"]["name"] = '</text><script>x()</script>'
    html = render_report(verdict, logs=logs)
    assert "<script>x()" not in html and "<b>42</b>" not in html
    assert "seed &lt;b&gt;42&lt;/b&gt;" in html


def test_partial_and_odd_verdicts_render():
    for verdict in ({}, {"outcome": "weird", "rules": "nope", "seeds": [None, 3], "statistics": 5},
                    {"outcome": "pass", "rules": [{"id": "x", "evidence": [None, {"line": 3}]}],
                     "seeds": [{"seed": 1, "val_bpb": float("nan"), "artifact_bytes": "12"}],
                     "statistics": {"mean_bpb": None, "baseline": {"seeds": ["a", 1.1]}}}):
        html = render_report(verdict, logs={"a.log": "garbage\x00\nstep:x/y\n"})
        assert html.startswith("<!doctype html>") and "</html>" in html
    html = render_report({"outcome": "pass", "rules": [], "seeds": []})
    assert "<title>PASS" in html and "No reproduction runs" in html
    assert "no train_loss points in the logs" in html


def test_pass_verdict_is_green_and_lists_nothing_to_fix():
    verdict, logs = sample_verdict(with_runs=False)
    for r in verdict["rules"]:
        r["outcome"] = "pass"
    verdict["outcome"] = "pass"
    html = render_report(verdict, logs=logs)
    assert 'class="hero pass"' in html and "Nothing: every applicable rule passes." in html
    assert re.search(r'data-count="fail">0<', html)


def test_margin_threshold_line_drawn_under_the_readme_policy():
    verdict, logs = sample_verdict(with_runs=False)
    verdict["statistics"]["margin_bpb"] = 0.0072
    strip = charts(render_report(verdict, logs=logs))["bpb-strip"]
    assert 'class="threshold"' in strip and "to beat: 1.05620" in strip


def test_step_points_read_both_step_shapes():
    pts, problems = step_points(step_log(7, steps=1000, style="plain"), "a.log")
    assert problems == []
    train = [p for p in pts if p[1] is not None]
    val = [p for p in pts if p[2] is not None]
    assert len(train) == 10 and train[0][0] == 100 and train[-1][0] == 1000
    assert [p[0] for p in val] == [0, 500, 1000]


def test_real_record_logs_draw_curves(shared_dir: Path):
    folder = shared_dir / "fixtures/records/track_10min_16mb/2026-04-29_SmearGateBOSFix_3Seed_1.06141"
    logs = {p.name: p.read_text(errors="replace") for p in sorted(folder.glob("*.log"))}
    meta = json.loads((folder / "submission.json").read_text())
    seeds = [{"seed": int(s), "log": f"train_seed{s}_rerun_gptq8s.log", "val_bpb": r["val_bpb"]}
             for s, r in meta["seed_results"].items()]
    html = render_report({"outcome": "pass", "rules": [], "seeds": seeds,
                          "submission": {"name": meta["name"]}}, logs=logs)
    c = charts(html)
    polys = re.findall(r'<polyline class="series"[^>]* points="([^"]+)"', c["train-loss"])
    assert len(polys) == 3 and all(len(p.split()) >= 8 for p in polys)
    assert "y clipped at" in c["train-loss"]          # the ~9-12 warm-up losses are clipped
    assert len(re.findall(r'<polyline class="series"', c["val-bpb"])) == 3


def test_reruns_are_listed_but_not_counted_or_plotted_and_context_readings_are_not_policies():
    verdict, logs = sample_verdict(with_runs=False)
    verdict["seeds"].append({**verdict["seeds"][0], "role": "rerun", "log": "train_seed42_rerun.log",
                             "val_bpb": 1.2, "note": "re-run with GPTQ reserve 8 s"})
    logs["train_seed42_rerun.log"] = step_log(42)
    verdict["statistics"]["readings"].update({"nats_per_bpb": 2.1884, "mean_delta_bpb": -0.0019,
                                              "baseline_reason": "PR #1787 is the best record row before this one."})
    html = render_report(verdict, logs=logs)
    c = charts(html)
    assert len(re.findall(r'<polyline class="series"', c["train-loss"])) == 3
    assert c["bpb-strip"].count('class="dot"') == 6                    # the re-run's 1.2 is not a dot
    seeds_table = html.split('id="seeds-table"')[1].split("</table>")[0]
    assert '<tr class="aside">' in seeds_table and "re-run with GPTQ reserve 8 s" in seeds_table
    policy_rows = html.split('id="policy-readings"')[1].split("</table>")[0]
    assert policy_rows.count("</tr>") == 1 + 2                          # two policies, no extras
    assert "nats_per_bpb" not in policy_rows
    assert "PR #1787 is the best record row before this one." in html and "2.1884 nats per bpb" in html
    assert "train_seed42_rerun.log" in html.split('id="curves"')[1]     # listed as not plotted


def test_adapters_for_the_api_route(tmp_path):
    from datetime import datetime, timezone
    from types import SimpleNamespace

    from api.report import load_logs, merge_runs, submission_dict

    verdict, logs = sample_verdict()
    verdict["seeds"].append({"seed": 9, "log": "../../etc/passwd"})
    verdict["runs"][0]["log_file"] = "runs/r1/train.log"
    for name in ("train_seed42.log", "train_seed314.log", "runs/r1/train.log"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(logs[name])
    (tmp_path / "train_seed1234.log").write_bytes(b"x" * 2000)
    got = load_logs(tmp_path, verdict, max_bytes=1000 + max(len(t) for t in logs.values()))
    assert set(got) == {"train_seed42.log", "train_seed314.log", "runs/r1/train.log", "train_seed1234.log"}
    got = load_logs(tmp_path, verdict, max_bytes=1500)      # over the cap: skipped, not truncated
    assert "train_seed1234.log" not in got
    row = SimpleNamespace(id=7, seed=42, nproc=8, status="ok", exit_code=0, gpu=None, artifact_bytes=None,
                          timings={"start": 0, "train_end": 600.5, "end": 1100}, trace_key=None, error=None)
    merged = merge_runs([row], verdict["runs"])
    assert merged[0]["id"] == 7 and merged[0]["val_bpb"] == 1.06151 and merged[0]["timings"]["end"] == 1100
    # the API's shape: empty defaults do not hide what the verdict's run says
    merged = merge_runs([{"id": 8, "seed": 42, "status": "ok", "gpu": {}, "wall_s": {}}], verdict["runs"])
    assert merged[0]["gpu"]["count"] == 8 and merged[0]["wall_s"]["end"] == 1130.4
    sub = SimpleNamespace(id="s9", state="failed", source_kind="github", repo="a/b", pr=3, head_sha="c" * 40,
                          name="n", created_at=datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc))
    html = render_report(verdict, submission=submission_dict(sub), logs=got, runs=[row])
    runs_table = html.split('id="runs-table"')[1].split("</table>")[0]
    assert 'href="/v1/submissions/s9/runs/7/log"' in runs_table and "600.5 s" in runs_table
    assert "2026-11-24 12:00 UTC" in html and 'href="https://github.com/a/b/pull/3"' in html


def test_long_logs_are_thinned_to_a_bounded_page():
    verdict, _ = sample_verdict(with_runs=False)
    logs = {s["log"]: step_log(s["seed"], steps=20_000, every=1) for s in verdict["seeds"]}
    html = render_report(verdict, logs=logs)
    polys = re.findall(r'<polyline class="series"[^>]* points="([^"]+)"', charts(html)["train-loss"])
    assert [len(p.split()) for p in polys] == [600, 600, 600]
    assert polys[0].split()[-1].startswith("582.0,")             # the last step is kept (x = right edge)
    assert len(html) < 400_000


def test_pending_page_refreshes_while_running_and_explains_a_stop():
    from api.report import render_pending

    html = render_pending({"id": "s1", "status": "running", "name": f"PR {XSS}", "source": "github",
                           "repo": "openai/parameter-golf", "pr": 12, "head_sha": "ab" * 20})
    assert 'http-equiv="refresh" content="15"' in html and "Audit in progress" in html
    assert XSS not in html and "&lt;script&gt;" in html
    assert 'href="https://github.com/openai/parameter-golf/pull/12"' in html
    stopped = render_pending({"id": "s1", "status": "error_infra", "error_message": "node lost"})
    assert "refresh" not in stopped.split("<title>")[0] and "Audit interrupted" in stopped and "node lost" in stopped
    assert "Audit cancelled" in render_pending({"status": "cancelled"})


def test_a_log_the_parser_chokes_on_is_reported_not_fatal(monkeypatch):
    import rules.logs

    def boom(text, file):
        raise ValueError("bad bytes")

    monkeypatch.setattr(rules.logs, "parse_log", boom)
    verdict, logs = sample_verdict(with_runs=False)
    html = render_report(verdict, logs=logs)
    assert "train_seed42.log: the log could not be parsed (ValueError)" in html
    assert "no train_loss points in the logs" in html and "<title>FAIL" in html
