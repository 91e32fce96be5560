"""TensorDictModule wrappers of the DreamerV3 networks: key wiring only."""
from .config import SIZES, ModelConfig, model_config
from .factory import DreamerKeys, DreamerV3Modules, action_spec_info, make_dreamerv3
from .policy import DreamerV3Policy, make_state_primer
from .predictors import BinaryPredictor, BoundedNormalParams, TwoHotPredictor
from .rssm import RSSMImagineStep, RSSMObserve, RSSMObserveStep, RSSMPrior

__all__ = [
    "SIZES", "BinaryPredictor", "BoundedNormalParams", "DreamerKeys", "DreamerV3Modules", "DreamerV3Policy", "ModelConfig",
    "RSSMImagineStep", "RSSMObserve", "RSSMObserveStep", "RSSMPrior", "TwoHotPredictor", "action_spec_info",
    "make_dreamerv3", "make_state_primer", "model_config",
]
