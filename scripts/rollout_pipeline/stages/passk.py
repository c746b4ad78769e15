"""Unbiased pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code").

pass@k for one prompt with n samples of which c pass is 1 - C(n-c, k) / C(n, k): the chance
that k samples drawn without replacement from the n contain at least one pass. The binomials
overflow floats for large n, so it is computed in the paper's product form:

    1 - prod_{i = n-c+1}^{n} (1 - k / i)
"""

from __future__ import annotations

from collections.abc import Mapping


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one prompt: n samples, c of them passing, 1 <= k <= n."""
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"need n >= 1 and 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        # Fewer than k failures: every k-subset contains a pass (the product would hit 1 - k/k = 0 too,
        # but returning exactly 1.0 avoids a rounding residue).
        return 1.0
    survive = 1.0
    for i in range(n - c + 1, n + 1):
        survive *= 1.0 - k / i
    return 1.0 - survive


def powers_of_two_up_to(n: int) -> list[int]:
    """k = 1, 2, 4, ... <= n (empty for n < 1): the k's reported in metrics and plots."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    return ks


def mean_pass_at_k(group_counts: Mapping[tuple[int, int], int]) -> dict[int, tuple[float, int]]:
    """Average pass@k over prompts, for k = 1, 2, 4, ... <= the largest group.

    `group_counts` maps (n, c) -> how many prompts had n rollouts with c passes; keeping this
    histogram instead of one entry per prompt bounds memory by the group size, not the prompt count.
    A prompt contributes to pass@k only when its own n >= k (pass@k is undefined for k > n), so with
    unequal group sizes the large-k values average over fewer prompts. Returns k -> (mean, prompts used).
    """
    max_n = max((n for n, _ in group_counts), default=0)
    result: dict[int, tuple[float, int]] = {}
    for k in powers_of_two_up_to(max_n):
        total, prompts = 0.0, 0
        for (n, c), count in group_counts.items():
            if n >= k:
                total += pass_at_k(n, c, k) * count
                prompts += count
        result[k] = (total / prompts, prompts)
    return result
