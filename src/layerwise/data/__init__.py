"""Text corpora, tokenizers, datasets and loaders: the data half of pretraining and fine-tuning."""
