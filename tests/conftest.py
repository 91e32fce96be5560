import os
import sys

import torch

# Test models are tiny: one thread avoids OpenMP oversubscription on a shared 2-core machine.
torch.set_num_threads(1)
os.environ.setdefault("RL_WARNINGS", "False")
sys.path.insert(0, os.path.dirname(__file__))
