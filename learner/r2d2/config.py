"""R2D2's one config model: the run config's `r2d2` section, read by the learner, the actors
and the builder as is (Kapturowski et al. 2019 names; paper values in the descriptions)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shoal.utils import ConfigSection


class R2D2Config(ConfigSection):
    """Recurrent per-utterance Q-learning (R2D2 for language); defaults sized for tiny CPU tasks."""

    burn_in_length: int = Field(
        4, ge=0, description="Turns unrolled from the stored state without loss before the trace (R2D2: 40 frames)."
    )
    trace_length: int = Field(4, gt=0, description="Turns of an item that carry the loss (R2D2: 80 frames).")
    sequence_period: int = Field(
        2, gt=0, description="Turns between the starts of consecutive items of an episode (R2D2: 40, half the trace)."
    )
    n_step: int = Field(5, gt=0, description="n of the n-step double-Q targets (R2D2: 5).")
    gamma: float = Field(0.997, ge=0, le=1, description="Discount per turn (R2D2: 0.997).")
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate of the Q network (R2D2: 1e-4; Acme 1e-3).")
    batch_size: int = Field(32, gt=0, description="Items per learner step (R2D2: 64).")
    target_update_period: int = Field(
        100, gt=0, description="Copy the online network to the target every N learner steps (R2D2: 2500)."
    )
    burn_in_gradients: bool = Field(
        False, description="Let the loss back-propagate through the burn-in turns (R2D2: no)."
    )
    start_state: Literal["stored", "zero"] = Field(
        "stored", description="Unroll items from the stored recurrent state or from zeros (the paper's baseline)."
    )
    value_rescaling: bool = Field(
        True, description="h(x) = sign(x)(sqrt(|x|+1)-1) + eps x on the n-step targets (R2D2)."
    )
    priority_eta: float = Field(
        0.9, ge=0, le=1, description="eta of the sequence priority eta*max|delta| + (1-eta)*mean|delta| (R2D2: 0.9)."
    )
    max_grad_norm: float = Field(40.0, gt=0, description="Global gradient-norm clip (R2D2: 40).")
    core_lr_scale: float = Field(
        1.0, ge=0, description="The recurrent core's learning rate as a fraction of `learning_rate` (0 freezes it)."
    )
    hidden_size: int = Field(64, gt=0, description="LSTM core size.")
    memory: bool = Field(
        True,
        description="false: the memoryless baseline (Q of the current observation only; the same network without its recurrent state).",
    )
    forget_bias: float = Field(3.0, description="Initial forget-gate bias of the LSTM (long memory from the start).")
    epsilon: float = Field(
        0.4,
        ge=0,
        le=1,
        description="Exploration: worker i of N acts epsilon^(1 + epsilon_alpha * i/(N-1))-greedily (Ape-X/R2D2: 0.4, 7).",
    )
    epsilon_alpha: float = Field(7.0, ge=0, description="Spread of the per-worker epsilons (see epsilon).")
    encoder_path: str | None = Field(
        None,
        description="Frozen LM that encodes each turn (any local HF causal-LM dir); null: a tiny LM built from the environment's texts into the run directory.",
    )
    encoder_hidden_size: int = Field(
        64, gt=0, description="Hidden size of the built tiny encoder (when encoder_path is null)."
    )
    candidates: Literal["legal_actions", "policy"] = Field(
        "legal_actions",
        description=(
            "What max_a Q is taken over: the env's `legal_actions()` (small action sets), or `policy` = k utterances sampled "
            "from `candidate_model_path` per observation (CHAI-style, for free-text actions)."
        ),
    )
    num_candidates: int = Field(5, gt=0, description="k: utterances sampled per observation when candidates = policy.")
    candidate_model_path: str | None = Field(
        None,
        description=(
            "Causal LM (local HF dir) that proposes the candidates when candidates = policy, e.g. the "
            "model/ of an `algorithm: ilql, ilql.bc_only: true` checkpoint."
        ),
    )
    candidate_temperature: float = Field(1.0, gt=0, description="Sampling temperature of the candidate LM.")
    candidate_max_new_tokens: int = Field(16, gt=0, description="Token cap of one candidate utterance.")
    dq_interval: int = Field(
        0,
        ge=0,
        description="Every N learner steps, report R2D2's staleness diagnostic dQ (zero / burn-in / stored / stored + burn-in) on recent episodes (0: off).",
    )
    dq_episodes: int = Field(16, gt=0, description="Recent episodes the dQ diagnostic uses.")
