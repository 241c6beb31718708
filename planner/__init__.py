"""planner: hardware-aware LLM deployment planner."""

__version__ = "0.1.0"
