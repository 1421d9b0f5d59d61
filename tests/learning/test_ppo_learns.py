"""PPOLearner learns a toy RL problem through `step` only (fixed seeds, a stated margin).

Problem: one fixed prompt; reward 1.0 when the response's first token is a chosen target
token, else 0. Responses (3 tokens) are sampled in the test from the learner's published
weights (`get_weights` loaded into a separate HF model, as a rollout worker would). The
tiny model is random-init, so P(target first) starts at about 1/vocab (vocab ~ 320).

- Without KL (kl_coef 0): mean reward rises from < 0.05 to >= 0.6 within 20 steps
  (measured: 0.008 at step 0, ~0.75 at step 12, ~0.97 over steps 16-19).
  Its KL to the initial policy (learner/kl_ref, k1 per sequence) grows to ~7 nats.
- With a strong KL penalty to the initial policy (kl_coef 1): the KL-regularised optimum is
  pi*(target) = e / (vocab - 1 + e) ~ 0.008, so the reward must stay below 0.05 and the KL
  small (measured: 0.0-0.016 reward, kl_ref 0.03-0.2 nats from PPO noise).

Run: `pytest -m learning tests/learning/test_ppo_learns.py` (~20 s on one core).
"""

from __future__ import annotations

import pytest
import torch

from shoal.learner.ppo.config import PPOConfig
from shoal.learner.ppo.learning import PPOLearner
from shoal.models import load_policy
from shoal.rollout.tasks import encode_prompt
from shoal.services.config import RewardSection
from shoal.types import Prompt, RewardTerms, SampledBatch, ScoredRollout
from tests.unit.test_ppo_learner import ref_logprobs, sample_rollouts

pytestmark = pytest.mark.learning

STEPS, BATCH, RESPONSE_TOKENS = 20, 128, 3
PPO = PPOConfig(batch_size=BATCH, minibatch_size=64, ppo_epochs=2, learning_rate=1e-3)


def _run(model_dir, kl_coef: float) -> tuple[list[float], list[float], PPOLearner, Prompt, int]:
    """STEPS PPO steps on the toy problem -> (mean reward per step, kl_ref per step, learner, prompt, target)."""
    torch.manual_seed(0)
    learner = PPOLearner(str(model_dir), PPO, RewardSection(reward_model_path=None, kl_coef=kl_coef), seed=0)
    sampler, tok = load_policy(model_dir)
    ref_model = load_policy(model_dir)[0]  # frozen initial policy; kl_ref is measured in both runs
    target = tok.convert_tokens_to_ids("ko")
    prompt = Prompt("toy-0", "write about ko :", encode_prompt(tok, "write about ko :"))
    gen = torch.Generator().manual_seed(0)
    rewards, kls = [], []
    for _ in range(STEPS):
        weights = learner.get_weights()
        sampler.load_state_dict(weights.tensors)
        rollouts = sample_rollouts(sampler, prompt, BATCH, RESPONSE_TOKENS, 1.0, gen, weights.version, tok.eos_token_id)
        items = []
        for r in rollouts:
            reward = float(r.response_ids[0] == target)
            items.append(ScoredRollout(r, RewardTerms({"target": reward}, ref_logprobs(ref_model, r, 1.0)), reward))
        metrics = learner.step(SampledBatch(items))
        rewards.append(metrics["reward/mean"])
        kls.append(metrics["learner/kl_ref"])
    return rewards, kls, learner, prompt, target


def test_ppo_raises_probability_of_rewarded_first_token(tiny_model_dir):
    rewards, kls, learner, prompt, target = _run(tiny_model_dir, kl_coef=0.0)
    print("mean reward per step:", [round(r, 3) for r in rewards], "kl_ref:", [round(k, 3) for k in kls])
    assert rewards[0] < 0.05, f"baseline should fail: {rewards[0]}"
    late = sum(rewards[-4:]) / 4
    assert late >= 0.6, f"mean reward over the last 4 steps {late:.3f} < 0.6; curve {rewards}"
    p_target = torch.tensor(learner.logprobs([prompt.token_ids], [[target]])[0][0]).exp().item()
    assert p_target >= 0.6, f"P(target first) = {p_target:.3f}"
    assert kls[-1] > 3.0, f"an unpenalised policy drifts far from the reference: kl_ref {kls}"


def test_strong_kl_penalty_keeps_policy_near_reference(tiny_model_dir):
    rewards, kls, learner, _, _ = _run(tiny_model_dir, kl_coef=1.0)
    print("mean reward per step:", [round(r, 3) for r in rewards], "kl_ref:", [round(k, 4) for k in kls])
    late = sum(rewards[-4:]) / 4
    assert late < 0.05, f"with kl_coef 1 the reward should stay near pi_ref's: {late:.3f}; curve {rewards}"
    late_kl = sum(kls[-4:]) / 4
    assert late_kl < 0.3, f"KL to the reference should stay small (unpenalised run: ~7 nats): {kls}"
    # ...but not because nothing happened: a learner that never updates passes the two checks
    # above with kl_ref exactly 0. The policy must have moved (by less than the unpenalised ~7 nats).
    assert late_kl > 0.01, f"the penalised policy should still move off the reference: kl_ref {kls}"
    initial = load_policy(tiny_model_dir)[0].state_dict()
    now = learner.get_weights().tensors
    change = sum(float((now[k].float() - initial[k].float()).norm()) for k in now) / sum(
        float(initial[k].float().norm()) for k in now
    )
    print("relative weight change:", change)
    assert change > 1e-3, f"the learner's weights barely changed: relative change {change:.2e}"
