"""The shared PCA: exact and randomised paths agree with a dense reference."""

import numpy as np
import pytest
import torch

from sfvq.pca import pca


@pytest.mark.parametrize(("N", "D", "k"), [(300, 20, 5), (1200, 700, 8)])
def test_pca_matches_a_dense_eigendecomposition(N, D, k):
    g = np.random.default_rng(0)
    scales = 3.0 / (np.arange(D) + 1.0)  # well-separated top eigenvalues
    X = (g.standard_normal((N, D)) * scales) @ np.linalg.qr(g.standard_normal((D, D)))[0].T + 2.0
    p = pca(X.astype(np.float32), k)
    cov = np.cov(X, rowvar=False)
    w, v = np.linalg.eigh(cov)
    order = np.argsort(w)[::-1][:k]
    # Same axes up to sign, the same spread along each, and the documented sign rule.
    cos = np.abs((p.components.double().numpy() @ v[:, order]).diagonal())
    assert cos.min() > 0.999
    np.testing.assert_allclose(p.std.numpy() ** 2, w[order], rtol=2e-3)
    np.testing.assert_allclose(p.explained.numpy(), w[order] / w.sum(), rtol=2e-3)
    big = p.components.gather(1, p.components.abs().argmax(1, keepdim=True))
    assert (big > 0).all()
    torch.testing.assert_close(p.mean, torch.from_numpy(X.mean(0)).float(), atol=1e-4, rtol=0)


def test_pca_refuses_bad_input():
    with pytest.raises(ValueError, match="shape"):
        pca(np.zeros(5), 2)
    with pytest.raises(ValueError, match="at least 2 samples"):
        pca(np.zeros((1, 3)), 2)
    with pytest.raises(ValueError, match="positive integer"):
        pca(np.zeros((4, 3)), 0)
