"""Tiny LLMs and a tiny tokenizer built from configs: tests never load real weights.

The tokenizer is a byte-level BPE trained in memory on a few sentences, so it behaves like
a real one (any text encodes, words split into sub-words) and costs milliseconds.
"""
from __future__ import annotations

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

from pipeline.llm.tokens import item_text, new_tokens, user_text

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


# A planted SFT task over N_USERS users and N_ITEMS items (test_llm_sft, test_bad_inputs).
N_USERS, N_ITEMS = 12, 6


def tokenizer_with_ids():
    tok = tiny_tokenizer()
    tok.add_tokens(new_tokens(N_USERS, N_ITEMS))
    return tok


def liked(u: int) -> int:
    """The planted pattern: user u always takes item u % 3 (items 3..5 are never taken), the
    item that fills the user's history."""
    return u % 3


def prompt(u: int, cands: list[int], tokens: bool = True) -> str:
    history = ", ".join([item_text(liked(u), tokens)] * 4)
    shown = ", ".join(item_text(c, tokens) for c in cands)
    return f"User {user_text(u, tokens)} has watched {history}. Candidates: {shown} Answer:"


def samples(tokens: bool = True, reps: int = 4):
    rng = np.random.default_rng(0)
    prompts, answers = [], []
    for _ in range(reps):
        for u in range(N_USERS):
            cands = rng.permutation(N_ITEMS).tolist()
            prompts.append(prompt(u, cands, tokens))
            answers.append(item_text(liked(u), tokens))
    return prompts, answers
