"""`Generator`: instruction data through the one LLM client (cached, retried, accounted).

    generate_from_seed(seeds, count)            self-instruct: prompt with sampled seed + generated
                                                instructions, parse new ones, keep one only if its ROUGE-L
                                                to every kept instruction is below 0.7, then answer them
    evolve_instructions(examples, rounds)       evol-instruct: in-depth (add constraints, deepen,
                                                concretize, increase reasoning) and in-breadth operators;
                                                failed evolutions are eliminated, with the reason counted
    generate_from_template(template, variables) every combination (or a seeded sample) of the values
    generate_with_constraints(instr, constraints) domain, keywords, style, tone, complexity, length;
                                                which constraints each answer satisfies, and the rates
    augment_by_paraphrasing / augment_with_style_variation / augment_with_domain_transfer

Every method returns `Results` whose examples carry their method, parent and parameters, and leaves a
report in `generator.reports[method]`. Sampling parameters come from `GeneratorConfig`; each request
has its own sample index, so repeated identical prompts are distinct cache entries while a rerun of
the same call hits the cache.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import re
import string
from collections import Counter

from difflab.datagen import prompts
from difflab.datagen.filters import RougeNovelty, normalize
from difflab.datagen.records import Example, Results
from difflab.errors import DifflabError
from difflab.llm import SamplingParams

EVOL_OPERATORS = (*prompts.EVOL_METHODS, "breadth")
COMPLEXITY = {"simple": "Keep it simple: short sentences, no jargon.",
              "intermediate": "Assume some background knowledge.",
              "advanced": "Go into expert-level depth and precision."}
_NUMBERED = re.compile(r"^\s*(?:\d+[.):]|[-*•]|task\s*\d+\s*[:.])\s*", re.IGNORECASE)
_LEAKED = ("given prompt", "rewritten prompt", "created prompt", "#given", "#rewritten")
_REFUSAL = ("sorry", "as an ai", "i cannot", "i can't")
_NON_TEXT = ("image", "picture", "graph", "diagram", "video", "audio", "draw", "plot")


@dataclasses.dataclass
class SelfInstructConfig:
    prompt_seeds: int = 3          # seed instructions shown per prompt
    prompt_generated: int = 2      # generated instructions shown per prompt (once there are some)
    per_prompt: int = 4            # new tasks asked for per prompt
    rouge_threshold: float = 0.7
    min_words: int = 3
    max_words: int = 150
    max_rounds: int = 20


@dataclasses.dataclass
class EvolConfig:
    operators: tuple[str, ...] = EVOL_OPERATORS
    min_response_words: int = 3
    max_similarity: float = 0.9    # ROUGE-L to the parent at or above this: no information gained


@dataclasses.dataclass
class GeneratorConfig:
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 50
    max_new_tokens: int = 128      # answers
    instruction_tokens: int = 96   # instruction lists and rewrites
    seed: int = 0
    self_instruct: SelfInstructConfig = dataclasses.field(default_factory=SelfInstructConfig)
    evol: EvolConfig = dataclasses.field(default_factory=EvolConfig)

    @classmethod
    def from_dict(cls, values: dict | None, where: str = "datagen.generation") -> "GeneratorConfig":
        """Nested defaults, overridden by `values`; an unknown key is an error naming it."""
        def build(kind, data, path):
            data = dict(data or {})
            fields = {f.name: f for f in dataclasses.fields(kind)}
            unknown = [k for k in data if k not in fields]
            if unknown:
                raise DifflabError(f"{path}: unknown key '{unknown[0]}' (known: {', '.join(fields)})")
            out = {}
            for name, value in data.items():
                nested = {"self_instruct": SelfInstructConfig, "evol": EvolConfig}.get(name) if kind is cls else None
                out[name] = build(nested, value, f"{path}.{name}") if nested else \
                    (tuple(value) if name == "operators" else value)
            return kind(**out)

        return build(cls, values, where)


def parse_numbered(text: str) -> list[str]:
    """Items of a numbered or bulleted list (or plain lines), stripped of numbers and quotes."""
    items = []
    for line in text.splitlines():
        line = _NUMBERED.sub("", line).strip().strip('"').strip()
        if line:
            items.append(line)
    return items


def clean_rewrite(text: str) -> str:
    """The first paragraph of a rewrite, without a preamble line ("Here is ...:"), label or quotes."""
    lines = [line for line in text.strip().splitlines()]
    while len(lines) > 1 and (lines[0].rstrip().endswith(":") or not lines[0].strip()):
        lines.pop(0)
    text = "\n".join(lines).strip().split("\n\n")[0].strip()
    text = re.sub(r"^(rewritten|created|new)?\s*(prompt|instruction|answer)\s*:\s*", "", text, flags=re.IGNORECASE)
    return text.strip().strip('"').strip()


class Generator:
    def __init__(self, client, config: GeneratorConfig | dict | None = None):
        self.client = client
        self.config = config if isinstance(config, GeneratorConfig) else GeneratorConfig.from_dict(config)
        self.reports: dict[str, dict] = {}

    # ---- LLM calls
    def _params(self, max_new_tokens: int | None = None, **overrides) -> SamplingParams:
        c = self.config
        values = dict(max_new_tokens=max_new_tokens or c.max_new_tokens, temperature=c.temperature, top_p=c.top_p,
                      top_k=c.top_k, seed=c.seed)
        values.update(overrides)
        return SamplingParams(**values)

    def ask(self, user_messages: list[str], *, max_new_tokens: int | None = None, sample_offset: int = 0) -> list[str]:
        """One completion per user message (sample index = position + offset, so duplicates differ)."""
        from difflab.llm import Request

        requests = [Request.chat([{"role": "user", "content": m}], sample_index=sample_offset + i)
                    for i, m in enumerate(user_messages)]
        return [c.text.strip() for c in self.client.complete(requests, self._params(max_new_tokens))]

    def answer(self, examples: list[Example], sample_offset: int = 0) -> list[Example]:
        """Fill in the outputs of examples that have none."""
        todo = [e for e in examples if not e.output]
        if todo:
            messages = [prompts.ANSWER_WITH_INPUT.format(instruction=e.instruction, input=e.input) if e.input
                        else prompts.ANSWER.format(instruction=e.instruction) for e in todo]
            for e, text in zip(todo, self.ask(messages, sample_offset=sample_offset)):
                e.output = text
        return examples

    # ---- self-instruct
    def _acceptable_instruction(self, text: str, echo: RougeNovelty) -> str | None:
        """Why a generated instruction is rejected before the ROUGE-L check, or None."""
        c = self.config.self_instruct
        words = text.split()
        if echo.max_score(text) >= c.rouge_threshold:
            return "echoes_the_prompt"
        if not c.min_words <= len(words) <= c.max_words:
            return "length"
        if any(w in normalize(text).split() for w in _NON_TEXT):
            return "not_text"
        if not text[0].isalnum():
            return "format"
        return None

    def generate_from_seed(self, seeds, count: int, method: str = "self_instruct") -> Results:
        """`count` new instruction/answer examples grown from `seeds` (Results, Examples or strings)."""
        if method != "self_instruct":
            raise DifflabError(f"datagen: generate_from_seed supports method 'self_instruct', got '{method}'")
        seed_examples = [s if isinstance(s, Example) else Example(instruction=str(s)) for s in seeds]
        if not seed_examples:
            raise DifflabError("datagen: self-instruct needs at least one seed instruction")
        c = self.config.self_instruct
        rng = random.Random(self.config.seed)
        # the request's own sentences: a model that repeats them has not written a task
        request = prompts.SELF_INSTRUCT.format(examples="", count=c.per_prompt)
        echo = RougeNovelty(1.0, kept=[s for s in re.split(r"(?<=[.:])\s+", request) if len(s.split()) > 3])
        novelty = RougeNovelty(c.rouge_threshold, kept=[s.instruction for s in seed_examples])
        generated: list[Example] = []
        rejected: Counter = Counter()
        rounds = 0
        while len(generated) < count and rounds < c.max_rounds:
            prompts_this_round = []
            needed = count - len(generated)
            for _ in range(max(1, min(8, -(-needed // c.per_prompt)))):
                shown = rng.sample(seed_examples, min(c.prompt_seeds, len(seed_examples)))
                if generated:
                    shown += rng.sample(generated, min(c.prompt_generated, len(generated)))
                rng.shuffle(shown)
                examples = "\n".join(f"{i + 1}. {e.instruction}" for i, e in enumerate(shown))
                prompts_this_round.append(prompts.SELF_INSTRUCT.format(examples=examples, count=c.per_prompt))
            texts = self.ask(prompts_this_round, max_new_tokens=self.config.instruction_tokens,
                              sample_offset=rounds * 1000)
            rounds += 1
            for text in texts:
                for candidate in parse_numbered(text):
                    if len(generated) >= count:
                        break
                    reason = self._acceptable_instruction(candidate, echo)
                    if reason is None:
                        novel, _ = novelty.add_if_novel(candidate)
                        reason = None if novel else "rouge_l"
                    if reason:
                        rejected[reason] += 1
                        continue
                    generated.append(Example(instruction=candidate, method="self_instruct",
                                             params={"round": rounds, "rouge_threshold": c.rouge_threshold}))
        self.answer(generated, sample_offset=0)
        self.reports["self_instruct"] = {"requested": count, "generated": len(generated), "rounds": rounds,
                                         "rejected": dict(rejected)}
        return Results(generated)

    # ---- evol-instruct
    def _evolution_failure(self, parent: Example, child: Example, scorer: RougeNovelty) -> str | None:
        c = self.config.evol
        text = child.instruction
        if not text or normalize(text) == normalize(parent.instruction):
            return "unchanged"
        if any(phrase in text.lower() for phrase in _LEAKED):
            return "copied_prompt_words"
        scorer.kept = [parent.instruction]
        if scorer.max_score(text) >= c.max_similarity:
            return "no_information_gain"
        words = child.output.split()
        if len(words) < c.min_response_words:
            return "empty_response"
        if any(r in child.output.lower()[:80] for r in _REFUSAL) and len(words) < 80:
            return "refused"
        if not any(ch.isalnum() for ch in child.output):
            return "only_punctuation"
        return None

    def evolve_instructions(self, instructions, rounds: int = 1, operators: tuple[str, ...] | None = None) -> Results:
        """Each round applies a seeded random operator to every surviving instruction and answers it."""
        operators = tuple(operators or self.config.evol.operators)
        unknown = [o for o in operators if o not in EVOL_OPERATORS]
        if unknown:
            raise DifflabError(f"datagen: unknown evol operator '{unknown[0]}' (known: {', '.join(EVOL_OPERATORS)})")
        rng = random.Random(self.config.seed)
        current = [i if isinstance(i, Example) else Example(instruction=str(i)) for i in instructions]
        scorer = RougeNovelty(1.0)
        evolved: list[Example] = []
        failed: Counter = Counter()
        for round_index in range(rounds):
            chosen = [rng.choice(operators) for _ in current]
            messages = [prompts.EVOL_IN_BREADTH.format(instruction=e.instruction) if op == "breadth" else
                        prompts.EVOL_IN_DEPTH.format(method=prompts.EVOL_METHODS[op], instruction=e.instruction)
                        for e, op in zip(current, chosen)]
            rewrites = self.ask(messages, max_new_tokens=self.config.instruction_tokens,
                                 sample_offset=round_index * 1000)
            children = [Example(instruction=clean_rewrite(t), method="evol_instruct", parent=e.id,
                                params={"operator": op, "round": round_index + 1})
                        for e, op, t in zip(current, chosen, rewrites)]
            self.answer([c for c in children if c.instruction], sample_offset=round_index * 1000)
            survivors = []
            for parent, child in zip(current, children):
                reason = self._evolution_failure(parent, child, scorer)
                if reason:
                    failed[reason] += 1
                else:
                    survivors.append(child)
            evolved += survivors
            current = survivors
            if not current:
                break
        self.reports["evol_instruct"] = {"rounds": rounds, "evolved": len(evolved), "eliminated": dict(failed),
                                         "operators": dict(Counter(e.params["operator"] for e in evolved))}
        return Results(evolved)

    # ---- templates
    def generate_from_template(self, template: str, variables: dict[str, list], *, mode: str = "product",
                               n: int | None = None, answer: bool = True) -> Results:
        """Instructions from `template` ("Explain {topic} to a {audience}") over the variables' values."""
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        missing = sorted(fields - set(variables))
        if missing:
            raise DifflabError(f"datagen template: variable '{missing[0]}' has no values")
        names = sorted(fields)
        combos = list(itertools.product(*(variables[k] for k in names)))
        if mode == "sample":
            combos = random.Random(self.config.seed).sample(combos, min(n or len(combos), len(combos)))
        elif mode != "product":
            raise DifflabError(f"datagen template: mode must be product or sample, got '{mode}'")
        elif n is not None:
            combos = combos[:n]
        examples = [Example(instruction=template.format(**dict(zip(names, values))), method="template",
                            params={"template": template, "values": dict(zip(names, values))}) for values in combos]
        if answer:
            self.answer(examples)
        self.reports["template"] = {"combinations": len(combos), "variables": {k: len(variables[k]) for k in names}}
        return Results(examples)

    # ---- constraints
    @staticmethod
    def constraint_text(constraints: dict) -> list[str]:
        lines = []
        if constraints.get("domain"):
            lines.append(f"- Answer from the point of view of {constraints['domain']}.")
        if constraints.get("keywords"):
            lines.append("- Use each of these words: " + ", ".join(constraints["keywords"]) + ".")
        if constraints.get("style"):
            lines.append(f"- Write in a {constraints['style']} style.")
        if constraints.get("tone"):
            lines.append(f"- Use a {constraints['tone']} tone.")
        if constraints.get("complexity"):
            level = constraints["complexity"]
            if level not in COMPLEXITY:
                raise DifflabError(f"datagen constraints: complexity must be one of {', '.join(COMPLEXITY)}, got '{level}'")
            lines.append(f"- {COMPLEXITY[level]}")
        if constraints.get("min_words") or constraints.get("max_words"):
            lo, hi = constraints.get("min_words", 1), constraints.get("max_words", 10_000)
            lines.append(f"- Use between {lo} and {hi} words.")
        return lines

    @staticmethod
    def check_constraints(text: str, constraints: dict) -> dict[str, bool]:
        """The checkable constraints an answer satisfies: each keyword present, the length in range."""
        satisfied = {}
        lowered = text.lower()
        for keyword in constraints.get("keywords", []):
            satisfied[f"keyword:{keyword}"] = re.search(rf"\b{re.escape(keyword.lower())}\b", lowered) is not None
        if constraints.get("min_words") or constraints.get("max_words"):
            n = len(text.split())
            satisfied["length"] = constraints.get("min_words", 1) <= n <= constraints.get("max_words", 10_000)
        return satisfied

    def generate_with_constraints(self, instructions, constraints: dict) -> Results:
        known = {"domain", "keywords", "style", "tone", "complexity", "min_words", "max_words"}
        unknown = sorted(set(constraints) - known)
        if unknown:
            raise DifflabError(f"datagen constraints: unknown constraint '{unknown[0]}' (known: {', '.join(sorted(known))})")
        requirements = "\n".join(self.constraint_text(constraints))
        base = [i if isinstance(i, Example) else Example(instruction=str(i)) for i in instructions]
        messages = [prompts.CONSTRAINED.format(instruction=e.instruction if not e.input else
                                               f"{e.instruction}\n\n{e.input}", requirements=requirements) for e in base]
        outputs = self.ask(messages)
        results, counts = [], Counter()
        for e, text in zip(base, outputs):
            satisfied = self.check_constraints(text, constraints)
            counts.update(k for k, v in satisfied.items() if v)
            results.append(Example(instruction=e.instruction, input=e.input, output=text, method="constrained",
                                   parent=e.id, params={"constraints": constraints},
                                   meta={"constraints_satisfied": satisfied}))
        checked = sorted({k for r in results for k in r.meta["constraints_satisfied"]})
        self.reports["constrained"] = {"examples": len(results), "satisfaction_rate": {
            k: round(counts[k] / len(results), 4) for k in checked} if results else {},
            "all_satisfied_rate": round(sum(all(r.meta["constraints_satisfied"].values()) for r in results)
                                        / len(results), 4) if results else 0.0}
        return Results(results)

    # ---- augmentation
    def augment_by_paraphrasing(self, results, n: int = 1) -> Results:
        """`n` paraphrases of each instruction, each keeping the original's input and output."""
        base = list(results)
        messages = [prompts.PARAPHRASE.format(instruction=e.instruction) for e in base for _ in range(n)]
        rewrites = self.ask(messages, max_new_tokens=self.config.instruction_tokens)
        out = []
        for k, text in enumerate(rewrites):
            e = base[k // n]
            text = clean_rewrite(text)
            if text and normalize(text) != normalize(e.instruction):
                out.append(Example(instruction=text, input=e.input, output=e.output, method="paraphrase",
                                   parent=e.id, params={"variant": k % n}))
        self.reports["paraphrase"] = {"requested": len(messages), "kept": len(out)}
        return Results(out)

    def augment_with_style_variation(self, results, styles: list[str]) -> Results:
        """Each answer rewritten in each style (e.g. formal, casual, concise, step-by-step)."""
        base = list(results)
        pairs = [(e, s) for e in base for s in styles]
        rewrites = self.ask([prompts.STYLE.format(style=s, output=e.output) for e, s in pairs])
        out = [Example(instruction=e.instruction, input=e.input, output=clean_rewrite(t), method="style",
                       parent=e.id, params={"style": s})
               for (e, s), t in zip(pairs, rewrites) if clean_rewrite(t)]
        self.reports["style"] = {"requested": len(pairs), "kept": len(out)}
        return Results(out)

    def augment_with_domain_transfer(self, results, domains: list[str]) -> Results:
        """Each instruction moved to each domain, then answered anew."""
        base = list(results)
        pairs = [(e, d) for e in base for d in domains]
        rewrites = self.ask([prompts.DOMAIN_TRANSFER.format(domain=d, instruction=e.instruction) for e, d in pairs],
                             max_new_tokens=self.config.instruction_tokens)
        out = [Example(instruction=clean_rewrite(t), input=e.input, method="domain_transfer", parent=e.id,
                       params={"domain": d}) for (e, d), t in zip(pairs, rewrites) if clean_rewrite(t)]
        self.answer(out)
        self.reports["domain_transfer"] = {"requested": len(pairs), "kept": len(out)}
        return Results(out)
