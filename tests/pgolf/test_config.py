"""Config: the record's values as defaults, env parsing with clear errors, the tiny CPU config."""
from __future__ import annotations

import pytest

from pgolf.config import Config


def test_defaults_are_the_record_configuration():
    c = Config()
    assert (c.bigram_vocab_size, c.bigram_dim, c.xsa_last_n, c.use_gptq, c.ttt_enabled) == (2816, 112, 11, 1, 0)
    assert (c.train_batch_tokens, c.train_seq_len, c.max_wallclock_seconds, c.gptq_reserve_ms) == (
        786432, 2048, 600.0, 14000.0)
    assert c.mlp_hidden == 1536 and c.head_dim == 64 and c.ve_layer_list == [9, 10]
    assert "ve_shared.scale" in c.control_patterns


def test_from_env_converts_types():
    env = {"ITERATIONS": "600", "MATRIX_LR": "0.03", "VE_LAYERS": "8,9,10", "DATA_PATH": "/tmp/data",
           "MAX_WALLCLOCK_SECONDS": "0", "WARMUP_STEPS": "5.0", "UNRELATED": "x"}
    c = Config.from_env(env)
    assert c.iterations == 600 and isinstance(c.iterations, int) and c.warmup_steps == 5
    assert c.matrix_lr == 0.03 and c.ve_layer_list == [8, 9, 10] and c.data_path == "/tmp/data"
    assert c.max_wallclock_seconds == 0.0


def test_from_env_rejects_bad_values():
    with pytest.raises(ValueError, match="ITERATIONS"):
        Config.from_env({"ITERATIONS": "many"})
    with pytest.raises(ValueError, match="logit_softcap"):
        Config.from_env({"LOGIT_SOFTCAP": "0"})
    with pytest.raises(ValueError, match="num_heads"):
        Config.from_env({"NUM_HEADS": "6"})


def test_tiny_is_small_and_overridable():
    t = Config.tiny(iterations=2)
    assert t.num_layers <= 4 and t.model_dim <= 128 and t.train_seq_len == 128 and t.iterations == 2
    assert t.vocab_size == 1024 and t.compile == 0
