"""``python -m lmgnn_fast.train [--config run.yaml] [--key value ...]``

With no arguments: all three stages on the built-in ``attack`` graph with the packaged
all-MiniLM-L6-v2, on CPU unless a GPU is present. Every config field can be overridden:
``--seed 1``, ``--stage2.epochs 5``, ``--data.name path/to/dir``, ``--gnn.fanouts 15,10``.
``--resume`` continues the run in ``--run.out_dir`` from its last checkpoint, with the
configuration saved there (overrides still apply).
"""
from __future__ import annotations

import os
import sys

USAGE = __doc__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE)
        from lmgnn_fast.train.config import Config

        print(Config().to_yaml())
        return 0
    from lmgnn_fast.train.config import ConfigError, load_config
    from lmgnn_fast.train.errors import DataError, TrainingError

    config_path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            print("error: --config needs a path", file=sys.stderr)
            return 2
        config_path = argv[i + 1]
        del argv[i:i + 2]
    try:
        cfg = load_config(config_path, argv)
        if cfg.run.resume and config_path is None:
            saved = os.path.join(cfg.run.out_dir, "config.yaml")
            if os.path.exists(saved):
                cfg = load_config(saved, argv)
                cfg.run.resume = True
                cfg.run.interrupt_after_steps = 0
        from lmgnn_fast.train.trainer import Trainer

        trainer = Trainer(cfg)
        trainer.run()
        from lmgnn_fast.train.dist import teardown

        teardown(trainer.dist)
    except (ConfigError, DataError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from lmgnn_fast.lm.model import LMLoadError

        if isinstance(e, LMLoadError):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
