"""The LLM block and everything it needs, and nothing of nnU-Net's training or of the commands.

spec (what layer, how wired: ``LLMSpec``; spec_options: how an option is declared; layer_indices: layers from
text; spec_differences: whether two specs compute the same block) -> models, families and variants (the named ones)
-> resolve (every way to get a spec, the one reader of plans and checkpoints; plans_entry: where the spec is written
in plans) -> weights (one layer read from its source) -> the layer's parts (decoder_layers: built with transformers;
layer_attention, positions, lora, init_modes) -> block (projections around the layer) -> network (the block at one
encoder stage of a U-Net); cost counts parameters and FLOPs. Beneath them all: errors, files, locks and terminal.
Nothing here imports the other subpackages.
"""
