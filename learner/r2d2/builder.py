"""R2D2's builder: recurrent per-utterance Q-learning (Kapturowski et al. 2019, with CHAI-style
candidates for free text, Verma et al. 2022), on the generic runners (`shoal.builders`).

- models: a frozen LM turn encoder (`r2d2.encoder_path`, or a tiny Llama + BPE built from
  the environment's texts into the run directory), and with `r2d2.candidates: policy` the LM
  that proposes k utterances per observation;
- workers: `EpisodeWorker` with a `QActor` (Ape-X per-worker epsilon) that stores the
  recurrent state entering every turn;
- replay: episodes cut into burn-in + trace + 1 items with ONE stored state each;
- learner: `R2D2Learner` (n-step double Q, value rescaling, burn-in, priorities back to the
  replay, the dQ staleness diagnostic every `r2d2.dq_interval` steps).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from shoal.core import MetricsSink
from shoal.learner.episodes import EpisodeBuilder, learner_device
from shoal.utils import ConfigError


class R2D2Builder(EpisodeBuilder):
    @classmethod
    def check_config(cls, cfg: Any) -> None:
        if cfg.r2d2.candidates == "policy" and not cfg.r2d2.candidate_model_path:
            raise ValueError(
                "r2d2.candidate_model_path: required when r2d2.candidates is `policy` (the LM that proposes the k candidates)"
            )
        if cfg.replay.min_size_to_sample > cfg.replay.capacity:
            raise ValueError(
                f"replay.min_size_to_sample: {cfg.replay.min_size_to_sample} exceeds replay.capacity {cfg.replay.capacity}"
            )

    def preflight(self) -> None:
        r = self.cfg.r2d2
        for field_name, path in (
            ("r2d2.encoder_path", r.encoder_path),
            ("r2d2.candidate_model_path", r.candidate_model_path),
        ):
            if path is not None and not (Path(path) / "config.json").is_file():
                raise ConfigError(
                    f"{field_name}: {path!r} is not a Hugging Face model directory (no config.json); set it to null to build a tiny one"
                )
        env = self.make_env()
        if r.candidates == "legal_actions":
            self.action_set(env)

    def action_set(self, env: Any) -> list[str]:
        """The fixed action set R2D2 maximises over: the env's legal actions after a reset."""
        from shoal.rollout.envs.base import legal_actions_of

        try:
            env.reset(seed=0)
        except Exception:  # a broken episode is the workers' to drop and report; the actions may still be listed
            pass
        actions = legal_actions_of(env)
        if not actions:
            raise ConfigError(
                f"env.name: {self.cfg.env.name!r} takes free text (no legal_actions()); set r2d2.candidates=policy with "
                "r2d2.candidate_model_path (CHAI-style sampled candidates), or use algorithm ilql"
            )
        return list(actions)

    # -- models --------------------------------------------------------------------------
    def prepare_models(self, run_dir: str) -> dict[str, str]:
        """ "encoder" (+ "candidates" when r2d2.candidates is policy); builds a tiny encoder if none is given."""
        r = self.cfg.r2d2
        dirs = {"encoder": r.encoder_path or self._build_encoder(Path(run_dir) / "encoder")}
        if r.candidates == "policy":
            dirs["candidates"] = str(r.candidate_model_path)
        return dirs

    def _build_encoder(self, out: Path) -> str:
        from shoal.learner.r2d2.networks import build_tiny_encoder

        enc = build_tiny_encoder(
            self.env_texts(), hidden_size=self.cfg.r2d2.encoder_hidden_size, seed=self.cfg.run.seed
        )
        enc.model.save_pretrained(out)
        enc.tokenizer.save_pretrained(out)
        return str(out)

    def network(self, model_dirs: dict[str, str]) -> tuple[Any, Any]:
        from shoal.learner.r2d2.networks import RecurrentQNetwork, TurnEncoder

        r = self.cfg.r2d2
        encoder = TurnEncoder.from_pretrained(model_dirs["encoder"])
        net = RecurrentQNetwork(
            encoder.dim, hidden_size=r.hidden_size, forget_bias=r.forget_bias, seed=self.cfg.run.seed, memory=r.memory
        )
        return net, encoder

    def candidates(self, model_dirs: dict[str, str]) -> Any:
        """CHAI-style candidate sampler (r2d2.candidates = policy), or None for the env's legal actions."""
        r = self.cfg.r2d2
        if r.candidates != "policy":
            return None
        from shoal.learner.r2d2.candidates import LMCandidates

        return LMCandidates(
            model_dirs["candidates"],
            r.num_candidates,
            r.candidate_temperature,
            r.candidate_max_new_tokens,
            seed=self.cfg.run.seed,
        )

    # -- components ----------------------------------------------------------------------
    def make_agent(self, index: int, model_dirs: dict[str, str]) -> Any:
        from shoal.learner.r2d2.acting import QActor, apex_epsilon
        from shoal.rollout.episode_worker import QAgent

        r = self.cfg.r2d2
        net, encoder = self.network(model_dirs)
        eps = apex_epsilon(
            index, self.cfg.rollout.max_workers or self.cfg.rollout.num_workers, r.epsilon, r.epsilon_alpha
        )
        cands = self.candidates(model_dirs)
        fn = None if cands is None else cands.for_actor
        return QAgent(
            QActor(
                net,
                encoder,
                epsilon=eps,
                candidate_fn=fn,
                num_candidates=r.num_candidates,
                worker_id=f"rollout-{index}",
            )
        )

    def cut(self) -> Callable[[Any, Any], list[Any]]:
        from shoal.buffer.sequences import cut_episode

        r = self.cfg.r2d2

        def cut(episode: Any, states: Any) -> list[Any]:
            return cut_episode(episode, states, r.burn_in_length, r.trace_length, r.sequence_period)

        return cut

    def make_learner(self, model_dirs: dict[str, str], metrics: MetricsSink | None = None) -> Any:
        from shoal.learner.r2d2.learning import R2D2Learner

        net, encoder = self.network(model_dirs)
        cands = self.candidates(model_dirs)
        if cands is None:
            learner = R2D2Learner(net, encoder, self.cfg.r2d2, action_set=self.action_set(self.make_env()))
        else:
            learner = R2D2Learner(net, encoder, self.cfg.r2d2, candidate_fn=cands)
        if self.cfg.run.resume_from:
            learner.restore(self.cfg.run.resume_from)
        return learner

    def batch_size(self) -> int:
        return self.cfg.r2d2.batch_size

    def final_metrics(self, last: dict[str, float]) -> dict[str, Any]:
        names = {
            "learner/q_loss": "q_loss",
            "learner/steps_per_s": "learner_steps_per_s",
            "dq/zero": "dq_zero",
            "dq/stored_burn_in": "dq_stored_burn_in",
        }
        return {name: last[k] for k, name in names.items() if k in last}


__all__ = ["R2D2Builder", "learner_device"]
