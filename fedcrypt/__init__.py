"""fedcrypt: privacy-preserving aggregation for federated fine-tuning of LLM adapters.

Subpackages (imported on demand, each usable alone):

* :mod:`fedcrypt.secagg` - pairwise-masking secure aggregation (SecAgg, SecAgg+);
* :mod:`fedcrypt.he` - CKKS homomorphic aggregation through TenSEAL (extra ``he``);
* :mod:`fedcrypt.dp` - clipping, central and distributed noise, accounting (extra ``dp``);
* :mod:`fedcrypt.integrations` - PEFT/LoRA, PyTorch and Flower adapters.

The core (this package, :mod:`fedcrypt.vectors`, :mod:`fedcrypt.crypto`) needs only
numpy and cryptography.
"""

from fedcrypt.errors import FedcryptError
from fedcrypt.vectors import FixedPointCodec, TensorSpec

__version__ = "0.1.0"

__all__ = ["FedcryptError", "FixedPointCodec", "TensorSpec", "__version__"]
