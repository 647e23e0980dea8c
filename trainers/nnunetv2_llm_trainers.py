"""Re-exports the nnunetv2-llm trainers for nnU-Net's external trainer lookup."""
from nnunetv2_llm.nnunet.trainers import *  # noqa: F401,F403
from nnunetv2_llm.nnunet.trainers import __all__  # noqa: F401
