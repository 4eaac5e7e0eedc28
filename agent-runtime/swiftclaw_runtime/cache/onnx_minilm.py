"""all-MiniLM-L6-v2 on onnxruntime: the same forward pass as :mod:`.minilm`, as a graph.

The graph is built from the numpy weights of :class:`.minilm.MiniLM` with ``onnx``'s
helper API when the encoder starts (about a second), and handed to onnxruntime with the
weights as external initialisers that point at the numpy arrays: no torch, no export
step at install time, no file written or cached, so it works offline on a fresh machine
and on a read-only root filesystem. onnxruntime runs a query of 10-30 tokens in about
half numpy's time on one core (it fuses LayerNorm, GELU and the bias adds and does not
allocate per operation); ``intra_op_num_threads`` is 1 by default, so the
encoder takes one core and the event loop keeps the other.

The four weight matrices of each layer (Q/K/V, attention output, the two feed-forward
ones) run in int8 by default: each weight column is quantised symmetrically to 7 bits at
startup (its own scale, ``max |w| / 63``; see :data:`WEIGHT_LEVELS` for why not 8) and each
MatMul becomes onnxruntime's ``DynamicQuantizeMatMul`` (com.microsoft), which quantises its
input to uint8 per call and multiplies u8 x s8 (VNNI where the CPU has it), the bias added
in the same op. Embeddings, LayerNorm, attention scores, GELU and pooling stay float32. On
one core (AVX-512 VNNI), p50 over the 1,037 questions of the tuning splits: about 0.6 ms
against 3.05-3.18 ms for float32. The vectors stay within cosine 0.987 of float32's (0.994
on average); at the same threshold (0.68) and rules, precision of semantic hits is 100 % on
``dev`` and ``dev2`` and recall 81.6 % and 76.7 % (8-bit weights: 82.8 % and 76.7 %, but
other vectors on CPUs without VNNI; float32: 84.5 % and 77.8 %). The vectors are the same,
bit for bit, on a CPU with VNNI and under an emulated AVX2 or SSE4 CPU
(``python -m bench.encoder_cpus``). Variants measured and not kept: int8 for the
feed-forward MatMuls only (1.39 ms, recall 81.0 / 75.6), the attention projections only
(2.26 ms), the first or last layer float32 (0.87 / 0.93 ms, no better recall), uint8
weights (u8 x u8, 1.09 ms, the same vectors), and 8-bit ``MatMulNBits`` in blocks of 32
(1.3 ms, recall as float32's). onnxruntime's own ``quantize_dynamic`` of the whole graph
(one scale per weight matrix) took 0.7 ms and lost more recall (79.3 / 74.4).

``OnnxMiniLM(int8=False)`` builds the float32 graph (the tests compare it with the numpy
pass, :mod:`.minilm`, the reference).

Input: the token ids of one question (no padding: a batch of one). Output: the
mean-pooled, L2-normalised sentence vector, as :meth:`.minilm.MiniLM.encode` returns.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .minilm import EPS, HEADS, HIDDEN, MiniLM, Vector

log = logging.getLogger("swiftclaw.cache")

OPSET = 17  # LayerNormalization is an ONNX op from opset 17 on
MS = "com.microsoft"  # onnxruntime's contrib ops: DynamicQuantizeMatMul
INLINE_BYTES = 4096
Arrays = dict[str, "np.ndarray[Any, Any]"]


# Weights are quantised to 7 bits (-63..63), not 8. onnxruntime's u8 x s8 kernel without
# VNNI (AVX2, and AVX-512 without VNNI) multiplies with ``vpmaddubsw``, which adds each pair
# of u8 x s8 products in a saturating 16-bit lane: 2 x 255 x 127 = 64,770 does not fit in
# 32,767, so 8-bit weights give other vectors there than VNNI's exact 32-bit sums (measured
# under an emulated AVX2 EPYC: components off by up to 0.03). With |q| <= 63 a pair is at most
# 2 x 255 x 63 = 32,130: no kernel saturates, every one computes the same integers, and the
# encoder's vectors are the same on every x86-64 CPU (bit for bit under emulation).
WEIGHT_LEVELS = 63
PAIR_SUM_MAX = 32_767  # a signed 16-bit lane: where vpmaddubsw's pair sums saturate


def quantise(w: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """``w`` (in, out) as 7-bit columns in int8 and their scales: ``w ~ q * scale``,
    symmetric, one scale a column (``max |w[:, j]| / 63``)."""
    scale = (np.abs(w).max(axis=0) / WEIGHT_LEVELS).astype(np.float32)
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(w / scale), -WEIGHT_LEVELS, WEIGHT_LEVELS).astype(np.int8)
    return q, scale


def saturates(q: np.ndarray[Any, Any]) -> bool:
    """Whether a u8 x s8 kernel that adds pairs of products in 16 bits (``vpmaddubsw``)
    could saturate on the int8 weights ``q`` (in, out), for some uint8 input: the worst
    input is 255 wherever two neighbouring weights along ``in`` share a sign."""
    pairs = np.abs(q[: len(q) // 2 * 2].astype(np.int32)).reshape(-1, 2, q.shape[1]).sum(axis=1)
    return bool(pairs.max(initial=0) * 255 > PAIR_SUM_MAX)


def build_model(m: MiniLM, int8: bool = True) -> tuple[bytes, Arrays]:
    """The ONNX model of ``m``'s forward pass: the serialised graph, whose weights are
    external initialisers, and those weights (``m``'s own arrays, not copies; with
    ``int8``, the weight matrices' int8 versions), which
    onnxruntime is given by :meth:`SessionOptions.add_external_initializers`. Held in
    the graph, they would be copied three times on the way (protobuf tensors, the model,
    its serialisation) and the start would peak at 620 MB resident; this way no file is
    written, and a runtime with the semantic cache on is 246 MB resident after its start
    (peak 274 MB) with the int8 graph, 308-328 MB with the float32 one."""
    from onnx import TensorProto, helper, numpy_helper

    inits: list[Any] = []
    nodes: list[Any] = []
    external: Arrays = {}

    def const(name: str, value: np.ndarray[Any, Any]) -> str:
        array = np.ascontiguousarray(value)
        if array.nbytes <= INLINE_BYTES:  # shapes and scalars: shape inference reads them
            inits.append(numpy_helper.from_array(array, name))
            return name
        tensor = TensorProto(name=name, dims=array.shape)
        tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.data_location = TensorProto.EXTERNAL
        for key, v in (("location", "memory"), ("offset", 0), ("length", array.nbytes)):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(v)
        inits.append(tensor)
        external[name] = array
        return name

    def node(op: str, inputs: list[str], out: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def linear(x: str, p: str, layer: dict[str, Any], key: str, out: str) -> str:
        """``x @ layer[key] + layer[key + "_b"]``, in int8 or float32."""
        bias = const(p + key + "_b", layer[key + "_b"])
        if not int8:
            product = node("MatMul", [x, const(p + key, layer[key])], out + "_mm")
            return node("Add", [product, bias], out)
        q, scale = quantise(layer[key])
        weights = [const(p + key + "_q", q), const(p + key + "_s", scale), ""]
        return node("DynamicQuantizeMatMul", [x, *weights, bias], out, domain=MS)

    head = HIDDEN // HEADS
    const("word", m.word)
    const("position", m.position)
    const("emb_g", m.emb_ln[0])
    const("emb_b", m.emb_ln[1])
    const("zero", np.array([0], dtype=np.int64))
    const("shape_heads", np.array([0, HEADS, head], dtype=np.int64))
    const("shape_hidden", np.array([0, HIDDEN], dtype=np.int64))
    const("thirds", np.array([HIDDEN] * 3, dtype=np.int64))
    const("half", np.array(0.5, dtype=np.float32))
    const("one", np.array(1.0, dtype=np.float32))
    const("inv_sqrt2", np.array(1.0 / np.sqrt(2.0), dtype=np.float32))

    # embeddings: word[ids] + position[:n] (token type 0 is folded into position)
    node("Shape", ["ids"], "n")
    node("Gather", ["word", "ids"], "tok")
    node("Slice", ["position", "zero", "n", "zero"], "pos")
    node("Add", ["tok", "pos"], "emb")
    x = node("LayerNormalization", ["emb", "emb_g", "emb_b"], "x0", axis=-1, epsilon=EPS)
    for i, layer in enumerate(m.layers):
        p = f"l{i}_"
        for key in ("ln1_g", "ln1_b", "ln2_g", "ln2_b"):
            const(p + key, layer[key])
        qkv = linear(x, p, layer, "qkv", p + "qkv_o")
        nodes.append(
            helper.make_node("Split", [qkv, "thirds"], [p + "q", p + "k", p + "v"], axis=1)
        )
        for name, perm in (("q", [1, 0, 2]), ("k", [1, 2, 0]), ("v", [1, 0, 2])):
            node("Reshape", [p + name, "shape_heads"], p + name + "_r")
            node("Transpose", [p + name + "_r"], p + name + "_t", perm=perm)
        node("MatMul", [p + "q_t", p + "k_t"], p + "scores")
        node("Softmax", [p + "scores"], p + "probs", axis=-1)
        node("MatMul", [p + "probs", p + "v_t"], p + "ctx_h")
        node("Transpose", [p + "ctx_h"], p + "ctx_t", perm=[1, 0, 2])
        node("Reshape", [p + "ctx_t", "shape_hidden"], p + "ctx")
        att = linear(p + "ctx", p, layer, "out", p + "att_b")
        node("Add", [att, x], p + "att_res")
        x1 = node(
            "LayerNormalization",
            [p + "att_res", p + "ln1_g", p + "ln1_b"],
            p + "x1",
            axis=-1,
            epsilon=EPS,
        )
        h = linear(x1, p, layer, "ff1", p + "ff1_o")
        # GELU, the exact form: 0.5 * h * (1 + erf(h / sqrt 2)); onnxruntime fuses it
        node("Mul", [h, "inv_sqrt2"], p + "g_s")
        node("Erf", [p + "g_s"], p + "g_e")
        node("Add", [p + "g_e", "one"], p + "g_1")
        node("Mul", [h, p + "g_1"], p + "g_h")
        node("Mul", [p + "g_h", "half"], p + "gelu")
        ff2 = linear(p + "gelu", p, layer, "ff2", p + "ff2_o")
        node("Add", [ff2, x1], p + "ff_res")
        x = node(
            "LayerNormalization",
            [p + "ff_res", p + "ln2_g", p + "ln2_b"],
            p + "x2",
            axis=-1,
            epsilon=EPS,
        )
    node("ReduceMean", [x], "pooled", axes=[0], keepdims=0)  # axes an attribute until opset 18
    node("LpNormalization", ["pooled"], "vec", axis=0, p=2)
    graph = helper.make_graph(
        nodes,
        "all-MiniLM-L6-v2",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info("vec", TensorProto.FLOAT, [HIDDEN])],
        inits,
    )
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(MS, 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model.SerializeToString(), external


# Startup check of the int8 encoder against the float32 pass: on the evaluation questions
# the two agree to cosine 0.987 at worst (0.994 on average) on every x86-64 CPU; a platform
# whose int8 kernels compute otherwise (another architecture, a future kernel) falls back.
SELF_CHECK_COSINE = 0.98
SELF_CHECK_QUESTIONS = (
    "How do I reset my password?",
    "Why is my Kubernetes pod stuck in CrashLoopBackOff after the last deploy?",
    "Convert 20 degrees Celsius to Fahrenheit",
    "¿Cómo cancelo mi suscripción anual?",
)


class OnnxMiniLM:
    """The encoder on onnxruntime: ``encode(text)`` -> a unit vector of 384 floats."""

    dim = HIDDEN

    def __init__(self, model_dir: Path | None = None, threads: int = 1, int8: bool = True) -> None:
        weights = MiniLM(model_dir)
        self.tokenizer = weights.tokenizer
        self.threads = threads
        self.int8 = int8
        self.session = self._session(weights, int8)
        if int8:
            agreement = self._agreement(weights)
            if agreement < SELF_CHECK_COSINE:  # e.g. a CPU whose int8 kernel saturates
                log.warning(
                    "the int8 encoder agrees with float32 to cosine %.3f only on this CPU "
                    "(under %.3f): using the float32 encoder (slower, about 3 ms a question)",
                    agreement,
                    SELF_CHECK_COSINE,
                )
                self.int8 = False
                self.session = self._session(weights, False)
            else:
                log.info(
                    "semantic cache encoder: int8 (7-bit weights), cosine %.3f to float32 on"
                    " this CPU (at least %.3f needed)",
                    agreement,
                    SELF_CHECK_COSINE,
                )
        del weights  # with int8, the float32 weight matrices are not kept

    def _session(self, weights: MiniLM, int8: bool) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_cpu_mem_arena = False  # one small batch at a time: no arena to keep
        graph, external = build_model(weights, int8)
        # onnxruntime reads these arrays where they are: they must live as long as it does
        self._weights = external
        options.add_external_initializers(
            list(external), [ort.OrtValue.ortvalue_from_numpy(a) for a in external.values()]
        )
        return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def _agreement(self, weights: MiniLM) -> float:
        """The lowest cosine between this session's vectors and the float32 reference pass
        (numpy) on a few questions: the int8 kernels differ by CPU, the check runs on this
        one (about 30 ms at startup)."""
        return min(float(self.encode(q) @ weights.encode(q)) for q in SELF_CHECK_QUESTIONS)

    def token_ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text).ids)

    def encode(self, text: str) -> Vector:
        ids = np.asarray(self.token_ids(text), dtype=np.int64)
        out: Vector = self.session.run(["vec"], {"ids": ids})[0]
        return out
