"""Training a PaDeLLM model: ``convert`` corpora into training files, ``train`` on them, ``compress`` a
full fine-tune into a LoRA adapter.

* :mod:`.convert` with :mod:`.readers` (one per input format) and :mod:`.spans`: corpora to DocBins and
  PaDeLLM examples;
* :mod:`.settings`: the training config; :mod:`.data`: examples, tokenisation, batches;
  :mod:`.trainer`: the training loop; :mod:`.evaluation`, :mod:`.checkpoint`, :mod:`.model_folder`:
  dev scoring, resuming, and what training writes;
* :mod:`.compress`: the low-rank ``compress`` command.
"""

from .compress import compress
from .convert import ConvertReport, convert
from .settings import TrainConfigError, TrainSettings, load_settings
from .trainer import train

# ``convert`` and ``compress`` here are the functions, which hide the modules of the same name as attributes
# of this package; ``from spacy_padellm.training.convert import ...`` and ``importlib.import_module`` still
# reach the modules.
__all__ = ["TrainSettings", "load_settings", "train", "TrainConfigError", "convert", "ConvertReport", "compress"]
