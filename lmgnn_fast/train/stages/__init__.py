"""The training stages, one class each, under the loop's ``Stage`` protocol.

``STAGES[k](ctx, features, task)`` builds stage ``k`` ready to train;
``STAGES[k].evaluate(ctx, features, task)`` evaluates its saved checkpoint.
"""
from lmgnn_fast.train.stages.stage1 import Stage1
from lmgnn_fast.train.stages.stage2 import Stage2
from lmgnn_fast.train.stages.stage3 import Stage3

STAGES = {1: Stage1, 2: Stage2, 3: Stage3}

__all__ = ["Stage1", "Stage2", "Stage3", "STAGES"]
