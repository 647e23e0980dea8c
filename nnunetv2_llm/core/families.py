"""The model families the block is proven for, with what is tested for each: one table that ``doctor``,
``plan --help`` and the docs print. A checkpoint of another decoder family may still build (the block uses the
model's own layer class), but nothing checks that it computes what the model does."""
from __future__ import annotations

from dataclasses import dataclass

# What every family below has: its layer inside the block equals the layer inside the transformers model (same
# hidden states, the model's own positions, float32), and --final-norm uses the family's own norm class.
_PROVEN = "layer = the model's own layer; final norm"


@dataclass(frozen=True)
class Family:
    """One family of decoder LLMs: the ``model_type`` values of its configs, its GGUF architecture (if read), what
    its attention linears are called (LoRA's targets) and what the tests prove for it."""

    name: str
    model_types: tuple[str, ...]
    gguf: str | None
    attention_linears: tuple[str, ...]
    tested: str


_QKVO = ("q_proj", "k_proj", "v_proj", "o_proj")
FAMILIES = (
    Family("Llama 3.x (SmolLM2)", ("llama",), "llama", _QKVO, f"{_PROVEN}; llama3 RoPE scaling; GGUF vs transformers"),
    Family("Qwen2 / Qwen2.5 / DeepSeek-R1-Distill-Qwen", ("qwen2",), "qwen2", _QKVO,
           f"{_PROVEN}; q/k/v biases; GGUF vs transformers"),
    Family("Qwen3", ("qwen3",), "qwen3", _QKVO, f"{_PROVEN}; q/k norms; GGUF vs transformers"),
    Family("Mistral", ("mistral",), "llama", _QKVO, f"{_PROVEN}; sliding window refused beyond it; GGUF 'llama'"),
    Family("Gemma 1", ("gemma",), "gemma", _QKVO,
           f"{_PROVEN}; norms 1 + w; GGUF (files the tests write; transformers reads no 'gemma' GGUF)"),
    Family("Gemma 2", ("gemma2",), "gemma2", _QKVO,
           f"{_PROVEN}; attention soft-capping (eager attention); four norms; GGUF vs transformers"),
    Family("Gemma 3 (text: 270M, 1B)", ("gemma3_text",), "gemma3", _QKVO,
           f"{_PROVEN}; a sliding-window and a full-attention layer, each with its RoPE base; q/k norms; "
           f"local layers refused beyond the window; GGUF vs transformers"),
    Family("Phi-3", ("phi3",), None, ("qkv_proj", "o_proj"),
           f"{_PROVEN}; fused qkv_proj and gate_up_proj (LoRA: qkv_proj,o_proj); no GGUF"),
    Family("OLMo-2", ("olmo2",), None, _QKVO, f"{_PROVEN}; norms after attention and MLP, q/k norms; no GGUF"),
    Family("Granite 3.x", ("granite",), None, _QKVO,
           f"{_PROVEN}; residual and attention multipliers; no GGUF"),
)


def family_of(model_type: str) -> Family | None:
    return next((f for f in FAMILIES if model_type in f.model_types), None)


def families_text(indent: str = "  ") -> str:
    """The table as plain lines (``plan --help``'s epilog, ``doctor``)."""
    return "\n".join(f"{indent}{f.name} ({', '.join(f.model_types)}): {f.tested}" for f in FAMILIES)
