"""The README's main command end to end: `pgolf-audit demo` starts the embedded service, uploads
the bundled examples over HTTP, and prints worker-made verdicts with report URLs."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_serves_submits_and_reports(tmp_path):
    env = dict(os.environ, PGOLF_AUDIT_HOME=str(tmp_path / "home"))
    out = subprocess.run([sys.executable, "-m", "api.cli", "demo"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "pgolf-audit: PASS" in out.stdout and "pgolf-audit: FAIL" in out.stdout
    urls = re.findall(r"^report: (http://127\.0\.0\.1:\d+/v1/submissions/\w+/report)$", out.stdout, re.M)
    saved = re.findall(r"^saved:  (\S+\.html)$", out.stdout, re.M)
    assert len(urls) == 2 and len(saved) == 2
    for path in saved:
        html = Path(path).read_text()
        assert "<svg" in html and "ttt-score-first" in html
    # the service really ran: states went through the worker, and the server is gone afterwards
    assert "state: passed" in out.stdout and "state: failed" in out.stdout
    assert "Traceback" not in out.stderr
