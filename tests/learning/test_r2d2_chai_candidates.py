"""R2D2 over CHAI-style sampled candidates beats the LM that proposes them.

1. `shoal collect`-style data on cue recall (corridor 6): optimal + random scripted policies,
   400 episodes.
2. Behaviour cloning on it (`algorithm: ilql, ilql.bc_only: true`, 200 steps): the candidate LM.
   Greedy it succeeds 0.5 (it learned the utterances, not the cue).
3. deploy/configs/r2d2_cue_recall.yaml with `r2d2.candidates: policy`: at every observation
   the max over actions is taken over k = 4 utterances sampled from that LM (learner/r2d2/candidates.py),
   never over the env's action list. Measured (seed 0, local mode): 0.80 success on 100 held-out
   greedy episodes (BC 0.50), ~50 s; BC training ~75 s.
Margins: R2D2 over candidates >= 0.70 and >= BC + 0.15.
Run: .venv/bin/python -m pytest -m learning tests/learning/test_r2d2_chai_candidates.py -s
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.services.config import load_config
from shoal.services.local import run_local

pytestmark = pytest.mark.learning
CONFIGS = Path(__file__).resolve().parents[2] / "deploy" / "configs"


def test_r2d2_over_lm_candidates_beats_the_lm(tmp_path):
    from shoal.rollout.envs import collect, make_env, make_policy, write_episodes

    env = make_env("cue_recall", corridor_length=6)
    pols = [(n, make_policy(n, env)) for n in ("optimal", "random")]
    data = tmp_path / "cue.jsonl"
    write_episodes(data, [ep for _, ep in collect(env, pols, 400, 0, 500).episodes])
    common = [f"run.runs_dir={tmp_path}/runs", "run.mode=local", "dashboard.enabled=false"]
    bc_cfg = load_config(
        None,
        [
            *common,
            "run.algorithm=ilql",
            "env.kwargs={corridor_length: 6}",
            f"ilql.dataset={data}",
            "ilql.bc_only=true",
            "ilql.beta=0",
            "run.total_steps=200",
            "ilql.batch_size=32",
            "replay.capacity=1000",
            "env.eval_episodes=100",
        ],
    )
    bc = run_local(bc_cfg, progress=False)
    model = next(Path(bc["run_dir"]).glob("checkpoints/step_*/model"))
    cfg = load_config(
        CONFIGS / "r2d2_cue_recall.yaml",
        [
            *common,
            "r2d2.candidates=policy",
            f"r2d2.candidate_model_path={model}",
            "r2d2.num_candidates=4",
            "r2d2.candidate_max_new_tokens=4",
        ],
    )
    r2d2 = run_local(cfg, progress=False)
    bc_success, q_success = bc["after"]["success_rate"], r2d2["after"]["success_rate"]
    print(f"\ncue recall: BC candidate LM {bc_success:.2f}, R2D2 max over 4 sampled candidates {q_success:.2f}")
    assert q_success >= 0.70 and q_success >= bc_success + 0.15, (bc_success, q_success)
