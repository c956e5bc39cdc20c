"""PG408 network-access — no downloads or network calls at evaluation.

Rulings: README FAQ (commit a15093ada, 2026-03-18): no external downloads, training-data access or
network calls during evaluation; the artifact must be "fully self-contained and reproducible".
Downloading data before the run is setup (the #1868 re-run script runs `snapshot_download` of the
CaseOps shards on the pod before training).

What it looks for in the training script: `requests`, `urllib.request`, `urllib3`, `http.client`,
`socket`, `httpx`/`aiohttp`, `huggingface_hub` (`hf_hub_download`, `snapshot_download`),
`datasets.load_dataset`, `torch.hub`, and `wget`/`curl`/`git clone`/`pip install` run through
`subprocess`/`os.system`/`os.popen`. Each call is placed in the script's flow:
- fail: reachable after the training loop (the evaluation phase) and switched on;
- warn: only before/during training (setup-like, but the script is not self-contained), an import
  that is never called, or a download in a data-prep helper that `train_gpt.py` does not import
  (said so in the message);
- needs_review: a helper module imported by `train_gpt.py` that makes network calls, or telemetry
  (`wandb.log`, `mlflow`) switched on at evaluation;
- pass: none, or only on a path switched off by its env default / the logged configuration.
No training script: not_applicable.
"""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from ..analysis import get_index, other_sources, program_for
from ..analysis.index import ParseFailure, dotted
from ..context import AuditContext
from ..model import Evidence, RuleResult
from . import _runs
from ._base import result, safe_check

ID = "network-access"
CODE = "PG408"
TITLE = "No network access at evaluation"

NET_MODULES = ("requests", "urllib.request", "urllib3", "http.client", "socket", "httpx", "aiohttp",
               "huggingface_hub", "wget", "pycurl", "ftplib", "wandb", "mlflow")
NET_FUNCS = {"urlopen", "urlretrieve", "hf_hub_download", "snapshot_download", "load_dataset",
             "download_url_to_file", "create_connection", "HTTPSConnection", "HTTPConnection",
             "load_state_dict_from_url", "list_repo_files"}
NET_METHOD_BASES = {"requests": {"get", "post", "put", "head", "request", "Session"},
                    "httpx": {"get", "post", "Client", "AsyncClient", "stream"},
                    "socket": {"socket", "create_connection", "getaddrinfo"},
                    "hub": {"load", "download_url_to_file", "load_state_dict_from_url"},
                    "wget": {"download"}}
TELEMETRY = {"wandb", "mlflow", "neptune", "comet_ml", "clearml", "swanlab"}
SHELL_CALLS = {"system", "popen", "run", "call", "check_call", "check_output", "Popen", "getoutput"}
SHELL_NET = re.compile(r"\b(wget|curl|git\s+clone|pip\s+install|huggingface-cli|hf\s+download|aria2c|scp|rsync)\b")


def check(ctx: AuditContext) -> RuleResult:
    me = sys.modules[__name__]
    return _runs.merge(me, ctx, safe_check(me, _check, ctx))


def network_calls(index, ) -> list[tuple[ast.Call, str]]:
    out = []
    for node in ast.walk(index.tree):
        if not isinstance(node, ast.Call):
            continue
        what = _net_call(index, node)
        if what:
            out.append((node, what))
    return out


def _net_call(index, node: ast.Call) -> str | None:
    name = dotted(node.func)
    last = name.rsplit(".", 1)[-1] if name else ""
    base = name.split(".")[0] if name else ""
    origin = index.imports.get(base, "") if base else ""
    if last in NET_FUNCS:
        if last == "load_dataset" and "datasets" not in (origin or index.imports.get("load_dataset", "")):
            return None
        return name
    if base in NET_METHOD_BASES or origin.split(".")[0] in NET_METHOD_BASES:
        key = base if base in NET_METHOD_BASES else origin.split(".")[0]
        if last in NET_METHOD_BASES[key]:
            return name
    if name.endswith("hub.load") or name.endswith("hub.download_url_to_file"):
        return name
    if (base in TELEMETRY or origin.split(".")[0] in TELEMETRY) and last in ("init", "log", "save", "finish",
                                                                             "log_metric", "log_metrics", "upload"):
        return name
    if last in SHELL_CALLS and (base in ("os", "subprocess") or origin.startswith(("os", "subprocess"))):
        text = " ".join(ast.unparse(a) for a in node.args)
        if SHELL_NET.search(text):
            return f"{name}({SHELL_NET.search(text).group(1)})"
    return None


def _net_imports(index) -> list[tuple[ast.AST, str]]:
    out = []
    for node in ast.walk(index.tree):
        mods: list[str] = []
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for m in mods:
            if any(m == n or m.startswith(n + ".") for n in NET_MODULES):
                out.append((node, m))
                break
    return out


def _check(ctx: AuditContext) -> RuleResult:
    me = sys.modules[__name__]
    prog, early = program_for(me, ctx)
    if early is not None:
        return early
    flow = prog.flow
    eval_reach = flow.reachable("eval")
    pre_reach = flow.reachable("pre")
    fails: list[tuple[str, Evidence]] = []
    reviews: list[tuple[str, Evidence]] = []
    warns: list[tuple[str, Evidence]] = []
    offs: list[Evidence] = []
    calls = network_calls(prog.index)
    for node, what in calls:
        fn = prog.index.function_of(node)
        guard_off = prog.switches.off_guard(node)
        if fn is None or flow.in_chain(fn):
            site = next((s for s in flow.sites if s.call is node or any(a is s.call for a in prog.index.ancestors(node))), None)
            phase = site.phase if site else ("pre" if fn is None else "unknown")
            running = guard_off is None
        else:
            hit = eval_reach.get(fn.qualname)
            if hit is not None:
                phase, running = "eval", hit[1] and guard_off is None
            elif fn.qualname in pre_reach:
                phase, running = "pre", pre_reach[fn.qualname][1] and guard_off is None
            else:
                phase, running = "dead", False
        telemetry = what.split(".")[0] in TELEMETRY
        if phase in ("eval", "unknown") and running:
            if telemetry:
                reviews.append((f"{what} sends telemetry over the network during evaluation (no data is fetched; "
                                "the README forbids network calls at evaluation)", prog.evidence(node)))
            else:
                fails.append((f"network access in code that runs at evaluation: {what}", prog.evidence(node)))
        elif phase in ("eval", "unknown"):
            offs.append(prog.evidence(node))
        elif phase == "pre" and running:
            warns.append((f"{what} runs before training (setup-like network use inside train_gpt.py)", prog.evidence(node)))
        else:
            warns.append((f"{what} is defined but not reached from the main flow", prog.evidence(node)))
    if fails:
        return result(me, "fail", fails[0][0], evidence=[e for _, e in fails][:6])
    called_imports = {w.split(".")[0] for _, w in calls}
    for node, mod in _net_imports(prog.index):
        if mod.split(".")[0] not in called_imports and not calls:
            warns.append((f"imports {mod} but never calls it", prog.evidence(node)))

    # helper modules shipped beside the script
    imported = set(prog.index.imports) | {v.split(".")[0] for v in prog.index.imports.values()}
    for src in other_sources(ctx):
        try:
            idx = get_index(src.text)
        except ParseFailure:
            continue
        hits = network_calls(idx)
        if not hits:
            continue
        node, what = hits[0]
        ev = Evidence(source="code", file=src.path, line=node.lineno, text=idx.line_text(node.lineno))
        if Path(src.path).stem in imported:
            reviews.append((f"{src.path} is imported by {prog.file} and calls {what}", ev))
        else:
            warns.append((f"{src.path} downloads ({what}) but is not imported by {prog.file} "
                          "(a data-prep helper, not a violation)", ev))
    if reviews:
        return result(me, "needs_review", reviews[0][0], evidence=[e for _, e in reviews][:6])
    if warns:
        return result(me, "warn", warns[0][0], evidence=[e for _, e in warns][:6])
    if offs:
        return result(me, "pass", "a network call exists but is switched off (env default or logged configuration)", evidence=offs[:4])
    return result(me, "pass", "no network access in the training script")
