"""The prompts datagen sends to the LLM, one constant each (after the self-instruct and
evol-instruct papers, reworded for chat models). `{placeholders}` are filled with str.format."""

SELF_INSTRUCT = """Here are some example tasks a user might give an AI assistant:
{examples}

Write {count} new tasks that are different from the examples and from each other: vary the topic, \
the kind of task and the wording. Each task must be answerable in text alone. Give one task per line, \
numbered 1 to {count}, and nothing else."""

ANSWER = "{instruction}"
ANSWER_WITH_INPUT = "{instruction}\n\n{input}"

# Evol-instruct (Xu et al. 2023): in-depth operators make an instruction harder, in-breadth makes a new one.
EVOL_IN_DEPTH = """I want you to act as a prompt rewriter. Rewrite the given prompt into a more complex \
version that a capable AI assistant can still answer, by this method: {method}
The rewritten prompt must stay reasonable, understandable by humans, and add at most 10 to 20 words. \
Do not use the phrases "given prompt" or "rewritten prompt".
Given prompt: {instruction}
Rewritten prompt:"""

EVOL_METHODS = {
    "add_constraints": "add one more constraint or requirement to it.",
    "deepen": "if it asks about a particular issue, increase the depth and breadth of the question.",
    "concretize": "replace general concepts with more specific ones.",
    "increase_reasoning": "if it can be solved with a few simple steps, rewrite it to explicitly ask for "
                          "multiple-step reasoning.",
}

EVOL_IN_BREADTH = """I want you to act as a prompt creator. Draw inspiration from the given prompt to \
create a brand new prompt in the same domain but rarer and on a different topic. It must be about as \
long and as hard as the given prompt and reasonable for humans. Do not use the phrases "given prompt" \
or "created prompt".
Given prompt: {instruction}
Created prompt:"""

CONSTRAINED = """{instruction}

Requirements for your answer:
{requirements}"""

PARAPHRASE = """Rewrite the following instruction in different words with exactly the same meaning. \
Reply with the rewritten instruction only.
Instruction: {instruction}
Rewritten instruction:"""

STYLE = """Rewrite the following answer in a {style} style, keeping its content. Reply with the \
rewritten answer only.
Answer: {output}
Rewritten answer:"""

DOMAIN_TRANSFER = """Rewrite the following instruction so that it is about {domain}, keeping the kind \
of task the same. Reply with the rewritten instruction only.
Instruction: {instruction}
Rewritten instruction:"""
