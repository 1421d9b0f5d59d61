"""PPO-ptx's pretraining mix (Ouyang et al. 2022, InstructGPT): batches of text whose
language-modelling loss, times `ppo.ptx_coef`, is added to every PPO minibatch update, so the
policy keeps its likelihood of the SFT / pretraining distribution (the "alignment tax").

Sources: the task's demonstrations (prompt + response, loss on the response and EOS, exactly
the SFT objective of `learner/sft/`), or a text file - `.jsonl` lines of {"text": ...} or plain
text, one document per line (loss on every token). Files are read once, validated line by
line (`PtxFileError` names `file:line`), and sampled with the learner's own seeded generator.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch

from shoal.learner.sft.learning import IGNORE_INDEX, demonstration_batch
from shoal.tensors import pad_rows, pad_tokens


class PtxFileError(ValueError):
    """A ptx data file that cannot be used, with `file:line` in the message."""


def read_ptx_texts(path: str | Path) -> list[str]:
    """Documents of a .jsonl ({"text": str} per line) or plain-text file; PtxFileError on bad input."""
    p = Path(path)
    if not p.is_file():
        raise PtxFileError(f"ppo.ptx_data: {str(p)!r} does not exist")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise PtxFileError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    texts = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        texts.append(_jsonl_text(p, n, line) if p.suffix == ".jsonl" else line.strip())
    if not texts:
        raise PtxFileError(f"{p}: no text (ppo.ptx_data needs at least one non-empty line)")
    return texts


def _jsonl_text(p: Path, n: int, line: str) -> str:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise PtxFileError(f"{p}:{n}: not JSON ({e.msg})") from None
    text = rec.get("text") if isinstance(rec, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise PtxFileError(f'{p}:{n}: expected {{"text": <non-empty string>}}')
    return text


class PtxBatches:
    """Endless seeded batches {input_ids, attention_mask, labels} for the ptx loss."""

    def __init__(
        self, tokenizer: Any, batch_size: int, seed: int, task: Any = None, texts: list[str] | None = None
    ) -> None:
        if (task is None) == (texts is None):
            raise ValueError("PtxBatches needs a task (its demonstrations) or texts, not both")
        self.tokenizer, self.batch_size, self.task = tokenizer, batch_size, task
        self.rng = random.Random(seed)
        self.encoded = None if texts is None else [self._encode(t) for t in texts]

    def _encode(self, text: str) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        bos = self.tokenizer.bos_token_id
        return ([bos] if bos is not None else []) + ids + [self.tokenizer.eos_token_id]

    def next(self) -> dict[str, torch.Tensor]:
        if self.task is not None:
            return demonstration_batch(self.task, self.tokenizer, self.rng, self.batch_size)
        rows = [self.rng.choice(self.encoded) for _ in range(self.batch_size)]
        ids, mask = pad_tokens(rows, self.tokenizer.pad_token_id)
        return {"input_ids": ids, "attention_mask": mask, "labels": pad_rows(rows, IGNORE_INDEX, torch.long)}


def ptx_loss(model: Any, batch: dict[str, torch.Tensor], device: str) -> torch.Tensor:
    """Mean next-token cross-entropy on the batch's labelled tokens (HF's causal-LM loss)."""
    return model(**{k: v.to(device) for k, v in batch.items()}).loss
