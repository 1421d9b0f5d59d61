"""Assembly of the multi-turn algorithms (`run.algorithm: r2d2 | ilql`) from the run config.

The counterpart of `services/builder.py` for PPO, used by both runners (the Ray actors in
`services/actors.py` and the in-process loop in `services/multiturn_local.py`):

- `prepare_models(cfg, run_dir)`: the one model directory both sides load. r2d2: the frozen
  turn encoder (`r2d2.encoder_path`, or a tiny Llama + BPE built from the environment's
  texts); ilql: the policy LM (`ilql.model_path`, or a tiny one built from the environment's
  and the data set's texts). Written once by the driver; Ray actors get it as a file bundle
  through the object store (`services.weights.pack_dir`), so it works across nodes.
- `make_episode_worker`: env + agent (QAgent with the Ape-X per-worker epsilon, or ILQLAgent).
- `make_replay`: `EpisodeReplay` over `PrioritizedSequenceReplay` (r2d2: items cut by
  `cut_episode`; ilql: whole episodes, uniform since ILQL sends no priorities). With an
  offline data set the rate limiter is off (the data set goes in at once).
- `make_learner`: `R2D2Learner` (max over the env's legal actions, or over k utterances from
  `rollout.candidates.LMCandidates` when r2d2.candidates = policy) or `ILQLLearner`.
No Ray here.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

from services.config import ConfigError, ShoalConfig
from services.core import MetricsSink


def make_env(cfg: ShoalConfig) -> Any:
    from rollout.envs.registry import make_env as _make

    try:
        return _make(cfg.env.name, **cfg.env.kwargs)
    except ValueError as e:
        raise ConfigError(f"env.name: {e}") from None


def action_set(cfg: ShoalConfig, env: Any) -> list[str]:
    """The fixed action set R2D2 maximises over: the env's legal actions after a reset."""
    from rollout.envs.base import legal_actions_of

    try:
        env.reset(seed=0)
    except Exception:  # a broken episode is the workers' to drop and report; the actions may still be listed
        pass
    actions = legal_actions_of(env)
    if not actions:
        raise ConfigError(
            f"env.name: {cfg.env.name!r} takes free text (no legal_actions()); set r2d2.candidates=policy with r2d2.candidate_model_path "
            "(CHAI-style sampled candidates), or use algorithm ilql"
        )
    return list(actions)


def preflight(cfg: ShoalConfig) -> None:
    """On the driver, before any actor starts: the env builds and (r2d2) lists its actions.
    Raises ConfigError naming the field, instead of an actor failing remotely."""
    env = make_env(cfg)
    if cfg.run.algorithm == "r2d2" and cfg.r2d2.candidates == "legal_actions":
        action_set(cfg, env)


def load_dataset(cfg: ShoalConfig) -> list[Any]:
    from rollout.envs.jsonl import read_episodes

    return read_episodes(cfg.ilql.dataset) if cfg.ilql.dataset else []


class _Corpus:
    def __init__(self, texts: list[str]) -> None:
        self.texts = texts

    def corpus(self) -> list[str]:
        return self.texts


def env_texts(cfg: ShoalConfig, dataset: list[Any]) -> list[str]:
    from rollout.q_actor import env_corpus

    texts = set(env_corpus(make_env(cfg), num_episodes=60, seed=cfg.run.seed, max_turns=min(cfg.env.max_turns, 50)))
    for ep in dataset:
        for t in ep.turns:
            texts.update((t.observation, t.action))
    return sorted(x for x in texts if x)


def prepare_models(cfg: ShoalConfig, run_dir: str | Path) -> dict[str, str]:
    """The model directories of the run by role (see the module docstring): r2d2 -> "encoder"
    (+ "candidates" when r2d2.candidates is policy); ilql -> "policy". Builds tiny ones if none is given."""
    if cfg.run.algorithm == "r2d2":
        dirs = {"encoder": cfg.r2d2.encoder_path or _build_encoder(cfg, Path(run_dir) / "encoder")}
        if cfg.r2d2.candidates == "policy":
            dirs["candidates"] = str(cfg.r2d2.candidate_model_path)
        return dirs
    if cfg.ilql.model_path:
        return {"policy": cfg.ilql.model_path}
    from learner.init_model import build_model_dir

    shape = types.SimpleNamespace(vocab_size=300, hidden_size=cfg.ilql.model_hidden_size, num_layers=2, num_heads=2)
    return {"policy": str(build_model_dir(_Corpus(env_texts(cfg, load_dataset(cfg))), shape, Path(run_dir) / "policy", seed=cfg.run.seed))}


def _build_encoder(cfg: ShoalConfig, out: Path) -> str:
    from learner.recurrent_q import build_tiny_encoder

    enc = build_tiny_encoder(env_texts(cfg, []), hidden_size=cfg.r2d2.encoder_hidden_size, seed=cfg.run.seed)
    enc.model.save_pretrained(out)
    enc.tokenizer.save_pretrained(out)
    return str(out)


def make_candidates(cfg: ShoalConfig, model_dirs: dict[str, str]) -> Any:
    """CHAI-style candidate sampler (r2d2.candidates = policy), or None for the env's legal actions."""
    if cfg.r2d2.candidates != "policy":
        return None
    from rollout.candidates import LMCandidates

    r = cfg.r2d2
    return LMCandidates(model_dirs["candidates"], r.num_candidates, r.candidate_temperature, r.candidate_max_new_tokens, seed=cfg.run.seed)


def make_agent(cfg: ShoalConfig, index: int, model_dirs: dict[str, str]) -> Any:
    from rollout.episode_worker import ILQLAgent, QAgent

    if cfg.run.algorithm == "r2d2":
        from learner.recurrent_q import RecurrentQNetwork, TurnEncoder
        from rollout.q_actor import QActor, apex_epsilon

        r = cfg.r2d2
        encoder = TurnEncoder.from_pretrained(model_dirs["encoder"])
        net = RecurrentQNetwork(encoder.dim, hidden_size=r.hidden_size, forget_bias=r.forget_bias, seed=cfg.run.seed, memory=r.memory)
        eps = apex_epsilon(index, cfg.rollout.num_workers, r.epsilon, r.epsilon_alpha)
        cands = make_candidates(cfg, model_dirs)
        fn = None if cands is None else cands.for_actor
        return QAgent(QActor(net, encoder, epsilon=eps, candidate_fn=fn, num_candidates=r.num_candidates, worker_id=f"rollout-{index}"))
    from learner.ilql import ILQLHeads
    from learner.init_model import load_policy
    from rollout.ilql_decoding import ILQLPolicy

    model, tokenizer = load_policy(model_dirs["policy"])
    text = model.config.get_text_config()
    heads = ILQLHeads(text.hidden_size, text.vocab_size)  # replaced by the learner's at the first sync
    q = cfg.ilql
    policy = ILQLPolicy(model, tokenizer, heads, beta=q.beta, temperature=q.temperature, max_new_tokens=q.max_new_tokens, seed=cfg.run.seed * 1009 + index)
    return ILQLAgent(policy, q.temperature)


def make_episode_worker(cfg: ShoalConfig, index: int, model_dirs: dict[str, str], metrics: MetricsSink | None = None) -> Any:
    from rollout.episode_worker import EpisodeWorker

    agent = make_agent(cfg, index, model_dirs)
    return EpisodeWorker(make_env(cfg), agent, f"rollout-{index}", index, cfg.env.max_turns, cfg.run.seed, metrics)


def make_replay(cfg: ShoalConfig) -> Any:
    from buffer.episode_replay import EpisodeReplay
    from buffer.prioritized import PrioritizedSequenceReplay

    rp = cfg.replay
    offline = cfg.run.algorithm == "ilql" and bool(cfg.ilql.dataset)
    replay = PrioritizedSequenceReplay(
        capacity=rp.capacity,
        priority_exponent=rp.priority_exponent,
        importance_sampling_exponent=rp.importance_sampling_exponent,
        use_importance_weights=rp.use_importance_weights,
        samples_per_insert=None if offline else rp.samples_per_insert,
        min_size_to_sample=rp.min_size_to_sample,
        max_policy_lag=rp.max_policy_lag,
        seed=cfg.run.seed,
    )
    if cfg.run.algorithm == "ilql":
        return EpisodeReplay(replay, cut=None, recent=0)
    from buffer.sequences import cut_episode

    r = cfg.r2d2

    def cut(episode: Any, states: Any) -> list[Any]:
        return cut_episode(episode, states, r.burn_in_length, r.trace_length, r.sequence_period)

    return EpisodeReplay(replay, cut=cut, recent=rp.recent_episodes)


def learner_batch_size(cfg: ShoalConfig) -> int:
    return {"ppo": cfg.ppo.batch_size, "r2d2": cfg.r2d2.batch_size, "ilql": cfg.ilql.batch_size}[cfg.run.algorithm]


def make_learner(cfg: ShoalConfig, model_dirs: dict[str, str], metrics: MetricsSink | None = None) -> Any:
    from services.builder import learner_device

    if cfg.run.algorithm == "r2d2":
        from learner.r2d2 import R2D2Config, R2D2Learner
        from learner.recurrent_q import RecurrentQNetwork, TurnEncoder

        r = cfg.r2d2
        encoder = TurnEncoder.from_pretrained(model_dirs["encoder"])
        net = RecurrentQNetwork(encoder.dim, hidden_size=r.hidden_size, forget_bias=r.forget_bias, seed=cfg.run.seed, memory=r.memory)
        rc = R2D2Config(
            burn_in_length=r.burn_in_length, trace_length=r.trace_length, n_step=r.n_step, gamma=r.gamma, lr=r.learning_rate,
            target_update_period=r.target_update_period, burn_in_gradients=r.burn_in_gradients, start_state=r.start_state,
            rescale=r.value_rescaling, priority_eta=r.priority_eta, max_grad_norm=r.max_grad_norm, core_lr_scale=r.core_lr_scale,
        )
        cands = make_candidates(cfg, model_dirs)
        if cands is None:
            learner = R2D2Learner(net, encoder, rc, action_set=action_set(cfg, make_env(cfg)))
        else:
            learner = R2D2Learner(net, encoder, rc, candidate_fn=cands)
    else:
        from learner.ilql import ILQLConfig, ILQLLearner

        q = cfg.ilql
        ic = ILQLConfig(learning_rate=q.learning_rate, gamma=q.gamma, tau=q.tau, cql_weight=q.cql_weight, bc_weight=q.bc_weight, target_alpha=q.target_alpha, grad_clip=q.grad_clip, bc_only=q.bc_only)
        learner = ILQLLearner(model_dirs["policy"], ic, seed=cfg.run.seed, device=learner_device())
    if cfg.run.resume_from:
        learner.restore(cfg.run.resume_from)
    return learner


FINAL_METRICS = {"learner/q_loss": "q_loss", "learner/ilql_loss": "ilql_loss", "learner/steps_per_s": "learner_steps_per_s", "dq/zero": "dq_zero", "dq/stored_burn_in": "dq_stored_burn_in"}


def final_metrics(last: dict[str, float]) -> dict[str, float]:
    """The last learner step's headline numbers, for the summary table."""
    return {name: last[k] for k, name in FINAL_METRICS.items() if k in last}


def check_dataset_fits(cfg: ShoalConfig, n: int) -> None:
    if n > cfg.replay.capacity:
        raise ConfigError(f"replay.capacity: {cfg.replay.capacity} cannot hold the data set ({n} episodes in {cfg.ilql.dataset}); raise it")
    if n < max(cfg.replay.min_size_to_sample, cfg.ilql.batch_size) and not cfg.ilql.online:
        raise ConfigError(f"ilql.dataset: {n} episodes are fewer than replay.min_size_to_sample / ilql.batch_size; collect more or lower them")


def dataset_anchors_of(episodes: list[Any]) -> tuple[float, float, float] | None:
    """LMRL-Gym anchors (min, average, max return) of the data set, if it has a spread."""
    from rollout.envs.scoring import dataset_anchors

    if not episodes:
        return None
    lo, avg, hi = dataset_anchors(ep.total_return for ep in episodes)
    return (lo, avg, hi) if lo < avg < hi else None


def with_lmrl_score(result: dict[str, float], anchors: tuple[float, float, float] | None) -> dict[str, float]:
    """Add eval lmrl_score (0 = data-set min, 50 = its average, 100 = its max) when anchors exist."""
    if anchors is None or "return_mean" not in result:
        return result
    from rollout.envs.scoring import normalized_score

    return {**result, "lmrl_score": normalized_score(result["return_mean"], *anchors)}


__all__ = [
    "action_set", "check_dataset_fits", "final_metrics", "dataset_anchors_of", "learner_batch_size", "load_dataset", "make_env",
    "make_episode_worker", "make_learner", "make_replay", "preflight", "prepare_models", "with_lmrl_score",
]
