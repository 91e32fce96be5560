"""The update of every Dreamer generation beside the losses it runs.

``generations`` is the registry (what ``algo.generation=<name>`` builds: model preset, losses, optimiser,
slow critic, replay context); ``learner`` runs one update of a registry entry.
"""
from .generations import GENERATION_SPECS, GRAD_HEADS, GenerationSpec, generation_spec, get_generation, resolve_switches
from .learner import DreamerLearner, DreamerV3Learner

__all__ = ["DreamerLearner", "DreamerV3Learner", "GENERATION_SPECS", "GRAD_HEADS", "GenerationSpec", "generation_spec",
           "get_generation", "resolve_switches"]
