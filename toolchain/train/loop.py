"""The training stage: train(source, data, config, out_dir) -> TrainResult, and the loop behind it."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from toolchain.data import DataBundle, DataConfig
from toolchain.distributed.config import fault_point
from toolchain.distributed.runtime import Dist, current
from toolchain.errors import UserInputError
from toolchain.models import LoadedModel
from toolchain.models.checkpoint import CHECKPOINT_NAME, read_checkpoint, save_checkpoint
from toolchain.outputs import atomic_dir, atomic_write_text, destination_lock
from toolchain.train import distributed as ddp
from toolchain.train.config import LAST_NAME, Progress, TrainConfig, TrainResult
from toolchain.train.setup import (
    check_out_dir,
    class_weights,
    freeze_backbone,
    is_run_dir,
    prepare_training,
    recorded_run,
    resolve_device,
    run_record,
)

log = logging.getLogger(__name__)


def train(
    source: LoadedModel | str | None,
    data: DataBundle | DataConfig | str | None = None,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    progress_callback: Callable[[Progress], None] | None = None,
    *,
    threads: int | None = None,
    **model_options: Any,
) -> TrainResult:
    """Train a model on data and write the run directory (best.pt, last.pt, history.json, curves.png).

    `source`: a --model source (registry name, checkpoint, file.py:Class, HF dir; None with config.resume: the run
    in out_dir) or a ready LoadedModel; `data`: a data source name, a DataConfig, or the DataBundle that goes with
    a ready LoadedModel (see prepare_training). `model_options` (weights, num_classes, input_size, pretrained) go
    to load_model; `threads` sets torch's CPU threads. Every check runs before anything is written.

    --out's lock is held throughout, so two runs on one --out never mix files (the second fails at once). With
    --overwrite the new run is built in a staging dir beside the old one and swapped in only when it finished,
    so a failed or interrupted retrain leaves the old run intact.
    """
    config = config or TrainConfig()
    if out_dir is None:
        raise UserInputError("Training needs a run directory: pass --out DIR (out_dir=...).")
    if threads is not None and threads < 1:
        raise UserInputError(f"--threads must be >= 1, got {threads}.")
    dist = current(config.device)
    out = Path(out_dir)
    loaded_source = isinstance(source, LoadedModel)
    check_out_dir(out, config.resume, config.overwrite,
                  () if loaded_source else (source, model_options.get("weights")))
    # a second run on the same --out fails at once instead of mixing files; in a distributed job rank 0 alone
    # writes, so it alone holds the lock (the others would find it taken)
    with destination_lock(out) if dist.is_main else contextlib.nullcontext():
        check_out_dir(out, config.resume, config.overwrite)  # again: a run that just finished may have filled it
        if threads:
            import torch

            torch.set_num_threads(threads)
        if loaded_source:
            if not isinstance(data, DataBundle) or model_options:
                raise UserInputError("A LoadedModel trains on its DataBundle (prepare_training returns both); to "
                                     "load the model too, pass its --model source string and the data's name.")
            loaded, bundle = source, data
        else:
            if isinstance(data, DataBundle):
                data = data.config
            data_config = data if isinstance(data, DataConfig) else DataConfig(source=data or "digits",
                                                                               seed=config.seed)
            loaded, bundle = prepare_training(source, data_config, config, out_dir, **model_options)
        sizes = {k: len(v) for k, v in bundle.split.items()}
        from toolchain.datacheck import warn_leaks

        warn_leaks(bundle)  # cheap: exact pixel hashes only (vtool data check also finds near duplicates)
        log.info("training %s on %s (%d train / %d val / %d test, %d classes, input %dx%d)",
                 loaded.spec.architecture, bundle.samples.source, sizes.get("train", 0), sizes.get("val", 0),
                 sizes.get("test", 0), bundle.num_classes, *loaded.spec.input_size)
        with dist.guard():
            if not dist.is_main or config.resume or not (config.overwrite and is_run_dir(out)):
                # a new run is written in place (under the lock): an interrupted one keeps last.pt for --resume
                return dist.broadcast(_train_into(loaded, bundle, config, out, progress_callback, dist))
            staged_config = dataclasses.replace(config, overwrite=False)
            with atomic_dir(out, overwrite=config.overwrite) as staging:
                result = _train_into(loaded, bundle, staged_config, staging, progress_callback, dist)
                result.out_dir, result.best_path, result.last_path = out, out / CHECKPOINT_NAME, out / LAST_NAME
                atomic_write_text(staging / "result.json",
                                  json.dumps(result.to_dict(), indent=2, default=str) + "\n")
            return dist.broadcast(result)


def _train_into(
    loaded_model: LoadedModel,
    bundle: DataBundle,
    config: TrainConfig,
    out_dir: str | Path,
    progress_callback: Callable[[Progress], None] | None = None,
    dist: Dist | None = None,
) -> TrainResult | None:
    """One run into `out_dir`. Distributed, every rank trains its shard and only rank 0 writes, logs and returns
    the result (None elsewhere; train() broadcasts it)."""
    import torch

    from toolchain.report import plots
    from toolchain.train import augment

    start = time.perf_counter()
    out = Path(out_dir)
    if not loaded_model.is_torch:
        raise UserInputError(f"{loaded_model.name} is an exported model; training needs an eager PyTorch model.")
    spec = loaded_model.spec
    if spec.num_classes != bundle.num_classes:
        raise UserInputError(f"Model predicts {spec.num_classes} classes but the data has {bundle.num_classes}.")
    spec = spec.replace(class_names=bundle.class_names)
    bundle = dataclasses.replace(bundle, spec=spec)
    if not bundle.split.get("train"):
        raise UserInputError(f"The training split of {bundle.samples.source} is empty; add images.")
    check_out_dir(out, config.resume, config.overwrite)
    dist = dist or current(config.device)
    device = dist.device if dist.distributed else resolve_device(config.device)
    if config.sync_bn and dist.distributed and not device.startswith("cuda"):
        raise UserInputError("--sync-bn needs CUDA GPUs (torch's SyncBatchNorm does not run on the CPU); drop "
                             "--sync-bn for CPU workers.")
    main = dist.is_main
    module = loaded_model.module.to(device)
    if config.freeze_backbone and loaded_model.info.get("pretrained") is False:
        log.warning("--freeze-backbone on randomly initialised weights: only the head trains, on random features; "
                    "start from pretrained weights (--pretrained, --weights or a checkpoint) or drop the flag")
    head = freeze_backbone(module) if config.freeze_backbone else None
    net = dist.wrap(module, config.sync_bn)  # DDP: all ranks start from rank 0's weights
    module = net.module if dist.distributed else net
    params = [p for p in module.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        optimizer: Any = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay,
                                    nesterov=True)
    train_labels = bundle.samples.labels[bundle.split["train"]]
    weight = None
    if config.class_weighted:
        weight = torch.tensor(class_weights(train_labels, bundle.num_classes), device=device)
    criterion = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)
    eval_criterion = torch.nn.CrossEntropyLoss()
    use_amp = config.amp and device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    history: list[dict[str, Any]] = []
    best = {"epoch": 0, "val_accuracy": -1.0, "val_loss": float("inf")}
    first_epoch, bad_epochs = 0, 0
    if config.resume:
        payload = recorded_run(out)
        first_epoch = int(payload.get("epoch", 0))
        if first_epoch >= config.epochs:
            raise UserInputError(f"'{out}' already finished {first_epoch} epochs; pass --epochs N with N > "
                                 f"{first_epoch} to train further.")
        optimizer.load_state_dict(payload["optimizer"])
        if use_amp and payload.get("scaler"):
            scaler.load_state_dict(payload["scaler"])
        history = list(payload.get("history", []))
        best = dict(payload.get("best", best))
        bad_epochs = int(payload.get("bad_epochs", 0))
        log.info("resuming %s at epoch %d/%d", out, first_epoch + 1, config.epochs)

    has_val = len(bundle.split.get("val", [])) > 0
    limit = ddp.cache_limit(augment.CACHE_LIMIT_BYTES, dist)
    train_cache = augment.cached_split(bundle, "train", limit)
    val_cache = augment.cached_split(bundle, "val", limit)
    pin = device.startswith("cuda")
    val_size = 256 if val_cache is not None else max(config.batch_size, 128)
    steps_per_epoch = ddp.steps_per_epoch(len(bundle.split["train"]), config.batch_size, dist)
    common = {"split": bundle.split, "data": bundle.describe(), "data_config": asdict(bundle.config),
              "config": asdict(config), "distributed": {"world_size": dist.world_size, "backend": dist.backend or None},
              **run_record(loaded_model)}
    if dist.distributed and main:
        log.info("data parallel: %d processes over %s, %d images per process per step (global batch %d)",
                 dist.world_size, dist.backend, ddp.per_rank_batch(config.batch_size, dist), config.batch_size)
    stopped_early = False
    for epoch in range(first_epoch, config.epochs):
        fault_point(epoch + 1)
        epoch_start = time.perf_counter()
        torch.manual_seed(config.seed + epoch + 1000 * dist.rank)  # rank 0 draws what one process would
        module.train()
        if head is not None:  # feature extraction: frozen BatchNorm statistics and no dropout outside the head
            module.eval()
            head.train()
        seen, loss_sum, correct = 0, 0.0, 0
        batches = ddp.train_batches(bundle, train_cache, config.batch_size, config.augment, dist, config.seed, epoch,
                                    config.workers, pin)
        for step, (x, y) in enumerate(batches):
            lr = config.lr_at(epoch * steps_per_epoch + step, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                logits = net(x)
                loss = criterion(logits.float(), y)
            if not torch.isfinite(loss):
                raise UserInputError(f"Training diverged at epoch {epoch + 1} (loss {float(loss)}); lower --lr "
                                     f"(now {config.lr}) or set --grad-clip 1.0.")
            scaler.scale(loss).backward()
            if config.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            seen += len(y)
            loss_sum += float(loss.detach()) * len(y)
            correct += int((logits.detach().argmax(1) == y).sum())
            if progress_callback and main:
                progress_callback(Progress(epoch + 1, config.epochs, step + 1, steps_per_epoch, loss_sum / seen,
                                           correct / seen, lr))
        loss_sum, correct, seen = dist.all_reduce_sum([loss_sum, correct, seen])
        if has_val:
            val_loss, val_acc, _ = ddp.reduced_loss(module, ddp.eval_batches(
                bundle, "val", val_cache, val_size, dist, config.workers, pin), eval_criterion, device, dist)
        else:
            val_loss, val_acc = loss_sum / seen, correct / seen
        row = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
               "val_loss": val_loss, "val_accuracy": val_acc, "lr": optimizer.param_groups[0]["lr"],
               "time_s": time.perf_counter() - epoch_start}
        history.append(row)
        if not main:  # rank 0 alone keeps the books, writes and decides; the others follow its decision
            if dist.broadcast(None):
                break
            continue
        log.info("epoch %d/%d  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f", epoch + 1, config.epochs,
                 row["train_loss"], row["train_accuracy"], val_loss, val_acc)
        improved_loss = val_loss < best.get("best_val_loss", float("inf")) - 1e-4
        if improved_loss:
            best["best_val_loss"] = val_loss
            bad_epochs = 0
        else:
            bad_epochs += 1
        if val_acc > best["val_accuracy"] or (val_acc == best["val_accuracy"] and val_loss < best["val_loss"]):
            best.update(epoch=epoch + 1, val_accuracy=val_acc, val_loss=val_loss)
            save_checkpoint(out / CHECKPOINT_NAME, module, spec, epoch=epoch + 1,
                            metrics={"val_accuracy": val_acc, "val_loss": val_loss}, **common)
        save_checkpoint(out / LAST_NAME, module, spec, epoch=epoch + 1, optimizer=optimizer.state_dict(),
                        scaler=scaler.state_dict() if use_amp else {}, history=history, best=best,
                        bad_epochs=bad_epochs, **common)
        atomic_write_text(out / "history.json", json.dumps(history, indent=2) + "\n")
        if progress_callback:
            progress_callback(Progress(epoch + 1, config.epochs, steps_per_epoch, steps_per_epoch, row["train_loss"],
                                       row["train_accuracy"], row["lr"], True, val_loss, val_acc))
        stop = bool(config.patience and bad_epochs >= config.patience and epoch + 1 < config.epochs)
        if dist.broadcast(stop):  # also tells the other ranks this epoch's checkpoints are on disk
            log.info("early stop: val loss has not improved for %d epochs", bad_epochs)
            stopped_early = True
            break

    if main:
        plots.training_curves(history, out / "curves.png")
    metrics = _final_metrics(out, bundle, spec, best, eval_criterion, device, common, module, dist, config.workers)
    module.to("cpu").eval()
    if not main:
        return None
    result = TrainResult(out, out / CHECKPOINT_NAME, out / LAST_NAME, int(best["epoch"]), len(history),
                         stopped_early, metrics, history, time.perf_counter() - start, dist.world_size)
    atomic_write_text(out / "result.json", json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    return result


def _final_metrics(out: Path, bundle: DataBundle, spec: Any, best: dict[str, Any], criterion: Any, device: str,
                   common: dict[str, Any], module: Any, dist: Dist, workers: int = 0) -> dict[str, Any]:
    """Score the best checkpoint on the test split (sharded over the ranks) and record the figures inside best.pt.

    The best weights go back into the trained module itself: a checkpoint of a user's class is never rebuilt
    from what it names (models/checkpoint.py), and the module already is that class. Distributed, rank 0 reads
    them and sends them to the other ranks (no shared disk needed)."""
    state = read_checkpoint(out / CHECKPOINT_NAME)["state_dict"] if dist.is_main else None
    if dist.distributed:
        state = dist.broadcast(state)
    module.load_state_dict(state)
    metrics: dict[str, Any] = {"best_epoch": int(best["epoch"]), "val_accuracy": float(best["val_accuracy"]),
                               "val_loss": float(best["val_loss"])}
    if bundle.split.get("test"):
        batches = ddp.eval_batches(bundle, "test", None, 128, dist, workers, device.startswith("cuda"))
        loss, acc, n = ddp.reduced_loss(module.to(device), batches, criterion, device, dist)
        metrics.update(test_accuracy=acc, test_loss=loss, test_n=n)
    module.to("cpu")
    if dist.is_main:
        save_checkpoint(out / CHECKPOINT_NAME, module, spec, epoch=int(best["epoch"]), metrics=metrics, **common)
    return metrics
