"""QAT from PTQ (qdqtorch.py + finetune.py): the torch copy must compute what the INT8 file computes, the
fine-tune must lower the error on images it never saw and map back onto the same file, and it keeps
nothing that made the held-out loss worse."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from graphs import SPEC, WEIGHT_QMAX, clipped_qdq, layernorm_net, run

from toolchain.errors import UserInputError
from toolchain.metrics import sqnr_db
from toolchain.quantize import QuantConfig, emit, finetune, qdqtorch
from toolchain.quantize.graph import OnnxGraph


def _torch(net: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


def test_the_torch_copy_computes_what_the_int8_file_computes(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, (32, 3, 8, 8)).astype(np.float32)
    _, _, qdq, weights = clipped_qdq(tmp_path, x, squeeze=0.4)
    net = qdqtorch.qdq_module(qdq, WEIGHT_QMAX)
    assert {k.replace("__", ".") for k in net.weights} == set(weights)  # every INT8 weight is a parameter
    fresh = rng.normal(0, 1, (16, 3, 8, 8)).astype(np.float32)
    mine, theirs = _torch(net, fresh), run(qdq, fresh)
    assert sqnr_db(theirs, mine) > 40.0
    assert np.array_equal(mine.argmax(1), theirs.argmax(1))
    ints = net.integer_weights()
    assert all(np.array_equal(ints[k][0], weights[k].values.astype(np.int8)) for k in weights)  # untrained: unchanged


def test_distillation_undoes_a_systematic_error_and_maps_back_onto_the_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(0, 1, (96, 3, 8, 8)).astype(np.float32)
    fresh = rng.normal(0, 1, (64, 3, 8, 8)).astype(np.float32)
    _, src, qdq, _ = clipped_qdq(tmp_path, x, squeeze=0.4)
    result = finetune.distill(qdq, run(src, x), run(qdq, x), x, WEIGHT_QMAX, epochs=15, lr=0.05, bias_lr=1e-3)
    assert result.kept and result.loss_after < 0.8 * result.loss_before
    assert result.fidelity_db > 40.0 and len(result.history) == 15
    assert all(np.abs(ints).max() <= WEIGHT_QMAX and ints.dtype == np.int8 for ints, _ in result.weights.values())
    patched = tmp_path / "finetuned.onnx"
    weights = {k: emit.IntWeight(ints, scales) for k, (ints, scales) in result.weights.items()}
    assert emit.patch_weights(qdq, patched, weights, result.biases) == 3
    reference = run(src, fresh)
    error = lambda y: float(((y - reference) ** 2).mean())  # noqa: E731
    assert error(run(patched, fresh)) < 0.8 * error(run(qdq, fresh))  # on images the fine-tune never saw


def test_matching_every_quantized_activation_to_fp32_also_undoes_the_error(tmp_path: Path) -> None:
    import onnx

    rng = np.random.default_rng(6)
    x = rng.normal(0, 1, (96, 3, 8, 8)).astype(np.float32)
    fresh = rng.normal(0, 1, (64, 3, 8, 8)).astype(np.float32)
    _, src, qdq, _ = clipped_qdq(tmp_path, x, squeeze=0.4)
    names = qdqtorch.quantized_activations(onnx.load(str(qdq)))
    assert {"input", "a1", "a2"} <= set(names)
    teacher = finetune.Teacher(src, SPEC, [*names, "not-a-tensor"], None)
    assert teacher.names == names[1:]  # the graph input has no fp32 producer to match; unknown names are dropped
    logits, activations = teacher(x[:4])
    assert set(activations) == set(names[1:]) and np.allclose(logits, run(src, x[:4]), atol=1e-5)
    try:
        result = finetune.distill(qdq, run(src, x), run(qdq, x), x, WEIGHT_QMAX, epochs=15, lr=0.05, bias_lr=1e-3,
                                  teacher=teacher)
    finally:
        teacher.close()
    assert result.kept and result.loss_after < 0.8 * result.loss_before  # held-out loss is still the logits' MSE
    weights = {k: emit.IntWeight(ints, scales) for k, (ints, scales) in result.weights.items()}
    patched = tmp_path / "matched.onnx"
    emit.patch_weights(qdq, patched, weights, result.biases)
    reference = run(src, fresh)
    error = lambda y: float(((y - reference) ** 2).mean())  # noqa: E731
    assert error(run(patched, fresh)) < 0.8 * error(run(qdq, fresh))


def test_mixup_distillation_learns_fp32_on_blends_it_labels_online(tmp_path: Path) -> None:
    """Every training step sees new blends of two images, labelled by the fp32 teacher; held-out stays clean."""
    rng = np.random.default_rng(6)
    x = rng.normal(0, 1, (96, 3, 8, 8)).astype(np.float32)
    fresh = rng.normal(0, 1, (64, 3, 8, 8)).astype(np.float32)
    _, src, qdq, _ = clipped_qdq(tmp_path, x, squeeze=0.4)
    teacher = finetune.Teacher(src, SPEC, [], None)
    seen: list[np.ndarray] = []
    try:
        with pytest.raises(UserInputError, match="mixup distillation needs the fp32 teacher"):
            finetune.distill(qdq, run(src, x), run(qdq, x), x, WEIGHT_QMAX, epochs=1, lr=0.05, mixup=0.4)
        result = finetune.distill(qdq, run(src, x), run(qdq, x), x, WEIGHT_QMAX, epochs=15, lr=0.05, bias_lr=1e-3,
                                  teacher=_Spied(teacher, seen), mixup=0.4)
    finally:
        teacher.close()
    blends = np.concatenate(seen)
    assert len(blends) == 15 * 72  # 3 of 4 sources train, every image of every step blended and labelled online
    distance = np.abs(blends[:, None] - x[None]).reshape(len(blends), len(x), -1).max(-1).min(1)
    assert np.mean(distance > 1e-3) > 0.9  # blends, not the training images themselves
    assert result.kept and result.loss_after < 0.8 * result.loss_before
    weights = {k: emit.IntWeight(ints, scales) for k, (ints, scales) in result.weights.items()}
    patched = tmp_path / "mixed.onnx"
    emit.patch_weights(qdq, patched, weights, result.biases)
    reference = run(src, fresh)
    error = lambda y: float(((y - reference) ** 2).mean())  # noqa: E731
    assert error(run(patched, fresh)) < 0.8 * error(run(qdq, fresh))


class _Spied:
    """A Teacher whose inputs are recorded."""

    def __init__(self, teacher: finetune.Teacher, seen: list[np.ndarray]) -> None:
        self.teacher, self.seen, self.names = teacher, seen, teacher.names

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        self.seen.append(batch.copy())
        return self.teacher(batch)


def test_learned_activation_scales_map_back_to_ranges_onnxruntime_turns_into_the_same_scale(tmp_path: Path) -> None:
    from onnxruntime.quantization.quant_utils import compute_scale_zp

    x = np.random.default_rng(8).normal(0, 1, (16, 3, 8, 8)).astype(np.float32)
    _, _, qdq, _ = clipped_qdq(tmp_path, x, squeeze=0.4)
    net = qdqtorch.qdq_module(qdq, WEIGHT_QMAX, learn_ranges=True)
    assert {"input", "a1", "a2"} <= {k.replace("__", ".") for k in net.log_scales}
    with torch.no_grad():
        for i, log_scale in enumerate(net.log_scales.values()):
            log_scale.add_(0.1 * (i + 1))  # as if trained
    for key, (low, high) in net.activation_ranges().items():
        zero, scale = compute_scale_zp(np.float32(low), np.float32(high), np.uint8(0), np.uint8(255))
        expected = float(net.log_scales[key.replace(".", "__")].exp())
        assert abs(float(scale) - expected) < 1e-6 * expected and int(zero) == net.zeros[key.replace(".", "__")]


def test_a_fine_tune_that_raises_held_out_loss_keeps_nothing(tmp_path: Path, monkeypatch) -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(0, 1, (32, 3, 8, 8)).astype(np.float32)
    _, src, qdq, _ = clipped_qdq(tmp_path, x, squeeze=0.4)
    monkeypatch.setattr(torch.optim, "Adam", functools.partial(torch.optim.Adam, maximize=True))  # training hurts
    result = finetune.distill(qdq, run(src, x), run(qdq, x), x, WEIGHT_QMAX, epochs=2, lr=0.5, bias_lr=1e-2)
    assert all(epoch["held_out_loss"] > result.loss_before for epoch in result.history)
    assert not result.kept and result.best_epoch == 0 and result.weights == {} and result.biases == {}
    assert result.loss_after == result.loss_before


def test_whole_source_images_are_held_out_and_too_few_sources_are_one_line(tmp_path: Path, monkeypatch,
                                                                            caplog) -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(0, 1, (24, 3, 8, 8)).astype(np.float32)
    _, src, qdq, _ = clipped_qdq(tmp_path, x, squeeze=0.4)
    teacher, student = run(src, x), run(qdq, x)
    with pytest.raises(UserInputError, match="holds out whole source images: it needs >= 4 of them, .* has 3") as info:
        finetune.distill(qdq, teacher, student, x, WEIGHT_QMAX, epochs=1, lr=0.01, sources=np.arange(24) % 3)
    assert "\n" not in str(info.value)
    monkeypatch.setattr(finetune, "PROGRESS_EVERY_S", 0.0)
    with caplog.at_level("INFO", logger="toolchain.quantize.finetune"):
        result = finetune.distill(qdq, teacher, student, x, WEIGHT_QMAX, epochs=1, lr=0.01, batch_size=8,
                                  sources=np.arange(24) % 4)
    assert len(result.history) == 1  # 4 sources: source 3 (6 crops) judges, the other 18 crops train
    assert "epoch 1/1: 18 of 18 images" in caplog.text  # progress inside a long epoch


def test_an_op_the_torch_copy_cannot_run_is_refused_in_one_line(tmp_path: Path) -> None:
    path = OnnxGraph(layernorm_net()).save(tmp_path / "ln.onnx")
    with pytest.raises(UserInputError, match="cannot run ONNX op LayerNormalization .*--qat-start observers") as info:
        qdqtorch.qdq_module(path, 127)
    assert "\n" not in str(info.value)
    assert qdqtorch.unsupported(OnnxGraph.load(path).op_types()) == ["LayerNormalization"]  # checked before PTQ


def test_qat_start_choices_are_checked() -> None:
    with pytest.raises(UserInputError, match="--qat-start"):
        QuantConfig(mode="qat", qat_start="later")
    with pytest.raises(UserInputError, match="needs --engine onnxruntime and --distill auto/on"):
        QuantConfig(mode="qat", qat_start="ptq", distill="off")
    settings = QuantConfig(mode="qat").qat()
    assert settings.from_ptq("onnxruntime", labeled=False) and not settings.from_ptq("onnxruntime", labeled=True)
    assert not settings.from_ptq("torchao", labeled=False)
    assert QuantConfig(mode="qat", qat_start="ptq").qat().from_ptq("onnxruntime", labeled=True)
    assert settings.lr == 1e-4 and settings.step_lr == 3e-3 and settings.feature_weight == 0.0
    with pytest.raises(UserInputError, match="--qat-features"):
        QuantConfig(mode="qat", qat_features=-1)
    assert settings.mixup == 0.0 and QuantConfig(mode="qat", qat_mixup=0.4).qat().mixup == 0.4
    with pytest.raises(UserInputError, match="--qat-mixup -1.0 must be between 0 .* and 10") as info:
        QuantConfig(mode="qat", qat_mixup=-1.0)
    assert "\n" not in str(info.value)


def test_label_free_qat_starts_from_the_ptq_model_by_default(tmp_path: Path) -> None:
    from toolchain.quantize import quantize
    from toolchain.sources import load_model

    result = quantize(load_model("tiny-cnn"), "synthetic", QuantConfig(mode="qat", epochs=2, out=tmp_path / "q",
                                                                       speed=False, min_agreement=0.5,
                                                                       qat_features=1.0))
    summary = result.summary
    qat = summary["qat"]
    assert qat["start"] == "vtool PTQ (all-INT8)" and qat["loss"].startswith("distillation")
    assert "1 x normalized MSE of every quantized activation" in qat["loss"]  # --qat-features 1
    assert len(qat["history"]) == 2 and {"train_loss", "held_out_loss"} <= set(qat["history"][0])
    steps = [s["step"] for s in summary["steps"]]
    assert steps.index("weights:refit") < steps.index("qat:distill-from-ptq")
    step = next(s for s in summary["steps"] if s["step"] == "qat:distill-from-ptq")
    assert step["applied"] == qat["kept"] and step["torch_copy_sqnr_db"] > 30.0
    assert result.artifact.manifest.format == "onnx" and result.artifact.manifest.precision == "int8"


def test_an_onnx_file_takes_qat_from_ptq_and_labelled_data_says_how(exported_tiny_cnn, tmp_path: Path) -> None:
    """QAT from PTQ needs only the ONNX graph; torchao's QAT (labels) needs the checkpoint, said in one line."""
    from toolchain.quantize import quantize
    from toolchain.sources import load_model

    source = load_model(str(exported_tiny_cnn("onnx")))
    result = quantize(source, "synthetic", QuantConfig(mode="qat", epochs=1, out=tmp_path / "q", speed=False,
                                                       min_agreement=0.5))
    assert result.summary["qat"]["start"] == "vtool PTQ (all-INT8)" and result.artifact.manifest.format == "onnx"
    assert result.summary["qat"]["loss"] == "distillation: MSE to the fp32 logits"  # --qat-features 0 by default
    with pytest.raises(UserInputError, match="can only distil from it, and this data has labels") as info:
        quantize(source, "digits", QuantConfig(mode="qat", epochs=1, out=tmp_path / "labelled", speed=False))
    assert "\n" not in str(info.value) and not (tmp_path / "labelled").exists()
    with pytest.raises(UserInputError, match="torchao QAT fine-tunes PyTorch weights"):
        quantize(source, "synthetic", QuantConfig(mode="qat", qat_start="observers", out=tmp_path / "obs"))
