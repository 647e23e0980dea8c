"""Compiled against eager gradients of the stock and the gated U-Net, with LeakyReLU and with GELU (issue 30 #11).

How far inductor's input gradient (and the gate's, at 0.5) lies from eager's, next to how far eager's own input
gradient moves when the image moves by 1e-5 relative. It answers: is the compiled-vs-eager difference the
gate's, or the nonlinearity's? (CPU inductor; nnU-Net compiles on CUDA.)

    python benchmarks/compile_gradients.py                 # widths 32/64/128, 64x64, the tiny random layer
    python benchmarks/compile_gradients.py --full          # 5 stages up to 512, smollm2-135m's layer 14
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

NUDGE = 1e-5
MODES = {"quick": dict(features=[32, 64, 128], patch=64), "full": dict(features=[32, 64, 128, 256, 512], patch=64)}


def build(features: list[int], nonlin, gated: bool, model: str | None):
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from nnunetv2_llm.core.network import LLMUNet
    from nnunetv2_llm.core.resolve import source_spec
    from nnunetv2_llm.core.spec import LLMSpec
    from nnunetv2_llm.core.weights.pins import load_pinned

    torch.manual_seed(0)
    n = len(features)
    kwargs = {"negative_slope": 1e-2, "inplace": True} if nonlin is torch.nn.LeakyReLU else None
    unet = PlainConvUNet(1, n, features, torch.nn.Conv2d, 3, [1] + [2] * (n - 1), 2, 3, [2] * (n - 1),
                         conv_bias=True, norm_op=torch.nn.InstanceNorm2d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                         nonlin=nonlin, nonlin_kwargs=kwargs, deep_supervision=True)
    if not gated:
        return unet.train()
    if model:
        spec, layers, _ = load_pinned(source_spec(model, gate=True), echo=lambda *a: None)
        net = LLMUNet(unet, spec)
        net.llm.load_pretrained([w.tensors for w in layers])
    else:
        tiny = dict(model_type="llama", hidden_size=32, intermediate_size=64, num_attention_heads=2,
                    num_key_value_heads=1, num_hidden_layers=2, vocab_size=64)
        net = LLMUNet(unet, LLMSpec("tiny", 1, gate=True, config=tiny))
        with torch.no_grad():
            for p in net.llm.layer.parameters():
                p.normal_(0, 0.05)
    with torch.no_grad():
        net.llm.gate.fill_(0.5)
    return net.train()


def gradients(run, net, image):
    """(the net input's gradient, the gate's gradient or None) of the mean-square of every deep-supervision output."""
    net.zero_grad()
    image = image.clone().requires_grad_(True)
    sum(o.square().mean() for o in run(image)).backward()
    gate = getattr(getattr(net, "llm", None), "gate", None)
    return image.grad, None if gate is None else gate.grad.clone()


def relative(a, b) -> float | None:
    return None if a is None else float((a - b).norm() / b.norm())


def measure(features, patch, nonlin, gated, model) -> dict:
    import torch
    torch._dynamo.reset()
    net = build(features, nonlin, gated, model)
    x = torch.randn(2, 1, patch, patch, generator=torch.Generator().manual_seed(1))
    nudged = x * (1 + NUDGE * torch.randn(x.shape, generator=torch.Generator().manual_seed(2)))
    eager, eager_gate = gradients(net, net, x)
    moved, _ = gradients(net, net, nudged)
    compiled, compiled_gate = gradients(torch.compile(net), net, x)
    return {"net": "gated (0.5)" if gated else "stock", "nonlinearity": nonlin.__name__,
            "input_grad_compiled_vs_eager": relative(compiled, eager),
            "gate_grad_compiled_vs_eager": relative(compiled_gate, eager_gate),
            "input_grad_eager_nudged_vs_eager": relative(moved, eager)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick", help="widths 32/64/128 (default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="5 stages up to 512 wide with a real layer (--model)")
    parser.add_argument("--model", default="smollm2-135m", help="the named model whose layer --full uses")
    parser.add_argument("--out", type=Path, help="JSON output (default benchmarks/results/compile_gradients-<mode>.json)")
    args = parser.parse_args(argv)
    args.mode = args.mode or "quick"
    import torch
    model = args.model if args.mode == "full" else None
    rows = [measure(**MODES[args.mode], nonlin=nonlin, gated=gated, model=model)
            for nonlin in (torch.nn.LeakyReLU, torch.nn.GELU) for gated in (False, True)]
    fmt = lambda v: "" if v is None else f"{v:.1e}"
    print(common.table(["net", "nonlinearity", "input grad: compiled vs eager", "gate grad: compiled vs eager",
                        f"input grad: eager, image x(1+{NUDGE:g}) vs x"],
                       [[r["net"], r["nonlinearity"], fmt(r["input_grad_compiled_vs_eager"]),
                         fmt(r["gate_grad_compiled_vs_eager"]), fmt(r["input_grad_eager_nudged_vs_eager"])]
                        for r in rows]))
    print("relative L2 differences, lower is closer; features", MODES[args.mode]["features"],
          f"{MODES[args.mode]['patch']}x{MODES[args.mode]['patch']}, layer: {model or 'tiny random Llama'}")
    common.save({"machine": common.machine(), "mode": args.mode, "model": model or "tiny random Llama",
                 **MODES[args.mode], "nudge": NUDGE, "rows": rows}, "compile_gradients", args.mode, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
