"""Per-label AP@k of a test, from the embeddings the test ranked.

The task logs scalar metrics only, so the per-label AP@k of the test queries are
computed here in a second pass: :func:`make_collector` keeps the test embeddings and
labels of every dataloader (query, database) and :func:`per_label` ranks them again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def make_collector() -> Any:
    """A callback that keeps the test embeddings and labels of every dataloader.

    ``test_step`` embeds each batch with the module's forward, so a forward hook
    sees every embedding once; nothing is computed twice.
    """
    from lightning.pytorch.callbacks import Callback

    class TestEmbeddings(Callback):
        def __init__(self) -> None:
            self.parts: dict[int, tuple[list[Any], list[Any]]] = {}
            self._last: Any = None
            self._handle: Any = None

        def _capture(self, module: Any, args: Any, output: Any) -> None:
            self._last = output.detach()

        def on_test_start(self, trainer: Any, pl_module: Any) -> None:
            self.parts = {}
            self._handle = pl_module.register_forward_hook(self._capture)

        def on_test_batch_end(
            self,
            trainer: Any,
            pl_module: Any,
            outputs: Any,
            batch: Any,
            batch_idx: int,
            dataloader_idx: int = 0,
        ) -> None:
            if self._last is None or 'label' not in batch:
                return
            embeddings, labels = self.parts.setdefault(dataloader_idx, ([], []))
            embeddings.append(self._last.float().cpu())
            labels.append(batch['label'].cpu())
            self._last = None

        def on_test_end(self, trainer: Any, pl_module: Any) -> None:
            if self._handle is not None:
                self._handle.remove()
                self._handle = None

    return TestEmbeddings()


def per_label(
    collector: Any, ks: Iterable[int], logged: Mapping[str, float]
) -> dict[str, Any]:
    """Per-label AP@k of the test queries against the database.

    The mAP@k of the collected embeddings must match the logged one (a check that
    the embeddings are the ones the test ranked).
    """
    if sorted(collector.parts) != [0, 1]:
        return {}
    import torch

    from torchgeo_macl.metrics.functional import retrieval_metrics

    q_emb, q_lab = (torch.cat(x) for x in collector.parts[0])
    d_emb, d_lab = (torch.cat(x) for x in collector.parts[1])
    ks = [k for k in ks if k <= d_emb.shape[0]]
    if not ks:
        return {}
    values = retrieval_metrics(
        q_emb, q_lab, d_emb, d_lab, ks, jaccard=False, per_label=True
    )
    for k in ks:
        if (
            f'mAP@{k}' in logged
            and abs(float(values[f'mAP@{k}']) - logged[f'mAP@{k}']) > 1e-4
        ):
            print(
                f'warning: mAP@{k} of the collected test embeddings '
                f'({float(values[f"mAP@{k}"]):.6f}) differs from the logged one '
                f'({logged[f"mAP@{k}"]:.6f}); per-label values left out',
                flush=True,
            )
            return {}
    out: dict[str, Any] = {
        f'per_label_AP@{k}': [float(x) for x in values[f'AP_label@{k}'].tolist()]
        for k in ks
    }
    out['num_queries'] = int(q_emb.shape[0])
    out['num_database'] = int(d_emb.shape[0])
    out['database_label_frequencies'] = [
        float(x) for x in d_lab.float().mean(dim=0).tolist()
    ]
    return out
