"""Jobs: whole user tasks that combine the layers below (models, analysis, data, train,
finetune). The CLI commands are thin wrappers over these functions.

- :mod:`layerwise.jobs.training`: pretrain a language model, train a classifier, evaluate a
  run, sample from a checkpoint;
- :mod:`layerwise.jobs.finetune`: fine-tune one strategy, compare several;
- :mod:`layerwise.jobs.demo`: the main job end to end (``make demo``).

Components (``train``, ``finetune``, ``analysis`` ...) never import a job.
"""
