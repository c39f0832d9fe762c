"""Loading models and tokenizers: a checkpoint directory, a hub name, or a config JSON (random init)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers.utils import logging as transformers_logging

from r1cli import hub
from r1cli.data.records import read_json_file
from r1cli.errors import UserError

transformers_logging.disable_progress_bar()  # r1's own progress bars are the ones on stderr

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` is the GPU where there is one, else the CPU; `cuda` must exist when asked for."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not one of: auto, cpu, cuda, cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name!r} is not one of: auto, cpu, cuda, cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available here")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: there are {torch.cuda.device_count()} CUDA devices")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The compute dtype: `auto` is bf16 on a GPU and fp32 on a CPU."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise UserError(f"--dtype {name!r} is not one of: auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


def is_config_file(model: str) -> bool:
    return model.endswith(".json") and Path(model).is_file()


def load_tokenizer(source: str):
    """The tokenizer of a checkpoint directory or a hub model (every load of a model starts here,
    so a hub name that cannot be had fails here, in one line, before anything else is read)."""
    from transformers import AutoTokenizer

    remote = not Path(source).exists()
    if remote:
        hub.access()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as error:  # missing or corrupt tokenizer files
        raise UserError((remote and hub.unavailable(source, "model")) or f"{source}: cannot load a tokenizer ({_first_line(error)})") from None
    if remote:
        hub.loaded(source, "model")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model: str, *, dtype: torch.dtype = torch.float32, seed: int = 0):
    """Return (model, tokenizer) for MODEL: a checkpoint directory or hub name, or a config JSON.

    A config JSON is a transformers config (with `model_type`) whose tokenizer is named by its
    `tokenizer` field (a path relative to the JSON) or lies beside it; its weights are drawn from
    the seeded generator, which is how a base model is pre-trained from scratch.
    """
    if is_config_file(model):
        return _init_from_config(Path(model), dtype=dtype, seed=seed)
    path = Path(model)
    if path.exists() and not (path / "config.json").exists():
        raise UserError(f"{model}: not a checkpoint directory (no config.json) and not a config .json file")
    if not path.exists() and not hub.is_hub_name(model):
        raise UserError(f"{model}: no such checkpoint directory or config file")
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(model)
    try:
        network = AutoModelForCausalLM.from_pretrained(model, dtype=dtype)
    except Exception as error:  # a missing, corrupt or foreign checkpoint surfaces as many error types
        raise UserError(f"{model}: cannot load the model ({type(error).__name__}: {_first_line(error)})") from None
    _align_special_tokens(network, tokenizer)
    return network, tokenizer


def check_loadable(model: str) -> None:
    """Fail early, without loading any weights, if MODEL cannot be loaded: its config and
    tokenizer are read and each safetensors file's header is opened."""
    if is_config_file(model):
        _init_config(Path(model), build_on_meta=True)
        return
    path = Path(model)
    if path.exists() and not (path / "config.json").exists():
        raise UserError(f"{model}: not a checkpoint directory (no config.json) and not a config .json file")
    if not path.exists() and not hub.is_hub_name(model):
        raise UserError(f"{model}: no such checkpoint directory or config file")
    from transformers import AutoConfig

    load_tokenizer(model)
    try:
        AutoConfig.from_pretrained(model)
    except Exception as error:
        raise UserError(f"{model}: not a usable model config ({type(error).__name__}: {_first_line(error)})") from None
    if path.is_dir():
        from safetensors import safe_open

        for weights in sorted(path.glob("*.safetensors")):
            try:
                with safe_open(str(weights), framework="pt") as handle:
                    handle.keys()
            except Exception as error:  # a truncated or corrupt file
                raise UserError(f"{model}: cannot load the model ({weights.name} cannot be read: {_first_line(error)})") from None


def _init_from_config(path: Path, *, dtype: torch.dtype, seed: int):
    from transformers import AutoModelForCausalLM, GenerationConfig

    config, tokenizer = _init_config(path)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = AutoModelForCausalLM.from_config(config, dtype=dtype)
    except Exception as error:  # values the architecture cannot take
        raise UserError(f"{path}: not a usable model config ({type(error).__name__}: {_first_line(error)})") from None
    network.generation_config = GenerationConfig.from_model_config(config)
    _align_special_tokens(network, tokenizer)
    return network, tokenizer


def _init_config(path: Path, *, build_on_meta: bool = False):
    """The transformers config and the tokenizer a model config JSON names (see load_model)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = read_json_file(path)
    if not isinstance(fields, dict) or "model_type" not in fields:
        raise UserError(f"{path}: a model config needs a 'model_type' field (e.g. \"qwen2\", \"llama\")")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = fields["model_type"]
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        # transformers' own message lists every model type it knows: hundreds, on one line
        raise UserError(f"{path}: model_type {model_type!r} is not a model type transformers knows (e.g. \"qwen2\", \"llama\")")
    named = fields.pop("tokenizer", ".")
    tokenizer_source = path.parent / str(named)
    if not isinstance(named, str) or not tokenizer_source.is_dir():
        raise UserError(f"{path}: field 'tokenizer' must name a tokenizer directory (relative to the config); {tokenizer_source} is none")
    tokenizer = load_tokenizer(str(tokenizer_source))
    fields.setdefault("vocab_size", len(tokenizer))
    if not isinstance(fields["vocab_size"], int) or fields["vocab_size"] < len(tokenizer):
        raise UserError(f"{path}: vocab_size {fields['vocab_size']} is smaller than the tokenizer's {len(tokenizer)}")
    try:
        config = AutoConfig.for_model(fields.pop("model_type"), **fields)
        config.pad_token_id = tokenizer.pad_token_id
        config.eos_token_id = tokenizer.eos_token_id
        config.bos_token_id = tokenizer.bos_token_id
        if build_on_meta:  # shapes checked without allocating a weight
            with torch.device("meta"):
                AutoModelForCausalLM.from_config(config)
    except Exception as error:  # values the architecture cannot take
        raise UserError(f"{path}: not a usable model config ({type(error).__name__}: {_first_line(error)})") from None
    return config, tokenizer


def _align_special_tokens(network, tokenizer) -> None:
    """Make generation stop at the tokenizer's EOS and pad with its pad token."""
    generation = network.generation_config
    if generation.eos_token_id is None:
        generation.eos_token_id = tokenizer.eos_token_id
    if generation.pad_token_id is None:
        generation.pad_token_id = tokenizer.pad_token_id


def prepare_for_training(network, model: str, lora, gradient_checkpointing: bool):
    """Gradient checkpointing and, with a LoRA rank (LORA: options.LoraOptions), peft adapters
    kept in fp32 (the base stays as loaded)."""
    if gradient_checkpointing:
        network.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        network.config.use_cache = False
    if not lora.lora_r:
        return network
    if not 0 <= lora.lora_dropout < 1:
        raise UserError(f"--lora-dropout {lora.lora_dropout}: must be in [0, 1)")
    from peft import LoraConfig, get_peft_model

    lora_targets = lora.lora_targets
    targets = lora_targets if lora_targets == "all-linear" else [t.strip() for t in lora_targets.split(",")]
    config = LoraConfig(r=lora.lora_r, lora_alpha=lora.lora_alpha or 2 * lora.lora_r, lora_dropout=lora.lora_dropout,
                        target_modules=targets, task_type="CAUSAL_LM")
    try:
        network = get_peft_model(network, config)
    except ValueError as error:
        raise UserError(f"--lora-targets {lora_targets}: {error}") from None
    for parameter in network.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    network.peft_config["default"].base_model_name_or_path = str(Path(model).resolve()) if Path(model).exists() else model
    if gradient_checkpointing:
        network.enable_input_require_grads()
    return network


def hf_base(network):
    """The transformers model inside a peft wrapper (or the model itself)."""
    return network.get_base_model() if hasattr(network, "get_base_model") else network


def count_parameters(network) -> int:
    return sum(p.numel() for p in network.parameters())


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
