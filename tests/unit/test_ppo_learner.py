"""PPOLearner on the tiny model: a step runs and reports, weights export, checkpoints roundtrip.

`sample_rollouts` (a plain sampling loop, no engine) is shared with the learning test.
"""

from __future__ import annotations

import math

import pytest
import torch

from shoal.core import Learner, ListMetrics
from shoal.learner.checkpoint import checkpoint_dir, latest_checkpoint, load_checkpoint
from shoal.learner.ppo.config import PPOConfig
from shoal.learner.ppo.learning import PPOLearner, collate
from shoal.models import load_policy
from shoal.rollout.tasks import encode_prompt
from shoal.services.config import RewardSection
from shoal.types import Prompt, RewardTerms, Rollout, SampledBatch, ScoredRollout

METRIC_NAMES = {
    "learner/policy_loss", "learner/value_loss", "learner/entropy", "learner/clip_fraction",
    "learner/approx_kl", "learner/grad_norm", "learner/kl_ref", "learner/kl_coef", "learner/lr",
    "learner/policy_version", "learner/step_s", "learner/trained_tokens", "learner/logprob_mismatch",
    "reward/mean", "reward/std", "reward/gold_mean", "learner/response_length",
    "learner/is_weight_mean", "learner/is_weight_max", "learner/is_truncated_frac",
    "learner/updates", "learner/early_stopped",
}  # fmt: skip


@torch.no_grad()
def sample_rollouts(
    model,
    prompt: Prompt,
    n: int,
    max_new_tokens: int,
    temperature: float,
    generator: torch.Generator,
    version: int,
    eos_id: int | None,
) -> list[Rollout]:
    """n responses to one prompt by ancestral sampling; each is cut after its first EOS."""
    seqs = torch.tensor([prompt.token_ids] * n)
    tokens, logps = [], []
    for _ in range(max_new_tokens):
        logp = torch.log_softmax(model(input_ids=seqs).logits[:, -1].float() / temperature, dim=-1)
        nxt = torch.multinomial(logp.exp(), 1, generator=generator)
        tokens.append(nxt.squeeze(1))
        logps.append(logp.gather(1, nxt).squeeze(1))
        seqs = torch.cat([seqs, nxt], dim=1)
    out = []
    for i in range(n):
        ids, lps = [t[i].item() for t in tokens], [lp[i].item() for lp in logps]
        cut = ids.index(eos_id) + 1 if eos_id in ids else len(ids)
        reason = "stop" if cut < len(ids) or ids[-1] == eos_id else "length"
        out.append(Rollout(prompt, ids[:cut], "", lps[:cut], version, "test", reason))
    return out


def _prompts(tokenizer) -> list[Prompt]:
    texts = ["write about ko :", "write about ma and more :"]  # different lengths
    return [Prompt(f"t{i}", t, encode_prompt(tokenizer, t), {}) for i, t in enumerate(texts)]


def _batch(learner: PPOLearner, ref_model, seed: int, n_per_prompt: int = 4) -> SampledBatch:
    """Rollouts from the learner's current weights, scored with a length-based toy reward."""
    gen = torch.Generator().manual_seed(seed)
    sampler, _ = load_policy_like(learner)
    items = []
    for prompt in _prompts(learner.tokenizer):
        for r in sample_rollouts(
            sampler,
            prompt,
            n_per_prompt,
            5,
            learner.temperature,
            gen,
            learner.policy_version,
            learner.tokenizer.eos_token_id,
        ):
            ref = ref_logprobs(ref_model, r, learner.temperature)
            terms = RewardTerms({"toy": float(r.response_ids[0] % 3)}, ref, {"gold": float(len(r.response_ids))})
            items.append(ScoredRollout(r, terms, float(r.response_ids[0] % 3)))
    return SampledBatch(items)


_SAMPLER_CACHE: dict[str, object] = {}


def load_policy_like(learner: PPOLearner):
    """A separate HF model carrying the learner's published weights (as a rollout worker would)."""
    key = str(learner.model.name_or_path)
    if key not in _SAMPLER_CACHE:
        _SAMPLER_CACHE[key] = load_policy(key)
    model, tok = _SAMPLER_CACHE[key]
    model.load_state_dict(learner.get_weights().tensors)
    return model, tok


@torch.no_grad()
def ref_logprobs(ref_model, rollout: Rollout, temperature: float) -> list[float]:
    ids = torch.tensor([rollout.prompt.token_ids + rollout.response_ids])
    logp = torch.log_softmax(ref_model(input_ids=ids).logits[0].float() / temperature, dim=-1)
    start = len(rollout.prompt.token_ids) - 1
    return [logp[start + t, tok].item() for t, tok in enumerate(rollout.response_ids)]


def _cfgs(**ppo):
    base = dict(batch_size=8, minibatch_size=4, ppo_epochs=2, learning_rate=1e-3)
    return PPOConfig(**{**base, **ppo}), RewardSection(
        reward_model_path=None, kl_coef=0.1, adaptive_kl=True, kl_target=0.5, kl_horizon=100
    )


@pytest.fixture(scope="module")
def ref_model(tiny_model_dir):
    return load_policy(tiny_model_dir)[0]


def _learner(tiny_model_dir, **kw) -> PPOLearner:
    ppo, reward = _cfgs()
    return PPOLearner(str(tiny_model_dir), ppo, reward, temperature=kw.pop("temperature", 0.9), seed=3, **kw)


def test_step_reports_every_metric_and_increments_version(tiny_model_dir, ref_model):
    sink = ListMetrics()
    learner = _learner(tiny_model_dir, metrics=sink)
    assert isinstance(learner, Learner)
    batch = _batch(learner, ref_model, seed=0)
    before = learner.get_weights().tensors
    metrics = learner.step(batch)
    assert learner.policy_version == 1 and metrics["learner/policy_version"] == 1.0
    assert set(metrics) == METRIC_NAMES
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert metrics["learner/logprob_mismatch"] < 1e-4  # same weights sampled and trained
    assert abs(metrics["learner/is_weight_mean"] - 1.0) < 1e-3 and metrics["learner/is_truncated_frac"] == 0.0
    assert abs(metrics["learner/kl_ref"]) < 1e-4  # the policy is still the reference
    assert metrics["learner/trained_tokens"] == sum(len(it.rollout.response_ids) for it in batch.items)
    assert metrics["learner/kl_coef"] == 0.1 and learner.kl_ctl.value < 0.1  # adaptive: KL below target
    after = learner.get_weights().tensors
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert sink.records[-1] == (1, metrics)


def test_target_kl_stops_the_batch_once_the_policy_has_moved(tiny_model_dir, ref_model):
    """PPO early stopping: the first minibatch starts at ratio 1 (approx KL 0) and is applied;
    with a target far below what one Adam step moves, the second is not, nor anything after."""
    ppo, reward = _cfgs(target_kl=1e-9, learning_rate=1e-2)
    stopped = PPOLearner(str(tiny_model_dir), ppo, reward, temperature=0.9, seed=3)
    m = stopped.step(_batch(stopped, ref_model, seed=0))
    assert m["learner/updates"] == 1.0 and m["learner/early_stopped"] == 1.0
    assert m["learner/approx_kl"] > 0 and stopped.policy_version == 1
    free = _learner(tiny_model_dir)  # target_kl off: every planned update (2 epochs x 2 minibatches)
    m = free.step(_batch(free, ref_model, seed=0))
    assert m["learner/updates"] == 4.0 and m["learner/early_stopped"] == 0.0
    loose = PPOLearner(str(tiny_model_dir), _cfgs(target_kl=1e6)[0], reward, temperature=0.9, seed=3)
    assert loose.step(_batch(loose, ref_model, seed=0))["learner/updates"] == 4.0


def test_stale_items_are_left_out_of_the_mismatch_metric(tiny_model_dir, ref_model):
    learner = _learner(tiny_model_dir)
    batch = _batch(learner, ref_model, seed=1)
    learner.policy_version = 5  # items were sampled at version 0
    assert "learner/logprob_mismatch" not in learner.step(batch)


def test_items_without_ref_logprobs_get_no_kl(tiny_model_dir, ref_model):
    learner = _learner(tiny_model_dir)
    batch = _batch(learner, ref_model, seed=2)
    items = [ScoredRollout(it.rollout, RewardTerms(it.terms.sequence), it.reward) for it in batch.items]
    metrics = learner.step(SampledBatch(items))
    assert "learner/kl_ref" not in metrics and "reward/gold_mean" not in metrics
    assert learner.kl_ctl.value == 0.1  # nothing to adapt to


def test_get_weights_load_into_fresh_model_with_identical_logits(tiny_model_dir, ref_model):
    learner = _learner(tiny_model_dir, temperature=1.0)
    learner.step(_batch(learner, ref_model, seed=3))
    weights = learner.get_weights()
    assert weights.version == 1 and not any(k.startswith("value_head") for k in weights.tensors)
    fresh, tok = load_policy(tiny_model_dir)
    fresh.load_state_dict(weights.tensors, strict=True)
    ids = torch.tensor([encode_prompt(tok, "write about ko : kofa kobi")])
    with torch.no_grad():
        assert torch.equal(fresh(input_ids=ids).logits, learner.model(input_ids=ids).logits)
        full = torch.log_softmax(fresh(input_ids=ids).logits[0], dim=-1)
    prompt, response = ids[0, :4].tolist(), ids[0, 4:].tolist()
    want = [full[3 + t, tok_id].item() for t, tok_id in enumerate(response)]
    got = learner.logprobs([prompt, prompt[:2]], [response, response[:2]])
    assert got[0] == pytest.approx(want, abs=1e-5) and len(got[1]) == 2


def test_collate_indexes_response_tokens():
    tb = collate([[1, 2, 3], [4]], [[5, 6], [7, 8, 9]], pad_id=0)
    assert tb.input_ids.tolist() == [[1, 2, 3, 5, 6], [4, 7, 8, 9, 0]]
    assert tb.response_pos.tolist() == [[2, 3, 0], [0, 1, 2]]
    assert tb.response_mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    with pytest.raises(ValueError, match="row 1"):
        collate([[1], [2]], [[3], []], pad_id=0)


def _optimizer_tensors(learner: PPOLearner) -> list[torch.Tensor]:
    return [t for s in learner.optimizer.state_dict()["state"].values() for t in s.values()]


def test_checkpoint_roundtrip_continues_training_identically(tiny_model_dir, ref_model, tmp_path):
    a = _learner(tiny_model_dir)
    a.step(_batch(a, ref_model, seed=4))
    batch2 = _batch(a, ref_model, seed=5)
    path = checkpoint_dir(tmp_path / "run", a.step_count)
    a.save(str(path))
    assert latest_checkpoint(tmp_path / "run") == path
    assert load_policy(load_checkpoint(path).model_dir)[0] is not None  # itself an HF model dir
    b = _learner(tiny_model_dir)
    b.restore(str(path))
    wa, wb = a.get_weights(), b.get_weights()
    assert wb.version == wa.version == 1 and b.step_count == 1
    assert all(torch.equal(wa.tensors[k], wb.tensors[k]) for k in wa.tensors)
    assert all(torch.equal(x, y) for x, y in zip(_optimizer_tensors(a), _optimizer_tensors(b), strict=True))
    assert b.kl_ctl.state_dict() == a.kl_ctl.state_dict()
    ma, mb = a.step(batch2), b.step(batch2)
    ma.pop("learner/step_s"), mb.pop("learner/step_s")
    assert ma == mb
    assert all(torch.equal(a.get_weights().tensors[k], b.get_weights().tensors[k]) for k in wa.tensors)
    assert torch.equal(a.value_head.weight, b.value_head.weight)


def test_checkpoint_overwrite_and_latest(tiny_model_dir, tmp_path):
    learner = _learner(tiny_model_dir)
    run = tmp_path / "run"
    assert latest_checkpoint(run) is None
    for step in (2, 10, 3):
        learner.save(str(checkpoint_dir(run, step)))
    learner.save(str(checkpoint_dir(run, 10)))  # overwrite in place
    (run / "checkpoints" / "step_00000099").mkdir()  # incomplete: no meta.json
    (run / "checkpoints" / "step_latest").mkdir()
    (run / "checkpoints" / "step_latest" / "meta.json").write_text("{}")  # not a step number
    assert latest_checkpoint(run) == checkpoint_dir(run, 10)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step_00000002",
        "step_00000003",
        "step_00000010",
        "step_00000099",
        "step_latest",
    ]


def test_restore_from_missing_or_empty_dir_names_the_path(tiny_model_dir, tmp_path):
    learner = _learner(tiny_model_dir)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        learner.restore(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*no meta.json"):
        learner.restore(str(tmp_path / "empty"))


def _affine_rewards(batch: SampledBatch, scale: float, shift: float) -> SampledBatch:
    return SampledBatch([ScoredRollout(it.rollout, it.terms, scale * it.reward + shift) for it in batch.items])


@pytest.mark.parametrize("mode", ["batch", "running"])
def test_normalised_rewards_make_the_update_blind_to_the_reward_models_scale(tiny_model_dir, ref_model, mode):
    """A Bradley-Terry score is defined up to offset and scale: with ppo.reward_normalization the
    same batch scored r and 3r + 5 gives the same update (the first batch's running moments are
    the batch's own); without it, it does not."""
    reward = _cfgs()[1]

    def weights_after(norm: str, scale: float, shift: float) -> dict[str, torch.Tensor]:
        learner = PPOLearner(str(tiny_model_dir), _cfgs(reward_normalization=norm)[0], reward, temperature=0.9, seed=3)
        metrics = learner.step(_affine_rewards(_batch(learner, ref_model, seed=6), scale, shift))
        assert ("learner/reward_norm_std" in metrics) == (norm == "running")
        return {**learner.get_weights().tensors, "v": learner.value_head.weight.detach().clone()}

    a, b = weights_after(mode, 1.0, 0.0), weights_after(mode, 3.0, 5.0)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    raw_a, raw_b = weights_after("none", 1.0, 0.0), weights_after("none", 3.0, 5.0)
    assert not all(torch.allclose(raw_a[k], raw_b[k], atol=1e-5) for k in raw_a)


def test_running_reward_moments_are_checkpointed(tiny_model_dir, ref_model, tmp_path):
    reward = _cfgs()[1]
    a = PPOLearner(str(tiny_model_dir), _cfgs(reward_normalization="running")[0], reward, temperature=0.9, seed=3)
    a.step(_batch(a, ref_model, seed=7))
    a.save(str(tmp_path / "ckpt"))
    b = PPOLearner(str(tiny_model_dir), _cfgs(reward_normalization="running")[0], reward, temperature=0.9, seed=3)
    b.restore(str(tmp_path / "ckpt"))
    assert b.reward_norm.moments.state_dict() == a.reward_norm.moments.state_dict()
    assert a.reward_norm.moments.count == 8


def test_the_lr_schedule_sets_each_steps_learning_rate_and_a_restored_learner_continues_it(
    tiny_model_dir, ref_model, tmp_path
):
    """ppo.lr_schedule: linear over 3 steps from 1e-3 to 0.1 x; the learning rate each update
    used is the one reported; a learner restored after step 1 takes step 2 at the schedule's lr."""
    ppo, reward = _cfgs(lr_schedule="linear", lr_min_ratio=0.1)
    a = PPOLearner(str(tiny_model_dir), ppo, reward, temperature=0.9, seed=3, total_steps=3)
    batches = [_batch(a, ref_model, seed=s) for s in (4, 5, 6)]
    lrs = [a.step(b)["learner/lr"] for b in batches[:1]]
    path = checkpoint_dir(tmp_path / "run", a.step_count)
    a.save(str(path))
    lrs += [a.step(b)["learner/lr"] for b in batches[1:]]
    assert lrs == pytest.approx([1e-3, 5.5e-4, 1e-4])
    assert [g["lr"] for g in a.optimizer.param_groups] == pytest.approx([1e-4])
    b = PPOLearner(str(tiny_model_dir), ppo, reward, temperature=0.9, seed=3, total_steps=3)
    b.restore(str(path))
    assert b.step(batches[1])["learner/lr"] == pytest.approx(5.5e-4)
    constant = _learner(tiny_model_dir)
    assert constant.step(batches[0])["learner/lr"] == 1e-3
    with pytest.raises(ValueError, match="total_steps"):
        PPOLearner(str(tiny_model_dir), ppo, reward, temperature=0.9, seed=3).step(batches[0])
