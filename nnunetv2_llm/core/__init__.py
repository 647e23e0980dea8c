"""The LLM block and everything it needs, and nothing of nnU-Net's training or of the commands.

spec (what layer, how wired) -> models and variants (the named ones) -> weights (one layer read from its
source) -> the layer's parts (decoder_layers: built with transformers; layer_attention, positions, lora, init_modes)
-> block (projections around the layer) -> network (the block at one encoder stage of a U-Net); cost counts
parameters and FLOPs. Nothing here imports the other subpackages.
"""
