"""Evaluation: data + segmenters -> predictions -> metrics -> an :class:`EvaluationResult`.

``prediction`` is the one path from segmenters and images to probabilities and panoptic outputs,
``runner`` evaluates models on a labelled dataset, ``scoring`` scores predictions already on
disk, ``results`` holds what both produce, ``distributed`` sums metric states under ``torchrun``.
"""
