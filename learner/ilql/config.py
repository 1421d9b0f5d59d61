"""ILQL's one config model: the run config's `ilql` section, read by the learner, the acting
policy and the builder as is (Snell et al. 2023 names; paper values in the descriptions)."""

from __future__ import annotations

from pydantic import Field

from shoal.utils import ConfigSection


class ILQLConfig(ConfigSection):
    """Token-level implicit language Q-learning."""

    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate of the LM trunk and the Q/V heads.")
    batch_size: int = Field(32, gt=0, description="Episodes per learner step.")
    gamma: float = Field(0.99, ge=0, le=1, description="Discount per agent token (ILQL: 0.99).")
    tau: float = Field(0.7, gt=0, lt=1, description="Expectile of the V regression toward min(Q1, Q2) (IQL/ILQL: 0.7).")
    cql_weight: float = Field(0.1, ge=0, description="Weight of the CQL term logsumexp Q - Q(a).")
    bc_weight: float = Field(1.0, ge=0, description="Weight of the behaviour-cloning (LM) loss.")
    target_alpha: float = Field(
        0.005, ge=0, le=1, description="Polyak rate of the target Q heads per step (ILQL: 0.005)."
    )
    grad_clip: float = Field(1.0, gt=0, description="Global gradient-norm clip.")
    beta: float = Field(
        16.0, ge=0, description="Decoding: logits = log pi_beta + beta (Q - V) (0: plain behaviour cloning)."
    )
    bc_only: bool = Field(
        False, description="Train the behaviour-cloning term alone (the BC baseline; decode it with beta 0)."
    )
    temperature: float = Field(
        1.0, ge=0, description="Sampling temperature of online rollout workers (evaluation is greedy)."
    )
    max_new_tokens: int = Field(16, gt=0, description="Token cap of one utterance.")
    dataset: str | None = Field(
        None, description="Episodes JSONL (`shoal collect`) to learn from offline; the replay starts with them."
    )
    online: bool = Field(False, description="Rollout workers act with ILQL decoding in the env and feed the replay.")
    model_path: str | None = Field(
        None,
        description=(
            "Causal LM to start from (any local HF dir whose tokenizer covers the env's text); null: a tiny LM "
            "built from the environment's texts into the run directory."
        ),
    )
    model_hidden_size: int = Field(64, gt=0, description="Hidden size of the built tiny LM (when model_path is null).")
