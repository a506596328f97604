"""Looking inside a network with real weights: attributions (Captum), weights as pictures.

Layer: above ``train`` and ``finetune`` (it runs forward and backward passes on real data),
below ``report`` and the jobs. Per-layer health lives in :mod:`layerwise.train.layerstats`
(the depth study shares it), attention probabilities in :mod:`layerwise.models.ops`
(``record_attention``); the whole ``layerwise inspect`` task is :mod:`layerwise.jobs.inspect`.
"""
