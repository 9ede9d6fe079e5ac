"""Table 9 of the paper beside our networks: the expected layer shapes and a hook-based architecture table.

Kept apart from :mod:`avaga_lib.models.avaga.model` (the pure ``nn.Module``s) because it is a report of the model, read
by notebook 02 and the tests, never by training.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import Tensor, nn

from avaga_lib.models.avaga.model import AVAGA, DOWNSAMPLING, Discriminator


def table9_expected(image_size: int = 256) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Table 9's rows as ``module name -> (Table 9 layer, expected output shape CxHxW)``, generalised to any side.

    Module names are those of :func:`architecture_table` (prefixes ``avaga.`` and ``disc.``). Variant R, conv latent.
    """
    s = image_size // DOWNSAMPLING
    exp: dict[str, tuple[str, tuple[int, ...]]] = {
        "avaga.body": ("Encoder layers 1-18 (ResNet-18 conv)", (512, s, s)),
        "avaga.relu": ("Encoder layer 19 ReLU", (512, s, s)),
        "avaga.mu": ("Encoder layer 20 Conv 1x1 (mu)", (512, s, s)),
        "avaga.logvar": ("Encoder layer 21 Conv 1x1 (logvar)", (512, s, s)),
        "avaga.classifier.flatten": ("W.S. layer 22 Flatten", (512 * s * s,)),
        "avaga.classifier.linear": ("W.S. layer 23 Linear", (2,)),
    }
    layer = 1
    side = s
    for b, w in enumerate((512, 256, 128, 64)):
        side *= 2
        for sub in ("up", "bn1", "relu1", "conv", "bn2", "relu2"):
            exp[f"avaga.decoder.blocks.{b}.{sub}"] = (f"Decoder layer {layer}", (w, side, side))
            layer += 1
        skip_label = f"Decoder skip: layer {layer - 6} + layer {layer - 1}"
        exp[f"avaga.decoder.blocks.{b}.skip"] = (skip_label, (w, side, side))
    exp["avaga.decoder.out"] = ("Decoder layer 25 ConvTr", (3, image_size, image_size))
    exp["avaga.decoder.sigmoid"] = ("Decoder layer 26 Sigmoid", (3, image_size, image_size))
    d_layer = {"conv1": 1, "lrelu1": 2, "conv2": 3, "bn2": 4, "lrelu2": 5, "conv3": 6, "bn3": 7, "lrelu3": 8}
    d_layer |= {"conv4": 9, "bn4": 10, "lrelu4": 11, "conv5": 12}
    d_width = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}
    for name, lay in d_layer.items():
        i = int(name[-1])
        side = image_size // 2**i
        exp[f"disc.net.{name}"] = (f"Discriminator layer {lay}", (d_width[i], side, side))
    exp["disc.sigmoid"] = ("Discriminator layer 13 Sigmoid", (512, s, s))
    return exp


def architecture_table(model: nn.Module, image_size: int, prefix: str | None = None) -> pd.DataFrame:
    """Layer / output shape / parameters of ``model`` for one (1, 3, S, S) input, via forward hooks.

    ResNet-18's ``layer1..4`` appear as one row each (their inner layers are ResNet's, not Table 9's). For
    an ``AVAGA`` or ``Discriminator`` the Table 9 layer and expected shape are joined (columns ``table9_layer``,
    ``table9_shape``, ``match``; the expectations hold for variant R with the conv latent).

    Args:
        model: an ``AVAGA`` or ``Discriminator`` (or any module taking an image batch). image_size: input side S.
        prefix: row-name prefix; default "avaga" for AVAGA, "disc" for Discriminator, else "model".

    Returns:
        DataFrame with columns module, type, output_shape, params, table9_layer, table9_shape, match.
    """
    if prefix is None:
        prefix = "avaga" if isinstance(model, AVAGA) else "disc" if isinstance(model, Discriminator) else "model"
    rows: list[dict[str, object]] = []
    handles = []
    aggregate = {f"body.layer{i}" for i in range(1, 5)}

    def hook_for(name: str, mod: nn.Module):
        def hook(_m: nn.Module, _inp: tuple, out: object) -> None:
            shape = tuple(out.shape[1:]) if isinstance(out, Tensor) else None
            rows.append(
                {
                    "module": f"{prefix}.{name}",
                    "type": type(mod).__name__,
                    "output_shape": shape,
                    "params": sum(p.numel() for p in mod.parameters()),
                }
            )

        return hook

    for name, mod in model.named_modules():
        if not name:
            continue
        inside_aggregate = any(name.startswith(a + ".") for a in aggregate)
        is_leaf = len(list(mod.children())) == 0
        if name in aggregate or (is_leaf and not inside_aggregate) or name == "body":
            handles.append(mod.register_forward_hook(hook_for(name, mod)))
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        with torch.no_grad():
            model(torch.rand(1, 3, image_size, image_size, device=param.device, dtype=param.dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    frame = pd.DataFrame(rows)
    expected = table9_expected(image_size)
    frame["table9_layer"] = [expected.get(m, ("", None))[0] for m in frame["module"]]
    frame["table9_shape"] = [expected.get(m, ("", None))[1] for m in frame["module"]]
    frame["match"] = [
        None if e is None else bool(o == e) for o, e in zip(frame["output_shape"], frame["table9_shape"])
    ]
    return frame
