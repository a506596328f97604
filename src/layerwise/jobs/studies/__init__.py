"""Studies: sweeps of many small trainings that answer one question each.

- :mod:`layerwise.jobs.studies.depth`: what depth does to learning (``layerwise study depth``);
- :mod:`layerwise.jobs.studies.conv`: what a standard convolution costs against a
  depthwise-separable one (``layerwise study conv``).

Both are built from the same parts: :mod:`~layerwise.jobs.studies.point` trains one point
for one seed with the one training loop (:class:`~layerwise.train.trainer.Trainer`) and
records its facts (parameters per kind, weight_depth, FLOPs, time per step, losses,
per-layer gradient statistics); :mod:`~layerwise.jobs.studies.sweep` runs the points of a
study into a run directory -- one file per finished run, so ``--resume`` skips what is
done and an interrupted sweep loses at most the run in progress -- in this process or in
``--jobs N`` worker processes.
"""
