"""The answer path on an inference engine: each network exported to ONNX at load and run by ONNX Runtime.

PyTorch stays the source of truth: the graphs are exported in memory from the same modules the
safetensors and config.json build (nothing extra is published or cached, so a graph can never be
stale), and the PyTorch modules are kept for training and for the maps, which need gradients. An
`EngineNet` is called like the module it was exported from, torch tensors in and out, so the code
around it (MTCNN's stages, flip averaging, decoding) is the same on either engine.

Why: on a 2-core AVX2 CPU, ONNX Runtime runs Model A in 4.3 ms a face against PyTorch's 7.7 and
Model B in 5.9 against 13.5 (issue 31); which parts run on it by default: `default_engine`.
"""

from __future__ import annotations

import io
import os
import warnings

import torch
from torch import nn

# What runs the networks: "onnx" (ONNX Runtime) or "torch"; which part runs on which by default: default_engine.
ENGINES = ("onnx", "torch")
ENGINE_ENV = "AGEGENDER_ENGINE"


def default_engine(part: str = "models") -> str:
    """The engine named by AGEGENDER_ENGINE for every part; else for the age-gender models "onnx" where onnxruntime
    and onnx are installed, and for the detector "torch".

    Measured (docs/serving.md, "Engines"): ONNX Runtime runs the models faster (alone 1.3-1.9x on an AVX-512 CPU,
    1.8-2.3x on an AVX2 one); MTCNN's networks alone too, but the detector as a whole was slower on it on the
    AVX-512 CPU (much of its time lies outside the networks, and ONNX Runtime's threads and torch's take turns on
    the same cores).
    """
    named = os.environ.get(ENGINE_ENV, "").strip().lower()
    if named:
        if named not in ENGINES:
            raise ValueError(f"{ENGINE_ENV} must be one of {', '.join(ENGINES)}, not {named!r}")
        return named
    if part == "detector":
        return "torch"
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch"
    return "onnx"


class EngineNet:
    """A network exported from a PyTorch module and run by ONNX Runtime, called as the module was."""

    def __init__(self, module: nn.Module, example: torch.Tensor, dynamic: dict[int, str],
                 output_dynamic: dict[int, str] | None = None, threads: int = 0) -> None:
        import onnxruntime as ort

        module = module.eval()
        with torch.inference_mode():
            outputs = module(example)
        self.n_outputs = len(outputs) if isinstance(outputs, tuple) else 1
        names = [f"out{i}" for i in range(self.n_outputs)]
        buffer = io.BytesIO()
        with warnings.catch_warnings():  # the exporter's notes on tracing are about code paths we do not take
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example.contiguous(),), buffer, dynamo=False, opset_version=17,
                              input_names=["x"], output_names=names,
                              dynamic_axes={"x": dynamic, **{name: output_dynamic or {0: "n"} for name in names}})
        options = ort.SessionOptions()
        # As many threads as torch uses here (the app and the CLI set it), so the engines share a core count.
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle threads sleep instead of spinning: the app runs several requests, the detector and two models
        # in turn, and spinning threads would take the cores the next step (or another process) needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        empty = len(x) == 0  # some kernels refuse an empty batch: run one blank input, keep none of it
        x = torch.zeros(1, *x.shape[1:]) if empty else x
        feed = {"x": x.detach().to("cpu", torch.float32).contiguous().numpy()}
        outputs = tuple(torch.from_numpy(o[:0] if empty else o) for o in self.session.run(None, feed))
        return outputs if self.n_outputs > 1 else outputs[0]


def export_model(module: nn.Module, input_size: int) -> EngineNet:
    """An age-gender network (a batch of faces -> age logits, gender logit) on the engine, any batch size."""
    return EngineNet(module.float(), torch.zeros(2, 3, input_size, input_size), {0: "n"})


def export_mtcnn(pnet: nn.Module, rnet: nn.Module, onet: nn.Module) -> tuple[EngineNet, EngineNet, EngineNet]:
    """MTCNN's three networks on the engine: P-Net over any image size, R-Net and O-Net over any number of boxes."""
    return (EngineNet(pnet, torch.zeros(1, 3, 60, 80), {0: "n", 2: "h", 3: "w"}, {0: "n", 2: "h2", 3: "w2"}),
            EngineNet(rnet, torch.zeros(2, 3, 24, 24), {0: "n"}),
            EngineNet(onet, torch.zeros(2, 3, 48, 48), {0: "n"}))
