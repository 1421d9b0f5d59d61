"""Reward-model training on preference pairs (InstructGPT step 2; `shoal train-rm`).

What: a Hugging Face `AutoModelForSequenceClassification` with one label whose trunk is a
copy of the SFT policy's trunk (InstructGPT initialises the reward model from the SFT
model; the LM head is dropped, a fresh scalar head `score` is added), trained with the
Bradley-Terry loss -log sigmoid(r(x, y_w) - r(x, y_l)) on preference pairs
(`reward.bradley_terry`). Pairs come from `reward.preference_file` when set, otherwise they
are generated from the task's gold reward (`reward.preferences`, Gao et al. 2022). The RM
input text and the score position are those of `reward.scorers` (one shared encoder), so
the trained model scores rollouts exactly as it was trained.

Evaluation on a held-out 10% of the pairs: accuracy against the (noisy) preference labels,
accuracy against the noiseless gold ordering (pairs whose gold is known and not tied), both
before and after training; and the Pearson correlation of RM score with the gold reward on
freshly sampled responses (p_on_topic ~ U(0, 1)).

Comparisons are pairs or ranked lists of K answers (`reward.rm_list_size`, or a file's
`{"responses", "ranking"}` lines): a list is one batch element whose loss is the mean over its
K(K-1)/2 pairs (`bradley_terry.ranking_loss`, InstructGPT's), so its pairs are never split
across batches or between the training and held-out sets. The model is written to a temporary
directory and moved into place only after training succeeded and the model ranks held-out
records better than chance (else RunError, and an existing model is left as it was).

Ensembles (`reward.rm_ensemble` K > 1, Coste et al. 2023): K members trained on the same split
from seeds run.seed + k (the head's initialisation and the order of the pairs), each checked
and calibrated on the held-out answers, saved as one directory (`reward/ensemble.py`); the summary
evaluates the reduced ensemble (`reward.rm_ensemble_reduce`) and keeps each member's.

Deviations: one constant learning rate; the whole model is trained (InstructGPT also
fine-tunes all weights).

Run: `shoal train-rm CONFIG`, or `train_reward_model(load_config(path))`; slow test:
`pytest tests/learning/test_reward_model.py -m learning`.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from shoal.reward.bradley_terry import pairwise_accuracy, pearson, ranking_loss
from shoal.reward.ensemble import Member, calibration, member_dir_name, write_manifest
from shoal.reward.preferences import (
    PreferenceFileError,
    generate_preference_pairs,
    generate_ranked_lists,
    ranked,
    ranked_pairs,
    read_preference_file,
)
from shoal.reward.scorers import ensemble_scores, rm_forward, rm_scores, rm_text
from shoal.rollout.tasks import task_from_config
from shoal.utils import RunError

HELD_OUT_FRACTION = 0.1
DEGENERATE_MIN_HELDOUT = 20  # held-out records before chance-level accuracy is called degenerate
DEGENERATE_ACCURACY = 0.55
CORRELATION_SAMPLES = 512


def init_reward_model(policy_path: str | Path, seed: int = 0) -> tuple[Any, Any]:
    """(reward model, tokenizer): the SFT policy's trunk weights copied, a fresh scalar head."""
    from transformers import AutoModelForSequenceClassification

    from shoal.models import load_policy

    policy, tokenizer = load_policy(policy_path)
    config = copy.deepcopy(policy.config)
    config.num_labels, config.pad_token_id = 1, tokenizer.pad_token_id
    config.architectures = None
    torch.manual_seed(seed)
    rm = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    if rm.base_model_prefix != policy.base_model_prefix:
        raise ValueError(
            f"{policy_path}: policy trunk {policy.base_model_prefix!r} != reward trunk {rm.base_model_prefix!r}"
        )
    rm.base_model.load_state_dict(policy.base_model.state_dict(), strict=True)
    return rm, tokenizer


def load_pairs(cfg: Any, task: Any) -> list[dict[str, Any]]:
    """The preference file when configured, else comparisons generated from the gold reward:
    `rm_pairs` pairs, or (rm_list_size K > 2) rm_pairs * 2 // K ranked lists of K answers."""
    r = cfg.reward
    if r.preference_file:
        records = read_preference_file(r.preference_file)
        if len(records) < 2:
            raise PreferenceFileError(
                f"{r.preference_file}: {len(records)} record: need at least 2, one to train on and one to hold out"
            )
        return records
    if r.rm_list_size > 2:
        return generate_ranked_lists(task, max(2, r.rm_pairs * 2 // r.rm_list_size), r.rm_list_size, seed=cfg.run.seed)
    return generate_preference_pairs(task, r.rm_pairs, seed=cfg.run.seed)


def split_pairs(pairs: list[dict[str, Any]], seed: int, fraction: float = HELD_OUT_FRACTION) -> tuple[list, list]:
    """Seeded shuffle of the records (pairs or whole ranked lists), then (train, held-out);
    held-out has at least one record."""
    if len(pairs) < 2:
        raise ValueError(f"need at least 2 preference records to hold one out, got {len(pairs)}")
    shuffled = list(pairs)
    random.Random(seed).shuffle(shuffled)
    n_eval = max(1, round(fraction * len(shuffled)))
    return shuffled[n_eval:], shuffled[:n_eval]


def pair_loss(model: Any, tokenizer: Any, batch: list[dict[str, Any]]) -> torch.Tensor:
    """Bradley-Terry loss of a batch of records, all answers in one forward pass: for a ranked
    list of K, the mean over its K(K-1)/2 pairs (InstructGPT's loss, the list as one batch
    element); the mean over records. Pairs are lists of 2 (texts ordered all chosen, then all
    rejected, as `bradley_terry_loss` of pairs)."""
    lists = [ranked(r) for r in batch]
    sizes = sorted({len(answers) for _, answers, _, _ in lists})
    texts = [
        rm_text(prompt, answers[k]) for k in range(max(sizes)) for prompt, answers, _, _ in lists if k < len(answers)
    ]
    scores = iter(rm_forward(model, tokenizer, texts))
    rows: list[list[torch.Tensor]] = [[] for _ in lists]
    for k in range(max(sizes)):
        for i, (_, answers, _, _) in enumerate(lists):
            if k < len(answers):
                rows[i].append(next(scores))
    loss = torch.zeros(())
    for size in sizes:  # one [B_K, K] ranking loss per list size, weighted by its records
        same = torch.stack([torch.stack(r) for r in rows if len(r) == size])
        loss = loss + ranking_loss(same) * (len(same) / len(lists))
    return loss


def records_per_batch(records: list[dict[str, Any]], pairs_per_batch: int) -> int:
    """Records per step so that a step sees as many answers as `pairs_per_batch` pairs
    (2 * pairs_per_batch answers): ranked lists of K answers take 2 / K of a pair's count."""
    mean_answers = sum(len(ranked(r)[1]) for r in records) / len(records)
    return max(1, round(pairs_per_batch * 2 / mean_answers))


def train_pairs(
    model: Any,
    tokenizer: Any,
    pairs: list[dict[str, Any]],
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
    progress: bool = True,
) -> list[float]:
    """AdamW on the Bradley-Terry loss, `epochs` seeded passes; returns the per-step losses."""
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    rng, losses = random.Random(seed), []
    steps = epochs * -(-len(pairs) // batch_size)
    bar = tqdm(total=steps, desc="train-rm", disable=not progress)
    model.train()
    for _ in range(epochs):
        order = rng.sample(pairs, len(pairs))
        for i in range(0, len(order), batch_size):
            loss = pair_loss(model, tokenizer, order[i : i + batch_size])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    model.eval()
    return losses


def pair_gold(task: Any, pair: dict[str, Any], which: str) -> float | None:
    """Gold reward of pair[which]: stored `gold_<which>`, else from the task when meta is given."""
    if f"gold_{which}" in pair:
        return float(pair[f"gold_{which}"])
    if pair.get("meta"):
        return float(task.gold_reward(pair["meta"], pair[which]))
    return None


Score = Callable[[list[str]], list[float]]  # RM input texts -> scores


def model_score(model: Any, tokenizer: Any, batch_size: int = 64) -> Score:
    return lambda texts: rm_scores(model, tokenizer, texts, batch_size)


def evaluate_pairs(score: Score, task: Any, pairs: list[dict[str, Any]]) -> dict[str, float]:
    """Accuracy vs the labels and vs the noiseless gold ordering (pairs with known, untied gold)."""
    rc = torch.tensor(score([rm_text(p["prompt"], p["chosen"]) for p in pairs]))
    rr = torch.tensor(score([rm_text(p["prompt"], p["rejected"]) for p in pairs]))
    out = {"accuracy": pairwise_accuracy(rc, rr)}
    golds = [(pair_gold(task, p, "chosen"), pair_gold(task, p, "rejected")) for p in pairs]
    keep = [i for i, (gc, gr) in enumerate(golds) if gc is not None and gr is not None and gc != gr]
    if keep:
        sign = torch.tensor([1.0 if golds[i][0] > golds[i][1] else -1.0 for i in keep])
        margin = sign * (rc[keep] - rr[keep])  # > 0: the RM ranks the gold-better answer higher
        out["gold_accuracy"] = pairwise_accuracy(margin, torch.zeros_like(margin))
    return out


def gold_correlation(score: Score, task: Any, n: int, seed: int) -> float | None:
    """Pearson(RM score, gold) on n fresh prompts with responses of on-topic fraction ~ U(0, 1)."""
    if not hasattr(task, "sample_response"):
        return None
    rng = random.Random(seed)
    prompts = [task.sample_prompt(rng) for _ in range(n)]
    responses = [task.sample_response(rng, meta["topic"], rng.random()) for _, meta in prompts]
    scores = score([rm_text(text, r) for (text, _), r in zip(prompts, responses)])
    gold = [task.gold_reward(meta, r) for (_, meta), r in zip(prompts, responses)]
    return pearson(torch.tensor(scores), torch.tensor(gold, dtype=torch.float64))


def _metrics(score: Score, task: Any, held_out: list, seed: int, suffix: str) -> dict[str, Any]:
    pairs = [p for record in held_out for p in ranked_pairs(record)]  # a ranked list: all its pairs
    out = {f"heldout_{k}{suffix}": v for k, v in evaluate_pairs(score, task, pairs).items()}
    out[f"gold_pearson{suffix}"] = gold_correlation(score, task, CORRELATION_SAMPLES, seed + 1)
    return out


def train_member(
    cfg: Any, task: Any, train: list, held_out: list, seed: int, progress: bool
) -> tuple[Any, Any, dict[str, Any]]:
    """One reward model from `seed` (its head's initialisation and the order of the pairs):
    (model, tokenizer, summary with held-out metrics before and after training)."""
    r = cfg.reward
    model, tokenizer = init_reward_model(cfg.model.path, seed)
    summary: dict[str, Any] = {"seed": seed, "pairs_train": len(train), "pairs_heldout": len(held_out)}
    summary |= _metrics(model_score(model, tokenizer), task, held_out, cfg.run.seed, "_init")
    t0 = time.perf_counter()
    losses = train_pairs(
        model,
        tokenizer,
        train,
        epochs=r.rm_epochs,
        learning_rate=r.rm_learning_rate,
        batch_size=records_per_batch(train, r.rm_batch_size),
        seed=seed,
        progress=progress,
    )
    summary |= {
        "loss_first": losses[0],
        "loss_last": sum(losses[-10:]) / len(losses[-10:]),
        "train_seconds": time.perf_counter() - t0,
    }
    summary |= _metrics(model_score(model, tokenizer), task, held_out, cfg.run.seed, "")
    return model, tokenizer, summary


def train_reward_model(cfg: Any, progress: bool = True) -> dict[str, Any]:
    """`shoal train-rm`: init from the SFT policy, train on pairs, evaluate, save, summarise;
    `reward.rm_ensemble` K > 1: K members from seeds run.seed + k, calibrated on the held-out
    answers and saved as one ensemble directory (`reward/ensemble.py`)."""
    if not cfg.reward.reward_model_path:
        raise ValueError("reward.reward_model_path is null: nowhere to save the reward model")
    start, task, r = time.perf_counter(), task_from_config(cfg.task), cfg.reward
    train, held_out = split_pairs(load_pairs(cfg, task), cfg.run.seed)
    trained = []
    for k in range(r.rm_ensemble):
        trained.append(train_member(cfg, task, train, held_out, cfg.run.seed + k, progress))
        check_not_degenerate(trained[-1][2], r.reward_model_path)
        _report("train-rm" if r.rm_ensemble == 1 else f"train-rm member {k}", trained[-1][2])
    if r.rm_ensemble == 1:
        model, tokenizer, summary = trained[0]
        save_reward_model(model, tokenizer, r.reward_model_path, summary)
    else:
        summary = save_reward_ensemble(cfg, task, trained, held_out)
        _report("train-rm ensemble", summary)
    summary["seconds"] = time.perf_counter() - start
    return summary


def _report(what: str, summary: dict[str, Any]) -> None:
    items = [(k, v) for k, v in summary.items() if not isinstance(v, (list, dict))]
    print(f"{what}: " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items), flush=True)


def save_reward_ensemble(cfg: Any, task: Any, trained: list, held_out: list) -> dict[str, Any]:
    """Calibrate each member on the held-out answers, evaluate the reduced ensemble, and write
    the ensemble directory (members, ensemble.json, train_rm.json) into place."""
    r, out = cfg.reward, Path(cfg.reward.reward_model_path)
    texts = [rm_text(prompt, a) for record in held_out for prompt, answers, _, _ in [ranked(record)] for a in answers]
    members = [
        Member(out / member_dir_name(k), s["seed"], *calibration(rm_scores(model, tok, texts)))
        for k, (model, tok, s) in enumerate(trained)
    ]

    models = [(model, tok) for model, tok, _ in trained]

    def score(batch: list[str]) -> list[float]:
        return [v for v, _ in ensemble_scores(models, members, batch, r.rm_ensemble_reduce, r.rm_ensemble_uwo_lambda)]

    summary: dict[str, Any] = {"members": len(trained), "reduce": r.rm_ensemble_reduce}
    summary |= {k: trained[0][2][k] for k in ("pairs_train", "pairs_heldout")}
    summary |= _metrics(score, task, held_out, cfg.run.seed, "")
    summary["member_summaries"] = [s for _, _, s in trained]
    tmp = _temporary_beside(out)
    for (model, tok, s), m in zip(trained, members):
        _write_model_dir(model, tok, tmp / m.path.name, s)
    write_manifest(tmp, members, {k: v for k, v in summary.items() if k != "member_summaries"})
    (tmp / "train_rm.json").write_text(json.dumps(summary, indent=2))
    _move_into_place(tmp, out)
    return summary


def check_not_degenerate(summary: dict[str, Any], path: str | Path) -> None:
    """RunError (nothing saved) when a trained model ranks enough held-out pairs no better than
    chance, against the labels and against gold: saving it would replace a model with noise."""
    acc, gold_acc = summary.get("heldout_accuracy", 1.0), summary.get("heldout_gold_accuracy")
    if (
        summary["pairs_heldout"] >= DEGENERATE_MIN_HELDOUT
        and acc <= DEGENERATE_ACCURACY
        and (gold_acc is None or gold_acc <= DEGENERATE_ACCURACY)
    ):
        raise RunError(
            f"the trained reward model ranks {summary['pairs_heldout']} held-out records no better than chance "
            f"(accuracy {acc:.2f}); not saved, {path} left as it was: check the preference labels"
        )


def save_reward_model(model: Any, tokenizer: Any, path: str | Path, summary: dict[str, Any]) -> Path:
    """Model + tokenizer (loadable by `reward.scorers.RewardModelScorer`) + train_rm.json,
    written to a temporary directory beside `path` and moved into place only when complete."""
    out = Path(path)
    tmp = _temporary_beside(out)
    _write_model_dir(model, tokenizer, tmp, summary)
    _move_into_place(tmp, out)
    return out


def _temporary_beside(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def _write_model_dir(model: Any, tokenizer: Any, where: Path, summary: dict[str, Any]) -> None:
    model.save_pretrained(where)
    tokenizer.save_pretrained(where)
    (where / "train_rm.json").write_text(json.dumps(summary, indent=2))


def _move_into_place(tmp: Path, out: Path) -> None:
    """Replace `out` by the complete directory `tmp` (an old model is removed only afterwards)."""
    old = out.parent / f".old-{out.name}-{os.getpid()}"
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
