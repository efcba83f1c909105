"""datagen.rl: the grid, discounted normalised returns, REINFORCE moving toward the rewarded region,
resuming a stopped run exactly, and the classification task's reward through a scripted LLM."""

import random
import re
from pathlib import Path

import numpy as np
import pytest

from difflab.datagen import rl
from difflab.llm import Completion, LLMClient

REPO = Path(__file__).resolve().parents[1]


def toy_reward(params):
    """Best at temperature 0.9 with the constrained method."""
    return 1.0 - abs(params["temperature"] - 0.9) - (0.5 if params["method"] != "constrained" else 0.0)


def test_param_space_snaps_to_its_grid():
    space = rl.ParamSpace()
    assert space.snap("temperature", 0.86) == 0.9 and space.snap("temperature", 7) == 1.3
    assert space.snap("top_p", 0.73) == 0.75 and len(space.grid("top_p")) == 11
    assert space.from_unit("temperature", 0.5) == 0.7


def test_discounted_returns_are_normalised():
    agent = rl.ReinforceAgent(rl.ParamSpace(), gamma=0.5)
    returns = agent.discounted_returns([1.0, 0.0, 2.0])      # raw G = [1.5, 1.0, 2.0]
    raw = np.array([1.5, 1.0, 2.0])
    np.testing.assert_allclose(returns, (raw - raw.mean()) / raw.std())
    assert not rl.ReinforceAgent(rl.ParamSpace()).discounted_returns([3.0, 3.0]).any()


def test_reinforce_moves_its_policy_to_the_rewarded_region():
    agent = rl.ReinforceAgent(rl.ParamSpace(), seed=0, batch=8, lr=0.1)
    tuner = rl.RLTuner(toy_reward, agent)
    best = tuner.run(160)
    policy = agent.policy()
    assert policy["method_probs"]["constrained"] > 0.6 and abs(policy["temperature"] - 0.9) <= 0.2
    assert best["reward"] >= 0.9 and agent.updates == 20
    late = np.mean([h["reward"] for h in tuner.history[-40:]])
    early = np.mean([h["reward"] for h in tuner.history[:40]])
    assert late > early + 0.1


@pytest.mark.parametrize("make_agent", [lambda: rl.RandomSearchAgent(rl.ParamSpace(), seed=3),
                                        lambda: rl.ReinforceAgent(rl.ParamSpace(), seed=3, batch=4)])
def test_a_stopped_run_resumes_exactly(tmp_path, make_agent):
    calls = []

    def reward(params):
        calls.append(params)
        return toy_reward(params)

    full = rl.RLTuner(reward, make_agent())
    full.run(14)
    path = tmp_path / "history.json"
    rl.RLTuner(reward, make_agent(), path).run(6)
    calls.clear()
    resumed = rl.RLTuner(reward, make_agent(), path)
    assert len(resumed.history) == 6
    resumed.run(14)
    assert [h["params"] for h in resumed.history] == [h["params"] for h in full.history]
    assert len(calls) == sum(not h["repeat"] for h in full.history[6:])      # nothing re-evaluated


class TopicWriter:
    """Scripted backend: low temperature writes on-topic sentences, high temperature noise."""

    kind = "scripted"
    WORDS = {"cooking": "sauce oven dough pan chicken onions pasta cheese bread soup cake butter",
             "astronomy": "planet galaxy moon sun star stars telescope orbit comet earth light space",
             "football": "goal ball penalty referee striker team match half corner kick defender fans"}

    def identity(self):
        return {"backend": "topic-writer"}

    def generate_one(self, request, params):
        prompt = request.message_dicts()[-1]["content"]
        topic = re.search(r"about (\w+)", prompt).group(1)
        rng = random.Random(f"{prompt}{request.sample_index}{params.temperature}")
        pool = self.WORDS[topic].split() if params.temperature < 0.8 else \
            " ".join(self.WORDS.values()).split()
        text = " ".join(rng.choice(pool) for _ in range(8))
        return Completion(text=text, prompt_tokens=1, completion_tokens=8, finish_reason="stop",
                          sample_index=request.sample_index)


def test_classification_task_rewards_data_that_teaches_the_topics(tmp_path):
    task = rl.ClassificationTask(REPO / "resources/datagen/rl_heldout.jsonl", per_label=8)
    assert task.topics == ["astronomy", "cooking", "football"]
    client = LLMClient(TopicWriter(), tmp_path / "cache", progress=False)
    good = task.reward(client, {"temperature": 0.3, "top_p": 0.9, "method": "template"})
    noisy = task.reward(client, {"temperature": 1.2, "top_p": 0.9, "method": "template"})
    assert good > 0.6 > 0.45 > noisy
    texts, labels = task.generate(client, {"temperature": 0.3, "top_p": 0.9, "method": "constrained"})
    assert len(texts) == 24 and labels.count("cooking") == 8
