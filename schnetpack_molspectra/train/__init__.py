"""Training parts that are not model parts, laid out as ``schnetpack.train``: loss functions,
metrics, LR schedules and callbacks."""
from .losses import *
from .metrics import *
from .lr_scheduler import *
from .summary import *
