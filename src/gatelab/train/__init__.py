"""Training (layer L4): the loops, and the run folders they write.

    fit.py           the epoch loop of every LSTM -> Dense model (early stopping, resume)
    config.py        TrainConfig, History: fit's settings and record, as JSON holds them
    optim.py         AdamW and the learning-rate schedule of fit
    metrics.py       accuracy, macro F1, RMSE, MAE; the running metric of an epoch
    tbptt.py         the loop of the char LM and the translator (streams, time budget)
    checkpoint.py    the one checkpoint writer and reader both loops use
    runs.py          the run-folder protocol: start/resume, config.json; re-exports
    lock.py          ... the folder lock and the clean-up of a killed writer's files
    files.py         ... atomic writes and checked reads (JSON, safetensors)
    fingerprints.py  ... data fingerprints and the resume comparison
    distributed.py   data-parallel training on torch.distributed

Nothing here prints: progress goes to callbacks (the command line's is
:class:`gatelab.cli.progress.RichProgress`); errors are :mod:`gatelab.errors`'.
"""
