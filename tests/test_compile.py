"""The GPU code path, proven where a CPU can: torch.compile with the default inductor backend over the whole
LLM net (2D and 3D, frozen and trainable, gated) gives the eager outputs and gradients, and the block traces as one
graph in every position mode. nnU-Net compiles the net by default on CUDA; CI has no GPU. At nnU-Net's widths the
LeakyReLU kinks make any compiled gradient differ from eager's by ~1e-3 (stock nets too), so the gate is checked
there with a smooth nonlinearity, and the kinks' effect is shown in eager."""
import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from tiny_llm import TINY_LLAMA

from nnunetv2_llm.core.block import LLMBlock
from nnunetv2_llm.core.network import LLMUNet
from nnunetv2_llm.core.spec import POSITIONS, LLMSpec


def _net(dim: int, trainable: bool) -> LLMUNet:
    conv, norm = (torch.nn.Conv2d, torch.nn.InstanceNorm2d) if dim == 2 else (torch.nn.Conv3d, torch.nn.InstanceNorm3d)
    torch.manual_seed(0)
    unet = PlainConvUNet(1, 3, [4, 8, 16], conv, 3, [1, 2, 2], 1, 2, 1, conv_bias=True, norm_op=norm,
                         norm_op_kwargs={"affine": True}, nonlin=torch.nn.LeakyReLU, deep_supervision=True)
    net = LLMUNet(unet, LLMSpec("tiny", 1, trainable=trainable, config=TINY_LLAMA))
    with torch.no_grad():
        for p in net.llm.layer.parameters():
            p.normal_(0, 0.05)
    return net


def _step(run, net, x):
    """One forward/backward through ``run`` (the net or its compiled wrapper); the net's gradients."""
    net.zero_grad()
    outputs = run(x)
    sum(o.square().mean() for o in outputs).backward()
    return [o.detach() for o in outputs], {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


@pytest.mark.slow
@pytest.mark.parametrize("dim,trainable", [(2, False), (3, True)], ids=["2d-frozen", "3d-trainable"])
def test_inductor_compiled_net_matches_eager(dim, trainable):
    torch._dynamo.reset()
    net = _net(dim, trainable).train()
    x = torch.randn(2, 1, *([16] * dim), generator=torch.Generator().manual_seed(1))
    eager_out, eager_grads = _step(net, net, x)
    compiled_out, compiled_grads = _step(torch.compile(net), net, x)
    for a, b in zip(compiled_out, eager_out):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert compiled_grads.keys() == eager_grads.keys()
    assert any(n.startswith("llm.layer.") for n in eager_grads) == trainable
    for name, grad in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize("positions", POSITIONS)
@pytest.mark.parametrize("trainable", [False, True], ids=["frozen", "trainable"])
def test_block_traces_as_one_graph_in_every_position_mode(positions, trainable):
    """fullgraph=True fails on any graph break inside the block (2D and 3D maps)."""
    torch._dynamo.reset()
    block = LLMBlock(16, LLMSpec("tiny", 1, positions=positions, trainable=trainable, config=TINY_LLAMA)).eval()
    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    for spatial in ((4, 4), (2, 3, 4)):
        x = torch.randn(2, 16, *spatial)
        torch.testing.assert_close(compiled(x), block(x))


def _nnunet_sized_net(nonlin: type[torch.nn.Module], gate: bool) -> torch.nn.Module:
    """A 2D PlainConvUNet of nnU-Net's widths (32, 64, 128; instance norm, deep supervision) with nnU-Net's
    LeakyReLU or a smooth stand-in, and (``gate``) the gated block with the gate at 0.5, so the block contributes."""
    torch.manual_seed(0)
    nonlin_kwargs = {"negative_slope": 1e-2, "inplace": True} if nonlin is torch.nn.LeakyReLU else None
    unet = PlainConvUNet(1, 3, [32, 64, 128], torch.nn.Conv2d, 3, [1, 2, 2], 2, 2, 2, conv_bias=True,
                         norm_op=torch.nn.InstanceNorm2d, norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nonlin,
                         nonlin_kwargs=nonlin_kwargs, deep_supervision=True)
    if not gate:
        return unet.train()
    net = LLMUNet(unet, LLMSpec("tiny", 1, gate=True, config=TINY_LLAMA)).train()
    with torch.no_grad():
        for p in net.llm.layer.parameters():
            p.normal_(0, 0.05)
        net.llm.gate.fill_(0.5)
    return net


def _input_grad(run, net, x):
    """:func:`_step` on a copy of ``x`` that takes a gradient: (outputs, the net's gradients, the input's gradient)."""
    image = x.clone().requires_grad_(True)
    return (*_step(run, net, image), image.grad)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.slow
def test_inductor_compiled_gate_matches_eager():
    """Issue 30 #11: at nnU-Net's widths, the gated net (gate 0.5) compiled with inductor gives the eager outputs,
    the net input's gradient and the gate's own gradient. The ReLU-family kink is replaced by GELU here, because
    with LeakyReLU no compiler can match eager gradients (next test); measured: 4.4e-6 and 2.6e-6 relative."""
    torch._dynamo.reset()
    net = _nnunet_sized_net(torch.nn.GELU, gate=True)
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    eager_out, eager_grads, eager_x = _input_grad(net, net, x)
    compiled_out, compiled_grads, compiled_x = _input_grad(torch.compile(net), net, x)
    for a, b in zip(compiled_out, eager_out):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert _relative(compiled_x, eager_x) < 1e-4, "the net input's gradient"
    assert _relative(compiled_grads["llm.gate"], eager_grads["llm.gate"]) < 1e-4, "the gate's gradient"


@pytest.mark.parametrize("gate", [False, True], ids=["stock", "gated"])
def test_leaky_relu_input_gradient_is_not_continuous(gate):
    """Why compiled and eager gradients differ in nnU-Net's nets, ours and stock alike (issue 30 #11): the input
    gradient of a LeakyReLU net jumps where a pre-activation crosses 0, so the ~1e-6 rounding differences of
    inductor's fused kernels flip a few elements and move it by ~1e-3..1e-2 (measured at these widths on CPU:
    3.4e-3 stock, 3.6e-3 gated). Eager alone moves as much when the image moves by 1e-5 relative; a smooth
    nonlinearity does not."""
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    nudged = x * (1 + 1e-5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2)))
    moved = {}
    for nonlin in (torch.nn.LeakyReLU, torch.nn.GELU):
        net = _nnunet_sized_net(nonlin, gate)
        moved[nonlin] = _relative(_input_grad(net, net, nudged)[2], _input_grad(net, net, x)[2])
    assert moved[torch.nn.LeakyReLU] > 1e-3, moved
    assert moved[torch.nn.GELU] < 3e-4, moved
