"""Tiny random causal LMs (GPT-2 and LLaMA families) saved to a temporary folder, with a
byte-level BPE tokenizer trained offline on a few report sentences. Import the fixtures into a
test module: `from decoder_fixtures import tiny_gpt2_dir, tiny_llama_dir, tiny_tokenizer  # noqa: F401`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPORT_SENTENCES = [
    "No pleural effusion or pneumothorax.",
    "The heart size is normal.",
    "Cardiomegaly is present.",
    "There is a nodule in the right upper lobe.",
    "Ground-glass opacities in both lower lobes.",
    "Mild emphysematous changes are seen.",
    "No lymphadenopathy in the mediastinum.",
    "Atelectasis at the left lung base.",
    "Hiatal hernia is noted.",
    "Coronary artery calcification is present.",
]
HIDDEN = 64
# A larger initialisation than transformers' 0.02 makes the random models' next-token choices depend
# on their input, so greedy outputs differ between prefixes and padding mistakes become visible.
INIT_RANGE = 0.3


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(REPORT_SENTENCES * 5, trainer)
    # No pad token on purpose: load_causal_lm must supply one (EOS), as for GPT-2 and LLaMA.
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, unk_token="<unk>", eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )


def _save(model, tokenizer, folder: Path) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    eos = tiny_tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tiny_tokenizer), n_positions=256, n_embd=HIDDEN, n_layer=2, n_head=4,
        initializer_range=INIT_RANGE, bos_token_id=eos, eos_token_id=eos,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = GPT2LMHeadModel(config)
    return _save(model, tiny_tokenizer, tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    eos = tiny_tokenizer.eos_token_id
    config = LlamaConfig(
        vocab_size=len(tiny_tokenizer), hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        initializer_range=INIT_RANGE, bos_token_id=eos, eos_token_id=eos, tie_word_embeddings=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    return _save(model, tiny_tokenizer, tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def degenerate_gpt2_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """transformers' default 0.02 initialisation: greedy decoding repeats one token forever."""
    from transformers import GPT2Config, GPT2LMHeadModel

    eos = tiny_tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tiny_tokenizer), n_positions=256, n_embd=HIDDEN, n_layer=2, n_head=4,
        bos_token_id=eos, eos_token_id=eos,
    )
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = GPT2LMHeadModel(config)
    return _save(model, tiny_tokenizer, tmp_path_factory.mktemp("degenerate-gpt2"))


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """The demo's SmolLM2-135M converted once from its registry package (~1.5 min) for every test that needs it."""
    from training.demo.smollm2 import ensure_smollm2

    return ensure_smollm2(tmp_path_factory.mktemp("demo") / "smollm2")
