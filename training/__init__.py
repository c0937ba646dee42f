"""Training: datasets over the episode store, one trainer for every model, and entry scripts.

Entry points are modules, run from the repository root as ``python -m training.train_wm``
(also ``train_tokenizer``, ``cache_latents``, ``export``, ``evaluate_rollouts``); that is the
documented form. Two script forms keep working, which is why each entry keeps a two-line
``sys.path`` guard at the top:

- ``deepspeed training/train_wm.py ...``: DeepSpeed's launcher starts every rank with a file
  path (``python -u training/train_wm.py --local_rank=N``), not with ``-m``;
- ``python training/train_wm.py ...`` (older docs and habits).

Run as a file, Python puts ``training/`` on ``sys.path`` instead of the repository root, so
``import training`` fails in a checkout that is not pip-installed; the guard adds the root
only in that case (``__package__`` is empty) and does nothing under ``python -m``.

Exit codes, the same for every CLI of the project: 0 success; 1 the job failed (an unexpected
error, with its traceback); 2 usage or bad input (argparse's own code for bad arguments, and
one ``error: ...`` line for a bad config, store, checkpoint or path).
"""
