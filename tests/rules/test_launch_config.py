"""README / .sh run commands as configuration evidence (rules.analysis.launch)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from rules.analysis.launch import command_env, launch_evidence


def test_env_prefix_before_a_launcher_is_read():
    assert command_env("PPM_ENABLED=1 PPM_SUBSET_TOKENS=8000000 torchrun --standalone train_gpt.py") == \
        {"PPM_ENABLED": "1", "PPM_SUBSET_TOKENS": "8000000"}
    assert command_env("$ SEED=7 python3 train_gpt.py") == {"SEED": "7"}
    assert command_env("export TTT_ENABLED=1 TTT_LR=0.002") == {"TTT_ENABLED": "1", "TTT_LR": "0.002"}


def test_assignments_not_followed_by_a_launcher_are_not_a_run_command():
    assert command_env("VOCAB_SIZE=1024 NUM_LAYERS=9") == {}
    assert command_env("DATA=x ls data/") == {}
    assert command_env("# TTT_ENABLED=1 torchrun train_gpt.py") == {}
    assert command_env("echo TTT_ENABLED=1 torchrun") == {}


def test_readme_fences_continuations_and_first_value_wins(tmp_path: Path):
    readme = ("Prose `TTT_ENABLED=9 torchrun x` is not a command.\n\n```bash\nTTT_ENABLED=1 \\\n"
              "  SEED=42 torchrun --standalone train_gpt.py\n```\n\n```python\nX=1 python a.py\n```\n"
              "```bash\nTTT_ENABLED=0 torchrun train_gpt.py\n```\n")
    (tmp_path / "run.sh").write_text("export GPTQ_RESERVE_SECONDS=8\ntorchrun train_gpt.py\n")
    sub = SimpleNamespace(readme=readme, files=["README.md", "run.sh"], root=tmp_path, logs=[])
    ev = launch_evidence(sub)
    assert ev.env == {"TTT_ENABLED": "1", "SEED": "42", "GPTQ_RESERVE_SECONDS": "8"}
    assert ev.where["TTT_ENABLED"] == "README.md:4" and ev.where["GPTQ_RESERVE_SECONDS"] == "run.sh:1"
