"""Merged LoRA adapters: a server that cannot load a PEFT adapter (the transformers backends,
vLLM on CPU) serves it merged into its base, built once and cached under a content hash of
both folders."""

from __future__ import annotations

from pathlib import Path

from evolver_core.models.folders import build_once, enable_sampling, folder_digest, model_cache
from evolver_core.models.refs import ModelRef


def merge_adapter(ref: ModelRef, cache_dir: Path | str | None = None) -> Path:
    """A plain model folder with `ref.adapter` merged into `ref.base` (cached by content
    hash of both folders: a second call only re-hashes). Without an adapter: the base."""
    if ref.adapter is None:
        return Path(ref.base)
    if not ref.is_local:
        raise ValueError(f"cannot merge an adapter into the non-local model {ref.base!r}")
    key = folder_digest(ref.base, ref.adapter)[:16]
    return build_once(model_cache(cache_dir) / "merged" / key, lambda out: _merge(ref, out))


def _merge(ref: ModelRef, out: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evolver_core.data.storage import DamagedFolder

    assert ref.adapter is not None
    base = AutoModelForCausalLM.from_pretrained(ref.base, dtype="auto")
    try:
        merged = PeftModel.from_pretrained(base, ref.adapter).merge_and_unload()
    except Exception as exc:  # safetensors, JSON and shape errors alike: the file is what is wrong
        raise DamagedFolder(f"the adapter {ref.adapter} cannot be loaded ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    enable_sampling(merged)
    # Training may have changed the tokenizer (e.g. its chat template): prefer the adapter's.
    has_tokenizer = (Path(ref.adapter) / "tokenizer_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(ref.adapter if has_tokenizer else ref.base)
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
