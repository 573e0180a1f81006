"""ONNX export and an ONNX Runtime predictor: one graph from images to score and anomaly maps.

The graph takes a (B, 3, S, S) float32 batch in [0, 1] (dynamic B, S from the config) and returns
`score` (B,), `anomaly_map`, `local_map` and `global_map` (B, S, S): exactly `ULSAD.forward`, with
feature statistics, map quantiles and blur inside. Resizing the maps to each image's own size
happens outside, as in `ulsad.inference`. The checkpoint's config and threshold travel in the
model's metadata, so an exported file is all that deployment needs (`pip install onnxruntime`).

`export_verified(checkpoint, "model.onnx")` (the CLI: `ulsad export`) writes and checks a file;
`load_predictor("model.onnx", backend="onnx")` (`ulsad predict`) scores images with it.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ulsad.errors import ULSADError
from ulsad.files import atomic_path
from ulsad.hub import load_pretrained
from ulsad.inference import predict, predict_batches, whole_global_settings
from ulsad.model import AnomalyMaps, ULSADModel

__all__ = [
    "DEFAULT_OPSET",
    "FORMAT",
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "OnnxPredictor",
    "TorchPredictor",
    "export_onnx",
    "export_verified",
    "load_predictor",
    "max_abs_difference",
    "transposed_as_conv",
]

log = logging.getLogger(__name__)
FORMAT = "ulsad-onnx-1"
INPUT_NAME = "images"
OUTPUT_NAMES = ("score", "anomaly_map", "local_map", "global_map")
DEFAULT_OPSET = 17


def transposed_as_conv(module: nn.Module) -> nn.Module:
    """Replace stride-1 `ConvTranspose2d` layers by equivalent `Conv2d` ones (flipped kernels).

    Same output; ONNX Runtime's CPU ConvTranspose is about 2x slower than its Conv for the FeatAE's
    last layer (the largest in the model), and its Conv gets fused with the BatchNorm and ReLU.
    """
    for name, child in module.named_children():
        if (
            isinstance(child, nn.ConvTranspose2d)
            and child.stride == (1, 1)
            and child.dilation == (1, 1)
            and child.output_padding == (0, 0)
            and child.groups == 1
        ):
            k, p = child.kernel_size, child.padding
            conv = nn.Conv2d(
                child.in_channels, child.out_channels, k,
                padding=(k[0] - 1 - p[0], k[1] - 1 - p[1]), bias=child.bias is not None,
            )  # fmt: skip
            with torch.no_grad():
                conv.weight.copy_(child.weight.flip(-2, -1).transpose(0, 1))
                if child.bias is not None:
                    conv.bias.copy_(child.bias)
            setattr(module, name, conv)
        else:
            transposed_as_conv(child)
    return module


class _Graph(nn.Module):
    """`ULSAD.forward` with a tuple output (the exporter's contract)."""

    def __init__(self, model: ULSADModel):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return tuple(self.model(images))


def export_onnx(model: ULSADModel, path: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Write `model` as one ONNX graph (images -> score and maps) to `path`, atomically."""
    try:
        import onnx
    except ImportError as error:
        raise ULSADError("ONNX export needs onnx: pip install onnx onnxruntime") from error
    path = Path(path)
    graph = _Graph(transposed_as_conv(copy.deepcopy(model).cpu().float().eval())).eval()
    s = model.config.image_size
    dynamic = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    with warnings.catch_warnings(), atomic_path(path) as tmp:
        # The TorchScript-based exporter: no onnxscript dependency. Its warnings are about the
        # calibration test in forward, which is a constant of the exported model.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph, (torch.rand(1, 3, s, s),), str(tmp), dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic,
        )  # fmt: skip
        proto = onnx.load(str(tmp))
        metadata = {
            "format": FORMAT,
            "config": model.config.to_json(),
            "threshold": repr(float(model.threshold)),
            "calibrated": str(model.calibrated),
        }
        onnx.helper.set_model_props(proto, metadata)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    return path


class OnnxPredictor:
    """Scores images with an exported model on ONNX Runtime; the same results as `ULSAD.predict`.

    `threads`: ONNX Runtime's intra-op threads (default: one per physical core). `device`: "cpu",
    or "cuda" with the onnxruntime-gpu package.
    """

    def __init__(self, path: str | Path, threads: int | None = None, device: str | None = None):
        try:
            import onnxruntime as ort
        except ImportError as error:
            message = "The ONNX backend needs onnxruntime: pip install onnxruntime"
            raise ULSADError(message) from error
        path = Path(path)
        if not path.is_file():
            raise ULSADError(f"ONNX model not found: {path}")
        providers = ["CPUExecutionProvider"]
        if device not in (None, "cpu"):
            provider = {"cuda": "CUDAExecutionProvider"}.get(str(device).split(":")[0])
            if provider not in ort.get_available_providers():
                raise ULSADError(
                    f"ONNX Runtime has no provider for device {device!r} here (available: "
                    f"{', '.join(ort.get_available_providers())}); use {{device_cpu}}.",
                    device_cpu='device="cpu"',
                )
            providers.insert(0, provider)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types for bad files
            message = f"{path} is not a readable ONNX model ({error}): re-export it."
            raise ULSADError(message) from error
        metadata = self.session.get_modelmeta().custom_metadata_map
        if metadata.get("format") != FORMAT:
            raise ULSADError(f"{path} was not written by `ulsad export` (no {FORMAT} metadata).")
        self.config = json.loads(metadata["config"])
        self.image_size = int(self.config["image_size"])
        self.tile = bool(self.config.get("tile", False))  # exported before tiling existed: no
        self.threshold = float(metadata["threshold"])
        self.calibrated = metadata["calibrated"] == "True"
        self.path = path

    def __call__(self, images: Tensor | np.ndarray) -> AnomalyMaps:
        """(B, 3, S, S) images in [0, 1] -> `AnomalyMaps` of CPU tensors, as `ULSAD.forward`."""
        if isinstance(images, Tensor):
            images = images.detach().cpu().numpy()
        batch = np.ascontiguousarray(images, dtype=np.float32)
        outputs = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
        return AnomalyMaps(*(torch.from_numpy(o) for o in outputs))

    def predict(self, inputs: Any, batch_size: int = 8) -> Any:
        """Score images (path, PIL, numpy, tensor, or a list of them); see `ULSAD.predict`."""
        threshold = None if math.isnan(self.threshold) else self.threshold
        return predict_batches(
            self,
            inputs,
            image_size=self.image_size,
            threshold=threshold,
            batch_size=batch_size,
            tile=self.tile,
            whole_global=whole_global_settings(self.config),
        )


class TorchPredictor:
    """A loaded checkpoint behind the interface of `OnnxPredictor`: `.predict` (as
    `ULSAD.predict`), `.threshold` and `.calibrated`."""

    def __init__(self, model: ULSADModel):
        self.model = model
        self.threshold = float(model.threshold)
        self.calibrated = model.calibrated

    def predict(self, inputs: Any, batch_size: int = 8) -> Any:
        """Score images (path, PIL, numpy, tensor, or a list of them); see `ULSAD.predict`."""
        return predict(self.model, inputs, batch_size=batch_size)


@torch.inference_mode()
def max_abs_difference(model: ULSADModel, predictor: OnnxPredictor, images: Tensor) -> float:
    """Largest |ONNX Runtime - PyTorch| over score and maps for `images` (B, 3, S, S)."""
    ours = model.eval()(images.to(model.device))
    theirs = predictor(images)
    return max(float((a.cpu() - b).abs().max()) for a, b in zip(ours, theirs, strict=True))


def load_predictor(
    checkpoint: str | Path, backend: str = "torch", device: str | None = None
) -> TorchPredictor | OnnxPredictor:
    """A model with `.predict`, `.threshold` and `.calibrated`, run by PyTorch or ONNX Runtime.

    The ONNX backend takes an exported `.onnx` file, or exports a checkpoint to a temporary one.
    """
    is_onnx_file = str(checkpoint).endswith(".onnx")
    if backend == "torch":
        if is_onnx_file:
            raise ULSADError(
                f"{checkpoint} is an ONNX model: add {{backend_onnx}}.",
                backend_onnx='backend="onnx"',
            )
        return TorchPredictor(load_pretrained(checkpoint, device=device or "cpu"))
    if backend != "onnx":
        raise ULSADError(f"Unknown backend {backend!r}: choose torch or onnx.")
    if is_onnx_file:
        return OnnxPredictor(checkpoint, device=device)

    model = load_pretrained(checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        log.info(
            "note: exporting the checkpoint to ONNX for this run; export it once (`ulsad export`, "
            "export_verified) and load the .onnx file to skip this step."
        )
        # The session holds the model in memory; the temporary file can go.
        return OnnxPredictor(export_onnx(model, Path(tmp) / "model.onnx"), device=device)


def export_verified(
    checkpoint: str | Path, path: str | Path, opset: int = DEFAULT_OPSET
) -> tuple[Path, float, float]:
    """Export a checkpoint to `path` and check ONNX Runtime against PyTorch on two noise images.

    Returns (path, max |ONNX Runtime - PyTorch|, largest map value); a file that differs more
    than expected is removed and ULSADError raised."""
    model = load_pretrained(checkpoint)
    out = export_onnx(model, path, opset=opset)
    s = model.config.image_size
    images = torch.rand(2, 3, s, s, generator=torch.Generator().manual_seed(0))
    difference = max_abs_difference(model, OnnxPredictor(out), images)
    # Noise images are far from any training set: maps reach tens there, so the tolerance
    # (1e-4, as on real images) is relative to their scale when that exceeds 1.
    with torch.inference_mode():
        scale = max(float(t.abs().max()) for t in model(images))
    if difference > 1e-4 * max(1.0, scale):
        out.unlink()
        raise ULSADError(
            f"ONNX Runtime and PyTorch differ by {difference:.2e}, more than expected (the file "
            "was removed): please report this with your onnxruntime and torch versions."
        )
    return out, difference, scale
