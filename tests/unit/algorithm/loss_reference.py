"""Independent brute-force versions of the losses: plain Python loops over groups, rollouts,
tokens and pairs, in float64, written from the papers' formulas (not from the vectorised code).

Every function takes a :class:`Raw` batch (the ``lp`` tensor is the leaf to differentiate) and
returns a 0-dim float64 tensor, so that ``torch.autograd.grad`` gives the reference gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from nemo_rence.algorithm.losses import LossBatch


@dataclass
class Raw:
    """A random batch. Tensors are [N, T] / [N]; ``lp`` may require grad."""

    lp: Tensor
    old: Tensor
    ref: Tensor
    mask: Tensor
    rewards: Tensor
    group_ids: Tensor
    kl_coef: float = 0.0
    progress: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_batch(self, lp: Tensor, **kw) -> LossBatch:
        args = dict(
            logprobs=lp,
            old_logprobs=self.old.to(lp.dtype),
            ref_logprobs=self.ref.to(lp.dtype),
            mask=self.mask,
            rewards=self.rewards,
            group_ids=self.group_ids,
            kl_coef=self.kl_coef,
            progress=self.progress,
        )
        args.update(kw)
        return LossBatch(**args)

    def select(self, rows: list[int]) -> Raw:
        idx = torch.tensor(rows, dtype=torch.long)
        return Raw(
            self.lp[idx],
            self.old[idx],
            self.ref[idx],
            self.mask[idx],
            self.rewards[idx],
            self.group_ids[idx],
            self.kl_coef,
            self.progress,
        )


def make_raw(
    seed: int,
    group_sizes: tuple[int, ...] = (3, 1, 4, 2, 5, 3),
    width: int = 6,
    reward_values: tuple[float, ...] = (0.0, 0.1, 1.0),
    spread: float = 0.3,
    dtype: torch.dtype = torch.float64,
    kl_coef: float = 0.05,
    progress: float = 0.17,
) -> Raw:
    """Ragged groups, rows shuffled (groups not contiguous), right padding with huge garbage."""
    g = torch.Generator().manual_seed(seed)
    n = sum(group_sizes)
    ids = torch.cat([torch.full((k,), 100 + 7 * j) for j, k in enumerate(group_sizes)])
    perm = torch.randperm(n, generator=g)
    group_ids = ids[perm]
    lengths = torch.randint(1, width + 1, (n,), generator=g)
    mask = torch.arange(width)[None, :] < lengths[:, None]
    old = -3.0 * torch.rand(n, width, generator=g, dtype=torch.float64) - 0.01
    lp = old + spread * torch.randn(n, width, generator=g, dtype=torch.float64)
    ref = old + spread * torch.randn(n, width, generator=g, dtype=torch.float64)
    garbage = 1e3 * torch.randn(n, width, generator=g, dtype=torch.float64)
    lp = torch.where(mask, lp, garbage)
    old = torch.where(mask, old, -garbage)
    ref = torch.where(mask, ref, garbage)
    values = torch.tensor(reward_values, dtype=torch.float64)
    rewards = values[torch.randint(0, len(reward_values), (n,), generator=g)]
    return Raw(
        lp.to(dtype),
        old.to(dtype),
        ref.to(dtype),
        mask,
        rewards.to(dtype),
        group_ids,
        kl_coef,
        progress,
    )


# ---- loops ----------------------------------------------------------------------------------------


def groups_of(raw: Raw) -> list[list[int]]:
    """Row indices per group, groups in order of first appearance, rows in batch order."""
    order: dict[int, list[int]] = {}
    for i, gid in enumerate(raw.group_ids.tolist()):
        order.setdefault(gid, []).append(i)
    return list(order.values())


def tokens(raw: Raw, i: int) -> list[int]:
    return [t for t in range(raw.mask.shape[1]) if bool(raw.mask[i, t])]


def seq_sum(x: Tensor, raw: Raw, i: int) -> Tensor:
    total = torch.zeros((), dtype=torch.float64)
    for t in tokens(raw, i):
        total = total + x[i, t]
    return total


def seq_len(raw: Raw, i: int) -> int:
    return max(len(tokens(raw, i)), 1)


def split(raw: Raw, idx: list[int]) -> tuple[list[int], list[int]]:
    rs = [float(raw.rewards[i]) for i in idx]
    rmax = max(rs)
    pos = [i for i in idx if float(raw.rewards[i]) == rmax]
    neg = [i for i in idx if float(raw.rewards[i]) != rmax]
    return pos, neg


def lse(xs: list[Tensor]) -> Tensor:
    return torch.logsumexp(torch.stack(xs), 0)


def log_sigmoid(x: Tensor) -> Tensor:
    return -torch.nn.functional.softplus(-x)


def k3_token(lp_q: Tensor, lp_p: Tensor) -> Tensor:
    d = lp_p - lp_q
    return torch.exp(d) - d - 1.0


def k_token(name: str, lp_q: Tensor, lp_p: Tensor) -> Tensor:
    d = lp_p - lp_q
    if name == "k1":
        return -d
    if name == "k2":
        return 0.5 * d * d
    return torch.exp(d) - d - 1.0


def group_count(raw: Raw, num_groups: int | None) -> int:
    return num_groups if num_groups is not None else len(groups_of(raw))


def token_count(raw: Raw, num_tokens: int | None) -> float:
    return float(num_tokens) if num_tokens is not None else float(raw.mask.sum())


# ---- ReNCE ----------------------------------------------------------------------------------------


def rence(
    raw: Raw,
    lp: Tensor,
    *,
    beta=0.1,
    alpha=0.5,
    margin="reward_scaled",
    objective="mnce",
    use_kl=True,
    kl_estimator="k3",
    score_norm="sum",
    num_groups=None,
    draws: Tensor | None = None,
) -> Tensor:
    lp = lp.double()
    old = raw.old.double()
    total = torch.zeros((), dtype=torch.float64)
    for gi, idx in enumerate(groups_of(raw)):
        pos, neg = split(raw, idx)
        rmax = max(float(raw.rewards[i]) for i in idx)

        m = {}
        for i in idx:
            if margin == "reward_scaled":
                m[i] = rmax - float(raw.rewards[i])
            elif margin == "constant":
                m[i] = 0.0 if i in pos else 1.0
            else:
                m[i] = 0.0
        norm = {i: float(seq_len(raw, i)) if score_norm == "token_mean" else 1.0 for i in idx}
        s = {
            i: beta * (seq_sum(lp, raw, i) - seq_sum(old, raw, i)) / norm[i] + alpha * m[i]
            for i in idx
        }
        if not neg:
            continue
        if objective == "mnce":
            terms = [-(s[i] - lse([s[i]] + [s[j] for j in neg])) for i in pos]
            total = total + sum(terms) / len(pos)
        elif objective == "softmax":
            terms = [-(s[i] - lse([s[k] for k in idx])) for i in pos]
            total = total + sum(terms) / len(pos)
        elif objective == "all_pairs":
            terms = [-log_sigmoid(s[i] - s[j]) for i in pos for j in neg]
            total = total + sum(terms) / (len(pos) * len(neg))
        elif objective == "random_pair":
            assert draws is not None
            u = draws[gi]
            ip = max(pos, key=lambda i: float(u[idx.index(i)]))
            jn = max(neg, key=lambda j: float(u[idx.index(j)]))
            total = total + -log_sigmoid(s[ip] - s[jn])
    loss = total / group_count(raw, num_groups)
    if use_kl and raw.kl_coef > 0:
        loss = loss + raw.kl_coef * trust_region_kl(raw, lp, kl_estimator, num_groups)
    return loss


def trust_region_kl(raw: Raw, lp: Tensor, estimator: str = "k3", num_groups=None) -> Tensor:
    old = raw.old.double()
    total = torch.zeros((), dtype=torch.float64)
    for idx in groups_of(raw):
        g = torch.zeros((), dtype=torch.float64)
        for i in idx:
            per = sum(
                (k_token(estimator, old[i, t], lp[i, t]) for t in tokens(raw, i)),
                torch.zeros((), dtype=torch.float64),
            )
            g = g + per / seq_len(raw, i)
        total = total + g / len(idx)
    return total / group_count(raw, num_groups)


def semi_online_dpo(raw: Raw, lp: Tensor, *, beta=0.1, use_ref=True, num_groups=None) -> Tensor:
    lp = lp.double()
    ref = (raw.ref if use_ref else raw.old).double()
    total = torch.zeros((), dtype=torch.float64)
    for idx in groups_of(raw):
        pos, neg = split(raw, idx)
        if not neg:
            continue
        h = {i: beta * (seq_sum(lp, raw, i) - seq_sum(ref, raw, i)) for i in idx}
        terms = [-log_sigmoid(h[i] - h[j]) for i in pos for j in neg]
        total = total + sum(terms) / (len(pos) * len(neg))
    return total / group_count(raw, num_groups)


# ---- ConSPO ---------------------------------------------------------------------------------------


def conspo(
    raw: Raw,
    lp: Tensor,
    *,
    tau=10.0,
    margin_max=0.01,
    warmup=0.3,
    margin_schedule="cosine",
    num_groups=None,
) -> Tensor:
    lp = lp.double()
    rho = min(raw.progress / warmup, 1.0)
    m_t = {
        "cosine": margin_max / 2 * (1 - math.cos(math.pi * rho)),
        "constant": margin_max,
        "none": 0.0,
    }[margin_schedule]
    total = torch.zeros((), dtype=torch.float64)
    for idx in groups_of(raw):
        pos, neg = split(raw, idx)
        if not neg:
            continue
        s = {i: seq_sum(lp, raw, i) / seq_len(raw, i) for i in idx}
        j = torch.zeros((), dtype=torch.float64)
        for i in pos:
            a = (s[i] - m_t) / tau
            j = j + tau * (a - lse([a] + [s[k] / tau for k in neg]))
        total = total - j / len(pos)
    return total / group_count(raw, num_groups)


# ---- policy-gradient family -----------------------------------------------------------------------


def advantages(
    raw: Raw, *, scale=True, eps=1e-6, rewards: list[float] | None = None
) -> dict[int, float]:
    r = rewards if rewards is not None else [float(x) for x in raw.rewards]
    out = {}
    for idx in groups_of(raw):
        mean = sum(r[i] for i in idx) / len(idx)
        std = math.sqrt(sum((r[i] - mean) ** 2 for i in idx) / len(idx))
        for i in idx:
            out[i] = (r[i] - mean) / (std + eps) if scale else r[i] - mean
    return out


def ppo_token(ratio: Tensor, a: float, lo: float, hi: float) -> Tensor:
    clipped = torch.clamp(ratio, 1 - lo, 1 + hi)
    return -torch.minimum(ratio * a, clipped * a)


def grpo(raw: Raw, lp: Tensor, *, eps=0.2, kl_beta=0.0, num_groups=None) -> Tensor:
    lp = lp.double()
    old, ref = raw.old.double(), raw.ref.double()
    adv = advantages(raw)
    total = torch.zeros((), dtype=torch.float64)
    for idx in groups_of(raw):
        g = torch.zeros((), dtype=torch.float64)
        for i in idx:
            seq = torch.zeros((), dtype=torch.float64)
            for t in tokens(raw, i):
                seq = seq + ppo_token(torch.exp(lp[i, t] - old[i, t]), adv[i], eps, eps)
                if kl_beta > 0:
                    seq = seq + kl_beta * k3_token(lp[i, t], ref[i, t])
            g = g + seq / seq_len(raw, i)
        total = total + g / len(idx)
    return total / group_count(raw, num_groups)


def overlong(length: float, max_len: int, cache_len: int) -> float:
    if length <= max_len - cache_len:
        return 0.0
    if length <= max_len:
        return ((max_len - cache_len) - length) / cache_len
    return -1.0


def dapo(
    raw: Raw,
    lp: Tensor,
    *,
    eps_low=0.2,
    eps_high=0.28,
    overlong_shaping=False,
    overlong_max_len=20480,
    overlong_cache_len=4096,
    num_tokens=None,
) -> Tensor:
    lp = lp.double()
    old = raw.old.double()
    r = [float(x) for x in raw.rewards]
    if overlong_shaping:
        r = [
            r[i] + overlong(len(tokens(raw, i)), overlong_max_len, overlong_cache_len)
            for i in range(len(r))
        ]
    adv = advantages(raw, rewards=r)
    total = torch.zeros((), dtype=torch.float64)
    for i in range(lp.shape[0]):
        for t in tokens(raw, i):
            total = total + ppo_token(torch.exp(lp[i, t] - old[i, t]), adv[i], eps_low, eps_high)
    return total / token_count(raw, num_tokens)


def dr_grpo(raw: Raw, lp: Tensor, *, eps=0.2, norm_len=6656, num_groups=None) -> Tensor:
    lp = lp.double()
    old = raw.old.double()
    adv = advantages(raw, scale=False)
    total = torch.zeros((), dtype=torch.float64)
    for idx in groups_of(raw):
        g = torch.zeros((), dtype=torch.float64)
        for i in idx:
            for t in tokens(raw, i):
                g = g + ppo_token(torch.exp(lp[i, t] - old[i, t]), adv[i], eps, eps) / norm_len
        total = total + g / len(idx)
    return total / group_count(raw, num_groups)


def gspo(raw: Raw, lp: Tensor, *, eps_low=3e-4, eps_high=4e-4, num_groups=None) -> Tensor:
    lp = lp.double()
    old = raw.old.double()
    adv = advantages(raw)
    total = torch.zeros((), dtype=torch.float64)
    for idx in groups_of(raw):
        g = torch.zeros((), dtype=torch.float64)
        for i in idx:
            s = torch.exp((seq_sum(lp, raw, i) - seq_sum(old, raw, i)) / seq_len(raw, i))
            g = g + ppo_token(s, adv[i], eps_low, eps_high)
        total = total + g / len(idx)
    return total / group_count(raw, num_groups)


def cispo(raw: Raw, lp: Tensor, *, eps_low=None, eps_high=0.28, num_tokens=None) -> Tensor:
    lp = lp.double()
    old = raw.old.double()
    adv = advantages(raw)
    total = torch.zeros((), dtype=torch.float64)
    for i in range(lp.shape[0]):
        for t in tokens(raw, i):
            w = math.exp((lp[i, t] - old[i, t]).item())  # a float: no gradient through it
            w = min(w, 1 + eps_high)
            if eps_low is not None:
                w = max(w, 1 - eps_low)
            total = total - w * adv[i] * lp[i, t]
    return total / token_count(raw, num_tokens)


def gmpo(raw: Raw, lp: Tensor, *, eps_low=0.4, eps_high=0.4, num_groups=None) -> Tensor:
    lp = lp.double()
    old = raw.old.double()
    adv = advantages(raw)
    total = torch.zeros((), dtype=torch.float64)
    for idx in groups_of(raw):
        g = torch.zeros((), dtype=torch.float64)
        for i in idx:
            a = adv[i]
            acc = torch.zeros((), dtype=torch.float64)
            for t in tokens(raw, i):
                d = lp[i, t] - old[i, t]
                if a > 0 and d.item() > eps_high:  # PPO: the clipped branch binds, no gradient
                    d = torch.tensor(eps_high, dtype=torch.float64)
                elif a < 0 and d.item() < -eps_low:
                    d = torch.tensor(-eps_low, dtype=torch.float64)
                acc = acc + d
            g = g - a * torch.exp(acc / seq_len(raw, i))
        total = total + g / len(idx)
    return total / group_count(raw, num_groups)


def sapo(raw: Raw, lp: Tensor, *, tau_pos=1.0, tau_neg=1.05, num_groups=None) -> Tensor:
    lp = lp.double()
    old = raw.old.double()
    adv = advantages(raw)
    total = torch.zeros((), dtype=torch.float64)
    for idx in groups_of(raw):
        g = torch.zeros((), dtype=torch.float64)
        for i in idx:
            tau = tau_pos if adv[i] > 0 else tau_neg
            seq = torch.zeros((), dtype=torch.float64)
            for t in tokens(raw, i):
                ratio = torch.exp(lp[i, t] - old[i, t])
                seq = seq - 4.0 / tau * torch.sigmoid(tau * (ratio - 1.0)) * adv[i]
            g = g + seq / seq_len(raw, i)
        total = total + g / len(idx)
    return total / group_count(raw, num_groups)


# ---- DisCO ----------------------------------------------------------------------------------------


def disco(
    raw: Raw,
    lp: Tensor,
    *,
    score="log_l",
    objective="lse",
    tau=10.0,
    delta=1e-4,
    penalty=1e3,
    kl_estimator="k1",
    num_groups=None,
) -> Tensor:
    lp = lp.double()
    old = raw.old.double()

    def s(i: int) -> Tensor:
        if score == "log_l":
            return seq_sum(lp, raw, i) / seq_len(raw, i)
        ratios = [torch.exp(lp[i, t] - old[i, t]) for t in tokens(raw, i)]
        return sum(ratios, torch.zeros((), dtype=torch.float64)) / seq_len(raw, i)

    total = torch.zeros((), dtype=torch.float64)
    for idx in groups_of(raw):
        pos, neg = split(raw, idx)
        kl = torch.zeros((), dtype=torch.float64)
        for i in idx:
            per = sum(
                (k_token(kl_estimator, old[i, t], lp[i, t]) for t in tokens(raw, i)),
                torch.zeros((), dtype=torch.float64),
            )
            kl = kl + per / seq_len(raw, i)
        kl = kl / len(idx)
        if kl.item() > delta:
            total = total + penalty * (kl - delta) ** 2
        if not neg:
            continue
        j = sum((s(i) for i in pos), torch.zeros((), dtype=torch.float64)) / len(pos)
        if objective == "lse":
            j = j - tau * torch.log(
                sum((torch.exp(s(k) / tau) for k in neg), torch.zeros((), dtype=torch.float64))
                / len(neg)
            )
        else:
            j = j - sum((s(k) for k in neg), torch.zeros((), dtype=torch.float64)) / len(neg)
        total = total - j
    return total / group_count(raw, num_groups)


# (loss name, config fields). Each variant the presets can select appears at least once.
CASES: list[tuple[str, dict]] = [
    ("rence", {}),
    ("rence", {"margin": "constant"}),
    ("rence", {"margin": "none", "use_kl": False}),
    ("rence", {"objective": "softmax"}),
    ("rence", {"objective": "all_pairs", "margin": "none"}),
    ("rence", {"objective": "random_pair"}),
    ("rence", {"kl_estimator": "k2", "beta": 0.7, "alpha": 1.3}),
    ("rence", {"score_norm": "token_mean"}),
    ("semi_online_dpo", {}),
    ("semi_online_dpo", {"beta": 0.5}),
    ("conspo", {}),
    ("conspo", {"tau": 0.5, "margin_max": 0.3, "margin_schedule": "constant"}),
    ("conspo", {"tau": 2.0, "margin_schedule": "none"}),
    ("grpo", {}),
    ("grpo", {"kl_beta": 0.04, "eps": 0.1}),
    ("dapo", {}),
    ("dapo", {"overlong_shaping": True, "overlong_max_len": 5, "overlong_cache_len": 3}),
    ("dr_grpo", {"norm_len": 8}),
    ("gspo", {}),
    ("gspo", {"eps_low": 0.05, "eps_high": 0.08}),
    ("cispo", {}),
    ("cispo", {"eps_low": 0.1, "eps_high": 0.05}),
    ("gmpo", {}),
    ("gmpo", {"eps_low": 0.1, "eps_high": 0.2}),
    ("sapo", {}),
    ("sapo", {"tau_pos": 3.0, "tau_neg": 5.0}),
    ("disco", {}),
    ("disco", {"score": "l_ratio", "objective": "basic", "delta": 0.02, "penalty": 5.0}),
    (
        "disco",
        {"objective": "lse", "tau": 0.7, "kl_estimator": "k3", "delta": 0.01, "penalty": 3.0},
    ),
]


def case_id(case: tuple[str, dict]) -> str:
    name, fields = case
    return name + "".join(f"-{k}={v}" for k, v in fields.items())


REFERENCES = {
    "rence": rence,
    "semi_online_dpo": semi_online_dpo,
    "conspo": conspo,
    "grpo": grpo,
    "dapo": dapo,
    "dr_grpo": dr_grpo,
    "gspo": gspo,
    "cispo": cispo,
    "gmpo": gmpo,
    "sapo": sapo,
    "disco": disco,
}
