"""The LLM net under torch DDP (gloo, two CPU processes), as nnU-Net's ``-num_gpus`` runs it.

DDP with find_unused_parameters=False fails on the next step if a parameter that requires grad got
no gradient, so three steps prove every trainable parameter is used; gradients must agree across
ranks and the frozen layer must get none.
"""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tiny_llm import TINY_LLAMA



VARIANTS = {"frozen": {}, "trainable": {"trainable": True}, "lora": {"lora_rank": 2, "lora_alpha": 4},
            "gate": {"gate": True}}


def _net(options: dict):
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    from nnunetv2_llm.core.network import LLMUNet
    from nnunetv2_llm.core.spec import LLMSpec
    torch.manual_seed(0)
    unet = PlainConvUNet(1, 3, [8, 16, 32], torch.nn.Conv2d, 3, [1, 2, 2], 1, 2, 1, conv_bias=True,
                         norm_op=torch.nn.InstanceNorm2d, norm_op_kwargs={"affine": True},
                         nonlin=torch.nn.LeakyReLU, deep_supervision=True)
    return LLMUNet(unet, LLMSpec("tiny", 1, config=TINY_LLAMA, **options))


def _worker(rank: int, world: int, port: int, variant: str, out: dict):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    net = torch.nn.parallel.DistributedDataParallel(_net(VARIANTS[variant]), find_unused_parameters=False)
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(100 + rank)
    for _ in range(3):
        optimizer.zero_grad()
        outputs = net(torch.randn(2, 1, 16, 16, generator=gen))
        sum(o.square().mean() for o in outputs).backward()
        optimizer.step()
    module = net.module
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    out[rank] = {"grads": grads, "layer_grads": [n for n, p in module.llm.layer.named_parameters()
                                                 if p.grad is not None and ".lora_" not in n],
                 "lora_grads": [n for n, p in module.llm.layer.named_parameters() if p.grad is not None and ".lora_" in n],
                 "requires_grad": {n for n, p in module.named_parameters() if p.requires_grad}}
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("variant", VARIANTS)
def test_llm_unet_under_ddp_gloo(variant):
    """With LoRA and with the zero-init gate too: no unused-parameter error, equal gradients on both ranks."""
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(2, _free_port(), variant, out), nprocs=2, join=True)
        results = dict(out)
    assert set(results) == {0, 1}
    r0, r1 = results[0], results[1]
    assert set(r0["grads"]) == r0["requires_grad"], "every trainable parameter must receive a gradient"
    for name, g in r0["grads"].items():
        torch.testing.assert_close(g, r1["grads"][name], msg=f"gradient of {name} differs across ranks")
    assert "llm.proj_in.weight" in r0["grads"] and "llm.proj_out.weight" in r0["grads"]
    if variant == "trainable":
        assert r0["layer_grads"], "a trainable layer gets gradients"
    else:
        assert r0["layer_grads"] == [], "a frozen layer gets no gradients"
    assert bool(r0["lora_grads"]) == (variant == "lora"), "LoRA's adapters, and only they, train inside the layer"
    if variant == "gate":
        assert "llm.gate" in r0["grads"]
