"""vlbeit-snli-ve: SNLI-VE visual entailment (3-way) as a vlbeit_keras task and data source."""

__version__ = "0.1.0"

from vlbeit_snli_ve.reader import LABELS
from vlbeit_snli_ve.reader import read_snli_ve
from vlbeit_snli_ve.task import TASK
from vlbeit_snli_ve.task import SmoothedSparseCrossEntropy
from vlbeit_snli_ve.task import SNLIVEClassifier

__all__ = ["LABELS", "TASK", "SNLIVEClassifier", "SmoothedSparseCrossEntropy", "read_snli_ve"]
