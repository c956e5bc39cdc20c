"""The trainer: `python -m pgolf.train` or `torchrun --standalone --nproc_per_node=N -m pgolf.train`.

Flow (pipeline.md §4-§6): compile warmup then a full reset; the timed loop (eval time excluded) with
the wallclock stop and GPTQ reserve; EMA; then EMA -> diagnostic eval -> GPTQ -> artifact -> round
trip -> sliding-window score (-> TTT). Every log line keeps the record's exact shape (§9).
"""
from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import distributed as D
from .bpb import load_luts
from .config import Config
from .data import CoprimeStrideLoader, find_shards, load_validation_tokens
from .log import RunLog, eval_line, exact_line, train_line, val_line
from .model import GPT, build_model, count_params
from .optim import BANK_NAMES, build_optimizers, clip_grads, lr_scale, muon_momentum, set_schedules

PKG_DIR = Path(__file__).resolve().parent
EMA_DECAY = 0.997


def code_files() -> list[Path]:
    """Every code file of the package counts toward the submission size (§5.8)."""
    return sorted(PKG_DIR.glob("*.py"))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Trainer:
    def __init__(self, cfg: Config, info: D.DistInfo):
        self.cfg, self.info = cfg, info
        self.device = info.device
        self.is_cuda = self.device.type == "cuda"
        self.world = info.world_size
        self.accum = 8 // self.world
        self.log = RunLog(cfg.run_id, cfg.out_dir, enabled=info.is_main)
        self.amp = torch.bfloat16 if self.is_cuda else None
        wall = cfg.max_wallclock_seconds
        self.cap_ms = None
        if wall > 0:
            self.cap_ms = 1000.0 * wall - (cfg.gptq_reserve_ms if cfg.use_gptq else 0.0)

    # ---------------------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg, log = self.cfg, self.log
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        if self.is_cuda:
            torch.cuda.manual_seed_all(cfg.seed)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        log.preamble(code_files())
        self.luts = load_luts(cfg.tokenizer_path, cfg.vocab_size)
        log(f"val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path={cfg.tokenizer_path}")
        train_files = find_shards(cfg.data_path, "train")
        log(f"train_loader:dataset:{Path(cfg.data_path).resolve().name} train_shards:{len(train_files)}")
        self.val_tokens = load_validation_tokens(cfg.data_path, max(cfg.train_seq_len, cfg.eval_len))
        log(f"val_loader:shards pattern={os.path.join(cfg.data_path, 'fineweb_val_*.bin')} "
            f"tokens:{self.val_tokens.numel() - 1}")
        self.model: GPT = build_model(cfg, self.device)
        log(f"model_params:{count_params(self.model)}")
        xsa = [i for i, b in enumerate(self.model.blocks) if b.attn.xsa]
        log(f"XSA:last_{cfg.xsa_last_n} active_layers:{xsa}")
        log(f"world_size:{self.world} grad_accum_steps:{self.accum}")
        if self.is_cuda:
            from .attention import configure_sdpa

            log(configure_sdpa())
        else:
            log("sdp_backends:cudnn=False flash=False mem_efficient=False math=True")
        log(f"attention_mode:gqa num_heads:{cfg.num_heads} num_kv_heads:{cfg.num_kv_heads}")
        embed_lr = cfg.tied_embed_lr if cfg.tie_embeddings else cfg.embed_lr
        head_lr = 0.0 if cfg.tie_embeddings else cfg.head_lr
        log(f"tie_embeddings:{bool(cfg.tie_embeddings)} embed_lr:{embed_lr} head_lr:{head_lr} "
            f"matrix_lr:{cfg.matrix_lr} scalar_lr:{cfg.scalar_lr}")
        log(f"train_batch_tokens:{cfg.train_batch_tokens} train_seq_len:{cfg.train_seq_len} "
            f"iterations:{cfg.iterations} warmup_steps:{cfg.warmup_steps} "
            f"max_wallclock_seconds:{cfg.max_wallclock_seconds:.3f}")
        log(f"seed:{cfg.seed}")
        if cfg.use_gptq and self.cap_ms is not None:
            log(f"gptq:reserving {cfg.gptq_reserve_ms:.0f}ms from training budget, effective={self.cap_ms:.0f}ms")
        use_compile = self.is_cuda and cfg.compile
        mode = None if cfg.compile_mode in ("", "default") else cfg.compile_mode
        self.fwd = torch.compile(self.model, dynamic=False, fullgraph=True, mode=mode) if use_compile else self.model
        self.optimizers = build_optimizers(self.model, cfg)
        self.muon, self.adam_tok, self.adam_scalar = self.optimizers
        named = dict(self.model.named_parameters())
        self.params = list(named.values())
        self.nonbank = [p for n, p in named.items() if n not in BANK_NAMES]
        self._acc = None

    def new_loader(self) -> CoprimeStrideLoader:
        return CoprimeStrideLoader(self.cfg.data_path, self.cfg.train_seq_len, self.info.rank, self.world,
                                   self.accum, self.device, emulate_world=self.cfg.emulate_world_size)

    def autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=self.amp or torch.bfloat16,
                              enabled=self.amp is not None)

    # ---------------------------------------------------------------------------------------------
    def forward_backward(self, loader, clip: bool) -> torch.Tensor:
        """All micro-batches of one optimizer step; returns rank 0's mean micro-batch loss (on device).

        Record mode: grads of loss/accum accumulate in .grad, then the rank-local total is clipped.
        Emulated-8 mode: each micro-batch is one emulated rank, clipped on its own before summing.
        """
        cfg = self.cfg
        per_micro_clip = clip and loader.emulate and cfg.grad_clip_norm > 0
        total = torch.zeros((), device=self.device)
        if per_micro_clip and self._acc is None:
            self._acc = [torch.zeros_like(p) for p in self.params]
        for _ in range(self.accum):
            x, y = loader.next_batch(cfg.train_batch_tokens)
            with self.autocast():
                loss = self.fwd(x, y)
            total += loss.detach()
            if per_micro_clip:
                loss.backward()
                clip_grads(self.params, cfg.grad_clip_norm)
                torch._foreach_add_(self._acc, [p.grad for p in self.params], alpha=1.0 / self.accum)
                for p in self.params:
                    p.grad = None
            else:
                (loss / self.accum).backward()
        if per_micro_clip:
            for p, a in zip(self.params, self._acc):
                p.grad = a.clone()
            torch._foreach_zero_(self._acc)
        elif clip:
            clip_grads(self.params, cfg.grad_clip_norm)
        return total / self.accum

    def optimizer_step(self, sharded: bool) -> None:
        if sharded:
            self.muon.launch_reduce_scatters()
            for p in self.nonbank:
                D.all_reduce_avg(p.grad)
        elif self.info.distributed:
            for p in self.params:
                D.all_reduce_avg(p.grad)
        self.adam_tok.step()
        self.adam_scalar.step()
        self.muon.step()
        self.model.zero_grad(set_to_none=True)

    def warmup(self) -> None:
        """§4.6: real steps to compile/autotune/allocate, then restore weights and optimizer state."""
        cfg = self.cfg
        if cfg.warmup_steps <= 0:
            return
        init_model = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        init_opt = [o.state_dict() for o in self.optimizers]
        loader = self.new_loader()
        for k in range(1, cfg.warmup_steps + 1):
            self.forward_backward(loader, clip=False)
            self.optimizer_step(sharded=False)
            if cfg.warmup_steps <= 20 or k % 10 == 0 or k == cfg.warmup_steps:
                self.log(f"warmup_step:{k}/{cfg.warmup_steps}")
        self.model.load_state_dict(init_model)
        for o, s in zip(self.optimizers, init_opt):
            o.load_state_dict(s)
        self.model.zero_grad(set_to_none=True)

    def evaluate(self, model) -> tuple[float, float]:
        from .evaluate import standard_eval

        return standard_eval(model, self.val_tokens, self.luts, self.cfg, self.info.rank, self.world)

    # ---------------------------------------------------------------------------------------------
    def train(self) -> None:
        cfg, log, dev = self.cfg, self.log, self.device
        self.warmup()
        state = self.model.state_dict()
        self.ema = {k: v.detach().float().clone() for k, v in state.items()}
        ema_keys = list(self.ema)
        swa, swa_count = None, 0
        loader = self.new_loader()
        train_ms, step, stop_after = 0.0, 0, None
        sharded = self.info.distributed and self.world > 1
        sync(dev)
        t0 = time.perf_counter()
        while True:
            last = step == cfg.iterations or (stop_after is not None and step >= stop_after)
            if last or (cfg.val_loss_every > 0 and step % cfg.val_loss_every == 0):
                sync(dev)
                train_ms += 1000.0 * (time.perf_counter() - t0)
                vl, vb = self.evaluate(self.fwd)
                log(val_line(step, cfg.iterations, vl, vb, train_ms))
                sync(dev)
                t0 = time.perf_counter()
            if last:
                if stop_after is not None and step < cfg.iterations:
                    log(f"stopping_early: wallclock_cap train_time:{train_ms:.0f}ms step:{step}/{cfg.iterations}")
                break
            elapsed = train_ms + 1000.0 * (time.perf_counter() - t0)
            scale = lr_scale(step, elapsed, cfg, self.cap_ms)
            self.model.zero_grad(set_to_none=True)
            loss = self.forward_backward(loader, clip=True)
            set_schedules(self.optimizers, scale, muon_momentum(step, cfg))
            self.optimizer_step(sharded)
            with torch.no_grad():
                cur = self.model.state_dict()
                torch._foreach_lerp_([self.ema[k] for k in ema_keys], [cur[k].float() for k in ema_keys],
                                     1.0 - EMA_DECAY)
            step += 1
            if cfg.swa_enabled and scale < 0.2 and step % cfg.swa_every == 0:
                snap = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}  # dead in the record
                if swa is None:
                    swa, swa_count = {k: v.float() for k, v in snap.items()}, 1
                    log(f"swa:start step:{step}")
                else:
                    for k, v in snap.items():
                        swa[k] += v.float()
                    swa_count += 1
            if step <= 10 or (cfg.train_log_every > 0 and step % cfg.train_log_every == 0):
                lv = loss.item()
                log(train_line(step, cfg.iterations, lv, train_ms + 1000.0 * (time.perf_counter() - t0)))
            if self.cap_ms is not None:
                reached = torch.tensor(
                    float(train_ms + 1000.0 * (time.perf_counter() - t0) >= self.cap_ms), device=dev)
                D.all_reduce_max(reached)
                if stop_after is None and bool(reached.item()):
                    stop_after = step
        self.train_ms, self.steps = train_ms, step
        if self.is_cuda:
            log(f"peak memory allocated: {torch.cuda.max_memory_allocated() // 1024 // 1024} MiB "
                f"reserved: {torch.cuda.max_memory_reserved() // 1024 // 1024} MiB")

    # ---------------------------------------------------------------------------------------------
    def finish(self) -> dict:
        """§5.1: EMA, diagnostic eval, GPTQ, artifact, round trip, sliding window (and TTT)."""
        from .quant import collect_hessians, dequantize_state_dict, quantize_state_dict, rebank_state_dict
        from .quant import unbank_state_dict
        from .serialize import pack, unpack

        cfg, log, dev, info = self.cfg, self.log, self.device, self.info
        out_dir = Path(cfg.out_dir)
        results: dict = {}
        log("ema:applying EMA weights")
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                v.copy_(self.ema[k].to(v.dtype))
        sync(dev)
        t = time.perf_counter()
        vl, vb = self.evaluate(self.fwd)
        log(eval_line("DIAGNOSTIC post_ema", vl, vb, 1000.0 * (time.perf_counter() - t)))
        results["post_ema"] = (vl, vb)
        code_bytes = sum(p.stat().st_size for p in code_files())
        sd_cpu = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        if info.is_main:
            path = out_dir / "final_model.pt"
            torch.save(sd_cpu, path)
            log(f"Serialized model: {path.stat().st_size} bytes")
            log(f"Code size: {code_bytes} bytes")
        unbanked = unbank_state_dict(sd_cpu, cfg.num_layers)
        hessians = None
        if cfg.use_gptq:
            log(f"gptq:calibrating with {cfg.gptq_calib_samples} batches (training data)...")
            loader = self.new_loader()
            batches = (loader.next_batch(cfg.train_batch_tokens) for _ in range(cfg.gptq_calib_samples))
            sync(dev)
            t = time.perf_counter()
            hessians = collect_hessians(self.model, batches, dev)
            sync(dev)
            log(f"gptq:calibrated {len(hessians)} layers in {time.perf_counter() - t:.1f}s")
        quantized, meta, stats = quantize_state_dict(unbanked, hessians, cfg.quant_clip_range, device=dev)
        print(f"gptq_quantize: {stats['gptq_layers']} GPTQ layers, {stats['naive_layers']} naive layers", flush=True)
        artifact = out_dir / "final_model.int6.ptz"
        if info.is_main:
            blob = pack(quantized, meta)
            artifact.write_bytes(blob)
            log(f"Serialized model int6+lzma: {len(blob)} bytes")
            log(f"Total submission size int6+lzma: {len(blob) + code_bytes} bytes")
            results["artifact_bytes"] = len(blob)
            results["total_bytes"] = len(blob) + code_bytes
        D.barrier()
        q2, m2 = unpack(artifact.read_bytes())
        deq = dequantize_state_dict(q2, m2, unbanked)
        fresh = build_model(cfg, dev)
        fresh.load_state_dict(rebank_state_dict(deq, cfg.num_layers, sd_cpu), strict=True)
        fresh_fwd = torch.compile(fresh, dynamic=False, fullgraph=True) if (self.is_cuda and cfg.compile) else fresh
        sync(dev)
        t = time.perf_counter()
        vl, vb = self.evaluate(fresh_fwd)
        log(eval_line("final_int6_roundtrip", vl, vb, 1000.0 * (time.perf_counter() - t)))
        log(exact_line("final_int6_roundtrip", vl, vb))
        results["roundtrip"] = (vl, vb)
        if 0 < cfg.eval_stride < cfg.eval_len:
            strides = [cfg.eval_stride] + ([64] if cfg.eval_stride != 64 and 64 < cfg.eval_len else [])
            for stride in strides:
                label = "final_int6_sliding_window" + ("" if stride == cfg.eval_stride else "_s64")
                vl, vb = self.sliding(fresh, stride)
                results[label] = (vl, vb)
        if cfg.ttt_enabled:
            from .ttt import ttt_sliding_eval

            sync(dev)
            t = time.perf_counter()
            vl, vb = ttt_sliding_eval(fresh, self.val_tokens, self.luts, cfg, info.rank, self.world, dev, log=log)
            log(eval_line("legal_ttt", vl, vb, 1000.0 * (time.perf_counter() - t)))
            log(exact_line("legal_ttt", vl, vb))
            results["legal_ttt"] = (vl, vb)
        return results

    def sliding(self, model, stride: int) -> tuple[float, float]:
        from .evaluate import model_scorer, sliding_window_eval

        cfg, log, dev = self.cfg, self.log, self.device
        label = "final_int6_sliding_window" + ("" if stride == cfg.eval_stride else "_s64")
        sync(dev)
        t = time.perf_counter()
        scorer = model_scorer(model, compile=self.is_cuda and bool(cfg.compile))
        vl, vb = sliding_window_eval(scorer, self.val_tokens, self.luts, cfg.eval_len, stride, 32,
                                     self.info.rank, self.world, device=dev)
        log(eval_line(label, vl, vb, 1000.0 * (time.perf_counter() - t), extra=f"stride:{stride}"))
        log(exact_line(label, vl, vb))
        log(exact_line("final_int8_zlib_roundtrip", vl, vb))
        return vl, vb


def run(cfg: Config, info: D.DistInfo | None = None) -> dict:
    """Whole pipeline in this process (already-initialized `info`, or a fresh single process)."""
    info = info or D.DistInfo()
    trainer = Trainer(cfg, info)
    trainer.setup()
    trainer.train()
    results = trainer.finish() if cfg.post_train else {}
    results["steps"], results["train_ms"] = trainer.steps, trainer.train_ms
    return results


def main() -> int:
    """CLI entry: bad input (config, shards, tokenizer) ends with one `error: <code>: ...` line, exit 2."""
    from .data import ShardError

    try:
        cfg = Config.from_env()
        if not Path(cfg.tokenizer_path).is_file():
            raise FileNotFoundError(f"tokenizer not found: {cfg.tokenizer_path}")
        find_shards(cfg.data_path, "train")
        find_shards(cfg.data_path, "val")
    except ShardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"error: missing_input: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"error: bad_config: {e}", file=sys.stderr)
        return 2
    info = D.init()
    try:
        run(cfg, info)
    except ShardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        D.teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
