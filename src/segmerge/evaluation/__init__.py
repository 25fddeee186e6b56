"""Evaluation: data + segmenters -> predictions -> metrics -> an :class:`EvaluationResult`.

``runner`` evaluates models on a labelled dataset, ``scoring`` scores predictions already on
disk, ``results`` holds what both produce, ``distributed`` sums metric states under ``torchrun``.
"""
