"""The synthetic tasks: in "context" the label follows a distant cue, never the objects' own appearance."""
import json

import numpy as np
import pytest
from PIL import Image

from nnunetv2_llm.commands import cli
from nnunetv2_llm.nnunet.synthetic import Shift, context_case, make_dataset


@pytest.mark.parametrize("shape", [(64, 64), (32, 32, 32)])
def test_context_labels_follow_the_cue_not_the_texture(shape):
    for seed in range(6):
        image_a, label_a, cue_a = context_case(np.random.default_rng(seed), shape, cue_class=1)
        image_b, label_b, cue_b = context_case(np.random.default_rng(seed), shape, cue_class=2)
        objects = label_a > 0
        assert objects.any() and np.array_equal(objects, label_b > 0), "the same objects for either class"
        assert set(np.unique(label_a)) == {0, 1} and set(np.unique(label_b)) == {0, 2}, "one class per image"
        outside = ~(cue_a | cue_b)
        assert np.array_equal(image_a[outside], image_b[outside]), "identical appearance away from the cue"
        assert not np.array_equal(cue_a, cue_b) and (cue_b <= cue_a).all(), "solid cue vs ring of the same size"
        assert not (cue_a & objects).any(), "the cue is background"
        distance = np.sqrt(((np.argwhere(objects)[:, None] - np.argwhere(cue_a)[None]) ** 2).sum(-1)).min()
        assert distance >= 0.3 * min(shape) - 1e-6, "the cue lies far from every object"


def test_context_classes_are_drawn_at_random_and_balanced():
    rng = np.random.default_rng(0)
    classes = [int(context_case(rng, (64, 64))[1].max()) for _ in range(40)]
    assert set(classes) == {1, 2} and 10 <= classes.count(1) <= 30


def test_context_dataset_and_shift(tmp_path):
    folder = make_dataset(tmp_path, 901, dim=2, num_train=5, num_test=2, task="context", seed=3)
    dataset = json.loads((folder / "dataset.json").read_text())
    assert folder.name == "Dataset901_Synth2DContext"
    assert dataset["labels"] == {"background": 0, "class_a": 1, "class_b": 2}
    shifted = make_dataset(tmp_path, 902, dim=2, num_train=5, num_test=2, task="context", seed=3,
                           shift=Shift(contrast=0.5, noise=0.2))
    for case in sorted((folder / "labelsTr").iterdir()):
        assert np.array_equal(np.asarray(Image.open(case)), np.asarray(Image.open(shifted / "labelsTr" / case.name))), \
            "a shift changes the appearance, not the labels"


def test_synth_refuses_an_unknown_task_listing_the_tasks(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["synth", "-d", "903", "--task", "shapes", "--raw", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --task: invalid choice: 'shapes'" in err and "blobs" in err and "context" in err
    assert not list(tmp_path.iterdir())
