"""Models without a hub: a BPE tokenizer trained on the task's text and a tiny Llama.

`build_model_dir(task, model_cfg, out_dir, seed)` writes a Hugging Face model directory
(config.json, safetensors weights, tokenizer files, generation_config.json) that both
transformers and vLLM load. `shoal init-model` calls it and then the SFT warm-up
(`learner.sft`), so the starting policy is an SFT policy as in InstructGPT.

Tokenizer: byte-level BPE (`tokenizers`), full byte alphabet (any text encodes), special
tokens <pad> <s> </s>. Model: LlamaForCausalLM, untied embeddings, head_dim >= 32 (vLLM's CPU
attention rejects 16).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>"}


def train_tokenizer(corpus: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `corpus`, wrapped as a transformers fast tokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def llama_config(tokenizer: PreTrainedTokenizerFast, hidden_size: int, num_layers: int, num_heads: int) -> LlamaConfig:
    head_dim = hidden_size // num_heads
    if head_dim < 32:
        raise ValueError(f"model: head_dim = hidden_size/num_heads = {head_dim}; vLLM's CPU attention needs >= 32")
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        head_dim=head_dim,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )


def build_model_dir(task: Any, model_cfg: Any, out_dir: str | Path, seed: int = 0) -> Path:
    """Train the tokenizer on `task.corpus()`, build a random-init Llama, save both to out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(task.corpus(), model_cfg.vocab_size)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(tokenizer, model_cfg.hidden_size, model_cfg.num_layers, model_cfg.num_heads))
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def load_policy(path: str | Path) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """Any local HF causal-LM directory -> (model in float32, eval mode; its tokenizer)."""
    from transformers import AutoModelForCausalLM

    from shoal.model_dirs import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    return model.eval(), load_tokenizer(path)
