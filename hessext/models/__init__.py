"""The architectures of the studies hessext reproduces.

Each factory takes an optional ``seed``: given one, the parameters are initialised from it
(without touching the caller's global random state), so that a model, its training
(:func:`hessext.training.train`) and hence its Hessian are reproducible from seeds alone.

| model | study | input | parameters |
|---|---|---|---|
| Conv1DToolbox | LL/CDW toolbox (Dawid et al. 2022) | [N, 1, 924] | 740 |
| SSHCNN | disordered SSH (Cybiński et al. 2024) | [N, 1, 50, 50] | 1,024 |
| mlp(2, 100, 100, C) | decision boundary (Sabanayagam et al. 2023) | [N, 2] | 10,703 for C = 3 |
| MNISTCNN3 | decision boundary, 3-class MNIST | [N, 1, 28, 28] | 7,203 |
| SiameseNet(4, 1) | invariants, Kepler pairs (Wetzel et al. 2020) | a, b [N, 4] | 4,547 |
| TwinNet(1) | twin regression (Wetzel et al. 2022) | x1, x2 [N, 1] | 4,417 |
| PhaseCNN | Ising phases (Wetzel; docs/wetzel-ising.md) | [N, 1, L, L] | 11C + 1 (89 for C = 8) |
| PhaseMLP | Ising phases | [N, 1, L, L] | (L² + 2) H + 1 |
| CorrelationProbe | Ising, receptive field → one bottleneck neuron | [N, 1, L, L] | C (kh kw + 2) + 3 |
| IsingAutoencoder | Ising, (variational) autoencoder | [N, 1, L, L] | L² (H + 2) + 2H (VAE: + L² + 1) |
"""

from hessext._internal.params import num_params as num_parameters
from hessext.models.boundary import MNISTCNN3, mlp
from hessext.models.ising import CorrelationProbe, IsingAutoencoder, PhaseCNN, PhaseMLP, spins_to_input
from hessext.models.siamese import SiameseNet, TwinNet
from hessext.models.ssh import SSH_RECIPE, SSHCNN
from hessext.models.toolbox import Conv1DToolbox

__all__ = [
    "Conv1DToolbox",
    "SSHCNN",
    "SSH_RECIPE",
    "mlp",
    "MNISTCNN3",
    "SiameseNet",
    "TwinNet",
    "PhaseCNN",
    "PhaseMLP",
    "CorrelationProbe",
    "IsingAutoencoder",
    "spins_to_input",
    "num_parameters",
]
