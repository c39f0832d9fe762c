"""The toy world: multi-step arithmetic word problems in English and Chinese, and the corpora
each R1 stage needs.

The pre-training corpus imitates a real base model's web data: the reasoning is right only part
of the time, often answers without reasoning, breaks or drops the think format, and mixes the
two languages. That leaves every later stage something real to fix: RL with accuracy and format
rewards (R1-Zero), the language reward, cold-start SFT on clean chains of thought, rejection sampling, and general
chat whose replies a toy judge (`r1cli.toy.judge:helpfulness`) grades.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

LANGUAGES = ("en", "zh")
MAX_VALUE = 12  # every running total stays in 0..MAX_VALUE

EN_NAMES = {"Tom": "He", "Bob": "He", "Max": "He", "Ben": "He", "Ann": "She", "Sue": "She", "Amy": "She", "Eva": "She"}
ZH_NAMES = {"小明": "他", "小刚": "他", "小军": "他", "小华": "他", "小红": "她", "小丽": "她"}
EN_ITEMS = ["apples", "pens", "books", "cards", "coins", "balls"]
ZH_ITEMS = [("个", "苹果"), ("支", "笔"), ("本", "书"), ("张", "卡片"), ("枚", "硬币"), ("个", "球")]
EN_GAIN = ["gets {n}", "buys {n}", "finds {n}"]
EN_LOSS = ["gives away {n}", "loses {n}", "sells {n}"]
ZH_GAIN = ["又得到{n}{m}", "又买了{n}{m}", "又找到{n}{m}"]
ZH_LOSS = ["送出{n}{m}", "丢了{n}{m}", "卖掉{n}{m}"]


@dataclass
class Problem:
    lang: str
    start: int
    steps: list[int]  # signed changes, applied in order
    events: list[str] = field(default_factory=list)  # each change as the prompt words it
    prompt: str = ""

    @property
    def answer(self) -> int:
        return self.start + sum(self.steps)

    def totals(self, steps: list[int] | None = None) -> list[int]:
        running, out = self.start, []
        for change in self.steps if steps is None else steps:
            running += change
            out.append(running)
        return out


def make_problem(rng: random.Random, lang: str) -> Problem:
    """A problem with 2 or 3 changes to a starting count (so 2 or 3 reasoning steps)."""
    start = rng.randint(2, 9)
    steps, total = [], start
    for _ in range(rng.randint(2, 3)):
        change = rng.randint(1, 4)
        if total - change >= 0 and (rng.random() < 0.5 or total + change > MAX_VALUE):
            change = -change
        steps.append(change)
        total += change
    problem = Problem(lang, start, steps)
    if lang == "en":
        name = rng.choice(list(EN_NAMES))
        item = rng.choice(EN_ITEMS)
        events = problem.events = [rng.choice(EN_GAIN if c > 0 else EN_LOSS).format(n=abs(c)) for c in steps]
        problem.prompt = f"{name} has {start} {item}, {', '.join(events[:-1])}, then {events[-1]}. How many {item} now?"
    else:
        name = rng.choice(list(ZH_NAMES))
        measure, item = rng.choice(ZH_ITEMS)
        events = problem.events = [rng.choice(ZH_GAIN if c > 0 else ZH_LOSS).format(n=abs(c), m=measure) for c in steps]
        problem.prompt = f"{name}有{start}{measure}{item}，{'，'.join(events[:-1])}，然后{events[-1]}。现在有几{measure}{item}？"
    return problem


# ---------------------------------------------------------------- reasoning and answers


def step_sentence(lang: str, before: int, change: int, after: int) -> str:
    if lang == "en":
        return f"{before} {'plus' if change > 0 else 'minus'} {abs(change)} is {after}."
    return f"{before}{'加' if change > 0 else '减'}{abs(change)}等于{after}。"


def short_reasoning(problem: Problem, steps: list[int], languages: list[str]) -> str:
    """One sentence per step: the event as the prompt words it, then the arithmetic in the
    language given for that step (mixing languages when they differ from the prompt's)."""
    before, sentences = problem.start, []
    for event, change, lang in zip(problem.events, steps, languages):
        colon = ": " if problem.lang == "en" else "："
        sentences.append(event + colon + step_sentence(lang, before, change, before + change))
        before += change
    return "".join(s + " " if s.endswith(".") else s for s in sentences).strip()


def response(lang: str, answer: int) -> str:
    return f"The answer is \\boxed{{{answer}}}." if lang == "en" else f"答案是\\boxed{{{answer}}}。"


def clean_completion(problem: Problem) -> str:
    """Cold-start data: every step right, in the prompt's language, in the think format."""
    reasoning = short_reasoning(problem, problem.steps, [problem.lang] * len(problem.steps))
    return f"<think>{reasoning}</think> {response(problem.lang, problem.answer)}"


def noisy_completion(problem: Problem, rng: random.Random) -> str:
    """A completion as a web-trained base might write it: sometimes no reasoning (a guess),
    sometimes a wrong step, often mixed languages, and think tags kept, dropped or left open."""
    if rng.random() < 0.3:
        guess = problem.answer if rng.random() < 0.15 else rng.randint(0, MAX_VALUE)
        return response(problem.lang, guess)
    steps = list(problem.steps)
    if rng.random() < 0.35:  # a slip: a step done with the wrong sign, or the last step forgotten
        if rng.random() < 0.5 and len(steps) > 1:
            steps = steps[:-1]
        else:
            slip = rng.randrange(len(steps))
            steps[slip] = -steps[slip]
    other = "zh" if problem.lang == "en" else "en"
    if rng.random() < 0.45:
        languages = [rng.choice((problem.lang, other)) for _ in steps]
        languages[rng.randrange(len(languages))] = other
    else:
        languages = [problem.lang] * len(steps)
    answer = problem.start + sum(steps)
    reasoning = short_reasoning(problem, steps, languages)
    form = rng.random()
    if form < 0.6:
        return f"<think>{reasoning}</think> {response(problem.lang, answer)}"
    if form < 0.85:
        return f"{reasoning} {response(problem.lang, answer)}"
    return f"<think>{reasoning} {response(problem.lang, answer)}"


def arithmetic_drill(rng: random.Random) -> str:
    """A line of arithmetic facts, as found in any web corpus: the facts the problems need."""
    lang = rng.choice(LANGUAGES)
    sentences = []
    for _ in range(8):
        before, change = rng.randint(0, MAX_VALUE), rng.randint(1, 4)
        if before - change >= 0 and (rng.random() < 0.5 or before + change > MAX_VALUE):
            change = -change
        sentences.append(step_sentence(lang, before, change, before + change))
    return "".join(s + " " if s.endswith(".") else s for s in sentences).strip()


# ---------------------------------------------------------------- general (non-reasoning) chat

EN_WORDS = ["cat", "dog", "sun", "tree", "book", "star", "fish", "moon", "bird", "cake", "milk", "rain", "ship", "lamp", "door", "ball", "frog", "leaf", "hat", "egg"]
ZH_WORDS = ["苹果", "小明", "书", "糖", "花", "球", "猫", "狗", "月亮", "太阳"]
ZH_DIGITS = "零一二三四五六七八九十"
GREETINGS = [("Say hello.", "Hello!"), ("请说你好。", "你好！"), ("Say thank you.", "Thank you!"), ("请说再见。", "再见！")]


def general_exchange(rng: random.Random) -> tuple[str, str]:
    """A simple instruction and its one right reply, answered directly (no reasoning needed)."""
    kind = rng.randrange(9)
    first, second = rng.sample(EN_WORDS, 2)
    count = rng.randint(2, 4)
    if kind == 0:
        return f"Repeat the words {first} {second} {count} times.", " ".join([first, second] * count)
    if kind == 1:
        return f"Write {first} {second} in capital letters.", f"{first} {second}".upper()
    if kind == 2:
        return f"Write {first} backwards.", first[::-1]
    if kind == 3:
        return f"Join {first} and {second} with a dash.", f"{first}-{second}"
    if kind == 4:
        number = rng.randint(0, 10)
        return f"How do you write {number} in Chinese?", ZH_DIGITS[number]
    if kind == 5:
        low = rng.randint(0, 9)
        return f"Count from {low} to {low + count}.", " ".join(str(n) for n in range(low, low + count + 1))
    if kind == 6:
        zh_first, zh_second = rng.sample(ZH_WORDS, 2)
        return f"把这两个词重复{count}遍：{zh_first}{zh_second}", (zh_first + zh_second) * count
    if kind == 7:
        number = rng.randint(0, 20)
        return f"{number}后面是几？", str(number + 1)
    return rng.choice(GREETINGS)


def general_reply(reply: str) -> str:
    """A direct reply keeps the think format with nothing to think, as R1's chat template does."""
    return f"<think></think> {reply}"


# ---------------------------------------------------------------- the corpora


def chat_text(user: str, assistant: str) -> str:
    """A conversation as raw text, in the toy chat template's own form."""
    return f"<|user|>{user}<|end|><|assistant|>{assistant}<|end|>"


def prompt_record(problem: Problem, split: str, index: int) -> dict:
    return {"id": f"toy-{split}-{index}", "prompt": problem.prompt, "answer": str(problem.answer), "lang": problem.lang}


def make_world(
    seed: int = 0, *, pretrain: int = 24000, cold_start: int = 300, rl_prompts: int = 2000, eval_prompts: int = 200,
    general: int = 600, general_prompts: int = 400,
) -> dict[str, list[dict]]:
    """Every toy corpus, keyed by file stem. Eval prompts appear in no other corpus."""
    rng = random.Random(seed)
    seen: set[str] = set()

    def fresh(lang: str) -> Problem:
        while True:
            problem = make_problem(rng, lang)
            if problem.prompt not in seen:
                seen.add(problem.prompt)
                return problem

    def problems(count: int) -> list[Problem]:
        return [fresh(LANGUAGES[i % 2]) for i in range(count)]

    eval_set = problems(eval_prompts)
    rl_set = problems(rl_prompts)
    texts = []
    for problem in problems(pretrain):
        kind = rng.random()
        if kind < 0.08:
            user, reply = general_exchange(rng)
            texts.append(chat_text(user, general_reply(reply)))
        elif kind < 0.18:
            texts.append(arithmetic_drill(rng))
        else:
            texts.append(chat_text(problem.prompt, noisy_completion(problem, rng)))
    return {
        "pretrain": [{"text": text} for text in texts],
        "cold_start": [
            {"messages": [{"role": "user", "content": p.prompt}, {"role": "assistant", "content": clean_completion(p)}], "lang": p.lang}
            for p in problems(cold_start)
        ],
        "rl_prompts": [prompt_record(p, "rl", i) for i, p in enumerate(rl_set)],
        "eval": [prompt_record(p, "eval", i) for i, p in enumerate(eval_set)],
        "general": [
            {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": general_reply(reply)}]}
            for user, reply in (general_exchange(rng) for _ in range(general))
        ],
        "general_prompts": [
            {"id": f"toy-general-{i}", "prompt": user, "reference": reply}
            for i, (user, reply) in enumerate(general_exchange(rng) for _ in range(general_prompts))
        ],
    }
