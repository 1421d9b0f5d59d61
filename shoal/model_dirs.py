"""What keeps a directory from loading as a Hugging Face model, checked without torch or
transformers (the Ray driver checks every model directory before any actor starts; an actor
that fails to load one used to surface as a 60-line traceback after Ray's start-up).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.pt", "*.gguf")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def read_model_config(path: str | Path) -> dict[str, Any]:
    """config.json as a dict; ValueError saying what is wrong with it."""
    file = Path(path) / "config.json"
    if not file.is_file():
        raise ValueError(f"{str(path)!r} is not a Hugging Face model directory (no config.json)")
    try:
        cfg = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{file} is not valid JSON ({e})") from None
    if not isinstance(cfg, dict) or "model_type" not in cfg:
        raise ValueError(f"{file} has no model_type: not a transformers config")
    return cfg


def model_dir_problem(path: str | Path, tokenizer: bool = True) -> str | None:
    """Why `path` cannot load as a model (config, weights, tokenizer), or None."""
    try:
        read_model_config(path)
    except ValueError as e:
        return str(e)
    root = Path(path)
    if not any(any(root.glob(p)) for p in WEIGHT_PATTERNS):
        return f"{str(path)!r} has a config.json but no weights (*.safetensors, pytorch_model*.bin)"
    if tokenizer and not any((root / f).is_file() for f in TOKENIZER_FILES):
        return f"{str(path)!r} has no tokenizer files ({', '.join(TOKENIZER_FILES)})"
    return None


def context_length(path: str | Path) -> int | None:
    """The model's context window in tokens (max_position_embeddings or its aliases), if stated."""
    cfg = read_model_config(path)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(cfg.get(key), int):
            return cfg[key]
    return None


# Tokenizer classes that AutoTokenizer loads as named, with no model-specific class behind them.
GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_tokenizer(path: str | Path) -> Any:
    """A model directory's tokenizer, as `AutoTokenizer.from_pretrained` loads it, with its pad
    token set (the eos token when it has none). A directory whose tokenizer_config.json names a
    generic class (`GENERIC_TOKENIZERS`: every `shoal init-model` directory) gets that class
    directly: importing AutoTokenizer imports transformers' model registry and torch with it
    (~2.8 s of CPU, measured), which the Ray driver - it only encodes prompts - does not need.
    Any other directory goes through AutoTokenizer."""
    file = Path(path) / "tokenizer_config.json"
    try:
        name = json.loads(file.read_text(encoding="utf-8")).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        name = None
    if name in GENERIC_TOKENIZERS and (Path(path) / "tokenizer.json").is_file():
        import transformers

        tokenizer = getattr(transformers, name).from_pretrained(str(path))
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
