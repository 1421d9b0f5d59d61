"""SFT encoding: prompt masked, response tokenized as the engine sees it, EOS trained."""

from __future__ import annotations

import random

import torch

from shoal.learner.sft.learning import (
    IGNORE_INDEX,
    collate_right,
    demonstration_batch,
    encode_demonstration,
    is_well_formed,
)
from shoal.rollout.tasks import encode_prompt


def test_demonstration_encoding(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    ids, labels = encode_demonstration(tok, "write about ko :", "kofa mabi")
    prompt = encode_prompt(tok, "write about ko :")
    assert ids[: len(prompt)] == prompt and ids[0] == tok.bos_token_id
    assert labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert labels[len(prompt) :] == ids[len(prompt) :]
    assert tok.convert_ids_to_tokens(ids[len(prompt) :]) == ["Ġkofa", "Ġmabi", "</s>"]
    assert tok.decode(ids[len(prompt) : -1]) == " kofa mabi"  # what the engine decodes


def test_collate_pads_right_and_masks_padding():
    batch = collate_right([[5, 6, 7], [5]], [[-100, 6, 7], [-100]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, -100, -100]]


def test_demonstration_batch_is_seeded(tiny_model_dir, tiny_task):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    a = demonstration_batch(tiny_task, tok, random.Random(1), 8)
    b = demonstration_batch(tiny_task, tok, random.Random(1), 8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (a["labels"] != IGNORE_INDEX).sum(1).tolist() == [tiny_task.response_words + 1] * 8


def test_is_well_formed(tiny_task):
    words = tiny_task.vocabulary[: tiny_task.response_words]
    assert is_well_formed(tiny_task, " " + " ".join(words), stopped=True)
    assert not is_well_formed(tiny_task, " ".join(words), stopped=False)  # no EOS
    assert not is_well_formed(tiny_task, " ".join(words[:-1]), stopped=True)  # too short
    assert not is_well_formed(tiny_task, " ".join(words[:-1] + ["kofx"]), stopped=True)  # not a word
