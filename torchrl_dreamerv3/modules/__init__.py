"""TensorDictModule wrappers of the DreamerV3 networks: key wiring only."""
from .config import GENERATIONS, SIZES, ModelConfig, generation_config, model_config
from .factory import DreamerKeys, DreamerV3Modules, action_spec_info, make_actor, make_dreamer, make_dreamerv3
from .policy import DreamerV3Policy, PrefillActor, make_state_primer
from .predictors import (
    ActorNormalParams,
    BinaryPredictor,
    BoundedNormalParams,
    ConstantContinue,
    NormalPredictor,
    TwoHotPredictor,
)
from .rssm import RSSMImagineStep, RSSMObserve, RSSMObserveStep, RSSMPrior

__all__ = [
    "GENERATIONS", "SIZES", "ActorNormalParams", "ConstantContinue", "NormalPredictor", "generation_config",
    "make_actor", "make_dreamer", "BinaryPredictor", "BoundedNormalParams", "DreamerKeys", "DreamerV3Modules", "DreamerV3Policy", "ModelConfig", "PrefillActor",
    "RSSMImagineStep", "RSSMObserve", "RSSMObserveStep", "RSSMPrior", "TwoHotPredictor", "action_spec_info",
    "make_dreamerv3", "make_state_primer", "model_config",
]
