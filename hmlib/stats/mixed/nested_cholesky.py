"""Cholesky factor of ``H = I + Lambda' Z' W Z Lambda`` for nested grouping factors, by Schur complements.

With nested grouping factors the random effects of two clusters are coupled
in ``H`` only when one cluster contains the other, so ``H`` is an "arrow"
(tree) matrix: a small block per cluster, plus the blocks that tie it to its
ancestors. Eliminating the innermost clusters first creates no fill-in
beyond those blocks (the ancestors of a cluster are already coupled to each
other), so the factor is a stack of small per-cluster factors, level by
level, computed with vectorised operations over all clusters of a level; no
sparse-matrix library is needed.

For a cluster ``a`` of level ``k`` the eliminated block ``M_a`` is indexed by
its chain (the effects of its ancestors, levels ``0..k-1``, then its own)
followed by ``e`` extra columns (e.g. the fixed-effects design and the
outcome of the gaussian model, so that one pass also yields the Schur
complement that gives ``beta`` and the penalised residual sum of squares,
as lme4's ``R_X``). With ``D_a = L_a L_a'`` its own block and ``B_a`` the
coupling of its own effects to the ancestors and extras, the factor stores
``L_a`` and ``G_a = L_a^-1 B_a``; the parent receives ``-G_a' G_a``. The
extras' final Schur complement is ``E'WE`` minus the sum over the outermost
clusters.

``log det H = 2 sum log diag L_a`` over all clusters. Solves run forwards
(innermost level first) and backwards (outermost first). The blocks of
``H^-1`` on each cluster's chain (the conditional covariances of the
spherical effects, and the per-row leverages of the Laplace gradient) follow
top-down from ``P_own = D^-1 + K P_anc K'``, ``P_cross = -K P_anc`` with
``K = D^-1 B_anc`` (Bates et al. 2015, section 3.2 for the sparse Cholesky
of ``H``; this is its structure for nested factors).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["batched_cholesky", "batched_forward", "batched_backward", "sandwich", "stacked_matvec",
           "summed_products", "NestedFactor", "factorize"]


def batched_cholesky(D: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of a stack of small SPD matrices (m, q, q), vectorised over the stack."""
    q = D.shape[1]
    if q == 1:
        return np.sqrt(D)
    L = np.zeros_like(D)
    for j in range(q):
        s = D[:, j, j] - np.einsum("mk,mk->m", L[:, j, :j], L[:, j, :j]) if j else D[:, j, j]
        L[:, j, j] = np.sqrt(s)
        for i in range(j + 1, q):
            r = D[:, i, j] - np.einsum("mk,mk->m", L[:, i, :j], L[:, j, :j]) if j else D[:, i, j]
            L[:, i, j] = r / L[:, j, j]
    return L


def batched_forward(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Solve ``L Y = B`` for a stack of lower-triangular L (m, q, q) and B (m, q, t)."""
    q = L.shape[1]
    if q == 1:
        return B / L
    Y = np.empty_like(B)
    for i in range(q):
        r = B[:, i, :] - np.einsum("mk,mkt->mt", L[:, i, :i], Y[:, :i, :]) if i else B[:, i, :]
        Y[:, i, :] = r / L[:, i, i, None]
    return Y


def batched_backward(L: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Solve ``L' X = Y`` for a stack of lower-triangular L (m, q, q) and Y (m, q, t)."""
    q = L.shape[1]
    if q == 1:
        return Y / L
    X = np.empty_like(Y)
    for i in reversed(range(q)):
        r = Y[:, i, :] - np.einsum("mk,mkt->mt", L[:, i + 1:, i], X[:, i + 1:, :]) if i < q - 1 else Y[:, i, :]
        X[:, i, :] = r / L[:, i, i, None]
    return X


def sandwich(left: np.ndarray | None, stack: np.ndarray, right: np.ndarray | None) -> np.ndarray:
    """``left @ stack[i] @ right`` for every matrix of a stack (m, a, b); None is the identity.

    Two BLAS products on reshaped arrays: numpy's broadcast ``matmul`` over
    thousands of 2 x 2 matrices costs far more than the arithmetic.
    """
    m, a, b = stack.shape
    out = stack
    if right is not None:
        out = out * right[0, 0] if right.shape == (1, 1) else (out.reshape(m * a, b) @ right).reshape(m, a, -1)
    if left is not None:
        if left.shape == (1, 1):
            out = out * left[0, 0]
        else:
            d = out.shape[2]
            out = (left @ out.transpose(1, 0, 2).reshape(a, m * d)).reshape(-1, m, d).transpose(1, 0, 2)
    return out


def stacked_matvec(stack: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """``stack[i] @ vector`` for every matrix of a stack (m, a, b): (m, a), by one BLAS product."""
    m, a, b = stack.shape
    return (stack.reshape(m * a, b) @ vector).reshape(m, a)


def summed_products(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``sum_i first[i] @ second[i]`` over two stacks (m, a, b) and (m, b, c), by one BLAS product."""
    m, a, b = first.shape
    return first.transpose(1, 0, 2).reshape(a, m * b) @ second.reshape(m * b, -1)


def _outer_sum(gain: np.ndarray) -> np.ndarray:
    """``sum_a G_a' G_a`` over the stack."""
    flat = gain.reshape(-1, gain.shape[2])
    return flat.T @ flat


@dataclass(eq=False)
class NestedFactor:
    """The factor of ``H`` (and of the extras' Schur complement) produced by :func:`factorize`.

    Attributes
    ----------
    q, offsets : tuple of int
        Effects per cluster and chain offsets per level (``offsets[k]`` is
        the chain size of level ``k``'s ancestors, ``t_k``).
    child_starts, ancestors
        From the design (see :class:`~hmlib.stats.mixed.terms.NestedDesign`).
    chol : list of numpy.ndarray
        Per level, ``L_a`` (m_k, q_k, q_k).
    gain : list of numpy.ndarray
        Per level, ``G_a = L_a^-1 [B_anc, B_extra]`` (m_k, q_k, t_k + e).
    logdet : float
        ``log det H``.
    schur : numpy.ndarray or None
        The extras' Schur complement (e, e), None without extras.
    """

    q: tuple
    offsets: tuple
    child_starts: tuple
    ancestors: tuple
    chol: list
    gain: list
    logdet: float
    schur: np.ndarray | None

    def _ancestor_values(self, x: list, k: int) -> np.ndarray:
        """(m_k, t_k): the values of each level-k cluster's ancestors, levels 0..k-1 in order."""
        return np.concatenate([x[j][self.ancestors[k][j]] for j in range(k)], axis=1)

    def forward(self, rhs: list) -> list:
        """Forward elimination of a right-hand side given per level as (m_k, q_k) arrays."""
        n_levels = len(self.q)
        out = [None] * n_levels
        carry = None
        for k in reversed(range(n_levels)):
            t = self.offsets[k]
            r = rhs[k] if carry is None else rhs[k] + carry[:, t:]
            y = batched_forward(self.chol[k], r[:, :, None])[:, :, 0]
            out[k] = y
            if k > 0:
                update = -np.einsum("mqi,mq->mi", self.gain[k][:, :, :t], y)
                if carry is not None:
                    update += carry[:, :t]
                carry = np.add.reduceat(update, self.child_starts[k - 1], axis=0)
        return out

    def backward(self, forward: list | None = None, extra=None) -> list:
        """Back substitution, outermost level first.

        Parameters
        ----------
        forward : list of numpy.ndarray, optional
            Output of :meth:`forward` (zeros when None).
        extra : numpy.ndarray, optional
            Known values of the extra columns (e.g. ``[beta, -1]`` for the
            gaussian system whose last extra column is the outcome).
        """
        x = []
        for k, (chol, gain) in enumerate(zip(self.chol, self.gain)):
            t = self.offsets[k]
            z = np.zeros((chol.shape[0], chol.shape[1])) if forward is None else forward[k].copy()
            if k > 0:
                z -= np.einsum("mqi,mi->mq", gain[:, :, :t], self._ancestor_values(x, k))
            if extra is not None:
                z -= stacked_matvec(np.ascontiguousarray(gain[:, :, t:]), extra)
            x.append(batched_backward(chol, z[:, :, None])[:, :, 0])
        return x

    def solve(self, rhs: list) -> list:
        """``H^-1 rhs`` for a right-hand side given per level as (m_k, q_k) arrays."""
        return self.backward(self.forward(rhs))

    def chain_covariance(self) -> list:
        """Blocks of ``H^-1`` on each cluster's chain: per level (m_k, t_k + q_k, t_k + q_k)."""
        out = []
        for k, (chol, gain) in enumerate(zip(self.chol, self.gain)):
            t, q = self.offsets[k], self.q[k]
            m = chol.shape[0]
            inv_chol = batched_forward(chol, np.broadcast_to(np.eye(q), (m, q, q)))
            own = np.einsum("mji,mjk->mik", inv_chol, inv_chol)       # D^-1 = L^-T L^-1
            if k == 0:
                out.append(own)
                continue
            K = batched_backward(chol, np.ascontiguousarray(gain[:, :, :t]))   # D^-1 B_anc
            P_anc = out[k - 1][self.ancestors[k][k - 1]]
            cross = -K @ P_anc                                         # (m, q, t)
            own = own - cross @ np.swapaxes(K, 1, 2)
            P = np.empty((m, t + q, t + q))
            P[:, :t, :t] = P_anc
            P[:, t:, :t] = cross
            P[:, :t, t:] = np.swapaxes(cross, 1, 2)
            P[:, t:, t:] = own
            out.append(P)
        return out


def factorize(q: tuple, offsets: tuple, child_starts: tuple, ancestors: tuple, own: list, coupling: list,
              extra_cross=None) -> NestedFactor:
    """Factor ``H`` level by level, innermost first.

    Parameters
    ----------
    q, offsets, child_starts, ancestors
        The structure (from :class:`~hmlib.stats.mixed.terms.NestedDesign`).
    own : list of numpy.ndarray
        Per level, ``Lambda_k' (sum_rows w v_k v_k') Lambda_k`` (m_k, q_k, q_k)
        without the identity.
    coupling : list of numpy.ndarray
        Per level, the coupling of the own effects to the ancestors' effects
        (scaled by their Lambda) and to the extra columns: (m_k, q_k, t_k + e).
    extra_cross : numpy.ndarray, optional
        ``E' W E`` (e, e) when there are extra columns.

    Returns
    -------
    NestedFactor
    """
    n_levels = len(q)
    chol, gain = [None] * n_levels, [None] * n_levels
    logdet = 0.0
    carry = None
    schur = None
    for k in reversed(range(n_levels)):
        t, qk = offsets[k], q[k]
        D = own[k] + np.eye(qk)
        B = coupling[k]
        if carry is not None:
            tail = np.r_[0:t, t + qk:carry.shape[1]]
            D = D + carry[:, t:t + qk, t:t + qk]
            B = B + carry[:, t:t + qk, tail]
        L = batched_cholesky(D)
        G = batched_forward(L, B)
        chol[k], gain[k] = L, G
        logdet += 2.0 * float(np.log(np.diagonal(L, axis1=1, axis2=2)).sum())
        if k > 0:
            update = -np.einsum("mqi,mqj->mij", G, G)
            if carry is not None:
                update += carry[:, tail][:, :, tail]
            carry = np.add.reduceat(update, child_starts[k - 1], axis=0)
        elif extra_cross is not None:
            schur = extra_cross - _outer_sum(G)
            if carry is not None:
                schur = schur + carry[:, qk:, qk:].sum(axis=0)
    return NestedFactor(q=tuple(q), offsets=tuple(offsets), child_starts=child_starts, ancestors=ancestors,
                        chol=chol, gain=gain, logdet=logdet, schur=schur)
