"""torchgeo-macl: multi-label adaptive contrastive learning for remote-sensing retrieval.

A TorchGeo plugin that adds multi-label retrieval datasets (DLRSD, ML-AID, WHDLD),
contrastive losses (MACL and baselines), a label-aware batch sampler, retrieval
metrics, a faiss-backed embedding index and a Lightning retrieval task.
"""

__version__ = '0.1.0'
