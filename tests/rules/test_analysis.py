"""rules.analysis: env switches, validation taint, main flow and the TTT shape, on small scripts."""
from __future__ import annotations

import ast
import textwrap

import pytest

from rules.analysis.env import UNKNOWN, switches
from rules.analysis.flow import build_flow
from rules.analysis.index import ParseFailure, get_index
from rules.analysis.ngram import tables_of
from rules.analysis.taint import is_train_data_name, is_val_name, val_taint
from rules.analysis.ttt import TTTAnalysis


def _index(src: str):
    return get_index(textwrap.dedent(src))


def _expr(src: str) -> ast.expr:
    return ast.parse(src, mode="eval").body


HP = """
import os
class Hyperparameters:
    ttt_enabled = bool(int(os.environ.get("TTT_ENABLED", "0")))
    ttt_epochs = int(os.environ.get("TTT_EPOCHS", 3))
    calib = os.environ.get("GPTQ_CALIB_SOURCE", "train")
    use_ppm = os.environ.get("USE_PPM", "false").lower() in ("1", "true")
"""


# -- env ------------------------------------------------------------------------------------
def test_env_defaults_resolve_through_int_and_bool():
    sw = switches(_index(HP), {})
    assert sw.evaluate(_expr("args.ttt_enabled")) is False
    assert sw.evaluate(_expr("args.ttt_epochs")) == 3
    assert sw.evaluate(_expr("args.calib == 'val'")) is False
    assert sw.evaluate(_expr("args.use_ppm")) is False


def test_logged_config_overrides_the_default():
    sw = switches(_index(HP), {"ttt_enabled": "True", "ttt_epochs": "1", "use_ppm": "True"})
    assert sw.evaluate(_expr("args.ttt_enabled")) is True
    assert sw.evaluate(_expr("args.ttt_epochs")) == 1
    assert sw.evaluate(_expr("args.use_ppm")) is True


def test_direct_env_reads_and_unknowns():
    sw = switches(_index(HP), {})
    assert sw.evaluate(_expr("os.environ.get('NGRAM_FULL_RESCORE', '1') == '1'")) is True
    assert sw.evaluate(_expr("int(os.getenv('X', '0'))")) == 0
    assert sw.evaluate(_expr("some_local_flag")) is UNKNOWN
    assert sw.evaluate(_expr("args.ttt_enabled and some_local_flag")) is False   # False and ? = False
    assert sw.evaluate(_expr("args.ttt_enabled or some_local_flag")) is UNKNOWN


def test_guards_else_branch_and_early_return():
    idx = _index(HP + """
def run(args):
    if not args.ttt_enabled:
        return None
    adapt()

def main(args):
    if args.ttt_enabled:
        a()
    else:
        b()
""")
    sw = switches(idx, {})
    calls = {c.func.id: c for c in ast.walk(idx.tree) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
    assert sw.off_guard(calls["adapt"]) is not None          # after `if not ttt_enabled: return`
    assert sw.off_guard(calls["a"]) is not None
    assert sw.off_guard(calls["b"]) is None
    on = switches(idx, {"ttt_enabled": "True"})
    assert on.off_guard(calls["adapt"]) is None and on.off_guard(calls["b"]) is not None


# -- taint ----------------------------------------------------------------------------------
def test_val_and_train_names():
    assert is_val_name("val_tokens") and is_val_name("val_np") and is_val_name("x_val")
    assert not is_val_name("val_loss") and not is_val_name("eval_stride") and not is_val_name("val")
    assert is_train_data_name("train_loader") and is_train_data_name("train_files")
    assert not is_train_data_name("train_seq_len") and not is_train_data_name("train_batch_tokens")


TAINT_SRC = """
def load(pattern):
    return read(pattern)

def read(path):
    return open(path).read()

def train_model(h, val_data):
    model = build(h)
    vl = evaluate(model, val_data)
    return model

def build(h):
    return object()

def evaluate(model, data):
    return data.sum()

def main(args):
    val_tokens = load(args.val_files)
    train_tokens = read("train.bin")
    total = val_tokens.numel() - 1
    chunk = val_tokens[0:total]
    x, y = chunk[:-1], chunk[1:]
    buf = []
    buf.append(y)
    xb = zeros()
    xb[0, :3] = x
    acc = 0
    acc += x.sum()
    for a, b in zip(val_tokens, val_tokens):
        pass
    model = train_model(args, val_tokens)
    score = evaluate(model, val_tokens)
"""


def test_taint_follows_unpacking_subscript_stores_and_appends():
    idx = _index(TAINT_SRC)
    t = val_taint(idx, switches(idx, {}))
    local = t.tainted["main"]
    main = idx.functions["main"][0]
    assert t.expr(main, ast.parse("val_tokens", mode="eval").body)     # tainted by its name
    for name in ("chunk", "x", "y", "buf", "xb", "acc", "a", "b", "score"):
        assert name in local, name
    assert "total" not in local            # sizes do not carry validation data
    assert "train_tokens" not in local     # read() is tainted only through its argument
    assert "model" not in local            # train_model's result does not depend on val_data
    assert "path" in t.params.get("read", set())


# -- flow -----------------------------------------------------------------------------------
FLOW_SRC = """
def train_model(h, loader):
    opt = make_opt()
    while True:
        x, y = loader.next_batch()
        loss = model(x, y)
        loss.backward()
        opt.step()
        if done():
            break
    return model

def eval_val(h, model, val_tokens):
    with torch.no_grad():
        return model(val_tokens)

def timed(label, fn, *args):
    return fn(*args)

def serialize(model):
    torch.save(model.state_dict(), "m.pt")

def train_and_eval(h):
    train_loader = Loader(h.train_files)
    val_tokens = load(h.val_files)
    model = train_model(h, train_loader)
    serialize(model)
    timed("final", eval_val, h, model, val_tokens)

def main():
    h = H()
    train_and_eval(h)

if __name__ == "__main__":
    main()
"""


def test_flow_descends_into_train_and_eval_and_finds_the_eval_phase():
    idx = _index(FLOW_SRC)
    sw = switches(idx, {})
    flow = build_flow(idx, sw, val_taint(idx, sw))
    assert [f.name for f in flow.chain] == ["main", "train_and_eval"]
    phases = {s.line: s.phase for s in flow.sites if s.targets}
    by_name = {t.name: s.phase for s in flow.sites for t in s.targets}
    assert by_name["train_model"] == "pre"
    assert by_name["serialize"] == "eval"
    assert by_name["eval_val"] == "eval"          # passed to timed() by name
    assert "eval_val" in flow.reachable("eval")
    assert "train_model" not in flow.reachable("eval")
    assert phases


def test_module_level_script_without_main():
    idx = _index("""
opt = make()
for step in range(10):
    loss = model(*train_loader.next_batch())
    loss.backward()
    opt.step()
result = eval_val(model, val_tokens)

def eval_val(model, val_tokens):
    return model(val_tokens)
""")
    sw = switches(idx, {})
    flow = build_flow(idx, sw, val_taint(idx, sw))
    assert flow.entry is None and flow.train_end is not None
    assert "eval_val" in flow.reachable("eval")


# -- TTT shapes -----------------------------------------------------------------------------
def _classify(src: str, fn: str, config: dict | None = None):
    idx = _index("import torch\n" + src)
    sw = switches(idx, config or {})
    ttt = TTTAnalysis(idx, val_taint(idx, sw), sw)
    return ttt.classify(idx.functions[fn][0])


SCORE_FIRST = """
def ttt(model, val_tokens, n, epochs):
    loss_sum = 0.0
    for ci in range(n):
        chunk = val_tokens[ci * 10:(ci + 1) * 10]
        with torch.no_grad():
            loss_sum += model(chunk).sum()
        if ci < n - 1:
            for _ep in range(epochs):
                loss = model(chunk)
                loss.backward()
    return loss_sum
"""


def test_score_first_chunk_loop_is_legal():
    site = _classify(SCORE_FIRST, "ttt")
    assert site.kind == "score_first" and site.guarded_last


def test_pre_quant_training_is_train_only():
    site = _classify("""
def adapt(model, val_tokens, epochs):
    for epoch in range(epochs):
        for i in range(0, 100, 10):
            loss = model(val_tokens[i:i + 10])
            loss.backward()
            opt.step()
""", "adapt")
    assert site.kind == "train_only" and site.line > 0


def test_train_then_score_and_scoring_inside_epochs():
    assert _classify("""
def ttt(model, val_tokens, n):
    acc = 0.0
    for ci in range(n):
        chunk = val_tokens[ci:ci + 10]
        model(chunk).backward()
        with torch.no_grad():
            acc += model(chunk).sum()
    return acc
""", "ttt").kind == "train_then_score"
    assert _classify("""
def ttt(model, val_tokens, n, args):
    for epoch in range(args.ttt_epochs):
        loss_sum = 0.0
        for ci in range(n):
            chunk = val_tokens[ci:ci + 10]
            with torch.no_grad():
                loss_sum += model(chunk).sum()
            model(chunk).backward()
    return loss_sum
""", "ttt").kind == "score_in_epoch"


def test_single_epoch_resolved_from_config_is_one_pass():
    src = HP + """
def ttt(model, val_tokens, n, args):
    for epoch in range(args.ttt_epochs):
        loss_sum = 0.0
        for ci in range(n):
            chunk = val_tokens[ci:ci + 10]
            with torch.no_grad():
                loss_sum += model(chunk).sum()
            model(chunk).backward()
    return loss_sum
"""
    assert _classify(src, "ttt").kind == "score_in_epoch"
    assert _classify(src, "ttt", {"ttt_epochs": "1"}).kind == "score_first"


def test_training_helper_called_after_scoring_is_covered():
    site = _classify("""
def sgd(model, docs):
    for d in docs:
        model(d).backward()

def phased(model, val_tokens, bounds):
    done = []
    acc = 0.0
    for d in range(100):
        doc = val_tokens[d:d + 5]
        with torch.no_grad():
            acc += model(doc).sum()
        done.append(doc)
        if d in bounds:
            sgd(model, done)
    return acc
""", "phased")
    assert site.kind == "score_first" and site.via is not None


# -- n-gram tables --------------------------------------------------------------------------
def test_target_detection_uses_context_offsets():
    idx = _index("""
def f(val_np, n, table, P):
    for j in range(3, n):
        ctx = val_np[j - 1] * P ^ val_np[j - 2]
        tgt = val_np[j]
        key = (ctx ^ (tgt * P)) & 1023
        p = table[key]
        row = table[ctx & 1023]
""")
    ft = tables_of(idx.functions["f"][0])
    subs = {ast.unparse(s): s for s in ast.walk(idx.functions["f"][0].node) if isinstance(s, ast.Subscript)}
    assert ft.is_target(subs["val_np[j]"]) and not ft.is_target(subs["val_np[j - 1]"])
    assert ft.combines_target(subs["table[key]"].slice) is not None
    assert ft.combines_target(subs["table[ctx & 1023]"].slice) is None


# -- index ----------------------------------------------------------------------------------
def test_index_is_cached_and_syntax_errors_are_sentences():
    src = "def f():\n    return 1\n"
    assert get_index(src) is get_index(src)
    with pytest.raises(ParseFailure) as e:
        get_index("def broken(:\n    pass\n")
    assert "line 1" in e.value.sentence


def test_a_document_loop_named_like_an_epoch_is_not_one():
    site = _classify("""
def ttt(model, val_tokens, docs):
    acc = 0.0
    for ep in range(len(docs)):
        doc = val_tokens[docs[ep][0]:docs[ep][1]]
        for ci in range(4):
            chunk = doc[ci * 8:(ci + 1) * 8]
            with torch.no_grad():
                acc += model(chunk).sum()
            model(chunk).backward()
    return acc
""", "ttt")
    assert site.kind == "score_first"


def test_accumulating_the_pre_update_loss_after_the_step_is_score_first():
    site = _classify("""
def ttt(model, val_tokens, n):
    loss_sum = 0.0
    for ci in range(n):
        chunk = val_tokens[ci * 8:(ci + 1) * 8]
        loss = model(chunk)
        loss.backward()
        opt.step()
        loss_sum += loss.detach()
    return loss_sum
""", "ttt")
    assert site.kind == "score_first"
    # the same with the loss recomputed after the update is train-then-score
    assert _classify("""
def ttt(model, val_tokens, n):
    loss_sum = 0.0
    for ci in range(n):
        chunk = val_tokens[ci * 8:(ci + 1) * 8]
        loss = model(chunk)
        loss.backward()
        opt.step()
        loss = model(chunk)
        loss_sum += loss.detach()
    return loss_sum
""", "ttt").kind == "train_then_score"
