"""Multi-process training, mixed precision, gradient checkpointing, resumption, preemption."""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from cmpt_lightning import CMPTModel, CMPTModule, MissingConfig, SyntheticDataModule
from tests.helpers import cmpt

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo_random.yaml")


def _cmpt(args, *, env=None, check=True, timeout=300):
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "cmpt_lightning", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def _in_process(args) -> None:
    """``cmpt ARGS`` in this process, for a run that needs none of its own (no signal to take,
    no second rank): saves starting an interpreter. The determinism switch and the environment
    (``PL_GLOBAL_SEED``, ``CUBLAS_WORKSPACE_CONFIG``) that a run sets are put back after it."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    environ = dict(os.environ)
    try:
        assert cmpt([str(a) for a in args]) == 0, args
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        os.environ.clear()
        os.environ.update(environ)


def _last_metrics(root: Path, prefix: str = "test/") -> dict:
    rows = []
    for path in sorted(root.rglob("metrics.csv")):
        with path.open() as f:
            rows += [
                r
                for r in csv.DictReader(f)
                if any(v and k.startswith(prefix) for k, v in r.items())
            ]
    assert rows, f"no {prefix} metrics under {root}"
    return {
        k: float(v) for k, v in rows[-1].items() if v and k.startswith(prefix) and "loss" not in k
    }


def test_bf16_mixed_fit_and_test_on_cpu(tmp_path):
    seed_everything(0)
    module = CMPTModule(num_classes=6)
    data = SyntheticDataModule(
        train_size=48,
        val_size=16,
        test_size=16,
        batch_size=16,
        train_missing=MissingConfig(rate=0.5, type="both"),
    )
    trainer = Trainer(
        accelerator="cpu",
        precision="bf16-mixed",
        max_steps=3,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        limit_val_batches=1,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=data)
    metrics = trainer.test(module, datamodule=data, verbose=False)[0]
    assert torch.isfinite(torch.tensor(metrics["test/loss"]))
    # mixed, not converted: the trainable weights stay fp32 (the frozen towers are stored in
    # bf16, see tests/models/test_precision.py)
    assert all(p.dtype == torch.float32 for p in module.parameters() if p.requires_grad)


def test_gradient_checkpointing_gives_the_same_gradients(batch):
    images, texts = batch
    present = torch.tensor([True, True, False, True]), torch.tensor([True, False, True, True])
    grads = []
    for checkpointing in (False, True):
        model = CMPTModel("cmpt-tiny", 3, grad_checkpointing=checkpointing).train()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.linspace(-0.1, 0.1, p.numel()).reshape(p.shape))
        model(images, texts, *present).logits.square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5, msg=name)


SMALL = [
    "--data.init_args.train_size",
    "60",
    "--data.init_args.val_size",
    "21",
    "--data.init_args.test_size",
    "45",
    "--data.init_args.batch_size",
    "8",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.accelerator",
    "cpu",
]


def test_ddp_fit_then_test_on_one_process_matches(tmp_path):
    """2 gloo processes, batches that lack the text altogether (no unused-parameter error)."""
    fit_dir = tmp_path / "fit"
    _cmpt(
        [
            "fit",
            "--config",
            DEMO,
            *SMALL,
            "--trainer.max_epochs",
            "2",
            "--trainer.strategy",
            "ddp",
            "--trainer.devices",
            "2",
            "--data.init_args.train_missing.rate",
            "1.0",
            "--data.init_args.train_missing.type",
            "text",
            "--trainer.default_root_dir",
            str(fit_dir),
            "--test_after_fit",
            "true",
        ]
    )
    ddp_metrics = _last_metrics(fit_dir)
    (best,) = fit_dir.rglob("best-*.ckpt")
    test_dir = tmp_path / "test"
    _in_process(
        [
            "test",
            "--config",
            DEMO,
            *SMALL,
            "--trainer.devices",
            "1",
            "--trainer.default_root_dir",
            str(test_dir),
            "--ckpt_path",
            str(best),
        ]
    )
    assert _last_metrics(test_dir) == ddp_metrics
    assert (
        ddp_metrics["test/count_complete"]
        + ddp_metrics["test/count_image_only"]
        + ddp_metrics["test/count_text_only"]
        == 45
    )


def _trainable(path):
    state = torch.load(path, weights_only=True)["state_dict"]
    return {k: v for k, v in state.items()}


RESUME = [
    "--config",
    DEMO,
    "--data.init_args.train_size",
    "96",
    "--data.init_args.val_size",
    "16",
    "--data.init_args.test_size",
    "16",
    "--data.init_args.batch_size",
    "8",
    "--data.init_args.train_missing.rate",
    "0.5",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.accelerator",
    "cpu",
    "--trainer.max_steps",
    "30",
    "--trainer.deterministic",
    "true",
    "--test_after_fit",
    "false",
    "--trainer.callbacks+=ModelCheckpoint",
    "--trainer.callbacks.every_n_train_steps",
    "5",
    "--trainer.callbacks.save_top_k",
    "-1",
    "--trainer.callbacks.filename",
    "step-{step}",
]


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, workers):
    resume = [*RESUME, "--data.init_args.num_workers", str(workers)]
    whole = tmp_path / "whole"
    _in_process(["fit", *resume, "--trainer.default_root_dir", str(whole)])
    broken = tmp_path / "broken"
    result = _cmpt(
        [
            "fit",
            *resume,
            "--trainer.default_root_dir",
            str(broken),
            "--trainer.callbacks+=tests.helpers.KillAtStep",
            "--trainer.callbacks.step",
            "16",
        ],
        check=False,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    (mid,) = broken.rglob("step-step=15.ckpt")  # mid-epoch: 12 batches per epoch
    _in_process(
        ["fit", *resume, "--trainer.default_root_dir", str(broken), "--ckpt_path", str(mid)]
    )
    (final_whole,) = whole.rglob("step-step=30.ckpt")
    (final_resumed,) = broken.rglob("step-step=30.ckpt")
    a, b = _trainable(final_whole), _trainable(final_resumed)
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0, msg=name)


def test_slurm_requeue_signal_writes_a_resumable_checkpoint(tmp_path):
    """Lightning's SLURM auto-requeue: SIGUSR1 saves hpc_ckpt_1.ckpt; a restart resumes it."""
    slurm = {
        "SLURM_JOB_ID": "4242",
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NAME": "cmpt-test",
        "SLURM_NODELIST": "localhost",
        "SLURM_LOCALID": "0",
        "SLURM_PROCID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NTASKS_PER_NODE": "1",
    }
    root = tmp_path / "run"
    args = ["fit", *RESUME, "--trainer.default_root_dir", str(root)]
    first = _cmpt(
        [
            *args,
            "--trainer.callbacks+=tests.helpers.KillAtStep",
            "--trainer.callbacks.step",
            "12",
            "--trainer.callbacks.signal_name",
            "SIGUSR1",
            "--trainer.max_steps",
            "14",
        ],
        env=slurm,
    )
    assert "Handling auto-requeue signal" in first.stderr + first.stdout
    hpc = root / "hpc_ckpt_1.ckpt"
    assert hpc.is_file()
    assert torch.load(hpc, weights_only=True)["global_step"] == 12
    second = _cmpt(args, env=slurm)  # a requeued job: same command, resumes from hpc_ckpt_1
    assert "Restoring states from the checkpoint path at" in second.stderr + second.stdout
    assert "hpc_ckpt_1.ckpt" in second.stderr + second.stdout


FOOD = Path(__file__).resolve().parent / "data" / "food101" / "header"


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_resume_after_sigkill_from_a_cache_matches_uninterrupted_run(tmp_path, workers):
    """The same as above, training from a litdata cache in its streaming order."""
    pytest.importorskip("litdata")
    from cmpt_lightning.datamodules.cache_writer import write_cache
    from cmpt_lightning.datamodules.food101 import Food101DataModule

    cache = tmp_path / "cache"
    write_cache(Food101DataModule(root=str(FOOD), val_fraction=0.2), str(cache), verbose=False)
    resume = [
        "--config", str(ROOT / "configs" / "food101.yaml"),
        "--model.init_args.clip", "cmpt-tiny",
        "--model.init_args.pretrained", "null",
        "--data.init_args.root", "unused",
        "--data.init_args.cache", str(cache),
        "--data.init_args.val_fraction", "0.2",
        "--data.init_args.batch_size", "2",  # 16 training samples: 8 batches an epoch
        "--data.init_args.num_workers", str(workers),
        *RESUME[RESUME.index("--trainer.enable_progress_bar"):],
        "--trainer.precision", "32-true",
        "--trainer.max_steps", "20",
        "--trainer.limit_val_batches", "0",
    ]  # fmt: skip
    whole = tmp_path / "whole"
    _in_process(["fit", *resume, "--trainer.default_root_dir", str(whole)])
    broken = tmp_path / "broken"
    killed = [*resume, "--trainer.default_root_dir", str(broken)]
    killed += ["--trainer.callbacks+=tests.helpers.KillAtStep", "--trainer.callbacks.step", "12"]
    result = _cmpt(["fit", *killed], check=False)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    (mid,) = broken.rglob("step-step=10.ckpt")  # mid-epoch: the third batch of epoch 2
    _in_process(
        ["fit", *resume, "--trainer.default_root_dir", str(broken), "--ckpt_path", str(mid)]
    )
    (final_whole,) = whole.rglob("step-step=20.ckpt")
    (final_resumed,) = broken.rglob("step-step=20.ckpt")
    a, b = _trainable(final_whole), _trainable(final_resumed)
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0, msg=name)


@pytest.mark.slow
def test_ddp_from_a_cache_splits_each_epoch_among_the_processes(tmp_path):
    """2 gloo processes stream a cache: each epoch reads every training sample once."""
    pytest.importorskip("litdata")
    from cmpt_lightning.datamodules.cache_writer import write_cache
    from cmpt_lightning.datamodules.food101 import Food101DataModule

    cache = tmp_path / "cache"
    write_cache(Food101DataModule(root=str(FOOD), val_fraction=0.2), str(cache), verbose=False)
    batches = tmp_path / "batches.txt"
    args = [
        "fit", "--config", str(ROOT / "configs" / "food101.yaml"),
        "--model.init_args.clip", "cmpt-tiny", "--model.init_args.pretrained", "null",
        "--data.init_args.root", "unused", "--data.init_args.cache", str(cache),
        "--data.init_args.val_fraction", "0.2", "--data.init_args.batch_size", "2",
        "--data.init_args.num_workers", "1", "--trainer.accelerator", "cpu",
        "--trainer.devices", "2", "--trainer.strategy", "ddp",
        "--trainer.precision", "32-true", "--trainer.max_epochs", "2",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path / "run"),
        "--trainer.callbacks+=tests.helpers.RecordBatches",
        "--trainer.callbacks.path", str(batches),
    ]  # fmt: skip
    _cmpt(args)
    seen: dict[int, list[int]] = {}
    for line in batches.read_text().splitlines():
        step, indices = line.split(" ", 1)
        seen.setdefault(int(step) // 4, []).extend(json.loads(indices))  # 4 steps an epoch
    assert sorted(seen) == [0, 1]
    for epoch in seen.values():
        assert sorted(epoch) == list(range(16))  # both ranks together: every sample once
