"""Tiny LLMs and a tiny tokenizer built from configs: tests never load real weights.

The tokenizer is a byte-level BPE trained in memory on a few sentences, so it behaves like
a real one (any text encodes, words split into sub-words) and costs milliseconds.
"""
from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

CORPUS = [
    "Given the user's history, will the user interact with the item? Answer Yes or No.",
    "The user watched Toy Story (1995), GoldenEye (1995), Four Rooms (1995) and Get Shorty.",
    "Which of the candidates will the user watch next? Answer with one item.",
    "Masked item: predict the missing item. Which item does the user prefer? Rating 1 2 3 4 5.",
    "user item history candidates answer title description category comedy drama action",
]


def tiny_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def tiny_llama(tokenizer: PreTrainedTokenizerFast, hidden: int = 32, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, tie_word_embeddings=True,
                      pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id)
    return LlamaForCausalLM(cfg)


def tiny_t5(tokenizer: PreTrainedTokenizerFast, hidden: int = 32, seed: int = 0) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=len(tokenizer), d_model=hidden, d_kv=8, d_ff=2 * hidden, num_layers=2,
                   num_heads=4, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                   decoder_start_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    return T5ForConditionalGeneration(cfg)
