"""NeuralUCB: a contextual bandit whose reward model is a small neural network.

Zhou, Li, Gu, "Neural Contextual Bandits with UCB-based Exploration" (ICML 2020, arXiv 1911.04462). Each arm a has a
feature vector x_a; a network f(x; θ) predicts its reward. At each pull the arm with the highest upper confidence bound

    U_a = f(x_a; θ) + γ · sqrt( g_aᵀ Z⁻¹ g_a ),      g_a = ∇_θ f(x_a; θ),      Z = λ·I + Σ_{pulled} g gᵀ

is chosen; after its reward r arrives, Z grows by g gᵀ of the pulled arm and θ is refitted from its initial value θ₀ on
the whole history by minimising Σ_i (f(x_i; θ) − r_i)²/2 + λ·‖θ − θ₀‖²/2. As in the authors' released code, Z is kept
diagonal (the full matrix has one row per network parameter).

Reveal-and-Release uses it to choose the instruction that makes a model reveal the most of a forget target; the arms
are instructions and their features the model's mean hidden state over the instruction.
"""

from __future__ import annotations

import torch


class NeuralUCB:
    """NeuralUCB over a fixed set of arms.

    Args:
        features: (number of arms, dimension) arm features; they are centred and scaled to unit norm, since the
            arms of a language model's hidden states differ in a few directions of a large, shared vector.
        hidden_size: width m of the network's one hidden layer.
        regularization: λ, the initial diagonal of Z and the pull of θ towards θ₀.
        exploration: γ, the weight of the confidence width.
        learning_rate: Adam's step size when the network is refitted.
        train_steps: full-batch steps of each refit.
        seed: seed of the network's initialisation.
    """

    def __init__(
        self,
        features: torch.Tensor,
        hidden_size: int = 100,
        regularization: float = 0.01,
        exploration: float = 0.1,
        learning_rate: float = 1e-2,
        train_steps: int = 50,
        seed: int = 0,
    ):
        if features.dim() != 2 or features.size(0) < 1:
            raise ValueError(
                f"NeuralUCB needs (arms, dimension) features, got a tensor of shape {tuple(features.shape)}."
            )
        if regularization <= 0 or exploration < 0 or hidden_size < 1 or train_steps < 0:
            raise ValueError(
                f"NeuralUCB: regularization ({regularization}) must be > 0, exploration ({exploration}) >= 0, "
                f"hidden_size ({hidden_size}) >= 1 and train_steps ({train_steps}) >= 0."
            )
        x = features.detach().float().cpu()
        if x.size(0) > 1:
            x = x - x.mean(dim=0)
        self.features = x / x.norm(dim=1, keepdim=True).clamp(min=1e-8)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.network = torch.nn.Sequential(
                torch.nn.Linear(x.size(1), hidden_size), torch.nn.ReLU(), torch.nn.Linear(hidden_size, 1)
            )
        self.initial = [p.detach().clone() for p in self.network.parameters()]
        self.design = torch.full((sum(p.numel() for p in self.initial),), float(regularization))
        self.regularization = regularization
        self.exploration = exploration
        self.learning_rate = learning_rate
        self.train_steps = train_steps
        self.pulled: list[int] = []
        self.rewards: list[float] = []

    @property
    def num_arms(self) -> int:
        return self.features.size(0)

    def _prediction_and_gradient(self, arm: int) -> tuple[float, torch.Tensor]:
        self.network.zero_grad()
        prediction = self.network(self.features[arm]).squeeze()
        prediction.backward()
        gradient = torch.cat([p.grad.reshape(-1) for p in self.network.parameters()])
        return prediction.item(), gradient

    def scores(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each arm's predicted reward f(x_a; θ) and confidence width γ·sqrt(g_aᵀ Z⁻¹ g_a)."""
        predicted, width = [], []
        for arm in range(self.num_arms):
            prediction, gradient = self._prediction_and_gradient(arm)
            predicted.append(prediction)
            width.append(self.exploration * (gradient.square() / self.design).sum().sqrt().item())
        return torch.tensor(predicted), torch.tensor(width)

    def select(self) -> int:
        """The arm with the highest upper confidence bound (the lowest index among ties)."""
        predicted, width = self.scores()
        return int(torch.argmax(predicted + width))

    def update(self, arm: int, reward: float) -> None:
        """Record `reward` for `arm`: grow Z by its gradient features, then refit the network on the whole history."""
        if not 0 <= arm < self.num_arms:
            raise ValueError(f"arm {arm} is not one of the {self.num_arms} arms.")
        _, gradient = self._prediction_and_gradient(arm)
        self.design += gradient.square()
        self.pulled.append(arm)
        self.rewards.append(float(reward))
        self._fit()

    def _fit(self) -> None:
        inputs = self.features[self.pulled]
        targets = torch.tensor(self.rewards)
        with torch.no_grad():
            for param, initial in zip(self.network.parameters(), self.initial):
                param.copy_(initial)
        optimizer = torch.optim.Adam(self.network.parameters(), lr=self.learning_rate)
        for _ in range(self.train_steps):
            optimizer.zero_grad()
            squared_error = (self.network(inputs).squeeze(-1) - targets).square().sum() / 2
            drift = sum((p - p0).square().sum() for p, p0 in zip(self.network.parameters(), self.initial))
            (squared_error + self.regularization * drift / 2).backward()
            optimizer.step()
