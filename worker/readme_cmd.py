"""Read a submission README's run command: which script, how many processes, which env vars.

Records document their run as a shell snippet, e.g.

    NUM_LAYERS=11 BIGRAM_DIM=112 \\
    torchrun --standalone --nproc_per_node=8 train_gpt.py

(also `export VAR=...` lines, `env` prefixes, `cd` into the folder, `for seed in ...; do` loops,
redirections, markdown-escaped underscores). We never execute that text: it is tokenized with
`shlex`, and only a `torchrun`/`python` invocation of a script *inside the submission folder* is
kept. Anything else (pip installs, downloads, `rm`, pipes) is ignored. Env vars that would
steer the runner itself (PATH, LD_*, PYTHON*, rank/world variables, our own PGOLF_*) are dropped,
and so are values that need shell expansion (`$SEED`): the runner sets SEED, DATA_PATH and
TOKENIZER_PATH itself.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import PurePosixPath

DEFAULT_SCRIPT = "train_gpt.py"

_FENCE = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n(.*?)^[ \t]*\1[ \t]*$", re.S | re.M)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ASSIGN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)
_CONTROL = {";", "&&", "||", "|", "&", "|&", ";;"}
_REDIRECT = re.compile(r"^\d*[<>]")
_PYTHON = re.compile(r"^(?:.*/)?python(?:3(?:\.\d+)?)?$")
_TORCHRUN = re.compile(r"^(?:.*/)?torchrun$")

# variables the runner owns, or that change how processes are loaded: never taken from a README
_OWNED = {"SEED", "DATA_PATH", "TOKENIZER_PATH"}
_BLOCKED_EXACT = {
    "PATH", "HOME", "USER", "SHELL", "IFS", "ENV", "BASH_ENV", "PS4", "CUDA_VISIBLE_DEVICES",
    "MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
    "GROUP_RANK", "NODE_RANK", "TORCHELASTIC_RUN_ID", "TMPDIR", "TEMP", "TMP",
}
_BLOCKED_PREFIX = ("LD_", "PYTHON", "PGOLF_", "DYLD_", "SSL_", "HTTP", "HTTPS_", "NO_PROXY",
                   "GIT_", "AWS_", "HF_", "HUGGING", "WANDB_", "OPENAI_", "GITHUB_")

# torchrun options that take a value when written as two words
_TORCHRUN_VALUED = {"--nproc_per_node", "--nproc-per-node", "--nnodes", "--node_rank", "--node-rank",
                    "--master_addr", "--master-addr", "--master_port", "--master-port",
                    "--rdzv_backend", "--rdzv-backend", "--rdzv_endpoint", "--rdzv-endpoint",
                    "--rdzv_id", "--rdzv-id", "--max_restarts", "--max-restarts",
                    "--log_dir", "--log-dir", "--redirects", "--tee", "--local_addr",
                    "--local-addr", "--monitor_interval", "--monitor-interval"}


@dataclass
class RunCommand:
    """The run as the README documents it, reduced to what the runner may honour."""
    script: str = DEFAULT_SCRIPT            # relative to the submission folder
    nproc: int | None = None                # None: the README did not say (runner's choice)
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    launcher: str = "torchrun"              # "torchrun" | "python"
    source: str | None = None               # the README line(s) it came from, None for the default
    warnings: list[str] = field(default_factory=list)
    alternatives: int = 0                   # other runnable commands found in the README

    def argv(self, python: str, nproc: int | None = None) -> list[str]:
        """The command line to spawn. torchrun is run as `python -m torch.distributed.run` so
        the interpreter is ours, never a `torchrun` found on some PATH."""
        n = nproc or self.nproc or 1
        if self.launcher == "python" and n == 1:
            return [python, self.script, *self.args]
        return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                self.script, *self.args]


def code_blocks(markdown: str) -> list[str]:
    return [m.group(2) for m in _FENCE.finditer(markdown)]


def _logical_lines(block: str) -> list[str]:
    # markdown escapes (RUN\_ID, trailing "\\") as some READMEs write them
    text = block.replace("\\_", "_").replace("\\\\\n", "\\\n")
    text = re.sub(r"\\[ \t]*\n", " ", text)
    out = []
    for line in text.splitlines():
        s = line.strip()
        if s and not s.startswith("#"):
            out.append(s)
    return out


def _tokens(line: str) -> list[str] | None:
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
    lex.whitespace_split = True
    lex.commenters = "#"
    try:
        return list(lex)
    except ValueError:
        return None


def _segments(tokens: list[str]) -> list[list[str]]:
    segs: list[list[str]] = [[]]
    for t in tokens:
        if t in _CONTROL:
            segs.append([])
        else:
            segs[-1].append(t)
    return [s for s in segs if s]


def _env_allowed(name: str) -> bool:
    if not _ENV_NAME.match(name) or name in _BLOCKED_EXACT:
        return False
    return not any(name.upper().startswith(p) for p in _BLOCKED_PREFIX)


def _safe_script(path: str, files: set[str] | None, warnings: list[str]) -> str | None:
    """A script inside the folder, as a clean relative path; None when it is not one."""
    p = PurePosixPath(path)
    rel = None
    if not p.is_absolute() and ".." not in p.parts:
        rel = str(PurePosixPath(*[x for x in p.parts if x != "."])) if p.parts else None
    if rel is not None and (files is None or rel in files):
        return rel
    # an author's absolute path (/root/code/parameter-golf/train_gpt.py): the same file name
    # inside the folder is what they ran from their checkout
    if files is not None and p.name in files:
        warnings.append(f"script path {path!r} mapped to {p.name!r} inside the folder")
        return p.name
    if files is None and rel is None and p.name.endswith(".py"):
        warnings.append(f"script path {path!r} mapped to {p.name!r} inside the folder")
        return p.name
    return None


def _parse_segment(seg: list[str], exported: dict[str, str], files: set[str] | None) -> RunCommand | None:
    i = 0
    env: dict[str, str] = {}
    warnings: list[str] = []
    # loop syntax around the command: "for x in ...; do CMD; done"
    while i < len(seg) and seg[i] in ("do", "then", "time", "nohup", "exec"):
        i += 1
    while i < len(seg):
        m = _ASSIGN.match(seg[i])
        if m:
            env[m.group(1)] = m.group(2)
            i += 1
            continue
        if seg[i] in ("uv", "poetry", "pipenv") and i + 1 < len(seg) and seg[i + 1] == "run":
            i += 2
            continue
        if seg[i] == "env":
            i += 1
            while i < len(seg) and seg[i].startswith("-"):
                i += 1
            continue
        break
    if i >= len(seg):
        return None
    cmd = seg[i]
    rest = seg[i + 1:]
    # drop redirections and everything after them
    cut = next((k for k, t in enumerate(rest) if _REDIRECT.match(t) or t in ("<", ">", ">>")), None)
    if cut is not None:
        rest = rest[:cut]
    launcher = None
    nproc: int | None = None
    if _TORCHRUN.match(cmd):
        launcher = "torchrun"
    elif _PYTHON.match(cmd):
        if len(rest) >= 2 and rest[0] == "-m" and rest[1] in ("torch.distributed.run", "torch.distributed.launch"):
            launcher, rest = "torchrun", rest[2:]
        elif rest and rest[0].endswith(".py"):
            launcher, nproc = "python", 1
        else:
            return None
    else:
        return None
    script = None
    args: list[str] = []
    k = 0
    while k < len(rest):
        t = rest[k]
        if script is None and launcher == "torchrun" and t.startswith("-"):
            name, _, val = t.partition("=")
            if name in _TORCHRUN_VALUED and not val and k + 1 < len(rest):
                val = rest[k + 1]
                k += 1
            if name in ("--nproc_per_node", "--nproc-per-node"):
                if val.isdigit():
                    nproc = int(val)
                else:
                    warnings.append(f"--nproc_per_node={val} is not a number; the runner chooses")
            k += 1
            continue
        if script is None:
            script = t
        else:
            args.append(t)
        k += 1
    if script is None or not script.endswith(".py"):
        return None
    safe = _safe_script(script, files, warnings)
    if safe is None:
        return None
    merged: dict[str, str] = {}
    for name, val in {**exported, **env}.items():
        if name in _OWNED:
            continue
        if not _env_allowed(name):
            warnings.append(f"ignored {name}: the runner does not take this variable from a README")
            continue
        if "$" in val or "`" in val:
            warnings.append(f"ignored {name}={val}: needs shell expansion")
            continue
        merged[name] = val
    bad_args = [a for a in args if "$" in a or "`" in a]
    if bad_args:
        warnings.append(f"ignored script arguments needing shell expansion: {bad_args}")
        args = [a for a in args if a not in bad_args]
    return RunCommand(script=safe, nproc=nproc, env=merged, args=args, launcher=launcher,
                      warnings=warnings)


def parse_run_command(readme: str | None, files: list[str] | set[str] | None = None) -> RunCommand:
    """The README's first runnable command (torchrun/python of a script inside the folder).

    `files`: the folder's files (relative paths); with it, only scripts that exist are accepted.
    Without a runnable command the default `torchrun train_gpt.py` is returned with a warning.
    """
    fileset = set(files) if files is not None else None
    found: list[RunCommand] = []
    for block in code_blocks(readme or ""):
        exported: dict[str, str] = {}
        for line in _logical_lines(block):
            toks = _tokens(line)
            if toks is None:
                continue
            for seg in _segments(toks):
                if seg[0] == "export":
                    for t in seg[1:]:
                        m = _ASSIGN.match(t)
                        if m:
                            exported[m.group(1)] = m.group(2)
                    continue
                if seg[0] == "unset":
                    for t in seg[1:]:
                        exported.pop(t, None)
                    continue
                rc = _parse_segment(seg, exported, fileset)
                if rc is not None:
                    rc.source = line[:500]
                    found.append(rc)
    if not found:
        rc = RunCommand(warnings=["README has no runnable torchrun/python command; using "
                                  f"`torchrun {DEFAULT_SCRIPT}` with no extra variables"])
        if fileset is not None and DEFAULT_SCRIPT not in fileset:
            rc.warnings.append(f"{DEFAULT_SCRIPT} is not in the folder")
        return rc
    # the training run is a torchrun of the script; a plain `python x.py` counts only when it
    # looks like training (READMEs also show data-preparation scripts, which are never run)
    ranked = [c for c in found if c.launcher == "torchrun"]
    ranked += [c for c in found if c.launcher == "python" and _looks_like_training(c.script)]
    if not ranked:
        rc = RunCommand(warnings=["README shows no torchrun/training command (only "
                                  f"{', '.join(sorted({c.script for c in found}))}); using "
                                  f"`torchrun {DEFAULT_SCRIPT}` with no extra variables"])
        return rc
    best = ranked[0]
    best.alternatives = len(ranked) - 1
    if best.alternatives:
        best.warnings.append(f"README shows {len(ranked)} training commands; the first is used")
    return best


def _looks_like_training(script: str) -> bool:
    name = PurePosixPath(script).name
    return name.startswith("train") or name == DEFAULT_SCRIPT
