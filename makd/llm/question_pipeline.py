"""The paper's two LLM steps: generate N candidate questions, then select the Q most relevant and distinct.

Step 1 asks for N questions and keeps the acceptable, non-duplicate ones (makd.llm.screening); when
fewer than N survive it asks for more in the same conversation, at most `max_rounds` replies in all.
Step 2 shows the kept candidates as the assistant's numbered list and asks for Q of them; every
chosen item must be a candidate (by text or by number). Too few chosen -> ask for the missing ones;
too many -> ask again for exactly Q; still wrong after `max_rounds` replies -> LLMError saying what came back.

Two kinds of question (`QuestionTask.kind`): the paper's yes/no questions, screened by makd.llm.screening, and
LaViD-style multiple-choice questions about a class ("question | option 1 | ... | option M", `<object>` for the
class), screened by makd.llm.choice_screening with exactly `options` options; their replies may also hold
question/option blocks (makd.llm.reply_parsing.parse_choice_reply).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from makd.formats.class_questions import OPTION_SEPARATOR
from makd.formats.questions import normalize_text
from makd.llm.chat_client import ChatClient, ChatReply, LLMError
from makd.llm.choice_screening import screen_multiple_choice
from makd.llm.prompts import PromptSet, fill
from makd.llm.reply_parsing import Item, parse_choice_reply, parse_reply
from makd.llm.screening import Screening, screen_questions, summarize_rejections

KINDS = ("yes_no", "multiple_choice")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuestionTask:
    """What to ask: the classes (label order), M training images (None = unknown), N candidates, Q chosen."""

    classes: Sequence[str]
    num_images: int | None
    n: int
    q: int
    model: str = ""
    temperature: float = 0.7
    seed: int | None = 0
    prompts: PromptSet = PromptSet()
    allow_class_names: bool = False
    max_rounds: int = 3
    allowed_names: tuple[str, ...] = ()  # class names questions may use in this run (the allow-list)
    leak_rule: str = "names_object"  # makd.formats.class_mentions.LEAK_RULES
    kind: str = "yes_no"  # KINDS
    options: int = 5  # options per multiple-choice question

    def values(self) -> dict[str, object]:
        """Placeholder values shared by every template."""
        return {
            "C": len(self.classes),
            "M": self.num_images,
            "N": self.n,
            "Q": self.q,
            "OPTIONS": self.options,
            "CLASS_LIST": ", ".join(self.classes),
        }

    @property
    def multiple_choice(self) -> bool:
        return self.kind == "multiple_choice"

    def parse(self, text: str) -> list[Item]:
        return parse_choice_reply(text) if self.multiple_choice else parse_reply(text)

    def screen(self, items: Sequence[str], kept: Sequence[str]) -> Screening:
        """The acceptable, new candidates among `items` (the checks of this kind of question)."""
        if self.multiple_choice:
            names = () if self.allow_class_names else [c for c in self.classes if c not in self.allowed_names]
            return screen_multiple_choice(items, self.options, names, already_kept=kept, leak_rule=self.leak_rule)
        return screen_questions(
            items,
            self.classes,
            self.allow_class_names,
            already_kept=kept,
            allowed_names=self.allowed_names,
            leak_rule=self.leak_rule,
        )


@dataclass(frozen=True)
class Exchange:
    """One request of the run: its step, the last user prompt, the raw reply and where it came from."""

    step: str
    round: int
    prompt: str
    reply: str
    request_hash: str
    cached: bool
    json_mode: bool
    served_model: str


@dataclass
class QuestionsResult:
    """The Q questions, the N candidates they were chosen from, rejected texts and every exchange."""

    questions: list[str]
    candidates: list[str]
    rejected: list[tuple[str, str]]
    exchanges: list[Exchange] = field(default_factory=list)


def numbered(questions: Sequence[str]) -> str:
    return "\n".join(f"{i}. {q}" for i, q in enumerate(questions, start=1))


def first_prompts(task: QuestionTask, question_list: str | None = None) -> tuple[str, str]:
    """(generate, select) prompts as sent; the select prompt's {QUESTION_LIST} is `question_list`."""
    values = task.values()
    generate = fill(task.prompts.generate, values, "the generate prompt")
    select = fill(task.prompts.select, {**values, "QUESTION_LIST": question_list}, "the select prompt")
    return generate, select


def _system(task: QuestionTask) -> list[dict[str, str]]:
    return [{"role": "system", "content": task.prompts.system}] if task.prompts.system.strip() else []


class _Conversation:
    """Messages of one step and the exchanges it produced."""

    def __init__(self, client: ChatClient, task: QuestionTask, step: str, messages: list[dict[str, str]]) -> None:
        self.client, self.task, self.step, self.messages = client, task, step, messages
        self.exchanges: list[Exchange] = []

    def ask(self, prompt: str) -> ChatReply:
        if self.exchanges:  # a follow-up: the previous reply becomes part of the conversation
            self.messages.append({"role": "assistant", "content": self.exchanges[-1].reply})
        self.messages.append({"role": "user", "content": prompt})
        round_ = len(self.exchanges) + 1
        reply = self.client.complete(
            self.messages,
            model=self.task.model,
            temperature=self.task.temperature,
            seed=self.task.seed,
            label=f"{self.step} round {round_}",
        )
        self.exchanges.append(
            Exchange(
                self.step,
                round_,
                prompt,
                reply.text,
                reply.request_hash,
                reply.cached,
                reply.json_mode,
                reply.served_model,
            )
        )
        return reply


def generate_candidates(
    client: ChatClient, task: QuestionTask
) -> tuple[list[str], list[tuple[str, str]], list[Exchange]]:
    """Step 1: up to N acceptable, distinct candidates (at least Q, else LLMError), rejections, exchanges."""
    generate, _ = first_prompts(task, question_list="")
    chat = _Conversation(client, task, "generate", _system(task))
    kept: list[str] = []
    rejected: list[tuple[str, str]] = []
    prompt = generate
    while True:
        reply = chat.ask(prompt)
        items = [str(i) for i in task.parse(reply.text)]  # a bare number is no question: rejected below
        screening = task.screen(items, kept)
        if screening.suffix_note():
            log.info("generate round %d: %s", len(chat.exchanges), screening.suffix_note())
        kept += screening.kept
        rejected += screening.rejected
        log.info(
            "generate round %d: %d items, %d kept (%d usable so far, %s)",
            len(chat.exchanges),
            len(items),
            len(screening.kept),
            len(kept),
            summarize_rejections(screening.rejected, 1),
        )
        if len(kept) >= task.n or len(chat.exchanges) >= task.max_rounds:
            break
        if task.multiple_choice:
            problems = (
                f"{len(kept)} of the questions so far are usable; {len(rejected)} did not have exactly "
                f"{task.options} distinct options or the <object> placeholder, repeated another question or "
                "named a class."
            )
        else:
            problems = (
                f"{len(kept)} of the questions so far are usable; {len(rejected)} were not one-sentence yes/no "
                "questions, repeated another question or named a class."
            )
        prompt = fill(
            task.prompts.generate_more,
            {**task.values(), "K": task.n - len(kept), "PROBLEMS": problems},
            "the generate_more prompt",
        )
    if len(kept) < task.q:
        raise LLMError(
            f"generate: the LLM gave {len(kept)} usable questions in {len(chat.exchanges)} replies but --q {task.q} "
            f"are needed ({summarize_rejections(rejected)}); raise --max-rounds, lower --q or try another --model"
        )
    return kept[: task.n], rejected, chat.exchanges


def match_selection(
    items: Sequence[Item], candidates: Sequence[str], chosen: Sequence[str]
) -> tuple[list[str], list[str], int]:
    """(new candidates named by `items`, items not in the candidate list, count of repeats)."""
    by_key = {normalize_text(c): c for c in candidates}
    # A multiple-choice line copied without its options still names its candidate (when only one has that question).
    questions = [normalize_text(c.split(OPTION_SEPARATOR, 1)[0]) for c in candidates if OPTION_SEPARATOR in c]
    for c in candidates:
        question = normalize_text(c.split(OPTION_SEPARATOR, 1)[0])
        if OPTION_SEPARATOR in c and questions.count(question) == 1:
            by_key.setdefault(question, c)
    taken = {normalize_text(c) for c in chosen}
    found: list[str] = []
    invented: list[str] = []
    repeats = 0
    for item in items:
        if isinstance(item, int):
            match = candidates[item - 1] if 1 <= item <= len(candidates) else None
        else:
            match = by_key.get(normalize_text(item))
        if match is None:
            invented.append(str(item))
            continue
        key = normalize_text(match)
        if key in taken:
            repeats += 1
            continue
        taken.add(key)
        found.append(match)
    return found, invented, repeats


def _selection_problems(chosen: int, q: int, invented: Sequence[str], repeats: int) -> str:
    if chosen > q:
        text = f"Your selection has {chosen} questions but exactly {q} are needed."
    else:
        text = f"Your selection has {chosen} of the {q} questions needed."
    if invented:
        shown = "; ".join(repr(t[:80]) for t in invented[:5]) + (" ..." if len(invented) > 5 else "")
        text += f" These {len(invented)} are not in the list and were ignored: {shown}."
    if repeats:
        text += f" {repeats} repeated a question already chosen."
    return text


def select_questions(
    client: ChatClient, task: QuestionTask, candidates: Sequence[str]
) -> tuple[list[str], list[Exchange]]:
    """Step 2: exactly Q questions, all from `candidates`, in the order the LLM chose them."""
    if len(candidates) == task.q:
        log.info("select: exactly %d usable candidates; nothing to select", task.q)
        return list(candidates), []
    listing = numbered(candidates)
    generate, select = first_prompts(task, question_list=listing)
    # The paper's select instruction follows its generate instruction in one chat; the list the
    # model chooses from is the screened candidates, shown as its own numbered answer.
    history = _system(task) + [{"role": "user", "content": generate}, {"role": "assistant", "content": listing}]
    chat = _Conversation(client, task, "select", history)
    chosen: list[str] = []
    all_invented: list[str] = []
    prompt = select
    while True:
        reply = chat.ask(prompt)
        found, invented, repeats = match_selection(task.parse(reply.text), candidates, chosen)
        all_invented += invented
        chosen += found
        log.info(
            "select round %d: %d chosen from the list, %d not in it (%d of %d so far)",
            len(chat.exchanges),
            len(found),
            len(invented),
            len(chosen),
            task.q,
        )
        if len(chosen) == task.q:
            return chosen, chat.exchanges
        if len(chat.exchanges) >= task.max_rounds:
            break
        problems = _selection_problems(len(chosen), task.q, invented, repeats)
        if len(chosen) < task.q:
            values = {**task.values(), "K": task.q - len(chosen), "PROBLEMS": problems}
            prompt = fill(task.prompts.select_more, values, "the select_more prompt")
        else:
            chosen = []  # too many: the next reply replaces the whole selection
            prompt = fill(task.prompts.select_exact, {**task.values(), "PROBLEMS": problems}, "the select_exact prompt")
    invented_text = "; ".join(repr(t[:60]) for t in all_invented[:3]) or "none"
    raise LLMError(
        f"select: after {len(chat.exchanges)} replies the LLM chose {len(chosen)} questions from the "
        f"{len(candidates)} candidates but --q {task.q} are needed (not in the list: {len(all_invented)}, first: "
        f"{invented_text}; last reply began {reply.text.strip()[:80]!r}); nothing was written. "
        "Raise --max-rounds, lower --q or try another --model"
    )


def make_questions(client: ChatClient, task: QuestionTask) -> QuestionsResult:
    """Both steps; raises LLMError (and writes nothing) unless exactly Q questions result."""
    candidates, rejected, generate_exchanges = generate_candidates(client, task)
    questions, select_exchanges = select_questions(client, task, candidates)
    return QuestionsResult(questions, candidates, rejected, generate_exchanges + select_exchanges)
