"""The training loop. Read this file first: everything it calls lives in its own module
(data: ift.data, model: ift.model, the engine: ift.engine, the process group: ift.distributed,
checkpoints: ift.checkpoint, where a run continues: ift.resume, the run directory: ift.rundir,
tracking: ift.tracking, stopping: ift.stop)."""

from __future__ import annotations

import json
import logging
import os
import time

import torch

from ift import faults, rundir, sequence_parallel, stop
from ift.atomic import write_text
from ift.checkpoint import Checkpointer
from ift.config import Config, save_config, to_dict
from ift.data.adapt import build_adapter
from ift.data.heldout import heldout_batches
from ift.data.loader import PackedLoader, Prefetcher, Step, training_loader
from ift.data.prepare import mixture_definition, mixture_report, prepare_data
from ift.distributed import StopVote, init_distributed, main_process_first, resolve_dtype, setup_environment
from ift.engine import deepspeed_config, initialize, model_inputs, pin_batch
from ift.flops import device_peak_tflops
from ift.resume import Resume, load, plan_resume, run_fingerprints
from ift.step_metrics import LossTally, Window, grad_norm, heldout_loss, nonfinite_steps, peak_memory_gb
from ift.tracking import Tracker, continue_run

log = logging.getLogger(__name__)


class Trainer:
    """Set-up in __init__, then `train()`: the loop, one `train_step` per optimizer step,
    `log_metrics` every train.log_every steps; the checkpointer saves when its policy says so."""

    resumed_at: float | None  # when loading a checkpoint began, until the first step after it

    def __init__(self, cfg: Config):
        setup_environment()
        from accelerate.utils import set_seed

        cfg.model.dtype = resolve_dtype(cfg.model.dtype)  # the saved config says what ran
        self.rank, self.world, _ = init_distributed(cfg.train.dist_timeout_min, cfg.train.host_timeout_min)
        # data-parallel rank and size, and the slice of each row this rank feeds the model (ift.sequence_parallel)
        sp = cfg.train.sequence_parallel
        self.dp_rank, self.dp_world, self.sp_rank = sequence_parallel.layout(self.rank, self.world, sp)
        self.grad_divisor = sequence_parallel.gradient_divisor(cfg.train.zero_stage, self.world, sp)
        self.main = self.rank == 0
        self.cfg, self.run_dir, self.run = cfg, cfg.run_dir, rundir.RunDir(cfg.run_dir)
        if self.main:
            os.makedirs(self.run_dir, exist_ok=True)
            save_config(cfg, self.run.config)
        set_seed(cfg.run.seed)
        self.tasks, self.tokenizer, self.tokenized, self.rates = prepare_data(cfg)
        self.names = [x.name for x in self.tokenized]
        if self.main:
            write_text(self.run.mixture, json.dumps(mixture_report(self.tasks, self.tokenized, self.rates), indent=1))
        adapt = cfg.data.mixture.adapt
        self.heldout = heldout_batches(cfg, self.tokenizer) if cfg.eval.every or adapt.signal == "heldout" else None
        held = self.heldout[0] if self.heldout else None
        self.adapter = build_adapter(cfg.data.mixture, self.tokenized, self.rates, held) if adapt.rule else None
        self.step, self.resumed_at = 0, None
        lm, ds_config = self._build_model()
        self.fingerprints = run_fingerprints(lm, self.tokenizer, mixture_definition(cfg, self.rates))
        resume = plan_resume(cfg, self.run, self.world, self.fingerprints)
        self._build_engine(lm, ds_config, resume)
        self.data = Prefetcher(self._resume(resume) if resume else self._make_loader(cfg.run.seed), pin_batch)
        self.checkpointer = Checkpointer(self.engine, self.run.checkpoints, cfg.train, self.checkpoint_state)
        self.tracker = Tracker(cfg, self.run_dir, enabled=self.main)
        self.peak_tflops = cfg.train.peak_tflops or device_peak_tflops(self.engine.device)
        if self.main and self.step == 0:
            rows = [{"task": n, "examples": len(x), "rate": self.rates[n]} for n, x in zip(self.names, self.tokenized)]
            self.tracker.table("mixture", rows)
        stop.install_signal_handlers(keep_existing=True)  # a launcher's own handlers stay
        self.tally = LossTally(len(self.names), self.engine.device, self.step)
        # the adaptive mixture's own sums since its last update (folded into the adapter at saves)
        self.mix_tally = LossTally(len(self.names), self.engine.device) if self.adapter else None
        if self.adapter and self.main and self.step == 0:
            self.tracker.log(self.adapter.metrics(), 0)
        self.stop_vote = StopVote()
        self.nonfinite_skipped = 0
        self._window_reset()

    # ------------------------------------------------------------------ the loop

    def train(self) -> dict:
        t = self.cfg.train
        bar = None
        if self.main:
            from tqdm import tqdm

            bar = tqdm(total=t.max_steps, initial=self.step, desc=self.cfg.run.name, dynamic_ncols=True)
        while self.step < t.max_steps and not self._epochs_done():
            batch = self.data.next_step()
            self.train_step(batch)
            self.step += 1
            self.window.add(batch, self.data.rows_per_step)
            if self.resumed_at is not None:
                self._log_first_step_after_resume()
            if bar is not None:
                bar.update(1)
            stopping = self.stop_vote.exchange(stop.requested())  # every rank agrees, then all save together
            e, last = self.cfg.eval, self.step == t.max_steps  # held-out evaluations: every N steps and at the end
            scores = self._heldout_scores() if e.every and (self.step % e.every == 0 or last) else {}
            if e.generate_every and (self.step % e.generate_every == 0 or last):
                scores.update(self._heldout_generation())
            if self.adapter and self.step % self.adapter.cfg.every == 0:
                scores = self._adapt_mixture(scores)
            if self.step % t.log_every == 0 or self.step == t.max_steps:
                metrics = self.log_metrics(scores)
                if bar is not None:
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}", tok_s=f"{metrics['tokens_per_s']:.0f}")
            elif scores:
                self.tracker.log(scores, self.step)
            if self.checkpointer.step_done(self.step, stopping):
                self.window.paused += self.checkpointer.seconds
            faults.maybe_die("step", self.step, self.rank)  # tests only
            if stopping:
                if self.main:
                    log.info(
                        "stopping at step %d: %s; checkpoint saved, the requeued job resumes from it",
                        self.step,
                        stop.reason(),
                    )
                break
        if bar is not None:
            bar.close()
        self.stop_vote.drain()
        return self.finish()

    def train_step(self, batch: Step) -> None:
        """One optimizer step: grad_accum micro-batches forward and backward, losses tallied on the device."""
        t, device = self.cfg.train, self.engine.device
        loss, tokens = self.tally.step_loss.zero_(), self.tally.step_tokens.zero_()
        for micro in batch.micro_batches:
            inputs, task = model_inputs(micro, device)
            losses = self.engine(**inputs)  # per target token, fp32
            # Global-batch token mean: DeepSpeed divides by grad_accum and, summing over ranks, by
            # grad_divisor (the world, or the data-parallel size under sequence parallelism at
            # ZeRO-1/2); scale by both to get sum(token losses) / (target tokens of the global batch).
            self.engine.backward(losses.sum() * (self.grad_divisor * t.grad_accum / batch.target_tokens))
            self.engine.step()
            loss.index_add_(0, task, losses.detach().double())
            tokens.index_add_(0, task, torch.ones_like(losses, dtype=torch.float64))
        self.tally.add_step(loss, tokens)
        if self.mix_tally:
            self.mix_tally.add_step(loss, tokens)

    # ------------------------------------------------------------------ set-up

    def _build_model(self):
        """The model (sharded at build under ZeRO-3) and the DeepSpeed config it was built for."""
        from ift.model import build_model, model_config

        cfg = self.cfg
        width = model_config(cfg.model, self.tokenizer)
        sequence_parallel.check(cfg, self.world, width)
        ds_config = deepspeed_config(cfg, self.world, getattr(width.get_text_config(), "hidden_size", None))
        return build_model(cfg.model, self.tokenizer, ds_config, cfg.run.seed), ds_config

    def _build_engine(self, lm, ds_config: dict, resume: Resume | None) -> None:
        """The DeepSpeed engine around the model; a checkpoint from another world size is loaded in
        its universal form, which the engine must know when it starts."""
        from ift.flops import flop_counter
        from ift.model import CausalLMLoss, count_parameters

        cfg = self.cfg
        if resume and resume.universal:
            ds_config["checkpoint"] = {"load_universal": True}
        self.n_params = count_parameters(lm)
        self.flops = flop_counter(lm)
        mpu = sequence_parallel.setup(lm, cfg)
        self.engine, _, self.scheduler = initialize(cfg, CausalLMLoss(lm, cfg.train.loss_chunk), ds_config, mpu)
        if cfg.eval.generate_every:
            from ift.eval.evaluate import generation_prompts

            with main_process_first(local=True):  # as the held-out batches: local rank 0 fills the caches first
                self.lm, self.generation = lm, generation_prompts(cfg, self.tokenizer, lm)

    def _make_loader(self, seed: int) -> PackedLoader:
        pad = self.tokenizer.pad_token_id
        return training_loader(
            self.cfg, self.tokenized, self.rates, pad, seed, self.dp_world, self.dp_rank, self.sp_rank
        )

    def _resume(self, resume: Resume) -> PackedLoader:
        """The engine's state from the checkpoint, and the data stream where it stopped."""
        path = resume.path
        self.resumed_at = time.perf_counter()
        state = load(self.engine, path, resume.universal)
        self.step = state["step"]
        faults.maybe_die("resume", self.step, self.rank)  # tests only
        if "mixture" in resume.allowed_mismatch:  # new rates: the stream restarts here, seeded by the step
            loader = self._make_loader(self.cfg.run.seed + self.step)
            log.warning(
                "mixture changed since %s: data stream restarted at step %d with the new rates", path, self.step
            )
        else:
            loader = self._make_loader(self.cfg.run.seed)
            loader.load_state_dict(state["loader"])
            if self.adapter:
                self.adapter.load_state_dict(state["mixture_adapt"])
        if self.main:
            continue_run(self.run, self.step, state.get("wandb_id"))
            log.info("resumed from %s at step %d", path, self.step)
        return loader

    def _fold_mixture_signal(self) -> None:
        """The adaptive mixture's device sums, all-reduced, into the adapter (a collective)."""
        if self.mix_tally and self.adapter:
            self.adapter.add(*self.mix_tally.read())
            self.mix_tally.reset()

    def _adapt_mixture(self, scores: dict) -> dict:
        """New task rates, in force from the next step on; returns the scores with `mix/<task>`."""
        import numpy as np

        adapter = self.adapter
        assert adapter is not None  # called with an adaptive mixture only
        if adapter.cfg.signal == "heldout":
            scores = scores if "eval/loss" in scores else {**scores, **self._heldout_scores()}
            losses = np.array([scores.get(f"eval/loss/{n}", np.nan) for n in self.names])
        else:
            self._fold_mixture_signal()
            losses = adapter.window_losses()
        self.data.set_rates(adapter.update(self.step, losses).tolist())
        if self.main:
            moved = sorted(zip(adapter.rates, self.names), reverse=True)[:3]
            log.info("mixture at step %d: highest rates %s", self.step, ", ".join(f"{n} {r:.3f}" for r, n in moved))
        return {**scores, **adapter.metrics()}

    # ------------------------------------------------------------------ logging

    def _window_reset(self) -> None:
        self.window = Window(began=time.perf_counter(), skipped_before=self.engine.skipped_steps)

    def _epochs_done(self) -> bool:
        t = self.cfg.train
        return t.epochs is not None and self.data.examples_drawn >= t.epochs * sum(len(x) for x in self.tokenized)

    def _heldout_scores(self) -> dict:
        began = time.perf_counter()
        assert self.heldout is not None  # eval.every or the mixture's heldout signal
        scores = heldout_loss(self.engine, *self.heldout)
        self.window.paused += time.perf_counter() - began
        return scores

    def _heldout_generation(self) -> dict:
        from ift.eval.evaluate import generation_scores

        began = time.perf_counter()
        synced = self.cfg.train.zero_stage == 3 and self.world > 1  # sharded parameters: each forward is collective
        prompts, cfg, device = self.generation, self.cfg.eval, self.engine.device
        scores = generation_scores(self.lm, self.tokenizer, *prompts, cfg, synced, device)
        self.window.paused += time.perf_counter() - began
        return scores

    def check_finite(self) -> None:
        """Reads the non-finite tally (a device synchronization: logging and saving steps only)."""
        skipped = self.engine.skipped_steps - self.window.skipped_before
        self.nonfinite_skipped += nonfinite_steps(
            self.tally, skipped, self.cfg.train.skip_nonfinite, self.nonfinite_skipped
        )

    def log_metrics(self, scores: dict) -> dict:
        self.check_finite()
        loss, tokens = self.tally.read()  # the step's work is done once this returns
        w = self.window
        seconds = max(time.perf_counter() - w.began - w.paused, 1e-9)
        tok_s = w.tokens / seconds
        metrics = {
            "loss": sum(loss) / max(sum(tokens), 1),
            "lr": self.scheduler.get_last_lr()[0],
            "grad_norm": grad_norm(self.engine),
            "tokens_per_s": tok_s,
            "samples_per_s": w.rows / seconds,
            "padding_frac": 1 - w.tokens / max(w.slots, 1),
            "examples_drawn": self.data.examples_drawn,
            "peak_mem_gb": peak_memory_gb(),
            "skipped_nonfinite": self.nonfinite_skipped,
        }
        flops_s = self.flops.step_flops(w.tokens, w.attention_sq, w.target_tokens) / seconds
        metrics["tflops_per_device"] = flops_s / self.world / 1e12
        if self.peak_tflops:
            metrics["mfu"] = flops_s / (self.peak_tflops * 1e12 * self.world)
        metrics.update({f"loss/{n}": loss[i] / tokens[i] for i, n in enumerate(self.names) if tokens[i]})
        metrics.update(scores)
        self.tracker.log(metrics, self.step)
        self.last_metrics = metrics
        self.tally.reset()
        self._window_reset()
        return metrics

    def _log_first_step_after_resume(self) -> None:
        if self.main:
            if self.engine.device.type == "cuda":
                torch.cuda.synchronize()
            began = self.resumed_at or 0.0
            log.info("first step after resume done %.2fs after loading began", time.perf_counter() - began)
        self.resumed_at = None

    # ------------------------------------------------------------------ saving

    def checkpoint_state(self) -> dict:
        """What a checkpoint holds besides the engine: where the data stream and W&B continue.
        Called by the checkpointer when it saves."""
        self.check_finite()  # never save a model a non-finite step has spoiled
        self._fold_mixture_signal()  # so that a resume continues the adaptive mixture's window exactly
        return {
            "step": self.step,
            "loader": self.data.state_dict(),
            "examples_drawn": self.data.examples_drawn,
            "wandb_id": self.tracker.wandb.id if self.tracker.wandb else self.run.read_wandb_id(),
            "world_size": self.world,
            "fingerprints": self.fingerprints,
            "config": to_dict(self.cfg),
            **({"mixture_adapt": self.adapter.state_dict()} if self.adapter else {}),
        }

    def finish(self) -> dict:
        t = self.cfg.train
        finished = self.step >= t.max_steps or self._epochs_done()
        final = None
        if finished:
            final = self.checkpointer.final(self.step)
            if t.export_final:
                from ift.export import write_hf_folder

                with main_process_first():  # rank 0 exports; the others wait for it
                    if self.main:
                        write_hf_folder(final, self.run.export)
        self.tracker.finish()
        if self.main:
            log.info("run directory: %s (metrics.jsonl, checkpoints/, tokenizer/, wandb/)", self.run_dir)
        return {
            "step": self.step,
            "finished": finished,
            "run_dir": self.run_dir,
            "checkpoint": final,
            "last_metrics": getattr(self, "last_metrics", {}),
        }


def train(cfg: Config) -> dict:
    return Trainer(cfg).train()
