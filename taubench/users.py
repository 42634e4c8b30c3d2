"""τ-bench's user simulators: a deterministic scripted customer for CPU, and the prompt of τ-bench's LLM user.

`ScriptedUser(task, seed).reply(history)` is a pure function of (task, seed, history), where history is the
visible conversation (user and assistant text only). It opens with the request (the task's instruction in the
first person) and identifies itself with what the gold actions use (email, or name + zip, or user id, as the
instruction gives them), says yes to confirmation questions, gives identity and ids when asked, and writes
`###STOP###` once the agent says it is done or asks whether anything else is needed (or after MAX_TURNS).

`llm_user_messages(instruction, history)` is the chat an LLM user model gets: τ-bench's user system prompt
around the instruction, the agent's greeting, then the conversation with the roles flipped.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Any, Protocol, Sequence

STOP = "###STOP###"
MAX_TURNS = 30  # the user's 30th message is STOP at the latest
GREETING = "Hi! How can I help you today?"  # τ-bench's agent greeting, the LLM user's first input

# τ-bench's user system prompt (tau_bench/envs/user.py, build_system_prompt), word for word.
SYSTEM_PROMPT = """You are an user interacting with an agent.{instruction}
Rules:
- Just generate one line at a time to simulate the user's message.
- Do not give away all the instruction at once. Only provide the information that is necessary for the current step.
- Do not hallucinate information that is not provided in the instruction. For example, if the agent asks for the \
order id but it is not mentioned in the instruction, do not make up an order id, just say you do not remember or \
have it.
- If the instruction goal is satisified, generate '###STOP###' as a standalone message without anything else to \
end the conversation.
- Do not repeat the exact instruction in the conversation. Instead, use your own words to convey the same \
information.
- Try to make the conversation as natural as possible, and stick to the personalities in the instruction.
"""

OPEN = ("Hi! ", "Hello. ", "Hi there. ", "")
YES = ("Yes, please go ahead.", "Yes, I confirm.", "Yes, please proceed.", "Yes.")
GO_ON = ("Okay, please go on.", "Okay.", "Alright, go ahead.", "Please continue.")
NOT_KNOWN = ("I'm sorry, I don't have that.", "I don't remember that, sorry.", "I'm not sure, sorry.")

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
ZIP = re.compile(r"\b\d{5}\b")
NAME = re.compile(r"\b(?:[Yy]our name is|You are|You're)\s+([A-Z][a-z]+(?: [A-Z][a-z]+)+)")
ORDER_ID = re.compile(r"#?\bW\d{7}\b")
RESERVATION_ID = re.compile(r"\b(?=[A-Z0-9]*\d)(?=[A-Z0-9]*[A-Z])[A-Z0-9]{6}\b")
SENTENCE = re.compile(r"(?<=[.!?])\s+")
# A sentence with one of these words asks for something; an identity sentence has none.
REQUEST_WORDS = re.compile(r"\b(want|wants|wish|need|like|wonder|received|just|try|trying|ask|cancel|return|"
                           r"exchange|change|modify|update|book|check|know|buy|order|get)\b", re.IGNORECASE)
PERSONALITY = re.compile(r"^You are (?:[a-z]+, )*[a-z]+\.$")  # "You are cautious, messy, busy."

# What the agent's reply is about (looked up in its question sentences).
DONE = re.compile(r"anything else|something else|all set|have a (?:great|nice|good) day|transferr", re.IGNORECASE)
CONFIRM = re.compile(r"\b(?:confirm|proceed|go ahead|yes|shall i|should i|do you want me|would you like me)\b",
                     re.IGNORECASE)
ASKS_IDENTITY = re.compile(r"\b(?:e-?mail|zip|postal|name|user ?id|identity|authenticat|verify)", re.IGNORECASE)
ASKS_ORDER = re.compile(r"\b(?:order (?:id|number)|which order)\b", re.IGNORECASE)
ASKS_RESERVATION = re.compile(r"\b(?:reservation (?:id|number|code)|confirmation (?:number|code)|which "
                              r"reservation)\b", re.IGNORECASE)

# Second person -> first person. "you" is "me" after these words (object), else "I" (subject).
_OBJECT_CONTEXT = ("to", "for", "with", "ask", "asks", "tell", "tells", "give", "gives", "help", "helps", "let",
                   "lets", "offer", "offers", "send", "sends", "about", "than", "at", "from", "by", "show",
                   "shows", "remind", "reminds", "call", "charge", "refund", "provide", "provides", "of", "on",
                   "get", "gets", "allow", "allows", "want", "wants", "assist", "assists", "into", "convince")
_CONTRACTIONS = {"you're": "I'm", "you've": "I've", "you'd": "I'd", "you'll": "I'll", "you are": "I am",
                 "you were": "I was", "yourself": "myself", "yours": "mine", "your": "my"}
_PRONOUN = re.compile(r"\b(you're|you've|you'd|you'll|you are|you were|yourself|yours|your|you)\b", re.IGNORECASE)


class _Task(Protocol):
    domain: str
    user_id: str
    instruction: str
    actions: Sequence[Any]  # Action(name, kwargs)


def stable_rng(seed: int, n: int) -> random.Random:
    """RNG for the user turn that follows `n` history messages; independent of Python's hash salt."""
    digest = hashlib.sha256(f"tau-user:{seed}:{n}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def first_person(text: str) -> str:
    """The instruction's second person turned into the user's first person ("Your order" -> "My order")."""

    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        lower = word.lower()
        if lower == "you":
            before = text[:match.start()].rstrip().rsplit(None, 1)
            at_start = not before or before[-1][-1:] in ".!?:;"
            mine = "me" if not at_start and before[-1].lower() in _OBJECT_CONTEXT else "I"
        else:
            mine = _CONTRACTIONS[lower]
        return mine[0].upper() + mine[1:] if word[0].isupper() else mine

    return _PRONOUN.sub(swap, text)


def identity(task: _Task) -> str:
    """How the user identifies itself: what the gold actions look up, else what the instruction gives."""
    for action in task.actions:
        kwargs = action.kwargs
        if action.name == "find_user_id_by_email":
            return f"My email is {kwargs['email']}."
        if action.name == "find_user_id_by_name_zip":
            return f"My name is {kwargs['first_name']} {kwargs['last_name']} and my zip code is {kwargs['zip']}."
    text = task.instruction
    if task.domain != "airline":
        email, name, zip_code = EMAIL.search(text), NAME.search(text), ZIP.search(text)
        if email:
            return f"My email is {email.group(0)}."
        if name and zip_code:
            return f"My name is {name.group(1)} and my zip code is {zip_code.group(0)}."
    return f"My user id is {task.user_id}."


def request(task: _Task) -> str:
    """The instruction without its identity and personality sentences, in the first person."""
    sentences = [s.strip() for s in SENTENCE.split(task.instruction.strip()) if s.strip()]
    tokens = [task.user_id, *EMAIL.findall(task.instruction), *ZIP.findall(task.instruction)]
    name = NAME.search(task.instruction)
    if name:
        tokens.append(name.group(1))
    if sentences and any(t in sentences[0] for t in tokens) and not REQUEST_WORDS.search(sentences[0]):
        sentences = sentences[1:]
    kept = [first_person(s) for s in sentences if not PERSONALITY.match(s)]
    return " ".join(kept) or "I need some help with my account."


def opening(task: _Task, seed: int = 0) -> str:
    """The user's first message: a greeting, who it is, and what it wants."""
    greet = stable_rng(seed, 0).choice(OPEN)
    return f"{greet}{identity(task)} {request(task)}"


def _questions(text: str) -> str:
    """The question sentences of `text` (each `?` with the text since the previous `.`, `!` or `?`), one pass."""
    start, questions = 0, []
    for i, ch in enumerate(text):
        if ch in ".!?":
            if ch == "?":
                questions.append(text[start:i + 1])
            start = i + 1
    return " ".join(questions)


class ScriptedUser:
    """A deterministic customer for τ-bench tasks that reads only the visible conversation."""

    def __init__(self, task: _Task, seed: int = 0):
        self.task, self.seed = task, seed

    def reply(self, history: Sequence[dict[str, Any]]) -> str:
        """The user's next message given the visible conversation (user and assistant text)."""
        if not history:
            return opening(self.task, self.seed)
        turns = sum(m.get("role") == "user" for m in history)
        if turns >= MAX_TURNS - 1:
            return STOP
        rng = stable_rng(self.seed, len(history))
        agent = ""  # what the agent said since the user's last message
        for m in history:
            if m.get("role") == "user":
                agent = ""
            elif m.get("role") == "assistant":
                agent = f"{agent} {m.get('content') or ''}".strip()
        if not agent:
            return rng.choice(GO_ON)
        questions = _questions(agent)
        if DONE.search(questions) or DONE.search(agent[-200:]):
            return STOP
        if not questions:
            return rng.choice(GO_ON)
        if CONFIRM.search(questions):
            return rng.choice(YES)
        if ASKS_IDENTITY.search(questions):
            return identity(self.task)
        if ASKS_ORDER.search(questions):
            return self._ids(ORDER_ID.findall(self.task.instruction), "order", rng)
        if ASKS_RESERVATION.search(questions):
            return self._ids(RESERVATION_ID.findall(self.task.instruction), "reservation", rng)
        return f"As I said: {request(self.task)}"

    @staticmethod
    def _ids(ids: list[str], what: str, rng: random.Random) -> str:
        if not ids:
            return rng.choice(NOT_KNOWN)
        unique = list(dict.fromkeys(ids))
        return f"The {what} id is {unique[0]}." if len(unique) == 1 else f"The {what} ids are {', '.join(unique)}."


def llm_user_messages(instruction: str, history: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """The LLM user's chat: τ-bench's system prompt with `instruction`, the agent's greeting, then `history`
    (visible conversation) with roles flipped, so the model writes the user's next message as the assistant."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT.format(instruction=f"\n\nInstruction: {instruction}\n")},
                {"role": "user", "content": GREETING}]
    flipped = {"user": "assistant", "assistant": "user"}
    for m in history:
        role = flipped.get(m.get("role", ""))
        if role is None:
            continue
        content = m.get("content") or ""
        if messages[-1]["role"] == role:  # chat templates want alternating roles: merge consecutive turns
            messages[-1] = {"role": role, "content": f"{messages[-1]['content']}\n{content}".strip()}
        else:
            messages.append({"role": role, "content": content})
    if messages[-1]["role"] == "assistant":  # the agent said nothing this turn: let the user go on
        messages.append({"role": "user", "content": "(no reply)"})
    return messages
