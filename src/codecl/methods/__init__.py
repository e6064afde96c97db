"""The method registry. Importing this package registers every method file listed here."""

from codecl.methods.base import METHODS, ContinualMethod, MethodConfig, register_method
from codecl.methods import ffn, frozen, full_ft, heads, hybrid, layers, lora  # noqa: F401  (each registers itself)
from codecl.methods import ewc, replay  # noqa: F401  (each registers itself)
from codecl.methods import multitask, olora  # noqa: F401

__all__ = ["METHODS", "ContinualMethod", "MethodConfig", "register_method"]
