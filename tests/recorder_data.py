"""A LLaDA-sized byte-level tokenizer built here (126,349 ids; mask 126336, <|endoftext|> 126081,
<|eot_id|> 126348), for the recorder's tests and `bench record`: the model's logits are wider
(126,464 columns), as LLaDA's are."""

from __future__ import annotations

from typing import Any

LLADA_TOKENS, LLADA_WIDTH = 126349, 126464
LLADA_MASK, LLADA_EOS, LLADA_BOS, LLADA_EOT = 126336, 126081, 126080, 126348


def llada_like_tokenizer(n: int = LLADA_TOKENS) -> Any:
    import tokenizers
    import transformers

    alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())  # 256 byte-level characters
    specials = {LLADA_MASK: "<|mdm_mask|>", LLADA_EOS: "<|endoftext|>", LLADA_EOT: "<|eot_id|>",
                LLADA_BOS: "<|startoftext|>"}
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    for word in ("the", "cat", "sat"):
        vocab["\u0120" + word] = len(vocab)
    while len(vocab) < n:
        vocab[specials.get(len(vocab), f"\u0120w{len(vocab)}")] = len(vocab)
    tk = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = tokenizers.decoders.ByteLevel()
    tk.add_special_tokens(list(specials.values()))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token=specials[LLADA_BOS], eos_token=specials[LLADA_EOS],
        mask_token=specials[LLADA_MASK],
    )
