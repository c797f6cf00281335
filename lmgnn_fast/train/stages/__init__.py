"""The training stages, one class each, under the loop's ``Stage`` protocol.

``STAGES[k](ctx, features, task)`` builds stage ``k`` ready to train;
``STAGES[k].evaluate(ctx, features, task)`` evaluates its saved checkpoint. Stage 3 has two
implementations, chosen by ``stage3.objective``: :class:`Stage3GLEM` (``glem``) and
:class:`Stage3` (``joint``); their checkpoints have the same form.
"""
from lmgnn_fast.train.stages.common import GNNCheckpointReader
from lmgnn_fast.train.stages.stage1 import Stage1
from lmgnn_fast.train.stages.stage2 import Stage2
from lmgnn_fast.train.stages.stage3 import Stage3
from lmgnn_fast.train.stages.stage3_glem import Stage3GLEM


class Stage3ByObjective(GNNCheckpointReader):
    """Stage 3 as ``stage3.objective`` asks: calling it builds a :class:`Stage3GLEM` or a
    :class:`Stage3`; evaluating or reading its checkpoint is the same for both."""

    number = 3

    def __new__(cls, ctx, features, task):
        impl = Stage3GLEM if ctx.cfg.stage3.objective == "glem" else Stage3
        return impl(ctx, features, task)


STAGES = {1: Stage1, 2: Stage2, 3: Stage3ByObjective}

__all__ = ["Stage1", "Stage2", "Stage3", "Stage3GLEM", "Stage3ByObjective", "STAGES"]
