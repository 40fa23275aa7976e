"""RetrievalTask under bf16 autocast, Lightning's bf16-mixed precision and torch.compile.

The autouse ``tiny_models`` fixture of this directory builds timm's tiny test ResNet
whatever backbone name the task is given.
"""

import copy
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer
from torch import Tensor

from torchgeo_macl.datamodules import DLRSDRetrievalDataModule
from torchgeo_macl.datasets import make_synthetic_dlrsd
from torchgeo_macl.tasks import RetrievalTask

LOSSES = ('macl', 'supcon', 'mulsupcon')
CLASSES = 5


def _task(loss: str, **kwargs: Any) -> RetrievalTask:
    task = RetrievalTask(
        model='resnet18',
        num_classes=CLASSES,
        embed_dim=8,
        proj_hidden_dim=16,
        loss=loss,
        image_size=32,
        ks=(1, 5),
        monitor='val_mAP@5',
        **kwargs,
    )
    setter = getattr(task.criterion, 'set_label_frequencies', None)
    if setter is not None:
        setter(torch.linspace(0.6, 0.1, CLASSES))
    task.log = lambda *args, **kwargs: None  # type: ignore[method-assign]
    return task


def _batch(b: int = 6, size: int = 32, seed: int = 0) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(b, 3, size, size, generator=gen)
    label = (torch.rand(b, CLASSES, generator=gen) < 0.4).long()
    label[torch.arange(b), torch.arange(b) % CLASSES] = 1
    return {'image': image, 'label': label}


def _grads_finite(task: RetrievalTask) -> bool:
    grads = [p.grad for p in task.parameters() if p.grad is not None]
    return bool(grads) and all(bool(torch.isfinite(g).all()) for g in grads)


# 32 px views, not 16: with 16 px the tiny ResNet's last stage convolves a 1 x 1 map
# with a 3 x 3, stride-2 kernel, where PyTorch's oneDNN bf16 convolution backward
# (torch 2.14.1, oneDNN 3.12) now and then returns a non-finite weight gradient for
# finite inputs, whatever the model around it.
@pytest.mark.parametrize('loss', LOSSES)
def test_training_step_under_cpu_bf16_autocast(loss: str) -> None:
    torch.manual_seed(0)
    task = _task(loss)
    task.train()
    dtypes: list[torch.dtype] = []
    task.projection.register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        value = task.training_step(_batch(), 0)
    assert dtypes == [torch.bfloat16]  # autocast reached the model
    assert value.dtype == torch.float32
    assert torch.isfinite(value)
    value.backward()
    assert _grads_finite(task)
    assert all(p.dtype == torch.float32 for p in task.parameters())


@pytest.fixture
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp('synthetic')
    make_synthetic_dlrsd(root, num_images=48, image_size=32, seed=0)
    return root


@pytest.mark.parametrize('loss', LOSSES)
def test_one_step_with_bf16_mixed_trainer(
    loss: str,
    synthetic_root: Path,
    tmp_path: Path,
    quiet_trainer: Callable[..., Trainer],
) -> None:
    torch.manual_seed(0)
    task = RetrievalTask(
        model='resnet18',
        embed_dim=8,
        proj_hidden_dim=16,
        loss=loss,
        ks=(1, 5),
        monitor='val_mAP@5',
    )
    datamodule = DLRSDRetrievalDataModule(
        root=str(synthetic_root), batch_size=8, split_fractions=(0.5, 0.25, 0.25)
    )
    trainer = quiet_trainer(
        tmp_path,
        precision='bf16-mixed',
        max_steps=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
    )
    dtypes: list[torch.dtype] = []
    task.projection.register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))
    trainer.fit(task, datamodule=datamodule)
    assert trainer.global_step == 1
    assert dtypes == [torch.bfloat16]  # the step ran under bf16 autocast
    value = float(trainer.callback_metrics['train_loss'])
    assert math.isfinite(value)
    assert value > 0
    assert all(bool(torch.isfinite(p).all()) for p in task.parameters())
    assert all(p.dtype == torch.float32 for p in task.parameters())


def _compile_unavailable() -> str | None:
    """Why torch.compile cannot run on this machine, or None when it can."""
    if not torch._dynamo.is_dynamo_supported():
        return 'torch.compile (TorchDynamo) is not supported on this Python/platform'
    # Inductor compiles the generated CPU kernels with a C++ compiler.
    if not any(shutil.which(cxx) for cxx in ('g++', 'c++', 'clang++')):
        return 'no C++ compiler (g++, c++ or clang++) for the inductor CPU backend'
    return None


@pytest.mark.slow
def test_compiled_backbone_matches_eager() -> None:
    reason = _compile_unavailable()
    if reason is not None:
        pytest.skip(reason)
    torch.manual_seed(0)
    task = _task('macl')
    reference = copy.deepcopy(task)
    task.backbone = torch.compile(task.backbone)
    batch = _batch()

    task.eval()
    reference.eval()
    with torch.no_grad():
        expected = reference(batch['image'])
        embedding = task(batch['image'])
    torch.testing.assert_close(embedding, expected, atol=1e-5, rtol=1e-4)

    task.train()
    reference.train()
    torch.manual_seed(1)  # the same random views for both
    expected_loss = reference.training_step(batch, 0)
    expected_loss.backward()
    torch.manual_seed(1)
    value = task.training_step(batch, 0)
    value.backward()
    assert torch.isfinite(value)
    torch.testing.assert_close(value, expected_loss, atol=1e-5, rtol=1e-4)
    assert _grads_finite(task)
    for (name, p), q in zip(task.named_parameters(), reference.parameters()):
        assert p.grad is not None, name
        assert q.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-3, msg=name)
