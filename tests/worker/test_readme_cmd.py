"""README run-command parsing: what the runner will and will not take from a README."""
from __future__ import annotations


from worker.readme_cmd import parse_run_command

FILES = ["README.md", "train_gpt.py", "hnet/train_hnet.py", "data/prep.py"]


def md(body: str) -> str:
    return f"# Title\n\nSome text.\n\n```bash\n{body}\n```\n"


def test_env_prefix_continuations_and_nproc():
    rc = parse_run_command(md("NUM_LAYERS=11 BIGRAM_DIM=112 \\\n  XSA_LAST_N=11 \\\n"
                              "  torchrun --standalone --nproc_per_node=8 train_gpt.py"), FILES)
    assert rc.script == "train_gpt.py" and rc.nproc == 8 and rc.launcher == "torchrun"
    assert rc.env == {"NUM_LAYERS": "11", "BIGRAM_DIM": "112", "XSA_LAST_N": "11"}
    assert rc.argv("/py", 2) == ["/py", "-m", "torch.distributed.run", "--standalone",
                                 "--nproc_per_node=2", "train_gpt.py"]


def test_exports_env_prefix_cd_loop_and_redirect():
    body = ("cd records/track_10min_16mb/2026-04-01_X\nexport TTT_ENABLED=1\nexport TTT_LR=0.005\n"
            "for SEED in 0 42 1234; do\n  SEED=$SEED env QK_GAIN_INIT=5.25 uv run torchrun --standalone "
            "--nproc_per_node 4 train_gpt.py > train_seed${SEED}.log 2>&1\ndone")
    rc = parse_run_command(md(body), FILES)
    assert rc.nproc == 4 and rc.script == "train_gpt.py" and rc.args == []
    assert rc.env == {"TTT_ENABLED": "1", "TTT_LR": "0.005", "QK_GAIN_INIT": "5.25"}


def test_owned_and_dangerous_variables_are_dropped():
    rc = parse_run_command(md("SEED=7 DATA_PATH=/x TOKENIZER_PATH=/y LD_PRELOAD=/evil.so PYTHONPATH=/p "
                              "PATH=/bin GITHUB_TOKEN=abc CUDA_VISIBLE_DEVICES=0 RUN_ID=ok "
                              "ARTIFACT_DIR=runs/$SEED torchrun --nproc_per_node=8 train_gpt.py"), FILES)
    assert rc.env == {"RUN_ID": "ok"}
    joined = " ".join(rc.warnings)
    for name in ("LD_PRELOAD", "PYTHONPATH", "GITHUB_TOKEN", "CUDA_VISIBLE_DEVICES", "ARTIFACT_DIR"):
        assert name in joined


def test_never_takes_other_commands_or_scripts_outside_the_folder():
    body = ("pip install brotli\ncurl -L https://x | sh\nrm -rf /\npython data/prep.py --variant sp1024\n"
            "torchrun --nproc_per_node=8 ../../evil.py\nbash -c 'torchrun train_gpt.py'")
    rc = parse_run_command(md(body), FILES)
    # nothing runnable: the default, with a warning naming what was seen
    assert rc.source is None and rc.script == "train_gpt.py" and rc.env == {}
    assert rc.warnings


def test_author_absolute_path_maps_to_the_folder_script():
    rc = parse_run_command(md("VOCAB_SIZE=1024 torchrun --standalone --nproc_per_node=8 "
                              "/root/code/parameter-golf/train_gpt.py"), FILES)
    assert rc.script == "train_gpt.py" and rc.env == {"VOCAB_SIZE": "1024"}
    assert any("mapped" in w for w in rc.warnings)


def test_markdown_escapes_and_first_of_several_commands():
    body = "RUN\\_ID=a \\\\\nDATA\\_PATH=./d \\\\\ntorchrun --nproc\\_per\\_node=8 train\\_gpt.py"
    rc = parse_run_command(md(body), FILES)
    assert rc.env == {"RUN_ID": "a"} and rc.nproc == 8
    two = md("ATTN=dg torchrun --nproc_per_node=8 train_gpt.py\ntorchrun --nproc_per_node=8 hnet/train_hnet.py")
    rc2 = parse_run_command(two, FILES)
    assert rc2.env == {"ATTN": "dg"} and rc2.alternatives == 1


def test_python_launcher_and_missing_readme():
    rc = parse_run_command(md("ITERATIONS=5 python3 train_gpt.py --fast"), FILES)
    assert rc.launcher == "python" and rc.nproc == 1 and rc.args == ["--fast"]
    assert rc.argv("/py") == ["/py", "train_gpt.py", "--fast"]
    assert parse_run_command(None, FILES).script == "train_gpt.py"
    bad = parse_run_command(md('torchrun "unterminated train_gpt.py'), FILES)
    assert bad.source is None


def test_every_shared_fixture_readme_parses(shared_dir):
    readmes = sorted((shared_dir / "fixtures" / "records").glob("*/*/README.md"))
    assert readmes
    torchrun = 0
    for p in readmes:
        rc = parse_run_command(p.read_text("utf-8", "replace"))
        assert rc.script.endswith(".py")
        assert all(k not in rc.env for k in ("SEED", "DATA_PATH", "PATH", "LD_PRELOAD"))
        torchrun += rc.source is not None and rc.launcher == "torchrun"
    assert torchrun >= len(readmes) // 2
