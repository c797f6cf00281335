"""``python -m lmgnn_fast.train [--config run.yaml] [--key value ...]``

With no arguments: all three stages on the built-in ``attack`` graph with the packaged
all-MiniLM-L6-v2, on CPU unless a GPU is present. Every config field can be overridden:
``--seed 1``, ``--stage2.epochs 5``, ``--data.name path/to/dir``, ``--gnn.fanouts 15,10``.
``--resume`` continues the run in ``--run.out_dir`` from its last checkpoint, with the
configuration saved there (overrides still apply). ``--debug`` (or ``LMGNN_DEBUG=1``)
shows the traceback of an error instead of its one-line message; see ``lmgnn_fast.cli``
for the exit statuses.
"""
from __future__ import annotations

import os
import sys

USAGE = __doc__


def main(argv: list[str] | None = None) -> int:
    """Train as configured by ``argv`` (``--config FILE``, ``--section.key value`` overrides,
    ``--help``); returns the exit status (errors: one line on stderr, see ``lmgnn_fast.cli``)."""
    from lmgnn_fast.cli import run_cli
    from lmgnn_fast.lm.model import LMLoadError
    from lmgnn_fast.train.config import ConfigError
    from lmgnn_fast.train.errors import DataError, SimulatedInterrupt, TrainingError

    return run_cli(_main, argv, user_errors=(ConfigError, DataError, TrainingError, LMLoadError),
                   interrupts=(SimulatedInterrupt,), interrupt_hint="resume with --resume")


def _main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        from lmgnn_fast.train.config import Config

        print(Config().to_yaml())
        return 0
    from lmgnn_fast.cli import UsageError
    from lmgnn_fast.train.config import load_config

    config_path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise UsageError("--config needs a path")
        config_path = argv[i + 1]
        del argv[i:i + 2]
    cfg = load_config(config_path, argv)
    if cfg.run.resume and config_path is None:
        saved = os.path.join(cfg.run.out_dir, "config.yaml")
        if os.path.exists(saved):
            cfg = load_config(saved, argv)
            cfg.run.resume = True
            cfg.run.interrupt_after_steps = 0
    cfg.validate()
    from lmgnn_fast.train.runner import Trainer

    trainer = Trainer(cfg)
    trainer.run()
    from lmgnn_fast.train.data_parallel import teardown

    teardown(trainer.dist, trainer.ctx.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
