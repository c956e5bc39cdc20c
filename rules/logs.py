"""The log grammar: one parser for every train-log generation of Parameter Golf records.

(Skeleton by the foundation commit: the dataclass below is the contract other modules use;
`parse_log` is implemented by the log-grammar work.)
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LogLine:
    """A line of a log, for evidence: 1-based line number and the text as written."""
    line: int
    text: str


@dataclass
class StepPoint:
    step: int
    total: int | None
    train_loss: float | None = None
    val_loss: float | None = None
    val_bpb: float | None = None
    train_time_ms: float | None = None


@dataclass
class ParsedLog:
    file: str                                  # path relative to the submission root
    seed: int | None = None
    # the scored line (the one submission.json reports), see rules.md "Choosing the score line"
    val_bpb: float | None = None
    val_loss: float | None = None
    score_tag: str | None = None               # e.g. final_int6_sliding_window_exact, legal_ttt_exact
    # sizes
    artifact_bytes: int | None = None          # "Total submission size ...: N bytes" (max if repeated w/ int tag)
    model_bytes: int | None = None             # "Serialized model <fmt>: N bytes"
    code_bytes: int | None = None              # the code size that enters the total (compressed when logged)
    code_bytes_raw: int | None = None          # "Code size: N" or "Code size (uncompressed): N"
    code_bytes_compressed: int | None = None   # "Code size (compressed): N"
    size_format: str | None = None             # int6+lzma, int8+zlib, ...
    # times
    train_time_ms: float | None = None         # from stopping_early, else the last step line's train_time
    stop_step: int | None = None
    total_steps: int | None = None             # the M of step:N/M
    stopped_early: bool = False
    eval_time_ms: float | None = None          # the scored evaluation's time (total_eval_time or score line eval_time)
    eval_time_strict_ms: float | None = None   # sum of all post-training eval_time + compile warm-up
    gptq_reserve_ms: float | None = None
    gptq_collect_s: float | None = None        # Hessian collection time
    gptq_calib_source: str | None = None       # "training data" / "val" / "self-generated" when the log says
    post_train_elapsed_s: float | None = None  # wallclock:post_gptq total_elapsed
    # data fingerprints
    train_shards: int | None = None
    val_tokens: int | None = None
    # configuration echoed by the run
    config: dict[str, str] = field(default_factory=dict)   # Hyperparameters block / key:value header lines
    gpus: list[str] = field(default_factory=list)          # nvidia-smi GPU names
    steps: list[StepPoint] = field(default_factory=list)
    peak_memory_mib: int | None = None
    ttt_lines: list[LogLine] = field(default_factory=list)  # ttt phase markers (start/phased/lora:docs)
    # where each field was read (field name -> line), for evidence
    where: dict[str, LogLine] = field(default_factory=dict)
    # problems found while parsing (missing lines, binary content, ...), one sentence each
    problems: list[str] = field(default_factory=list)
    is_binary: bool = False


def parse_log(text: str, file: str) -> ParsedLog:  # pragma: no cover - replaced by the implementation
    raise NotImplementedError
