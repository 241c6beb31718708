"""planner: hardware-aware LLM deployment planner."""

__version__ = "0.2.0"
