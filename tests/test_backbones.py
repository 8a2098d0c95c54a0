"""Backbones by registry (issue 23): every entry of ``VISION_BACKBONES`` whose weights are on this
machine loads offline and is the network it claims (an ImageNet classifier names the coffee photo
an espresso), and one feature call serves every family -- a CNN, a ViT and staged models (ConvNeXt,
Swin, whose maps are NHWC) -- down to a store that MF² pretrains on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mf2.cli.main import main
from mf2.features.backbones import VISION_BACKBONES, load_vision

from .conftest import text_encoder_args

ESPRESSO = 967  # ImageNet class index


@pytest.mark.parametrize("name", sorted(VISION_BACKBONES))
def test_every_registered_backbone_with_offline_weights_is_what_it_claims(name):
    entry = VISION_BACKBONES[name]
    if not (entry.offline and entry.offline()):
        pytest.skip(f"{name}: its weights are not on this machine")
    from PIL import Image
    from skimage.data import coffee

    vision = load_vision(name)
    size = vision.input_size
    x = torch.from_numpy(np.array(Image.fromarray(coffee()).resize((size, size)))).permute(2, 0, 1)[None].float() / 255
    tokens, fmap, layout = vision(x, au_map=vision.resolve_au_map("auto"))
    assert tokens.shape[0] == 1 and tokens.shape[-1] == vision.dim and torch.isfinite(tokens).all()
    assert layout in ("BCHW", "BHWC") and fmap.dim() == 4
    if entry.num_classes == 1000:  # the classifier is kept: the weights are ImageNet's
        mean = torch.tensor(vision.mean).view(1, 3, 1, 1)
        std = torch.tensor(vision.std).view(1, 3, 1, 1)
        with torch.no_grad():
            assert vision.model((x - mean) / std).argmax().item() == ESPRESSO


@pytest.mark.parametrize("name,maps", [("convnext_atto", ("auto", "stride8", "last")),
                                       ("swin_tiny_patch4_window7_224", ("auto", "last")),
                                       ("vit_tiny_patch16_224", ("auto",))])
def test_one_feature_call_serves_every_family(name, maps, tmp_path):
    from safetensors.torch import save_file

    from mf2._compat import import_timm

    model = import_timm().create_model(name, pretrained=False, num_classes=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    vision = load_vision(name, str(tmp_path / "w.safetensors"))
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        final = model.eval().forward_features((x - torch.tensor(vision.mean).view(1, 3, 1, 1))
                                              / torch.tensor(vision.std).view(1, 3, 1, 1))
    for au_map in maps:
        resolved = vision.resolve_au_map(au_map)
        tokens, fmap, layout = vision(x, au_map=resolved)
        channels = fmap.shape[1] if layout == "BCHW" else fmap.shape[-1]
        assert channels == vision.au_channels(resolved)
        if final.dim() == 3:  # a ViT: its tokens, and its patch grid for the AU regions
            assert torch.equal(tokens, final) and layout == "BHWC" and resolved == "last"
        else:  # a map (NHWC for Swin): the pooled map, then every position
            nchw = final.permute(0, 3, 1, 2) if final.shape[-1] == vision.dim else final
            torch.testing.assert_close(tokens[:, 0], nchw.mean((2, 3)))
            assert tokens.shape[1] == 1 + nchw.shape[2] * nchw.shape[3] and layout == "BCHW"
    assert vision.resolve_au_map("auto") == ("last" if name.startswith("vit") else "stride16")


def test_a_staged_backbone_extracts_a_store_and_pretrains(pretrained, tmp_path):
    """A random-initialised tiny ConvNeXt (stages at strides 4-32) through extract-features and one
    pretraining epoch: a backbone is a name (and its weights), nothing more."""
    from safetensors.torch import save_file

    from mf2._compat import import_timm

    model = import_timm().create_model("convnext_atto", pretrained=False, num_classes=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    runner = CliRunner()
    result = runner.invoke(main, ["extract-features", "--manifest", str(pretrained / "d/manifest.captioned.jsonl"),
                                  "--out", str(tmp_path / "c.zarr"), "--vision", "convnext_atto", "--vision-weights",
                                  str(tmp_path / "w.safetensors"), "--image-size", "64", *text_encoder_args()])
    assert result.exit_code == 0, result.output
    import zarr

    store = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")
    assert store.attrs["signature"]["vision"]["name"] == "convnext_atto"
    assert store.attrs["signature"]["pooling"]["au_map"] == "stride16" and store["vision/au_tokens"].shape[-1] == 160
    result = runner.invoke(main, ["pretrain", "--cache", str(tmp_path / "c.zarr"), "--out", str(tmp_path / "run"),
                                  "--epochs", "1", "--batch-size", "16"])
    assert result.exit_code == 0, result.output
