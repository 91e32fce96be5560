"""The replay: its row layout and the step layout of the losses (``context``), the stream-ordered buffer
(``buffer``) and its files in a checkpoint (``io``).

Only the layout is imported here (the learner needs it); ``from torchrl_dreamerv3.replay.buffer import
make_replay`` and ``...replay.io`` load the rest.
"""
from .context import CONTEXTS, split_context

__all__ = ["CONTEXTS", "split_context"]
