"""RL-guided generation tuning: search generation parameters that maximise a target task's reward.

    ParamSpace          temperature and top_p on a grid (choices snap to it, so a repeated choice hits
                        the LLM cache) and the generation method
    ClassificationTask  the target task: generate labelled sentences for each topic with the chosen
                        parameters, train a scikit-learn classifier (TF-IDF + logistic regression) on
                        them, reward = its accuracy on a fixed held-out set (resources/datagen/)
    RandomSearchAgent   uniform over the grid
    ReinforceAgent      a torch policy: Gaussian heads for temperature and top_p (mean and log std, in
                        the unit interval of each range), a categorical head for the method; REINFORCE
                        on each batch of episodes with discounted returns (G_t = r_t + gamma G_t+1),
                        normalised to zero mean and unit variance over the batch
    RLTuner             runs an agent for a budget of evaluations; every evaluation is appended to a
                        JSON history (with the agent's state), so a stopped run resumes where it was
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path

import numpy as np

from difflab import io
from difflab.errors import DifflabError

METHODS = ("template", "constrained", "paraphrase")


@dataclasses.dataclass
class ParamSpace:
    temperature: tuple[float, float, float] = (0.1, 1.3, 0.1)   # low, high, grid step
    top_p: tuple[float, float, float] = (0.5, 1.0, 0.05)
    methods: tuple[str, ...] = METHODS

    def snap(self, name: str, value: float) -> float:
        low, high, step = getattr(self, name)
        value = min(max(value, low), high)
        return round(low + round((value - low) / step) * step, 4)

    def grid(self, name: str) -> list[float]:
        low, high, step = getattr(self, name)
        return [round(low + i * step, 4) for i in range(int(round((high - low) / step)) + 1)]

    def unit(self, name: str, value: float) -> float:
        low, high, _ = getattr(self, name)
        return (value - low) / (high - low)

    def from_unit(self, name: str, u: float) -> float:
        low, high, _ = getattr(self, name)
        return self.snap(name, low + u * (high - low))


class ClassificationTask:
    """Reward = held-out accuracy of a classifier trained only on sentences generated per topic."""

    def __init__(self, heldout_path: str | Path, per_label: int = 6, seed: int = 0):
        rows = io.read_jsonl(heldout_path, required=("text", "label"))
        self.texts = [r["text"] for r in rows]
        self.labels = [r["label"] for r in rows]
        self.topics = sorted(set(self.labels))
        if len(self.topics) < 2:
            raise DifflabError(f"{heldout_path}: the held-out set needs at least two labels")
        self.per_label, self.seed = per_label, seed

    def generate(self, client, params: dict) -> tuple[list[str], list[str]]:
        from difflab.datagen.generator import Generator

        gen = Generator(client, {"temperature": params["temperature"], "top_p": params["top_p"],
                                 "max_new_tokens": 40, "instruction_tokens": 40, "seed": self.seed})
        prompts = [f"Write one sentence about {topic}." for topic in self.topics for _ in range(self.per_label)]
        if params["method"] == "template":
            texts = gen.ask(prompts)
        elif params["method"] == "constrained":
            tones = ("curious", "enthusiastic", "matter-of-fact", "poetic", "humorous", "technical")
            texts = gen.ask([f"{p} Use a {tones[i % len(tones)]} tone and at most 25 words."
                              for i, p in enumerate(prompts)])
        elif params["method"] == "paraphrase":
            first = gen.ask(prompts)
            texts = [t2 or t1 for t1, t2 in zip(first, gen.ask(
                [f"Rewrite this sentence in different words, keeping its topic: {t}" for t in first],
                sample_offset=10_000))]
        else:
            raise DifflabError(f"datagen rl: unknown method '{params['method']}'")
        labels = [topic for topic in self.topics for _ in range(self.per_label)]
        return texts, labels

    def score(self, texts: list[str], labels: list[str]) -> float:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        pairs = [(t, y) for t, y in zip(texts, labels) if t.strip()]
        if len({y for _, y in pairs}) < 2:
            return 0.0
        model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                              LogisticRegression(max_iter=1000, random_state=self.seed))
        model.fit([t for t, _ in pairs], [y for _, y in pairs])
        return float(np.mean(model.predict(self.texts) == np.array(self.labels)))

    def reward(self, client, params: dict) -> float:
        return self.score(*self.generate(client, params))


class RandomSearchAgent:
    name = "random"

    def __init__(self, space: ParamSpace, seed: int = 0):
        self.space, self.rng = space, random.Random(seed)

    def propose(self) -> tuple[dict, dict]:
        s = self.space
        return {"temperature": self.rng.choice(s.grid("temperature")), "top_p": self.rng.choice(s.grid("top_p")),
                "method": self.rng.choice(s.methods)}, {}

    def observe(self, proposal_state: dict, reward: float) -> None:
        pass

    def state(self) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {"rng": [version, list(internal), gauss]}

    def load(self, state: dict) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))


class ReinforceAgent:
    """REINFORCE with Gaussian (continuous) and categorical (method) heads; see the module docstring."""

    name = "reinforce"

    def __init__(self, space: ParamSpace, seed: int = 0, *, lr: float = 0.1, batch: int = 4, gamma: float = 0.0,
                 init_std: float = 0.25):
        import torch

        self.space, self.batch, self.gamma = space, batch, gamma
        self.generator = torch.Generator().manual_seed(seed)
        self.params = {
            "mu": torch.zeros(2, requires_grad=True),                          # unit-interval means (sigmoid)
            "log_std": torch.full((2,), math.log(init_std), requires_grad=True),
            "logits": torch.zeros(len(space.methods), requires_grad=True),
        }
        self.optimizer = torch.optim.Adam(self.params.values(), lr=lr)
        self.episodes: list[tuple] = []
        self.updates = 0

    def _dists(self):
        import torch

        mean = torch.sigmoid(self.params["mu"])
        std = self.params["log_std"].exp().clamp(0.02, 1.0)
        return torch.distributions.Normal(mean, std), torch.distributions.Categorical(logits=self.params["logits"])

    def propose(self) -> tuple[dict, dict]:
        import torch

        with torch.no_grad():
            normal, categorical = self._dists()
            raw = normal.mean + normal.stddev * torch.randn(2, generator=self.generator)
            u = torch.rand(1, generator=self.generator).item()
            probs = categorical.probs.cumsum(0)
            method = int((probs < u).sum().clamp(max=len(self.space.methods) - 1))
        values = raw.clamp(0.0, 1.0).tolist()
        params = {"temperature": self.space.from_unit("temperature", values[0]),
                  "top_p": self.space.from_unit("top_p", values[1]), "method": self.space.methods[method]}
        return params, {"raw": raw.tolist(), "method_index": method}

    def observe(self, proposal_state: dict, reward: float) -> None:
        self.episodes.append((proposal_state["raw"], proposal_state["method_index"], reward))
        if len(self.episodes) >= self.batch:
            self.update()

    def discounted_returns(self, rewards: list[float]) -> np.ndarray:
        """G_t = r_t + gamma * G_{t+1}, then normalised over the batch."""
        returns, running = np.zeros(len(rewards)), 0.0
        for t in range(len(rewards) - 1, -1, -1):
            running = rewards[t] + self.gamma * running
            returns[t] = running
        spread = returns.std()
        return (returns - returns.mean()) / spread if spread > 1e-8 else np.zeros_like(returns)

    def update(self) -> None:
        import torch

        raws = torch.tensor([e[0] for e in self.episodes])
        methods = torch.tensor([e[1] for e in self.episodes])
        returns = torch.tensor(self.discounted_returns([e[2] for e in self.episodes]), dtype=torch.float32)
        normal, categorical = self._dists()
        logp = normal.log_prob(raws).sum(dim=1) + categorical.log_prob(methods)
        loss = -(logp * returns).mean()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.episodes = []
        self.updates += 1

    def state(self) -> dict:
        optimizer = self.optimizer.state_dict()
        moments = {str(i): {k: v.tolist() for k, v in slot.items()} for i, slot in optimizer["state"].items()}
        return {"params": {k: v.detach().tolist() for k, v in self.params.items()}, "updates": self.updates,
                "pending": self.episodes, "generator": self.generator.get_state().tolist(), "adam": moments}

    def load(self, state: dict) -> None:
        import torch

        with torch.no_grad():
            for k, v in state["params"].items():
                self.params[k].copy_(torch.tensor(v))
        optimizer = self.optimizer.state_dict()
        optimizer["state"] = {int(i): {k: torch.tensor(v) for k, v in slot.items()} for i, slot in state["adam"].items()}
        self.optimizer.load_state_dict(optimizer)
        self.updates, self.episodes = state["updates"], [tuple(e) for e in state["pending"]]
        self.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))

    def policy(self) -> dict:
        normal, categorical = self._dists()
        mean = normal.mean.detach().tolist()
        return {"temperature": self.space.from_unit("temperature", mean[0]),
                "top_p": self.space.from_unit("top_p", mean[1]),
                "method_probs": dict(zip(self.space.methods, [round(p, 4) for p in categorical.probs.detach().tolist()]))}


class RLTuner:
    """Run an agent for `budget` evaluations of `reward_fn(params)`, saving history after each one."""

    def __init__(self, reward_fn, agent, history_path: str | Path | None = None):
        self.reward_fn, self.agent = reward_fn, agent
        self.history_path = Path(history_path) if history_path else None
        self.history: list[dict] = []
        self.memo: dict[str, float] = {}
        if self.history_path and self.history_path.is_file():
            saved = io.read_json(self.history_path)
            if saved.get("agent") != agent.name:
                raise DifflabError(f"{self.history_path}: a history of agent '{saved.get('agent')}', not '{agent.name}'")
            self.history = saved["history"]
            self.memo = {self._key(h["params"]): h["reward"] for h in self.history}
            if saved.get("agent_state"):
                agent.load(saved["agent_state"])

    @staticmethod
    def _key(params: dict) -> str:
        return json.dumps(params, sort_keys=True)

    def run(self, budget: int) -> dict:
        while len(self.history) < budget:
            params, proposal_state = self.agent.propose()
            key = self._key(params)
            cached = key in self.memo
            reward = self.memo[key] if cached else float(self.reward_fn(params))
            self.memo[key] = reward
            self.agent.observe(proposal_state, reward)
            self.history.append({"step": len(self.history) + 1, "params": params, "reward": reward,
                                 "repeat": cached})
            self.save()
        return self.best()

    def best(self) -> dict:
        if not self.history:
            return {}
        top = max(self.history, key=lambda h: (h["reward"], -h["step"]))
        return {"params": top["params"], "reward": top["reward"], "step": top["step"]}

    def save(self) -> None:
        if self.history_path:
            io.write_json(self.history_path, {"agent": self.agent.name, "history": self.history,
                                              "best": self.best(), "agent_state": self.agent.state()})
