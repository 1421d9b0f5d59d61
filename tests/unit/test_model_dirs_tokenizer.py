"""`load_tokenizer` loads what AutoTokenizer loads: the same class and the same ids for a
`shoal init-model` directory (generic class, taken directly), and AutoTokenizer's answer for
any other directory."""

from __future__ import annotations

import json
import shutil

from transformers import AutoTokenizer

from shoal.model_dirs import GENERIC_TOKENIZERS, load_tokenizer

TEXTS = ["topic: ma | answer:", "the quick brown fox", " mafa  mafa\n", "\u00e9\u00e0 \u4e2d\u6587 <s> </s> <pad>", ""]


def _same(a, b) -> None:
    assert type(a) is type(b)
    for t in TEXTS:
        assert a(t)["input_ids"] == b(t)["input_ids"], t
        assert a(t, add_special_tokens=False)["input_ids"] == b(t, add_special_tokens=False)["input_ids"], t
    assert (a.bos_token_id, a.eos_token_id, a.pad_token_id) == (b.bos_token_id, b.eos_token_id, b.pad_token_id)
    ids = a(TEXTS[0])["input_ids"]
    assert a.decode(ids) == b.decode(ids)


def test_an_init_model_directory_loads_as_autotokenizer_loads_it(tiny_model_dir):
    name = json.loads((tiny_model_dir / "tokenizer_config.json").read_text())["tokenizer_class"]
    assert name in GENERIC_TOKENIZERS  # the direct path is the one taken
    _same(load_tokenizer(tiny_model_dir), AutoTokenizer.from_pretrained(str(tiny_model_dir)))


def test_any_other_class_goes_through_autotokenizer(tiny_model_dir, tmp_path):
    other = shutil.copytree(tiny_model_dir, tmp_path / "other")
    cfg_file = other / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg.pop("tokenizer_class")
    cfg_file.write_text(json.dumps(cfg))
    _same(load_tokenizer(other), AutoTokenizer.from_pretrained(str(other)))


def test_a_tokenizer_without_a_pad_token_pads_with_eos(tiny_model_dir, tmp_path):
    other = shutil.copytree(tiny_model_dir, tmp_path / "nopad")
    cfg_file = other / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg.pop("pad_token", None)
    cfg_file.write_text(json.dumps(cfg))
    tok = load_tokenizer(other)
    assert tok.pad_token == tok.eos_token and tok.pad_token_id == tok.eos_token_id
