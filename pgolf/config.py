"""Every knob of the training stack in one dataclass (pipeline.md §8).

Field names are the record script's environment variables in lower case. Defaults are the values
the record ACTUALLY ran with (BIGRAM 2816x112, XSA on all 11 layers, GPTQ on, TTT off), not the
record script's code defaults, so `Config()` is the record configuration.
"""
from __future__ import annotations

import dataclasses
import os
import uuid
from dataclasses import dataclass, field, fields

CONTROL_PATTERNS = (
    "attn_scale,attn_scales,mlp_scale,mlp_scales,resid_mix,resid_mixes,q_gain,skip_weight,skip_weights,"
    "smear,dtg_gate,ve_layer_scales,ve_shared.scale,attn_gate,vr_lambda"
)


@dataclass
class Config:
    # data and tokenizer
    data_path: str = "./data/datasets/fineweb10B_sp1024"
    tokenizer_path: str = "./data/tokenizers/fineweb_1024_bpe.model"
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    seed: int = 1337
    # eval / logging cadence
    val_batch_size: int = 524288
    val_loss_every: int = 4000
    train_log_every: int = 500
    # schedule
    iterations: int = 20000
    warmdown_iters: int = 3500
    warmup_steps: int = 20
    train_batch_tokens: int = 786432
    train_seq_len: int = 2048
    eval_seq_len: int = 2048
    max_wallclock_seconds: float = 600.0
    # model shape
    qk_gain_init: float = 1.5
    vocab_size: int = 1024
    num_layers: int = 11
    num_kv_heads: int = 4
    model_dim: int = 512
    num_heads: int = 8
    mlp_mult: float = 3.0
    tie_embeddings: int = 1
    rope_base: float = 10000.0
    logit_softcap: float = 30.0
    # optimizer
    embed_lr: float = 0.6
    head_lr: float = 0.008
    tied_embed_lr: float = 0.035
    tied_embed_init_std: float = 0.005
    matrix_lr: float = 0.025
    scalar_lr: float = 0.025
    muon_momentum: float = 0.99
    muon_backend_steps: int = 5
    muon_momentum_warmup_start: float = 0.92
    muon_momentum_warmup_steps: int = 1500
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    grad_clip_norm: float = 0.3
    eval_stride: int = 64
    muon_beta2: float = 0.95  # read but unused, as in the record
    swa_enabled: int = 1
    swa_every: int = 50
    muon_wd: float = 0.04
    adam_wd: float = 0.04
    # architecture extras (record values)
    bigram_vocab_size: int = 2816
    bigram_dim: int = 112
    xsa_last_n: int = 11
    rope_dims: int = 16
    ln_scale: int = 1
    ve_enabled: int = 1
    ve_dim: int = 128
    ve_layers: str = "9,10"
    # test-time training (off in the record)
    ttt_enabled: int = 0
    ttt_lr: float = 0.002
    ttt_epochs: int = 3
    ttt_chunk_tokens: int = 32768
    ttt_freeze_blocks: int = 2
    ttt_momentum: float = 0.9
    ttt_batch_seqs: int = 32
    ttt_grad_clip: float = 1.0
    negative_slope: float = 0.5
    # quantization
    use_gptq: int = 1
    gptq_calib_samples: int = 64
    gptq_reserve_ms: float = 14000.0
    quant_clip_range: int = 31
    control_tensor_name_patterns: str = CONTROL_PATTERNS
    int8_keep_float_fp32_name_patterns: str = CONTROL_PATTERNS
    # pgolf-only switches (not in the record script)
    # 0: the loader and the clipping behave exactly as the record script at the actual world size
    #    (what the reference runs on one GPU did). 8: emulate the 8-GPU data stream and per-rank
    #    clipping on fewer GPUs (pipeline.md §1.4, §4.4).
    emulate_world_size: int = 0
    compile: int = 1  # torch.compile on CUDA (never on CPU)
    compile_mode: str = "default"  # torch.compile mode of the training model (e.g. max-autotune-no-cudagraphs)
    post_train: int = 1  # 0: stop after training (speed benchmarks skip EMA/GPTQ/evals)
    out_dir: str = "."  # where logs/, final_model.pt and final_model.int6.ptz go

    # ------------------------------------------------------------------------------------------
    @property
    def mlp_hidden(self) -> int:
        return int(self.mlp_mult * self.model_dim)

    @property
    def head_dim(self) -> int:
        return self.model_dim // self.num_heads

    @property
    def eval_len(self) -> int:
        return self.eval_seq_len if self.eval_seq_len > 0 else self.train_seq_len

    @property
    def ve_layer_list(self) -> list[int]:
        if not self.ve_enabled:
            return []
        return [int(s) for s in self.ve_layers.split(",") if s.strip()]

    @property
    def control_patterns(self) -> tuple[str, ...]:
        return tuple(p for p in self.control_tensor_name_patterns.split(",") if p)

    def validate(self) -> None:
        if self.logit_softcap <= 0:
            raise ValueError(f"logit_softcap must be > 0, got {self.logit_softcap}")
        if self.model_dim % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError("model_dim must divide by num_heads and num_heads by num_kv_heads")
        if self.head_dim % 2 or (self.rope_dims and self.rope_dims % 2):
            raise ValueError("head_dim and rope_dims must be even")

    @classmethod
    def from_env(cls, environ=os.environ) -> "Config":
        """Read every field from its upper-case environment variable, converting to the field type."""
        cfg = cls()
        for f in fields(cls):
            key = f.name.upper()
            if key not in environ:
                continue
            raw = environ[key]
            typ = type(getattr(cfg, f.name))
            try:
                value = typ(float(raw)) if typ is int else typ(raw)
            except ValueError as e:
                raise ValueError(f"env {key}={raw!r} is not a valid {typ.__name__}") from e
            setattr(cfg, f.name, value)
        cfg.validate()
        return cfg

    @classmethod
    def tiny(cls, **overrides) -> "Config":
        """A CPU-sized config for tests and the demo: same architecture, small everything."""
        base = dict(
            num_layers=4, model_dim=64, num_heads=4, num_kv_heads=2, mlp_mult=2.0,
            bigram_vocab_size=128, bigram_dim=32, xsa_last_n=4, rope_dims=8, ve_dim=32, ve_layers="2,3",
            train_seq_len=128, eval_seq_len=128, train_batch_tokens=8 * 128 * 2, val_batch_size=8 * 128 * 4,
            iterations=6, warmdown_iters=3, warmup_steps=2, val_loss_every=3, train_log_every=1,
            max_wallclock_seconds=0.0, eval_stride=64, gptq_calib_samples=2, compile=0, swa_enabled=0,
        )
        base.update(overrides)
        cfg = cls(**base)
        cfg.validate()
        return cfg

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)
