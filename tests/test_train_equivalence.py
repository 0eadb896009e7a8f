"""Training-mode equivalence with timm/torchvision, one case per family with a reference.

On converted randomised weights (norm scales/biases and BN running statistics randomised by
``torch_ref.randomize_``), one training-mode forward (batch statistics; dropout and
drop-path off) must give the same logits and the same updated running statistics, and the
gradients of a fixed loss ``sum(logits * W)`` with respect to the input and to every
parameter must match torch's, mapped through the converter (``tests/train_equiv.py``).

Both sides compute in float64 (the Flax model cloned with ``dtype=float64``), and every
error (max |jax - torch| / max |torch| per tensor; a gradient that is zero in exact
arithmetic is measured against 1e-5 of the largest one) must stay below 1e-8.  In
float32 the same comparison cannot be tight: with batch statistics over two to eighteen
values per channel and max-pooling that picks between nearly equal inputs, torch's own
float32 gradients of GoogLeNet differ from its float64 ones by up to 8%, and Inception's
train-mode logits at batch 2 by 5%.  In float64 the measured errors are 1e-16 to 1e-9.
ViT is the exception, held to 1e-6: ``jax.nn.dot_product_attention`` computes its softmax
in float32 whatever the input type.  Each family is its smallest member,
shrunk through constructor arguments that timm and jaxvision share, at 32-75 px; Inception-v4
and Inception-ResNet-v2, which take no such arguments, keep one or two of each repeated block
on both sides.
"""
import pytest

pytestmark = pytest.mark.torch

RTOL = 1e-8
RTOL_VIT = 1e-6  # its attention softmax in float32 (measured: input gradient 7e-8)


def _timm():
    pytest.importorskip("torch")
    return pytest.importorskip("timm")


def _resnet_basic():
    from timm.models.resnet import BasicBlock, ResNet

    from jaxvision.models import resnet
    kw = dict(channels=(8, 16, 24, 32), num_classes=10)  # timm's plain stem is 64 wide
    return (ResNet(BasicBlock, [1, 1, 1, 1], **kw),
            resnet.ResNet(stage_sizes=(1, 1, 1, 1), block=resnet.BasicBlock, **kw))


def _seresnext_d():
    """Bottleneck, grouped 3x3, SE, deep stem and average-pool shortcuts (ResNet-D)."""
    from timm.models.resnet import Bottleneck, ResNet

    from jaxvision.models import resnet
    kw = dict(channels=(8, 16, 24, 32), stem_width=8, num_classes=10, cardinality=4,
              base_width=16, stem_type="deep", avg_down=True)
    return (ResNet(Bottleneck, [1, 1, 1, 1], block_args=dict(attn_layer="se"), **kw),
            resnet.ResNet(stage_sizes=(1, 1, 1, 1), block=resnet.Bottleneck, attn="se", **kw))


def _resnest():
    """Split attention (radix 2, cardinality 2) with the average-pool downsampling placed
    before the 3x3 (``test_resnest``'s layout)."""
    from timm.models.resnest import ResNestBottleneck
    from timm.models.resnet import ResNet
    return ResNet(block=ResNestBottleneck, layers=[1, 1, 1, 1], channels=(4, 4, 8, 8),
                  stem_type="deep", stem_width=8, avg_down=True, base_width=32, cardinality=2,
                  num_classes=10, block_args=dict(radix=2, avd=True, avd_first=True)), None


def _resnetv2():
    import jaxvision
    kw = dict(channels=(16, 32, 48, 64), num_classes=10)
    return (_timm().create_model("resnetv2_50", layers=[1, 1, 1, 1], stem_chs=16, **kw),
            jaxvision.create_model("resnetv2_50").clone(stage_sizes=(1, 1, 1, 1), stem_chs=16,
                                                        **kw))


def _densenet():
    from timm.models.densenet import DenseNet

    import jaxvision
    kw = dict(growth_rate=8, block_config=(1, 2, 2, 1), num_classes=10)
    return DenseNet(**kw), jaxvision.create_model("densenet121", **kw)


def _vit():
    from timm.models.vision_transformer import VisionTransformer
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                             num_classes=10), None


def _mixer():
    from timm.models.mlp_mixer import MlpMixer
    return MlpMixer(img_size=32, patch_size=8, num_blocks=2, embed_dim=32, num_classes=10), None


def _named(name):
    return lambda: (_timm().create_model(name), None)


def _classic(name, torch_factory, **jax_kwargs):
    """A full-size classic network (no width arguments to shrink it) with its dropout off
    on both sides; torch's is built on the meta device and filled with noise (fast)."""
    def factory():
        import jaxvision
        from tests.test_classic import fast_torch
        return fast_torch(torch_factory), jaxvision.create_model(name, **jax_kwargs)
    return factory


def _inception_v4_shrunk():
    """timm's Inception-v4 with one Inception-A, -B and -C module (of 4, 7, 3): the repeats
    are the same module again, so they add compile time, not arithmetic."""
    import torch
    t = _timm().create_model("inception_v4")
    t.features = torch.nn.Sequential(*[t.features[i] for i in (0, 1, 2, 3, 4, 5, 6, 10, 11,
                                                               18, 19)])
    return t


def _inception_resnet_v2_shrunk():
    """timm's Inception-ResNet-v2 with two Block35, two Block17 and one Block8 before the
    last (of 10, 20, 9): the residual scale and naming of a repeated block are still
    covered."""
    import torch
    t = _timm().create_model("inception_resnet_v2")
    t.repeat = torch.nn.Sequential(*list(t.repeat)[:2])
    t.repeat_1 = torch.nn.Sequential(*list(t.repeat_1)[:2])
    t.repeat_2 = torch.nn.Sequential(*list(t.repeat_2)[:1])
    return t


def _tv(attr, **kw):
    return lambda: getattr(__import__("torchvision").models, attr)(**kw)


# id -> (jaxvision name, torch factory returning (torch model, jaxvision kwargs), input, batch)
CASES = {
    "resnet": ("resnet18", _resnet_basic, 64, 2),
    "googlenet": ("googlenet", _classic("googlenet", _tv("googlenet", aux_logits=False,
                                                         init_weights=False),
                                        dropout_rate=0.0), 64, 2),
    "vgg": ("vgg11_bn", _classic("vgg11_bn", lambda: _timm().create_model("vgg11_bn"),
                                 dropout_rate=0.0), 32, 2),
    "inception_v3": ("inception_v3", _classic("inception_v3", lambda: _timm().create_model(
        "inception_v3"), dropout_rate=0.0), 75, 4),
    "inception_v4": ("inception_v4", _classic("inception_v4", _inception_v4_shrunk,
                                              dropout_rate=0.0, repeats=(1, 1, 1)), 75, 4),
    "inception_resnet_v2": ("inception_resnet_v2", _classic(
        "inception_resnet_v2", _inception_resnet_v2_shrunk, dropout_rate=0.0,
        repeats=(2, 2, 2)), 75, 4),
    "resnest": ("test_resnest", _resnest, 32, 2),
    "seresnext_d": ("seresnext50_32x4d", _seresnext_d, 64, 2),
    "resnetv2": ("resnetv2_50", _resnetv2, 64, 2),
    "densenet": ("densenet121", _densenet, 64, 2),
    "convnext": ("test_convnext", _named("test_convnext"), 32, 2),
    "nfnet": ("test_nfnet", _named("test_nfnet"), 32, 2),
    "vit": ("test_vit", _vit, 32, 2),
    "mixer": ("test_mixer", _mixer, 32, 2),
    "alexnet": ("alexnet", _classic("alexnet", _tv("alexnet"), dropout_rate=0.0), 63, 2),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_training_step_matches_torch(case, monkeypatch):
    _timm()
    from tests.train_equiv import compare_training_step
    # The models' arithmetic, not the convolution formulations (each checked against lax in
    # test_conv.py; whole models through the default plan: test_default_plan.py): lax
    # convolutions keep compile times small.
    monkeypatch.setenv("JAXVISION_CONV_IMPL", "lax")
    name, factory, hw, batch = CASES[case]
    tmodel, model = factory()
    errs = compare_training_step(name, tmodel, (hw, hw), batch=batch, model=model,
                                 float64=True)
    tol = RTOL_VIT if case == "vit" else RTOL
    assert errs["logits"] <= tol, f"train-mode logits: {errs['logits']:.2e}"
    assert errs["input_grad"] <= tol, f"input gradient: {errs['input_grad']:.2e}"
    bad = {k: f"{v:.2e}" for k, v in errs["param_grad"].items() if not v <= tol}
    assert not bad, f"parameter gradients differ: {bad}"
    bad = {k: f"{v:.2e}" for k, v in errs["stats"].items() if not v <= tol}
    assert not bad, f"updated running statistics differ: {bad}"
