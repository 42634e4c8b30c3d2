"""The rule-based teacher agent for the CPU bootstrap (../shared/spec/simulators.md, "Teacher agent").

`Teacher.next_message(messages)` is a pure function of the OpenAI-format conversation: it re-reads the
user's messages with a lexicon built from the DB values (belief state per domain), re-reads its own tool
calls and their results, and returns ONE assistant message: a tool call or text. It never sees the goal
or the ground truth; whatever it earns, it earns from the conversation. Three modules: `phrases` (what it
says), `understanding` (how it reads the conversation), `policy` (what it does next).
"""

from toolwoz.teacher.policy import Teacher
from toolwoz.teacher.understanding import Lexicon, Parse

__all__ = ["Lexicon", "Parse", "Teacher"]
