"""Choose or learn a merge from unlabelled target images (``segmerge tune``).

``search`` scores candidate recipes by label-free criteria and picks one; ``learn``
optimises per-layer merge weights by gradient. Both return a recipe that ``segmerge merge
-r`` reproduces and the merged state dict; ``write_tuned`` writes it as a checkpoint,
``write_result`` that and the run's report (what ``segmerge tune`` writes).
"""

from segmerge.tuning.adabn import reestimate_batch_norm
from segmerge.tuning.candidates import Candidate, candidate_grid
from segmerge.tuning.criteria import CRITERIA, SELECTION_RULES, agreement, mean_entropy, photometric_augment
from segmerge.tuning.images import load_images
from segmerge.tuning.learn import LOSSES, FunctionalMerge, LearnResult, learn
from segmerge.tuning.models import TuningModels
from segmerge.tuning.output import write_report, write_result, write_tuned
from segmerge.tuning.search import CandidateScore, SearchResult, search

__all__ = [
    "CRITERIA",
    "LOSSES",
    "SELECTION_RULES",
    "Candidate",
    "CandidateScore",
    "FunctionalMerge",
    "LearnResult",
    "SearchResult",
    "TuningModels",
    "agreement",
    "candidate_grid",
    "learn",
    "load_images",
    "mean_entropy",
    "photometric_augment",
    "reestimate_batch_norm",
    "search",
    "write_report",
    "write_result",
    "write_tuned",
]
