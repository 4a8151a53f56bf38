"""Constrained, KV-cached greedy and beam search (DESIGN §7), independent of the model class."""

from .beam import Hypothesis, IncrementalConstraint, OutputConstraint, StepDecoder, beam_search

__all__ = ["Hypothesis", "IncrementalConstraint", "OutputConstraint", "StepDecoder", "beam_search"]
